"""One partition of stage 05: 04's ok rows, their MD5 group (decided across partitions in
prepare()), their test-set MD5 match, the PDQ hashes of the rows in scope (cached per image store
file) and the closest test hash of each within the search radius, then the decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.joined import joined_rows
from pipeline.stage import Partition, PartitionOutput, StageContext
from stages.dedup import bundle as B
from stages.dedup import codes as C
from stages.dedup import schema as S
from stages.dedup.decide import decide
from stages.dedup.hashcache import Hashed, hashes
from stages.dedup.md5_plan import read_partition
from stages.dedup.settings import hash_settings, scope

ROW_COLUMNS = {"01_ingest": ["image_type", "provider"], "02_download": ["md5"], "04_filter": []}


def _states(rows: pa.Table, params: dict[str, Any], found: dict[str, Hashed]) -> list[str]:
    covered = scope(params)
    floor = int(params["pdq_min_quality"])
    states = []
    for uuid, image_type, provider in zip(rows["uuid"].to_pylist(), rows["image_type"].to_pylist(),
                                          rows["provider"].to_pylist(), strict=True):  # fmt: skip
        if not covered.covers(image_type, provider):
            states.append(S.NOT_APPLICABLE)
        elif found[uuid].error is not None:
            states.append(S.UNREADABLE)
        else:
            states.append(S.APPLIED if (found[uuid].quality or 0) >= floor else S.LOW_QUALITY)
    return states


def _search(bundle: B.Bundle | None, uuids: list[str], states: list[str],
            found: dict[str, Hashed]) -> dict[str, tuple[int, int]]:  # fmt: skip
    """uuid -> (distance, test row) of the nearest test hash within the radius, applied rows only."""
    chosen = [u for u, s in zip(uuids, states, strict=True) if s == S.APPLIED]
    if bundle is None or not chosen:
        return {}
    distance, rows = bundle.nearest(C.from_hex([found[u].pdq for u in chosen]))  # type: ignore[misc]
    return {u: (int(d), int(r)) for u, d, r in zip(chosen, distance, rows, strict=True) if r >= 0}


def _column(values: list[Any], name: str) -> pa.Array:
    return pa.array(values, S.SCHEMA.field(name).type)


def _table(rows: pa.Table, states: list[str], found: dict[str, Hashed],
           groups: dict[str, tuple[int, str]], md5_rows: list[int], near: dict[str, tuple[int, int]],
           bundle: B.Bundle | None) -> pa.Table:  # fmt: skip
    columns: dict[str, list[Any]] = {name: [] for name in S.SCHEMA.names}
    for i, uuid in enumerate(rows["uuid"].to_pylist()):
        hashed, state = found.get(uuid), states[i]
        unreadable = state == S.UNREADABLE
        copies, kept = groups.get(uuid, (1, None))
        test_row = md5_rows[i]
        distance, near_row = near.get(uuid, (None, -1))
        values = {
            "uuid": uuid, "status": "failed" if unreadable else "ok",
            "reason": S.IMAGE_UNREADABLE if unreadable else None,
            "detail": hashed.error if unreadable and hashed else None,
            "image_type": rows["image_type"][i].as_py(), "provider": rows["provider"][i].as_py(),
            "md5": rows["md5"][i].as_py(), "md5_copies": copies, "md5_kept": kept,
            "md5_leak_testset": bundle.testsets[test_row] if bundle and test_row >= 0 else None,
            "md5_leak_test_id": bundle.test_ids[test_row] if bundle and test_row >= 0 else None,
            "pdq_state": state, "pdq": hashed.pdq if hashed else None,
            "pdq_quality": hashed.quality if hashed else None, "pdq_min_distance": distance,
            "leak_testset": bundle.testsets[near_row] if bundle and near_row >= 0 else None,
            "leak_test_id": bundle.test_ids[near_row] if bundle and near_row >= 0 else None,
        }  # fmt: skip
        for name, value in values.items():
            columns[name].append(value)
    return pa.table([_column(columns[n], n) for n in S.SCHEMA.names], schema=S.SCHEMA)


def dedup_partition(part: Partition, ctx: StageContext) -> PartitionOutput:
    params, payload = ctx.params, part.payload
    rows = joined_rows(ctx.root, part.index, ROW_COLUMNS)
    uuids = rows["uuid"].to_pylist()
    covered = scope(params)
    wanted = {u for u, t, p in zip(uuids, rows["image_type"].to_pylist(), rows["provider"].to_pylist(),
                                   strict=True) if covered.covers(t, p)}  # fmt: skip
    settings = hash_settings(params)
    found = hashes(ctx.root, ctx.work_dir(), part.index, payload["store_sha256"], wanted, settings)
    states = _states(rows, params, found)
    bundle = B.load(payload["bundle"], int(params["search_threads"])) if payload["bundle"] else None
    md5_rows = bundle.md5_matches(rows["md5"].to_pylist()) if bundle else [-1] * len(uuids)
    near = _search(bundle, uuids, states, found)
    groups = read_partition(Path(payload["md5"]), part.index)
    table = _table(rows, states, found, groups, md5_rows, near, bundle)
    return PartitionOutput(table=decide(table, params), rows_in=rows.num_rows)
