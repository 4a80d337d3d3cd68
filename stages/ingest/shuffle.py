"""Ingest's shuffle: source records -> occurrence buckets -> host sub-buckets -> partitions.

Memory stays bounded by one bucket whatever the input size, and each pass can resume:

pass 1 (driver, streaming): every source is read chunk by chunk; each record gets a global
    sequence number `_seq` (source index << 40 | row) and is appended to the occurrence bucket of
    hash(provider, occurrence id), so all images of one occurrence meet in one file. The host is
    parsed from the URL text (`_host_key`, the partition key) and rows are counted per host.
pass 2 (dask, one task per occurrence bucket): images per occurrence are counted, the per-row
    rules run, and rows are assigned to host sub-buckets hash(url) % S_host, where
    S_host = ceil(rows of host / shuffle_rows). Copies of one URL thus meet in one sub-bucket.
    The bucket's rows are written as ONE split file (Arrow IPC), one record batch per
    sub-bucket, the batches' keys in its schema metadata: files grow with the buckets (M), not
    with buckets x sub-buckets (M x S, which at 200M rows would be millions of tiny files).
pass 3 (dask, one task per sub-bucket): its batch is read from every split file that has one,
    rows sorted by `_seq`, repeated records and duplicate URLs marked (first one kept), written
    as one file with row groups of `batch_size` rows.
Partition k of a sub-bucket is then its row group k: at most batch_size rows of one host. Once
the plan is written, the occurrence buckets and split files are deleted.

Every pass writes its outputs with atomic renames and a marker, so a killed run redoes only the
work whose marker is missing.
"""

from __future__ import annotations

import bisect
import json
import math
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
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
# Bumped when the staging layout changes, so a staging left by an older version is rebuilt
# rather than misread (it is part of the staging folder's key).
LAYOUT_VERSION = 2
PASS1_MARKER = "pass1.json"
PLAN_FILE = "plan.json"
STAGING_COMPRESSION = "lz4"
# Schema metadata of a split file: the sub-bucket key of each of its record batches, in order.
SPLIT_KEYS = b"tolpipe.split_keys"
# A sub-bucket's integer key is host_index * SUB_RADIX + sub (sub < SUB_RADIX).
SUB_RADIX = 100_000


def stable_hash(*columns: pa.Array) -> np.ndarray:
    """A uint64 per row that is the same in every process and run (unlike Python's hash())."""
    frame = pd.DataFrame({f"c{i}": col.to_pandas() for i, col in enumerate(columns)})
    return pd.util.hash_pandas_object(frame.fillna(""), index=False).to_numpy()


def host_keys(urls: pa.Array) -> pa.Array:
    """The partition key: the URL's host as written, lower-cased; "" when none can be read."""
    parsed = pc.extract_regex(pc.fill_null(urls, ""), HOST_PATTERN)
    return pc.fill_null(pc.utf8_lower(pc.struct_field(parsed, [0])), "")


def write_atomic(table: pa.Table, dest: Path, **options: Any) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = atomic.temp_name(dest)
    pq.write_table(table, temp, compression=STAGING_COMPRESSION, **options)
    atomic.publish(temp, dest)


class BucketWriter:
    """Appends tables to numbered bucket files, buffering rows per bucket (bounded in total)."""

    def __init__(self, folder: Path, flush_rows: int):
        self.folder, self.flush_rows = folder, flush_rows
        self.buffers: dict[int, list[pa.Table]] = {}
        self.buffered: Counter[int] = Counter()
        self.writers: dict[int, pq.ParquetWriter] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: int) -> Path:
        return self.folder / f"bucket-{key:05d}.parquet"

    def append(self, key: int, table: pa.Table) -> None:
        self.buffers.setdefault(key, []).append(table)
        self.buffered[key] += table.num_rows
        if self.buffered[key] >= self.flush_rows:
            self._flush(key)

    def _flush(self, key: int) -> None:
        tables = self.buffers.pop(key, [])
        self.buffered.pop(key, None)
        if not tables:
            return
        table = pa.concat_tables(tables)
        if key not in self.writers:
            path, schema = self.path(key), table.schema
            self.writers[key] = pq.ParquetWriter(path, schema, compression=STAGING_COMPRESSION)
        self.writers[key].write_table(table)

    def close(self) -> list[Path]:
        for key in list(self.buffers):
            self._flush(key)
        for writer in self.writers.values():
            writer.close()
        for key in self.writers:
            atomic.fsync_path(self.path(key))
        return [self.path(k) for k in sorted(self.writers)]


