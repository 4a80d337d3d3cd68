"""`make demo` twice: the demo's inputs have the same bytes every time (so the resolver digest
and the sources' digests hold) and a rerun skips every partition of every stage."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from demo.corpus import load_corpus
from demo.inputs import backbone
from tests.support.demo import DemoRun, demo_run, run_demo  # noqa: F401

LATER_S = 3600.0  # how far the second build's clock is moved on


def test_backbone_builds_are_byte_identical_at_different_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = load_corpus()
    first = backbone(tmp_path / "a" / "backbone.zip", photos)
    later = time.time() + LATER_S
    with monkeypatch.context() as patch:  # zip entries would otherwise carry the clock's time
        patch.setattr(time, "time", lambda: later)
        second = backbone(tmp_path / "b" / "backbone.zip", photos)
    assert first.read_bytes() == second.read_bytes()


def test_backbone_rebuild_leaves_an_identical_file_untouched(tmp_path: Path) -> None:
    photos = load_corpus()
    path = backbone(tmp_path / "backbone.zip", photos)
    old_ns = 1_000_000_000 * 1_000_000_000  # 2001-09-09: any mtime a build would not give
    os.utime(path, ns=(old_ns, old_ns))
    assert backbone(path, photos) == path
    assert path.stat().st_mtime_ns == old_ns  # same bytes: not rewritten, the cached index holds


def run_records(root: Path) -> dict[str, list[Path]]:
    """Stage folder name -> its run records, oldest first (names start with a UTC timestamp)."""
    return {
        folder.name: sorted((folder / "_runs").glob("*.json"))
        for folder in sorted((root / "manifests").glob("[0-9][0-9]_*"))
    }


def test_demo_rerun_skips_every_partition_of_every_stage(demo_run: DemoRun) -> None:  # noqa: F811
    root = demo_run.root
    inputs = {p.name: p.stat().st_mtime_ns for p in (root / "inputs").glob("*.*")}
    before = run_records(root)
    assert {"01_ingest", "02_download", "03_taxonomy", "06_shard"} <= set(before)
    run_demo(root, demo_run.port)
    assert {p.name: p.stat().st_mtime_ns for p in (root / "inputs").glob("*.*")} == inputs  # not rewritten
    after = run_records(root)
    assert set(after) == set(before)
    last_runs = {}
    for stage, records in after.items():
        assert len(records) > len(before[stage]), f"{stage}: the rerun wrote no run record"
        record = json.loads(records[-1].read_text())
        last_runs[stage] = (record["partitions_computed"], record["partitions_skipped"],
                            record["partitions_planned"])  # fmt: skip
    assert all(planned > 0 for _, _, planned in last_runs.values()), last_runs
    assert last_runs == {stage: (0, planned, planned) for stage, (_, _, planned) in last_runs.items()}
