"""One shard (worker side): its rows from the staging, in (order key, uuid) order; the tar of its ok
rows, written to a temporary name that the ledger renames to shards/<name> when it commits the
partition (hashing it: its sha256 and size are in the commit record); and its manifest table,
every row accounted for."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stage import Partition, PartitionOutput, StageContext
from stages.shard import schema as S
from stages.shard.captions import RANKS
from stages.shard.sample import TaxonMembers, sample_members, taxon_members
from stages.shard.settings import ShardSettings, shard_settings
from stages.shard.staging import blob_reader, shard_rows
from stages.shard.tar import FileSlice, ShardTar, TarFields

SHARDS_DIR = "shards"
TAXON_KEY = (*RANKS, "scientific_name", "common_name")  # the columns a sample's taxonomy members come from


class _Blobs:
    """Open blob files of the staging groups, read by offset."""

    def __init__(self, folder: str):
        self.folder, self.fds = folder, {}

    def slice(self, group: int, offset: int, length: int) -> FileSlice:
        if group not in self.fds:
            self.fds[group] = blob_reader(self.folder, group)
        return FileSlice(self.fds[group], offset, length)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


Cache = dict[tuple, TaxonMembers | None]


def _taxon(row: dict[str, Any], settings: ShardSettings, cache: Cache) -> TaxonMembers:
    """The row's taxonomy members (rows of one taxon share them: computed once per shard)."""
    key = tuple(row[name] for name in TAXON_KEY)
    if key not in cache:
        cache[key] = taxon_members(row, settings.missing_values, settings.txt_caption)
    taxon = cache[key]
    if taxon is None:  # staged rows with a status ok always have a taxon
        raise ValueError(f"row {row['uuid']} is ok but has no taxon")
    return taxon


def _write_tar(rows: list[dict[str, Any]], ctx: StageContext, settings: ShardSettings,
               staging: str) -> tuple[Any, list[int | None]]:  # fmt: skip
    """Write the ok rows; returns (temp path, position per row)."""
    temp = ctx.temp_path(".tar")
    fields = TarFields(settings.tar_mtime, settings.tar_owner, settings.tar_mode)
    tar, blobs = ShardTar(temp, fields), _Blobs(staging)
    positions: list[int | None] = []
    cache: Cache = {}
    try:
        for row in rows:
            if row["status"] != "ok":
                positions.append(None)
                continue
            taxon = _taxon(row, settings, cache)
            jpeg = blobs.slice(row["group"], row["blob_offset"], row["jpeg_bytes"])
            positions.append(tar.samples)
            tar.write(row["uuid"], sample_members(row, taxon, jpeg))
        tar.close()
    except BaseException:
        tar.abandon()
        temp.unlink(missing_ok=True)
        raise
    finally:
        blobs.close()
    return temp, positions


def _table(rows: pa.Table, positions: list[int | None], name: str) -> pa.Table:
    """The manifest: the staged rows' columns, and where each sample is."""
    n = rows.num_rows
    position = pa.array(positions, pa.int32())
    samples = n - position.null_count
    derived = {
        "shard": pa.array([name] * n, pa.string()),
        "position": position,
        "key": pc.if_else(pc.is_valid(position), rows["uuid"], pa.scalar(None, pa.string())),
        "shard_samples": pa.array([samples] * n, pa.int32()),
    }
    arrays = [derived[f.name] if f.name in derived else rows[f.name] for f in S.SCHEMA]
    return pa.Table.from_arrays(arrays, schema=S.SCHEMA)


def shard_partition(part: Partition, ctx: StageContext) -> PartitionOutput:
    settings = shard_settings(ctx.params)
    payload = part.payload
    rows = shard_rows(payload["staging"], payload["groups"], part.index)
    temp, positions = _write_tar(rows.to_pylist(), ctx, settings, payload["staging"])
    table = _table(rows, positions, payload["name"])
    side_files = {f"{SHARDS_DIR}/{payload['name']}": temp}
    return PartitionOutput(table=table, rows_in=rows.num_rows, side_files=side_files)
