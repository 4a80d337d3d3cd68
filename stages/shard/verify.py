"""`tolpipe verify shards`: re-read every shard and check it against the manifests.

Per committed 06 partition: the tar exists with the size and sha256 its commit record names;
every member is a regular file `<key>.<ext>` with the fixed tar fields; the samples are exactly
the partition's ok rows, in position order, each with exactly the expected members; the jpg's
size and MD5 are the manifest's; every text member and the json are what the caption rules give
for the manifest row; each row is in the shard and split its keyed hashes give. Then
shards/sizes.json equals the committed counts, no tar lies in shards/ that no record lists, and
the manifest accounts for every upstream ok row (per upstream partition).

Returns the problems, one line each, naming the shard and sample (empty: all good).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from pipeline.runrecord import planned_partitions
from stages.shard.assign import ORDER, SPLIT_NAMES, VAL, Layout, held_out, keyed_hashes
from stages.shard.captions import RANKS, names_of
from stages.shard.publish import SIZES, shards_dir, sizes_of
from stages.shard.sample import attribution, json_member, member_names, taxon_members
from stages.shard.settings import ShardSettings, shard_settings

STAGE_DIR = "06_shard"
TAR_PATTERNS = ("shard-*.tar", "val-*.tar")
# Problems listed per shard; the rest are counted in one line.
MAX_PROBLEMS_PER_SHARD = 20


def _members(path: Path) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, mode="r|") as archive:
        for info in archive:
            handle = archive.extractfile(info) if info.isfile() else None
            yield info, handle.read() if handle else b""


def _group(members: Iterator[tuple[tarfile.TarInfo, bytes]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {ext: (info, data)}) per run of members sharing a key."""
    key, sample = None, {}
    for info, data in members:
        prefix, _, ext = info.name.partition(".")
        if prefix != key and sample:
            yield key, sample
            sample = {}
        key = prefix
        sample.setdefault(ext, []).append((info, data))
    if sample:
        yield key, sample


def _expected_members(row: dict[str, Any], settings: ShardSettings) -> dict[str, bytes] | None:
    """The text members and json the caption rules give for a manifest row (None: no taxon)."""
    taxon = taxon_members(row, settings.missing_values, settings.txt_caption)
    if taxon is None:
        return None
    return {**taxon.texts, "json": json_member(attribution(row, taxon.fields))}


def _check_info(info: tarfile.TarInfo, settings: ShardSettings) -> str | None:
    if not info.isfile():
        return f"member {info.name} is not a regular file"
    fixed = (info.mtime, info.mode, info.uname, info.gname, info.uid, info.gid)
    want = (settings.tar_mtime, settings.tar_mode, settings.tar_owner, settings.tar_owner, 0, 0)
    return None if fixed == want else f"member {info.name}: tar fields {fixed} != {want}"


Sample = dict[str, list[tuple[tarfile.TarInfo, bytes]]]


def _check_sample(key: str, sample: Sample, row: dict[str, Any], settings: ShardSettings) -> list[str]:
    problems = []
    want_exts = member_names(settings.txt_caption)
    if sorted(sample) != want_exts or any(len(v) != 1 for v in sample.values()):
        problems.append(f"sample {key}: members {sorted(sample)} != {want_exts}")
    for entries in sample.values():
        problems += [p for info, _ in entries if (p := _check_info(info, settings))]
    jpeg = sample.get("jpg", [(None, b"")])[0][1]
    md5 = hashlib.md5(jpeg, usedforsecurity=False).hexdigest()
    if md5 != row["jpeg_md5"] or len(jpeg) != row["jpeg_bytes"]:
        problems.append(f"sample {key}: jpg MD5 {md5} ({len(jpeg)} bytes) != manifest {row['jpeg_md5']} "
                        f"({row['jpeg_bytes']} bytes)")  # fmt: skip
    expected = _expected_members(row, settings) or {}
    for ext, data in sorted(expected.items()):
        got = sample.get(ext, [(None, None)])[0][1]
        if got != data:
            problems.append(f"sample {key}: {ext} is {got!r}, the manifest row gives {data!r}")
    return problems


def _check_tar(path: Path, rows: list[dict[str, Any]], settings: ShardSettings) -> list[str]:
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["position"])
    by_key = {r["key"]: r for r in ok}
    seen: list[str] = []
    problems: list[str] = []
    try:
        for key, sample in _group(_members(path)):
            seen.append(key)
            if key not in by_key:
                problems.append(f"sample {key} is not an ok row of the manifest")
                continue
            problems += _check_sample(key, sample, by_key[key], settings)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"unreadable after {len(seen)} samples: {type(exc).__name__}: {exc}")
    want = [r["key"] for r in ok]
    if seen != want:
        missing = sorted(set(want) - set(seen))
        dupes = sorted(k for k, n in Counter(seen).items() if n > 1)
        problems.append(f"samples in the tar ({len(seen)}) != ok rows in position order ({len(want)})"
                        + (f"; missing {missing[:3]}" if missing else "")
                        + (f"; repeated {dupes[:3]}" if dupes else ""))  # fmt: skip
    return problems


def _hash_key(row: dict[str, Any], settings: ShardSettings) -> str | None:
    """What the row's split is drawn from: its uuid or its scientific name (None: no taxon)."""
    names = names_of({r: row[r] for r in RANKS}, row["scientific_name"], row["common_name"],
                     settings.missing_values)  # fmt: skip
    if names is None:
        return None
    return names.scientific if settings.val_by == "species" else row["uuid"]


