"""The staging pass: the rows of the shards to (re)build, gathered so that each shard-writing task
reads only its own rows, from every upstream partition, in bounded memory.

Upstream partitions are taken in groups of consecutive partitions of about shard.staging_rows
rows; one dask task per group (under work/06_shard/staging-<plan digest>/):

- streams each partition's stored images (a row group at a time), checks them against 02 (the
  store file's sha256 against its commit record; when it differs, each image's MD5 against
  `stored_md5`, so only damaged images fail), shrinks them when configured, and appends the
  bytes to the group's blob file;
- appends each partition's rows (06's manifest columns, the blob offset and length), sorted by
  (shard, order key, uuid), to the group's Arrow IPC file as one run, and keeps where each
  shard's rows start in each run (.npy, runs x shards). One upstream partition is in memory at
  a time, whatever shard.staging_rows is.

A shard-writing task then copies, from each group, the row ranges its offsets give (memory-
mapped), and the bytes at its rows' blob offsets. Files per group, not per (group, shard): the
staging holds 3 files per group whatever the number of shards. Each file is written to a temp
name and renamed, and a group's marker is written last, so a killed run redoes only unfinished
groups.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import atomic
from pipeline.digest import canonical_json, sha256_file
from pipeline.joined import IMAGE_STAGE, image_store_path, iter_images
from pipeline.ledger import ManifestStore
from stages.shard import schema as S
from stages.shard.assign import SPLIT_NAMES, Layout
from stages.shard.images import ImageUnreadable, md5_hex, shrink
from stages.shard.rows import STORED, PartitionRows, read_rows
from stages.shard.settings import ShardSettings, shard_settings

STAGING_VERSION = 1
KEYS_BATCH_ROWS = 1024  # rows per record batch of a group's keys file
PLAN_FILE = "staging.json"  # what the staging covers, written first
COMPLETE = "complete.json"  # every group done
ROW_FIELDS = [
    pa.field("uuid", pa.string(), nullable=False),
    pa.field("target", pa.int32(), nullable=False),  # partition (shard) index
    pa.field("h", pa.uint64(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("source_partition", pa.int32(), nullable=False),
    *[pa.field(name, pa.string()) for name in S.TEXT_COLUMNS],
    pa.field("blob_offset", pa.int64()),
    pa.field("jpeg_bytes", pa.int64()),
    pa.field("jpeg_md5", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("resized", pa.bool_()),
]
ROWS_SCHEMA = pa.schema(ROW_FIELDS)
SORT_KEYS = [("target", "ascending"), ("h", "ascending"), ("uuid", "ascending")]


@dataclass(frozen=True)
class StagingLayout:
    folder: Path

    def blob(self, group: int) -> Path:
        return self.folder / f"group-{group:05d}.blob"

    def rows(self, group: int) -> Path:
        return self.folder / f"group-{group:05d}.arrow"

    def offsets(self, group: int) -> Path:
        return self.folder / f"group-{group:05d}.offsets.npy"

    def marker(self, group: int) -> Path:
        return self.folder / "done" / f"group-{group:05d}.json"

    @property
    def covered(self) -> Path:
        return self.folder / "covered.npy"


def groups_of(row_counts: dict[int, int], staging_rows: int) -> list[list[int]]:
    """Consecutive upstream partitions, about staging_rows rows per group (at least one each)."""
    groups: list[list[int]] = []
    filled = 0
    for index in sorted(row_counts):
        if not groups or filled + row_counts[index] > staging_rows:
            groups.append([])
            filled = 0
        groups[-1].append(index)
        filled += row_counts[index]
    return [g for g in groups if g]


# ---- one group (worker side) -------------------------------------------------------------------


class _Blob:
    """Append-only file of image bytes (a temp name until published)."""

    def __init__(self, dest: Path):
        self.dest, self.temp = dest, atomic.temp_name(dest)
        self.handle = open(self.temp, "wb")  # noqa: SIM115 - closed in publish()
        self.size = 0

    def append(self, data: bytes) -> int:
        offset = self.size
        self.handle.write(data)
        self.size += len(data)
        return offset

    def publish(self) -> None:
        self.handle.close()
        atomic.publish(self.temp, self.dest)


def store_intact(root: str, index: int) -> bool:
    """Whether partition `index`'s image store file still has the sha256 02 committed it with
    (one hash of the file instead of an MD5 per image; images are checked one by one when not)."""
    record = ManifestStore(root, IMAGE_STAGE).read_record(index) or {}
    path = image_store_path(root, index)
    meta = record.get("side_files", {}).get(str(path.relative_to(root)), {})
    return meta.get("sha256") == sha256_file(path)


def _images(rows: PartitionRows, chosen: np.ndarray, settings: ShardSettings, blob: _Blob,
            root: str) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per chosen uuid with a taxon: its image facts in the blob, or its failure."""
    uuids = rows.table["uuid"].to_pylist()
    md5s, widths, heights = (rows.table[c].to_pylist() for c in STORED)
    where = {uuids[i]: i for i in np.flatnonzero(chosen & rows.captioned)}
    found: dict[str, dict[str, Any]] = {}
    intact = bool(where) and store_intact(root, rows.index)
    for uuid, jpeg in iter_images(root, rows.index, set(where)):
        i = where[uuid]
        md5 = md5s[i] if intact else md5_hex(jpeg)
        if md5 != md5s[i]:
            detail = f"stored bytes have MD5 {md5}, 02 recorded {md5s[i]}"
            found[uuid] = {"status": "failed", "reason": S.IMAGE_MISMATCH, "detail": detail}
            continue
        try:
            image = shrink(jpeg, widths[i], heights[i], settings.resize_shortest_side,
                           settings.resize_jpeg_quality, settings.resize_jpeg_subsampling)  # fmt: skip
        except ImageUnreadable as exc:
            found[uuid] = {"status": "failed", "reason": S.IMAGE_UNREADABLE, "detail": str(exc)}
            continue
        found[uuid] = {"status": "ok", "blob_offset": blob.append(image.jpeg), "jpeg_bytes": len(image.jpeg),
                       "jpeg_md5": image.md5 if image.resized else md5s[i], "width": image.width,
                       "height": image.height, "resized": image.resized}  # fmt: skip
    for uuid in set(where) - set(found):
        detail = f"no image for this row in 02's image store part-{rows.index:05d}"
        found[uuid] = {"status": "failed", "reason": S.IMAGE_MISSING, "detail": detail}
    return found


