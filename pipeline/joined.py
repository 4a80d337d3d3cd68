"""A partition seen across the stages before it: for partition k, the rows that every stage up to
a given one kept (`ok`), with the columns each stage is asked for, joined by uuid in 01's order;
and the partition's stored JPEGs, streamed a row group at a time.

Every stage keeps 01's partition index and reads only its predecessor's ok rows, so partition k
of any stage is a subset of 01's partition k, in the same order. Stages 04, 05 and 06 read their
inputs through here instead of each re-implementing the join.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.ledger import ManifestStore

# The stage whose side file of partition k is partition k's image store.
IMAGE_STAGE = "02_download"


def _read(root: Path, stage_dir: str, index: int, columns: list[str]) -> pa.Table:
    path = ManifestStore(root, stage_dir).part_path(index)
    wanted = ["uuid", "status", *[c for c in columns if c not in ("uuid", "status")]]
    return pq.read_table(path, columns=wanted)


def joined_rows(root: str | Path, index: int, columns: dict[str, Iterable[str]]) -> pa.Table:
    """Rows of partition `index` that are ok in every stage named in `columns` (and in every
    stage before the last one named), with `uuid` first and then the requested columns, stage by
    stage in the order given; a column asked of two stages keeps the later stage's values."""
    from stages import STAGE_MODULES

    order = list(STAGE_MODULES)
    last = max(order.index(s) for s in columns)
    stages = order[: last + 1]
    base = _read(Path(root), stages[0], index, list(columns.get(stages[0], [])))
    keep = pc.equal(base["status"], "ok")
    result = base.filter(keep).drop_columns(["status"])
    for stage in stages[1:]:
        table = _read(Path(root), stage, index, list(columns.get(stage, [])))
        table = table.filter(pc.equal(table["status"], "ok")).drop_columns(["status"])
        result = _inner_join_in_order(result, table)
    return result


def _inner_join_in_order(left: pa.Table, right: pa.Table) -> pa.Table:
    """left's rows whose uuid right has, in left's order, with right's columns (right wins)."""
    positions = pc.index_in(left["uuid"], value_set=right["uuid"])
    present = pc.is_valid(positions)
    left, positions = left.filter(present), positions.filter(present)
    for name in right.column_names:
        if name == "uuid":
            continue
        column = pc.take(right[name], positions)
        if name in left.column_names:
            left = left.set_column(left.column_names.index(name), name, column)
        else:
            left = left.append_column(name, column)
    return left


def image_store_path(root: str | Path, index: int) -> Path:
    """Partition `index`'s image store: the side file its 02 commit record lists."""
    record = ManifestStore(root, IMAGE_STAGE).read_record(index)
    if not record or len(record["side_files"]) != 1:
        raise FileNotFoundError(f"{IMAGE_STAGE} part {index} has no committed image store")
    return Path(root) / next(iter(record["side_files"]))


def iter_images(root: str | Path, index: int, wanted: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(uuid, jpeg) of partition `index`'s image store, in store order (02's ok rows), one row
    group in memory at a time; only the uuids in `wanted` when given."""
    with pq.ParquetFile(image_store_path(root, index)) as handle:
        for group in range(handle.num_row_groups):
            batch = handle.read_row_group(group)
            for uuid, jpeg in zip(batch["uuid"].to_pylist(), batch["jpeg"].to_pylist(), strict=True):
                if wanted is None or uuid in wanted:
                    yield uuid, jpeg