def _check_assignment(rows: list[dict[str, Any]], index: int, layout: Layout,
                      settings: ShardSettings) -> list[str]:  # fmt: skip
    """Each row's split and shard are those its keyed hashes give."""
    if not rows:
        return []
    held = held_out([_hash_key(r, settings) for r in rows], settings.seed, settings.val_fraction)
    split = np.where(held, VAL, 0).astype(np.int8)
    target = layout.partition(split, keyed_hashes([r["uuid"] for r in rows], settings.seed, ORDER))
    problems = []
    for row, s, t in zip(rows, split, target, strict=True):
        if row["split"] != SPLIT_NAMES[s] or int(t) != index:
            problems.append(f"row {row['uuid']}: in {row['split']} partition {index}, its hashes give "
                            f"{SPLIT_NAMES[s]} partition {int(t)}")  # fmt: skip
    return problems


def _check_partition(root: Path, store: ManifestStore, index: int, record: dict[str, Any], layout: Layout,
                     defaults: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:  # fmt: skip
    settings = shard_settings({**defaults, **record["params"]})
    name = layout.name(index)
    rel = f"shards/{name}"
    problems = []
    if list(record["side_files"]) != [rel]:
        problems.append(f"commit record lists {sorted(record['side_files'])}, expected [{rel!r}]")
    path = root / rel
    rows = pq.read_table(store.part_path(index)).to_pylist()
    if not path.is_file():
        return [f"missing: {rel}"], rows
    meta = record["side_files"].get(rel, {})
    sha, size = sha256_file(path), path.stat().st_size
    if sha != meta.get("sha256") or size != meta.get("bytes"):
        problems.append(f"sha256 {sha} ({size} bytes) != commit record {meta.get('sha256')} "
                        f"({meta.get('bytes')} bytes)")  # fmt: skip
    problems += _check_tar(path, rows, settings)
    problems += _check_assignment(rows, index, layout, settings)
    samples = sum(r["status"] == "ok" for r in rows)
    counted = {r["shard_samples"] for r in rows}
    if counted - {samples} or samples != record["counts"]["by_status"]["ok"]:
        problems.append(f"sample count: {samples} ok rows, manifest says {sorted(counted)}")
    return problems, rows


def _layout(records: dict[int, dict[str, Any]]) -> Layout:
    """The committed shards' layout: training shards up to the highest number, then validation."""
    keys = [r.get("key") or "" for r in records.values()]
    train = 1 + max((int(k[6:11]) for k in keys if k.startswith("shard-")), default=-1)
    val = 1 + max((int(k[4:9]) for k in keys if k.startswith("val-")), default=-1)
    return Layout(train, val)


def _check_sizes(root: Path, records: dict[int, dict[str, Any]], layout: Layout) -> list[str]:
    path = shards_dir(root) / SIZES
    if not path.is_file():
        return [f"shards/{SIZES} is missing (written once every shard is committed: `tolpipe run shard`)"]
    try:
        sizes = json.loads(path.read_text())
    except ValueError as exc:
        return [f"shards/{SIZES} is not JSON: {exc}"]
    want = sizes_of(records, layout) if set(records) == set(range(layout.total)) else None
    return [] if sizes == want else [f"shards/{SIZES} {sizes} != committed shards {want}"]


def _check_stray(root: Path, records: dict[int, dict[str, Any]]) -> list[str]:
    listed = {rel for r in records.values() for rel in r["side_files"]}
    found = {f"shards/{p.name}" for pattern in TAR_PATTERNS for p in shards_dir(root).glob(pattern)}
    return [f"{rel}: no commit record lists it" for rel in sorted(found - listed)]


def _check_accounting(root: Path, per_source: Counter[int], upstream: str) -> list[str]:
    """Every upstream ok row is in the 06 manifest, per upstream partition."""
    records = ManifestStore(root, upstream).committed_records()
    want = {i: int(r["counts"]["by_status"]["ok"]) for i, r in records.items()}
    got = {i: n for i, n in per_source.items() if n}
    if got == {i: n for i, n in want.items() if n}:
        return []
    diff = sorted(i for i in set(want) | set(got) if want.get(i, 0) != got.get(i, 0))
    return [f"{upstream} part-{i:05d}: {want.get(i, 0)} ok rows, 06 has {got.get(i, 0)}" for i in diff]


def verify(root: str | Path, config: dict[str, Any]) -> list[str]:
    from stages.shard import UPSTREAM

    root = Path(root)
    store = ManifestStore(root, STAGE_DIR)
    records = store.committed_records()
    if not records:
        return [f"no committed shards under {root / 'manifests' / STAGE_DIR}: run `tolpipe run shard` first"]
    layout = _layout(records)
    problems: list[str] = []
    per_source: Counter[int] = Counter()
    for index, record in sorted(records.items()):
        found, rows = _check_partition(root, store, index, record, layout, config["shard"])
        per_source.update(r["source_partition"] for r in rows)
        name = layout.name(index)
        problems += [f"shards/{name}: {p}" for p in found[:MAX_PROBLEMS_PER_SHARD]]
        if len(found) > MAX_PROBLEMS_PER_SHARD:
            problems.append(f"shards/{name}: {len(found) - MAX_PROBLEMS_PER_SHARD} more problems")
    planned = max(layout.total, planned_partitions(root, STAGE_DIR) or 0)
    missing = sorted(set(range(planned)) - set(records))
    problems += [f"06_shard part-{i:05d} is not committed" for i in missing]
    problems += _check_sizes(root, records, layout)
    problems += _check_stray(root, records)
    problems += _check_accounting(root, per_source, UPSTREAM)
    return problems
