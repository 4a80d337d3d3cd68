"""`make demo` twice: the demo's backbone dump has the same bytes every time (so the resolver
digest holds) and a rerun skips every partition of every stage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.demo import build_backbone
from tests.support.photo_corpus import load_corpus

REPO = Path(__file__).resolve().parent.parent
# Addresses the demo's loopback image server listens on (three hosts from 127.0.0.2).
DEMO_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
LATER_S = 3600.0  # how far the second build's clock is moved on


def free_port(addresses: tuple[str, ...] = DEMO_ADDRESSES, attempts: int = 20) -> int:
    """A port free on every address (the demo's server binds the same port on each)."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


def test_backbone_builds_are_byte_identical_at_different_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = load_corpus()
    first = build_backbone(tmp_path / "a" / "backbone.zip", photos)
    later = time.time() + LATER_S
    with monkeypatch.context() as patch:  # zip entries would otherwise carry the clock's time
        patch.setattr(time, "time", lambda: later)
        second = build_backbone(tmp_path / "b" / "backbone.zip", photos)
    assert first.read_bytes() == second.read_bytes()


def test_backbone_rebuild_leaves_an_identical_file_untouched(tmp_path: Path) -> None:
    photos = load_corpus()
    path = build_backbone(tmp_path / "backbone.zip", photos)
    old_ns = 1_000_000_000 * 1_000_000_000  # 2001-09-09: any mtime a build would not give
    os.utime(path, ns=(old_ns, old_ns))
    assert build_backbone(path, photos) == path
    assert path.stat().st_mtime_ns == old_ns  # same bytes: not rewritten, the cached index holds


def demo(root: Path, port: int) -> None:
    cmd = [sys.executable, "-m", "tests.support.demo", "--root", str(root), "--port", str(port)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


def run_records(root: Path) -> dict[str, list[Path]]:
    """Stage folder name -> its run records, oldest first (names start with a UTC timestamp)."""
    return {
        folder.name: sorted((folder / "_runs").glob("*.json"))
        for folder in sorted((root / "manifests").glob("[0-9][0-9]_*"))
    }


def test_demo_rerun_skips_every_partition_of_every_stage(tmp_path: Path) -> None:
    root, port = tmp_path / "demo", free_port()
    demo(root, port)
    before = run_records(root)
    assert {"01_ingest", "02_download", "03_taxonomy"} <= set(before)
    demo(root, port)
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
