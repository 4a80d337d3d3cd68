"""What a run checks and tidies before it does any work on a root it holds:

- every folder it will write to is writable (a read-only root or store is found before a
  single image is fetched);
- leftovers of killed runs are removed (temp files by run tag, a half-done orphan removal,
  partition and side files that no commit record vouches for), logged and counted;
- the stages it reads are complete and current (not stale, last run finished).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.errors import RootNotWritableError, UpstreamError
from pipeline.ledger import ManifestStore
from pipeline.lineage import finish_pending_removal, stale_partitions, unreferenced_files
from pipeline.litter import remove_litter
from pipeline.runlock import RootLock, describe
from pipeline.runrecord import RUNNING, last_build, planned_partitions
from pipeline.stage import Stage

LOG_PATHS = 5  # removed paths named on the terminal; the run record lists up to 50


def short_name(stage_dir: str) -> str:
    return stage_dir.split("_", 1)[1]


def tuning_keys() -> set[tuple[str, str]]:
    """(section, key) of every implemented stage's one-run tuning settings."""
    from stages import available_stages, load_stage

    return {(short_name(d), k) for d in available_stages() for k in load_stage(d).tuning_params}


def _probe(folder: Path) -> None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # created later by the run: its nearest existing parent decides
    try:
        probe = folder / atomic.tagged("write-probe")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise RootNotWritableError(folder, exc) from None


def preflight_writable(root: Path, stage: Stage) -> None:
    """Every folder the stage writes to accepts a new file (checked by creating one: permission
    bits alone say nothing on read-only mounts or for root)."""
    manifests = root / "manifests" / stage.dir
    folders = [root, manifests, manifests / "_commits", manifests / "_runs", root / "work" / stage.dir]
    for folder in folders + [root / d for d in stage.side_dirs]:
        _probe(folder)


def _log(text: str) -> None:
    print(f"[tolpipe] {text}", file=sys.stderr, flush=True)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def tidy_root(root: Path, lock: RootLock) -> dict[str, Any]:
    """Remove what killed runs left; returns the counts for the run record."""
    report: dict[str, Any] = {}
    if lock.took_over_from:
        report["took_over_from"] = lock.took_over_from
        _log(f"took over the work root from {describe(lock.took_over_from)}, which ended without "
             "releasing it (killed)")  # fmt: skip
        lock.took_over_from = None  # said once per lock, not once per stage of `run all`
    finished = finish_pending_removal(root)
    if finished:
        report["removal_finished"] = finished
        _log(f"finished removing {finished} orphan partition(s) that a killed run had begun removing")
    litter = remove_litter(root, lock.tag)
    if litter.paths:
        report["temp_files_removed"] = litter.summary(root)
        shown = ", ".join(str(p.relative_to(root)) for p in litter.paths[:LOG_PATHS])
        more = f" and {len(litter.paths) - LOG_PATHS} more" if len(litter.paths) > LOG_PATHS else ""
        _log(f"removed {len(litter.paths)} temp file(s) of killed runs ({_mb(litter.bytes)}): {shown}{more}")
    loose = unreferenced_files(root)
    if loose:
        size = sum(p.stat().st_size for p in loose)
        for path in loose:
            path.unlink(missing_ok=True)
        paths = [str(p.relative_to(root)) for p in loose]
        report["unreferenced_removed"] = {"count": len(loose), "bytes": size, "paths": paths[:50]}
        _log(f"removed {len(loose)} file(s) no commit record vouches for ({_mb(size)}): "
             + ", ".join(paths[:LOG_PATHS]))  # fmt: skip
    return report


def upstream_chain(stage: Stage) -> list[str]:
    """The stages a stage reads, nearest first (03 -> 02, 01)."""
    from stages import load_stage

    chain, current = [], stage.upstream
    while current:
        chain.append(current)
        current = load_stage(current).upstream
    return chain


def check_upstream(root: Path, stage: Stage) -> None:
    """Refuse to run on an upstream stage that is empty, unfinished or stale, naming it."""
    if stage.upstream is None:
        return
    if not ManifestStore(root, stage.upstream).committed_records():
        raise UpstreamError(
            f"{stage.dir} reads {stage.upstream}, which has no committed partitions under "
            f"{root / 'manifests'}: run `tolpipe run {short_name(stage.upstream)}` first"
        )
    cache: dict = {}
    for upstream in upstream_chain(stage):
        last = last_build(root, upstream)
        if last is not None and last.get("outcome") != "ok":
            what = "was killed or is still running" if last.get("outcome") == RUNNING else "failed"
            raise UpstreamError(
                f"{stage.dir} reads {upstream}, whose last run ({last['run_id']}) {what}: "
                f"rerun `tolpipe run {short_name(upstream)}` to finish it first"
            )
        committed = len(ManifestStore(root, upstream).committed_records())
        planned = planned_partitions(root, upstream)
        if planned is not None and committed < planned:
            raise UpstreamError(
                f"{stage.dir} reads {upstream}, which is incomplete ({committed} of {planned} partitions "
                f"committed): run `tolpipe run {short_name(upstream)}` to finish it first"
            )
        stale = stale_partitions(root, upstream, cache)
        if stale:
            first = stale[0]
            raise UpstreamError(
                f"{stage.dir} reads {upstream}, whose {len(stale)} partition(s) are stale (e.g. "
                f"part-{first.index:05d}: {first.upstream} {first.why} since it was built): "
                f"run `tolpipe run {short_name(upstream)}` first"
            )
