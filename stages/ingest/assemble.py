"""Build one 01 partition from staged host sub-buckets: URL dedup, unique ids, final columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DUPLICATE_URL = "duplicate_url"
DUPLICATE_RECORD_TAG = "#copy"


def read_sub_bucket(folder: Path) -> pa.Table:
    """All rows of one host sub-bucket in `_seq` order (the order of the sources)."""
    files = sorted(folder.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.sort_by("_seq")


def drop_duplicate_urls(table: pa.Table) -> pa.Table:
    """Among ok rows, the first (lowest `_seq`) of each URL stays ok; later ones are dropped."""
    status = table["status"].to_numpy(zero_copy_only=False).astype(object)
    reason = table["reason"].to_numpy(zero_copy_only=False).astype(object)
    detail = table["detail"].to_numpy(zero_copy_only=False).astype(object)
    first_uuid: dict[str, str] = {}
    urls, uuids = table["url"].to_pylist(), table["uuid"].to_pylist()
    for i, (url, uuid) in enumerate(zip(urls, uuids, strict=True)):
        if status[i] != "ok":
            continue
        kept = first_uuid.setdefault(url, uuid)
        if kept != uuid:
            status[i], reason[i], detail[i] = "dropped", DUPLICATE_URL, f"same URL as sample {kept}"
    return _set(table, status=status, reason=reason, detail=detail)


def unique_ids(table: pa.Table) -> pa.Table:
    """Repeated records (same provider, record id and URL) share a uuid: give each repeat after the
    first a derived id (uuid5 of the first id + '#copyN'), deterministic, so every row is unique."""
    import uuid as uuidlib

    ids = table["uuid"].to_pylist()
    seen: dict[str, int] = {}
    changed = False
    for i, value in enumerate(ids):
        copies = seen.get(value, 0)
        seen[value] = copies + 1
        if copies:
            ids[i] = str(uuidlib.uuid5(uuidlib.UUID(value), f"{DUPLICATE_RECORD_TAG}{copies}"))
            changed = True
    if not changed:
        return table
    return _set(table, uuid=np.array(ids, dtype=object))


def _set(table: pa.Table, **columns: Any) -> pa.Table:
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(values, type=pa.string()))
    return table


def mark_repeats(table: pa.Table) -> pa.Table:
    """Rows whose uuid repeats an earlier one are duplicate URLs of the same record: drop them
    (when ok), then re-key them so ids stay unique."""
    ids = table["uuid"].to_pylist()
    first = pc.equal(pa.array(range(len(ids))), pa.array(_first_index(ids)))
    repeat_ok = pc.and_(pc.invert(first), pc.equal(table["status"], "ok"))
    status = pc.if_else(repeat_ok, "dropped", table["status"])
    reason = pc.if_else(repeat_ok, DUPLICATE_URL, table["reason"])
    detail = pc.if_else(
        repeat_ok, pc.binary_join_element_wise("repeat of sample ", table["uuid"], ""), table["detail"]
    )
    table = _set(table, status=status, reason=reason, detail=detail)
    return unique_ids(table)


def _first_index(ids: list[str]) -> list[int]:
    first: dict[str, int] = {}
    return [first.setdefault(v, i) for i, v in enumerate(ids)]


def build_partition(staging: Path, pieces: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    parts = []
    for piece in pieces:
        bucket = read_sub_bucket(staging / piece["folder"])
        bucket = drop_duplicate_urls(mark_repeats(bucket))
        parts.append(bucket.slice(piece["start"], piece["stop"] - piece["start"]))
    table = pa.concat_tables(parts)
    return table.select(schema.names).cast(schema)