NO_TAXON_DETAIL = "no rank and no scientific name in 03: nothing to caption"


def _partition_rows(rows: PartitionRows, target: np.ndarray, chosen: np.ndarray,
                    found: dict[str, dict[str, Any]]) -> pa.Table:  # fmt: skip
    """The chosen rows of one upstream partition in ROWS_SCHEMA (upstream order)."""
    picked = rows.table.filter(pa.array(chosen))
    idx = np.flatnonzero(chosen)
    facts = [found.get(u, {"status": "dropped", "reason": S.NO_TAXON, "detail": NO_TAXON_DETAIL})
             for u in picked["uuid"].to_pylist()]  # fmt: skip
    columns: dict[str, Any] = {
        "uuid": picked["uuid"], "target": pa.array(target[idx], pa.int32()),
        "h": pa.array(rows.h[idx], pa.uint64()),
        "split": pa.array([SPLIT_NAMES[s] for s in rows.split[idx]], pa.string()),
        "source_partition": pa.array(np.full(len(idx), rows.index), pa.int32()),
    }  # fmt: skip
    for name in S.TEXT_COLUMNS:
        columns[name] = picked[name]
    for field in ROW_FIELDS:
        if field.name not in columns:
            columns[field.name] = pa.array([f.get(field.name) for f in facts], field.type)
    return pa.table([columns[f.name] for f in ROW_FIELDS], schema=ROWS_SCHEMA)


