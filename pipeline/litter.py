"""Temp files left by killed runs: found by their run tag, removed by the next run that holds the
root, and reported by `tolpipe status`.

A run removes every temp entry whose tag is not its own (it holds the root's lock, so no other
run is alive to own them), in every folder runs write to. Scratch folders (`work/*/_tmp`) only
ever hold a run's temp files; untagged entries there (older layouts) are removed too.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import atomic

# Folders under a work root that runs write to (inputs the user keeps under the root are never
# visited).
WRITTEN_DIRS = ("manifests", "store", "work", "shards", "train")
# Folders that only ever hold one run's scratch files ("spool": download's, in earlier versions).
SCRATCH_DIRS = ("_tmp", "spool")


@dataclass
class Litter:
    paths: list[Path] = field(default_factory=list)
    bytes: int = 0

    def summary(self, root: Path, limit: int = 50) -> dict:
        return {
            "count": len(self.paths),
            "bytes": self.bytes,
            "paths": [str(p.relative_to(root)) for p in self.paths[:limit]],
        }


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.lstat().st_size
    except OSError:
        return 0


def _is_litter(entry: os.DirEntry, parent: Path, keep_tag: str | None) -> bool:
    tag = atomic.tag_of(entry.name)
    if tag is not None:
        return tag != keep_tag
    if parent.name in SCRATCH_DIRS:  # scratch of an older layout, or anything not tagged
        return True
    return entry.name.startswith(atomic.TEMP_PREFIX)  # older temp names (no run tag)


def find_litter(root: str | Path, keep_tag: str | None = None) -> Litter:
    """Temp entries under the root's written folders not made by the run tagged `keep_tag`."""
    root = Path(root)
    found = Litter()
    folders = [root] + [root / d for d in WRITTEN_DIRS]
    for top in folders:
        if not top.is_dir():
            continue
        for folder, dirnames, _ in os.walk(top) if top != root else [(str(root), [], [])]:
            here = Path(folder)
            with os.scandir(here) as entries:
                for entry in entries:
                    if _is_litter(entry, here, keep_tag):
                        found.paths.append(here / entry.name)
                        found.bytes += _size(here / entry.name)
                        if entry.name in dirnames:
                            dirnames.remove(entry.name)  # don't descend into what goes anyway
    found.paths.sort()
    return found


def remove_litter(root: str | Path, keep_tag: str) -> Litter:
    """Remove what find_litter finds; returns what was removed."""
    litter = find_litter(root, keep_tag)
    for path in litter.paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return litter
