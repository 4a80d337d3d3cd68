"""Ingest's two-pass shuffle: source records -> occurrence buckets -> host buckets.

Memory stays bounded by one bucket whatever the input size:

pass 1 (driver, streaming): every source is read chunk by chunk; each record gets a global
    sequence number `_seq` (source index << 40 | row) and is appended to the occurrence bucket of
    hash(provider, occurrence id), so all images of one occurrence meet in one file. The host is
    parsed from the URL text (`_host_key`) and rows are counted per host.
pass 2 (dask, one task per occurrence bucket): images per occurrence are counted, the per-row
    rules run (sources' and rules' own module), and rows are appended to host sub-buckets
    hash(url) % S_host, where S_host = ceil(rows of host / shuffle_rows). Copies of one URL thus
    meet in one sub-bucket, which is all URL dedup needs.
partitions: per host (sorted), its sub-buckets in order, each sorted by `_seq`, cut into batches
    of `batch_size`. A partition reads the sub-bucket(s) it overlaps, dedups them and slices.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.digest import canonical_json

SEQ_SHIFT = 40  # rows per source < 2**40
HOST_PATTERN = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^/?#:]*)"
PLAN_FILE = "plan.json"


def stable_hash(*columns: pa.Array) -> np.ndarray:
    """A uint64 per row that is the same in every process and run (unlike Python's hash())."""
    frame = pd.DataFrame({f"c{i}": col.to_pandas() for i, col in enumerate(columns)})
    return pd.util.hash_pandas_object(frame.fillna(""), index=False).to_numpy()


def host_keys(urls: pa.Array) -> pa.Array:
    """The partition key: the URL's host as written, lower-cased; "" when none can be read."""
    parsed = pc.extract_regex(pc.fill_null(urls, ""), HOST_PATTERN)
    hosts = pc.struct_field(parsed, [0])
    return pc.fill_null(pc.utf8_lower(hosts), "")


class BucketWriter:
    """Appends tables to numbered bucket files, buffering a few rows per bucket."""

    def __init__(self, folder: Path, prefix: str, flush_rows: int):
        self.folder, self.prefix, self.flush_rows = folder, prefix, flush_rows
        self.buffers: dict[Any, list[pa.Table]] = {}
        self.buffered: Counter[Any] = Counter()
        self.writers: dict[Any, pq.ParquetWriter] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: Any) -> Path:
        name = "-".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
        return self.folder / f"{name}{self.prefix}.parquet"

    def append(self, key: Any, table: pa.Table) -> None:
        self.buffers.setdefault(key, []).append(table)
        self.buffered[key] += table.num_rows
        if self.buffered[key] >= self.flush_rows:
            self._flush(key)

    def _flush(self, key: Any) -> None:
        tables = self.buffers.pop(key, [])
        self.buffered.pop(key, None)
        if not tables:
            return
        table = pa.concat_tables(tables)
        if key not in self.writers:
            self.writers[key] = pq.ParquetWriter(self.path(key), table.schema, compression="lz4")
        self.writers[key].write_table(table)

    def close(self) -> list[Any]:
        for key in list(self.buffers):
            self._flush(key)
        for writer in self.writers.values():
            writer.close()
        return sorted(self.writers)