def split_by(table: pa.Table, keys: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
    """(key, rows with that key) for each distinct key, rows in their original order."""
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for chunk in np.split(order, bounds):
        if len(chunk):
            yield int(keys[chunk[0]]), table.take(pa.array(chunk))


@dataclass(frozen=True)
class StagingLayout:
    folder: Path

    @property
    def occurrence_dir(self) -> Path:
        return self.folder / "occurrences"

    def done_marker(self, name: str) -> Path:
        return self.folder / "done" / f"{name}.json"

    @property
    def split_dir(self) -> Path:
        return self.folder / "split"

    def split_file(self, bucket_name: str) -> Path:
        return self.split_dir / f"{bucket_name}.arrow"

    def final_file(self, host_index: int, sub: int) -> Path:
        return self.folder / "final" / f"h{host_index:06d}-s{sub:04d}.parquet"


def mark_done(path: Path, value: Any = True) -> None:
    atomic.write_text(path, canonical_json(value))


def read_marker(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def occurrence_bucket_count(total_bytes: int, bucket_mb: int) -> int:
    return max(1, math.ceil(total_bytes / (bucket_mb * 1024 * 1024)))


def pass1(
    batches: Iterator[tuple[int, pa.RecordBatch]],
    layout: StagingLayout,
    n_buckets: int,
    on_rows: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Stream (source index, batch) into occurrence buckets; return rows per host key."""
    # At most ~64k rows buffered across all buckets: the driver's memory stays flat.
    writer = BucketWriter(layout.occurrence_dir, max(1024, 65_536 // n_buckets))
    per_host: Counter[str] = Counter()
    for source_index, batch in batches:
        table = pa.Table.from_batches([batch])
        seq = pc.add(table["source_row"], pa.scalar(source_index << SEQ_SHIFT, pa.int64()))
        hosts = host_keys(table["url"])
        table = table.append_column("_seq", seq).append_column("_host_key", hosts)
        counts = pc.value_counts(hosts)
        per_host.update(dict(zip(counts.field(0).to_pylist(), counts.field(1).to_pylist(), strict=True)))
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


def add_images_in_occurrence(table: pa.Table) -> pa.Table:
    """Rows of the same (provider, occurrence id); rows without an id count 1."""
    frame = pd.DataFrame(
        {"provider": table["provider"].to_pandas(), "occ": table["occurrence_id"].to_pandas()}
    )
    counts = frame.groupby(["provider", "occ"], dropna=False)["occ"].transform("size")
    counts = counts.where(frame["occ"].notna(), 1)
    return table.append_column("images_in_occurrence", pa.array(counts.to_numpy(), pa.int32()))


def pass2_bucket(
    bucket_file: str,
    staging: str,
    hosts: list[str],
    subs: list[int],
    derive: Callable[[pa.Table, dict[str, Any]], pa.Table],
    params: dict[str, Any],
) -> int:
    """One occurrence bucket: derive its columns and write its rows to host sub-buckets."""
    layout = StagingLayout(Path(staging))
    name = Path(bucket_file).stem
    marker = layout.done_marker(f"pass2-{name}")
    done = read_marker(marker)
    if done is not None:
        return done
    table = derive(add_images_in_occurrence(pq.read_table(bucket_file)), params)
    host_idx = pc.index_in(table["_host_key"], value_set=pa.array(hosts)).to_numpy().astype(np.int64)
    n_subs = np.asarray(subs, dtype=np.uint64)[host_idx]
    sub = (stable_hash(pc.fill_null(table["url"], "")) % n_subs).astype(np.int64)
    write_split(table.schema, split_by(table, host_idx * SUB_RADIX + sub), layout.split_file(name))
    mark_done(marker, table.num_rows)
    return table.num_rows


def write_split(schema: pa.Schema, parts: Iterator[tuple[int, pa.Table]], dest: Path) -> None:
    """One record batch per (key, rows), keys ascending, atomically; keys in the schema metadata."""
    parts_list = list(parts)
    keys = [key for key, _ in parts_list]
    schema = schema.with_metadata({SPLIT_KEYS: json.dumps(keys).encode()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = atomic.temp_name(dest)
    options = pa.ipc.IpcWriteOptions(compression=STAGING_COMPRESSION)
    with pa.ipc.new_file(str(temp), schema, options=options) as writer:
        for _, rows in parts_list:
            # One batch per key: the batch index is the key's position in the metadata.
            (batch,) = rows.replace_schema_metadata(schema.metadata).combine_chunks().to_batches()
            writer.write_batch(batch)
    atomic.publish(temp, dest)


def split_keys(path: Path) -> list[int]:
    """The sub-bucket keys of a split file, in batch order (ascending); reads only its footer."""
    with pa.OSFile(str(path)) as source:
        return json.loads(pa.ipc.open_file(source).schema.metadata[SPLIT_KEYS])


def read_split(path: Path, key: int) -> pa.Table | None:
    """The rows of sub-bucket `key` in a split file (only that batch is read), or None."""
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        keys = json.loads(reader.schema.metadata[SPLIT_KEYS])
        at = bisect.bisect_left(keys, key)
        if at == len(keys) or keys[at] != key:
            return None
        return pa.Table.from_batches([reader.get_batch(at)]).replace_schema_metadata(None)


def pass3_sub_bucket(
    key: tuple[int, int],
    staging: str,
    split_files: list[str],
    finish: Callable[[pa.Table], pa.Table],
    batch_size: int,
) -> int:
    """One host sub-bucket: gather its rows from the split files, sort, dedup (`finish`), write
    with row groups of batch_size rows."""
    layout = StagingLayout(Path(staging))
    dest = layout.final_file(*key)
    if dest.exists():
        return pq.ParquetFile(dest).metadata.num_rows
    wanted = key[0] * SUB_RADIX + key[1]
    parts = [t for t in (read_split(Path(f), wanted) for f in split_files) if t is not None]
    table = pa.concat_tables(parts).sort_by("_seq")
    table = finish(table)
    write_atomic(table, dest, row_group_size=batch_size)
    return table.num_rows


def sub_bucket_keys(split_files: list[str]) -> list[tuple[int, int]]:
    """(host index, sub-bucket) pairs that received rows, ascending."""
    keys = {key for f in split_files for key in split_keys(Path(f))}
    return [divmod(key, SUB_RADIX) for key in sorted(keys)]


def drop_intermediates(layout: StagingLayout) -> None:
    """Once the plan exists only the final files are read: free the disk and the inodes."""
    clear(layout.occurrence_dir)
    clear(layout.split_dir)


def plan_partitions(
    layout: StagingLayout, hosts: list[str], keys: list[tuple[int, int]]
) -> list[dict[str, Any]]:
    """One partition per row group of each final sub-bucket file, hosts in sorted order."""
    partitions = []
    for host_index, sub in keys:
        path = layout.final_file(host_index, sub)
        meta = pq.ParquetFile(path).metadata
        for group in range(meta.num_row_groups):
            partitions.append({
                "host": hosts[host_index],
                "sub": sub,
                "file": str(path.relative_to(layout.folder)),
                "row_group": group,
                "rows": meta.row_group(group).num_rows,
            })  # fmt: skip
    return partitions


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