def stage_group(root: str, folder: str, group: int, partitions: list[int], upstream: str,
                params: dict[str, Any], layout: tuple[int, int]) -> int:  # fmt: skip
    """Worker side: stage one group of upstream partitions; returns its row count. One upstream
    partition is in memory at a time: its rows are sorted by (shard, order key, uuid) and
    appended to the group's rows file as one run, and the row where each shard starts in each
    run is kept (offsets: runs x (shards + 1))."""
    staging = StagingLayout(Path(folder))
    if staging.marker(group).exists():
        return json.loads(staging.marker(group).read_text())["rows"]
    settings = shard_settings(params)
    shards = Layout(*layout)
    covered = np.load(staging.covered)
    blob = _Blob(staging.blob(group))
    dest = staging.rows(group)
    temp = atomic.temp_name(dest)
    offsets = np.zeros((len(partitions), shards.total + 1), dtype=np.int64)
    written = 0
    with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, ROWS_SCHEMA) as writer:
        for run, index in enumerate(partitions):
            rows = read_rows(root, index, upstream, settings)
            target = shards.partition(rows.split, rows.h)
            chosen = covered[target] if len(target) else np.zeros(0, dtype=bool)
            table = _partition_rows(rows, target, chosen, _images(rows, chosen, settings, blob, root))
            table = table.take(pc.sort_indices(table, SORT_KEYS))
            for batch in table.combine_chunks().to_batches(max_chunksize=KEYS_BATCH_ROWS):
                writer.write_batch(batch)
            starts = np.searchsorted(table["target"].to_numpy(), np.arange(shards.total + 1), side="left")
            offsets[run] = written + starts
            written += table.num_rows
    blob.publish()
    atomic.publish(temp, dest)
    _write_npy(offsets, staging.offsets(group))
    atomic.write_text(staging.marker(group), canonical_json({"rows": written}))
    return written


def _write_npy(array: np.ndarray, dest: Path) -> None:
    temp = atomic.temp_name(dest)
    with open(temp, "wb") as handle:
        np.save(handle, array)
    atomic.publish(temp, dest)


# ---- reading a shard's rows (worker side) ------------------------------------------------------


def shard_rows(folder: str, groups: int, index: int) -> pa.Table:
    """Every staged row of partition `index`, with its group, in (order key, uuid) order. Only
    the shard's rows are copied out of the memory-mapped rows files."""
    staging = StagingLayout(Path(folder))
    parts = []
    for group in range(groups):
        offsets = np.load(staging.offsets(group), mmap_mode="r")
        ranges = [(int(start), int(stop)) for start, stop in zip(offsets[:, index], offsets[:, index + 1],
                                                                  strict=True) if stop > start]  # fmt: skip
        if not ranges:
            continue
        with pa.memory_map(str(staging.rows(group))) as source:
            mapped = pa.ipc.open_file(source).read_all()  # zero-copy: nothing read yet
            # Copy out only the shard's ranges (slices are views; combining copies just them).
            table = pa.concat_tables([mapped.slice(start, stop - start) for start, stop in ranges])
            table = table.combine_chunks()
        parts.append(table.append_column("group", pa.array(np.full(table.num_rows, group), pa.int32())))
    if not parts:
        return ROWS_SCHEMA.append(pa.field("group", pa.int32())).empty_table()
    table = pa.concat_tables(parts)
    return table.take(pc.sort_indices(table, [("h", "ascending"), ("uuid", "ascending")]))


# ---- the staging folder (driver side) ----------------------------------------------------------


def prepare_folder(folder: Path, covered: np.ndarray, description: dict[str, Any]) -> bool:
    """Make `folder` the staging of the `covered` partitions; True when it is already complete.
    A staging left by a killed run is kept when it covers the same partitions (its finished
    groups are not redone) or a superset; any other is replaced."""
    plan = folder / PLAN_FILE
    if plan.exists():
        known = json.loads(plan.read_text())
        old = np.load(folder / "covered.npy") if (folder / "covered.npy").exists() else None
        if known.get("description") == description and old is not None and old.shape == covered.shape \
                and not (covered & ~old).any():  # fmt: skip
            return (folder / COMPLETE).exists()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _write_npy(covered, folder / "covered.npy")
    atomic.write_text(plan, canonical_json({"version": STAGING_VERSION, "description": description}))
    return False


def mark_complete(folder: Path) -> None:
    atomic.write_text(folder / COMPLETE, "{}")


def remove_other_stagings(work: Path, keep: Path | None) -> None:
    for old in work.glob("staging-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def blob_reader(folder: str, group: int) -> int:
    """An open file descriptor on a group's blob (os.pread it; close it after)."""
    return os.open(StagingLayout(Path(folder)).blob(group), os.O_RDONLY)