def split_by(table: pa.Table, keys: np.ndarray) -> Iterator[tuple[Any, pa.Table]]:
    """(key, rows with that key) for each distinct key, rows in their original order."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    for chunk in np.split(order, bounds):
        if len(chunk):
            yield keys[chunk[0]].item(), table.take(pa.array(chunk))


@dataclass(frozen=True)
class StagingLayout:
    folder: Path

    @property
    def occurrence_dir(self) -> Path:
        return self.folder / "occurrences"

    @property
    def host_dir(self) -> Path:
        return self.folder / "hosts"

    def host_bucket_dir(self, host_index: int, sub: int) -> Path:
        return self.host_dir / f"h{host_index:06d}-s{sub:04d}"


def occurrence_bucket_count(total_bytes: int, bucket_mb: int) -> int:
    return max(1, math.ceil(total_bytes / (bucket_mb * 1024 * 1024)))


def pass1(
    batches: Iterator[tuple[int, pa.RecordBatch]],
    layout: StagingLayout,
    n_buckets: int,
    on_rows: Any = None,
) -> dict[str, int]:
    """Stream (source index, batch) into occurrence buckets; return rows per host key."""
    writer = BucketWriter(layout.occurrence_dir, "", max(1024, 262_144 // n_buckets))
    per_host: Counter[str] = Counter()
    for source_index, batch in batches:
        table = pa.Table.from_batches([batch])
        seq = pc.add(table["source_row"], pa.scalar(source_index << SEQ_SHIFT, pa.int64()))
        hosts = host_keys(table["url"])
        table = table.append_column("_seq", seq).append_column("_host_key", hosts)
        per_host.update(Counter(hosts.to_pylist()))
        occurrence = pc.if_else(
            pc.is_null(table["occurrence_id"]), pc.cast(seq, pa.string()), table["occurrence_id"]
        )
        buckets = stable_hash(table["provider"], occurrence) % n_buckets
        for bucket, rows in split_by(table, buckets):
            writer.append(bucket, rows)
        if on_rows:
            on_rows(table.num_rows)
    writer.close()
    return dict(sorted(per_host.items()))


def sub_bucket_counts(host_rows: dict[str, int], shuffle_rows: int) -> dict[str, int]:
    return {host: max(1, math.ceil(n / shuffle_rows)) for host, n in host_rows.items()}


def pass2_bucket(
    bucket_file: str,
    staging: str,
    host_index: dict[str, int],
    subs: dict[str, int],
    classify: Any,
    params: dict[str, Any],
) -> int:
    """One occurrence bucket: classify its rows and append them to host sub-buckets."""
    layout = StagingLayout(Path(staging))
    table = pq.read_table(bucket_file)
    table = add_images_in_occurrence(table)
    table = classify(table, params)
    host_idx = np.array([host_index[h] for h in table["_host_key"].to_pylist()], dtype=np.int64)
    n_subs = np.array([subs[h] for h in table["_host_key"].to_pylist()], dtype=np.uint64)
    sub = (stable_hash(pc.fill_null(table["url"], "")) % n_subs).astype(np.int64)
    keys = host_idx * 100_000 + sub
    name = Path(bucket_file).stem
    for key, rows in split_by(table, keys):
        folder = layout.host_bucket_dir(key // 100_000, key % 100_000)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, folder / f"from-{name}.parquet", compression="lz4")
    return table.num_rows


def add_images_in_occurrence(table: pa.Table) -> pa.Table:
    """Still-image rows of the same (provider, occurrence id); rows without an id count 1."""
    frame = pd.DataFrame(
        {
            "provider": table["provider"].to_pandas(),
            "occ": table["occurrence_id"].to_pandas(),
        }
    )
    counts = frame.groupby(["provider", "occ"], dropna=False)["occ"].transform("size")
    counts = counts.where(frame["occ"].notna(), 1)
    return table.append_column("images_in_occurrence", pa.array(counts.to_numpy(), pa.int32()))


def plan_partitions(
    layout: StagingLayout, host_index: dict[str, int], subs: dict[str, int], batch_size: int
) -> list[dict[str, Any]]:
    """Cut each host's row sequence (its sub-buckets in order) into batches of batch_size."""
    partitions = []
    for host, index in host_index.items():
        segments = []
        for sub in range(subs[host]):
            folder = layout.host_bucket_dir(index, sub)
            files = sorted(folder.glob("*.parquet")) if folder.exists() else []
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            if rows:
                segments.append({"folder": str(folder.relative_to(layout.folder)), "rows": rows})
        partitions.extend(_cut(host, segments, batch_size))
    return partitions


def _cut(host: str, segments: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    total = sum(s["rows"] for s in segments)
    out = []
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        pieces, offset = [], 0
        for seg in segments:
            lo, hi = max(start, offset), min(stop, offset + seg["rows"])
            if lo < hi:
                pieces.append({"folder": seg["folder"], "start": lo - offset, "stop": hi - offset})
            offset += seg["rows"]
        out.append({"host": host, "rows": stop - start, "pieces": pieces})
    return out


def write_plan(layout: StagingLayout, plan: dict[str, Any]) -> None:
    atomic.write_text(layout.folder / PLAN_FILE, canonical_json(plan))


def read_plan(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / PLAN_FILE).read_text())
    except FileNotFoundError:
        return None


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
