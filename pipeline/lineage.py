"""Lineage between stages: which upstream partitions a partition was built from, which
partitions are stale, and removal of orphans with everything built from them.

A commit record's `inputs` name the upstream partitions it read ("01_ingest/part-00003" -> the
sha256 of that file when it was read). A partition is *stale* when one of those upstream
partitions changed or disappeared since; the stage recomputes it on its next run, and later
stages refuse to read it until then. A partition is an *orphan* when its own stage's plan no
longer has it (inputs shrank); the run that makes it one removes it, its side files, and every
downstream partition built from it. Removals go through a journal (manifests/_removing.json), so
a run killed halfway has its removal finished by the next run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.ledger import ManifestStore

REF_PATTERN = re.compile(r"^(?P<stage>\d\d_[a-z]+)/part-(?P<index>\d+)$")
JOURNAL = "_removing.json"
# Folders holding side files (committed with a partition and listed in its record), with the name
# patterns of those files: anything else there (06's sizes.json and README.txt) is not a side file.
SIDE_DIRS: dict[str, tuple[str, ...]] = {"store": ("part-*",), "shards": ("shard-*.tar", "val-*.tar")}


def partition_ref(stage_dir: str, index: int) -> str:
    """How a partition's inputs name an upstream partition it read (see REF_PATTERN)."""
    return f"{stage_dir}/part-{index:05d}"


def upstream_inputs(records: dict[str, dict[int, dict[str, Any]]], index: int) -> dict[str, str]:
    """Inputs naming partition `index` of each stage in `records` (stage -> committed records)
    by its sha256: what lineage compares to find stale partitions."""
    return {partition_ref(stage, index): by_index[index]["sha256"] for stage, by_index in records.items()}


def stage_order() -> list[str]:
    from stages import STAGE_MODULES

    return list(STAGE_MODULES)


def upstream_refs(record: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(stage dir, partition index, sha256) of every upstream partition a record was built from."""
    refs = []
    for key, digest in record.get("inputs", {}).items():
        match = REF_PATTERN.match(key)
        if match:
            refs.append((match["stage"], int(match["index"]), digest))
    return refs


@dataclass(frozen=True)
class Staleness:
    index: int
    upstream: str  # "01_ingest/part-00003"
    why: str  # "changed" | "missing"


def stale_partitions(root: Path, stage_dir: str, cache: dict | None = None) -> list[Staleness]:
    """Committed partitions of a stage built from upstream partitions that changed or are gone."""
    cache = {} if cache is None else cache

    def records(stage: str) -> dict[int, dict[str, Any]]:
        if stage not in cache:
            cache[stage] = ManifestStore(root, stage).committed_records()
        return cache[stage]

    stale = []
    for index, record in sorted(records(stage_dir).items()):
        for up_stage, up_index, digest in upstream_refs(record):
            up = records(up_stage).get(up_index)
            if up is None or up["sha256"] != digest:
                why = "missing" if up is None else "changed"
                stale.append(Staleness(index, f"{up_stage}/part-{up_index:05d}", why))
                break
    return stale


def _journal_path(root: Path) -> Path:
    return Path(root) / "manifests" / JOURNAL


def _cascade(root: Path, first: dict[str, set[int]]) -> dict[str, list[int]]:
    """`first` plus, stage by stage, every partition built from a partition in the set."""
    removing: dict[str, set[int]] = {s: set(i) for s, i in first.items() if i}
    for stage in stage_order():
        for index, record in ManifestStore(root, stage).committed_records().items():
            if any(i in removing.get(s, ()) for s, i, _ in upstream_refs(record)):
                removing.setdefault(stage, set()).add(index)
    return {s: sorted(i) for s, i in removing.items() if i}


def _entries(root: Path, removing: dict[str, list[int]]) -> list[dict[str, Any]]:
    entries = []
    for stage, indices in removing.items():
        store = ManifestStore(root, stage)
        for index in indices:
            sides = sorted((store.read_record(index) or {}).get("side_files", {}))
            entries.append({"stage": stage, "index": index, "side_files": sides})
    return entries


def _apply(root: Path, entries: Iterable[dict[str, Any]]) -> None:
    """Record first (so nothing vouches for a half-removed partition), then file, then side files."""
    for entry in entries:
        store = ManifestStore(root, entry["stage"])
        store.record_path(entry["index"]).unlink(missing_ok=True)
        atomic.checkpoint(f"remove {entry['stage']}/part-{entry['index']:05d}")
        store.part_path(entry["index"]).unlink(missing_ok=True)
        for rel in entry["side_files"]:
            (Path(root) / rel).unlink(missing_ok=True)


def remove_partitions(root: Path, first: dict[str, Iterable[int]]) -> dict[str, list[int]]:
    """Remove partitions and everything downstream built from them; returns stage -> indices."""
    removing = _cascade(root, {s: set(i) for s, i in first.items()})
    if not removing:
        return {}
    journal = _journal_path(root)
    atomic.write_text(journal, json.dumps(_entries(root, removing), indent=1))
    _apply(root, json.loads(journal.read_text()))
    journal.unlink()
    return removing


def finish_pending_removal(root: Path) -> int:
    """Complete a removal that a killed run started; returns how many partitions it covered."""
    journal = _journal_path(root)
    if not journal.exists():
        return 0
    entries = json.loads(journal.read_text())
    _apply(root, entries)
    journal.unlink()
    return len(entries)


def unreferenced_files(root: Path) -> list[Path]:
    """Partition files without a commit record, and side files no record lists: what a run
    killed between publishing a file and writing its record leaves (it is rebuilt anyway)."""
    root = Path(root)
    found: list[Path] = []
    referenced: set[str] = set()
    for stage in stage_order():
        store = ManifestStore(root, stage)
        if not store.dir.is_dir():
            continue
        recorded = {p.stem for p in store.commits_dir.glob("part-*.json")}
        found += [p for p in sorted(store.dir.glob("part-*.parquet")) if p.stem not in recorded]
        for record in store.committed_records().values():
            referenced.update(record.get("side_files", {}))
    for side_dir, patterns in SIDE_DIRS.items():
        folder = root / side_dir
        if folder.is_dir():
            found += sorted(p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()
                            and str(p.relative_to(root)) not in referenced)  # fmt: skip
    return found
