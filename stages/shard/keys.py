"""The keys pass (metadata only, one dask task per upstream partition): per row its order key,
split, whether it has a taxon, and its row digest, kept as a small Parquet file per partition
under work/06_shard/keys/, named by the digest of what it was derived from (the upstream
partitions' files and the output parameters). A rerun over unchanged upstream partitions reuses
the files, so deciding that nothing changed reads no image and no manifest.

Then the driver adds the files up per shard (rows, samples, digest), one file at a time: its
memory grows with the number of shards, not with the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.digest import digest_json
from stages.shard.assign import VAL, Layout
from stages.shard.rows import read_rows
from stages.shard.settings import shard_settings

# Bumped when what a keys file holds changes, so old files are rebuilt rather than misread.
KEYS_VERSION = 1
COUNTS = b"tolpipe.counts"
KEYS_SCHEMA = pa.schema([
    pa.field("split", pa.int8()),
    pa.field("h", pa.uint64()),
    pa.field("captioned", pa.bool_()),
    pa.field("d0", pa.uint64()),
    pa.field("d1", pa.uint64()),
])  # fmt: skip


def keys_path(folder: Path, index: int, sources: dict[str, str], params: dict[str, Any]) -> Path:
    digest = digest_json({"version": KEYS_VERSION, "sources": sources, "params": params})
    return folder / f"part-{index:05d}-{digest[:16]}.parquet"


def write_keys(root: str, index: int, upstream: str, params: dict[str, Any], dest: str) -> dict[str, int]:
    """Worker side: the keys file of one upstream partition; returns its counts."""
    rows = read_rows(root, index, upstream, shard_settings(params))
    captioned = rows.captioned
    counts = {"rows": rows.table.num_rows, "train": int((captioned & (rows.split != VAL)).sum()),
              "val": int((captioned & (rows.split == VAL)).sum())}  # fmt: skip
    table = pa.table([pa.array(rows.split, pa.int8()), pa.array(rows.h, pa.uint64()),
                      pa.array(captioned), pa.array(rows.digests[:, 0], pa.uint64()),
                      pa.array(rows.digests[:, 1], pa.uint64())],
                     schema=KEYS_SCHEMA.with_metadata({COUNTS: json.dumps(counts).encode()}))  # fmt: skip
    temp = atomic.temp_name(Path(dest))
    pq.write_table(table, temp, compression="zstd")
    atomic.publish(temp, Path(dest))
    return counts


def read_counts(path: Path) -> dict[str, int]:
    return json.loads(pq.read_schema(path).metadata[COUNTS])


@dataclass
class ShardSums:
    """Per partition of this stage: rows, samples (rows with a taxon) and the digest limbs."""

    rows: np.ndarray
    samples: np.ndarray
    d0: np.ndarray
    d1: np.ndarray

    @classmethod
    def empty(cls, n: int) -> ShardSums:
        return cls(*(np.zeros(n, dtype=dtype) for dtype in (np.int64, np.int64, np.uint64, np.uint64)))

    def add(self, table: pa.Table, layout: Layout) -> None:
        split = table["split"].to_numpy()
        target = layout.partition(split, table["h"].to_numpy())
        np.add.at(self.rows, target, 1)
        np.add.at(self.samples, target, table["captioned"].to_numpy(zero_copy_only=False).astype(np.int64))
        np.add.at(self.d0, target, table["d0"].to_numpy())
        np.add.at(self.d1, target, table["d1"].to_numpy())

    def inputs(self, index: int) -> str:
        """`rows:samples:digest` of one partition: what its shard is built from."""
        digest = f"{int(self.d0[index]):016x}{int(self.d1[index]):016x}"
        return f"{self.rows[index]}:{self.samples[index]}:{digest}"


def add_up(paths: list[Path], layout: Layout) -> ShardSums:
    sums = ShardSums.empty(layout.total)
    for path in paths:
        sums.add(pq.read_table(path), layout)
    return sums
