"""Shared test helpers: the CLI as a subprocess, small generated inputs, manifest digests."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.digest import sha256_file

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cli(
    root: Path, *args: str, check: bool = True, env: dict | None = None, timeout: float = 300,
    processes: bool = False,
):
    """Run `tolpipe --root ROOT ARGS...` as a real process; returns CompletedProcess.

    By default the dask workers are threads of that process (fast start); `processes=True` runs
    the default LocalCluster of worker processes."""
    cluster = [] if processes else ["--set", "cluster.local_processes=false"]
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root), *cluster, *args]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def start_cli(root: Path, *args: str) -> subprocess.Popen:
    """Start `tolpipe --root ROOT ARGS...` in its own process group (driver and dask workers), to
    be killed whole by kill_group; output discarded."""
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def kill_group(proc: subprocess.Popen) -> None:
    """`kill -9` a run started by start_cli, workers included, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def write_url_table(path: Path, rows: int, hosts: int, duplicates_every: int = 0) -> Path:
    """A `table` source: rows spread over `hosts` loopback-style host names."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "source_id", "provider", "scientific_name", "kingdom", "license"])
        for i in range(rows):
            j = i - 1 if duplicates_every and i % duplicates_every == 0 and i else i
            writer.writerow(
                [
                    f"http://host{j % hosts}.example.org/img/{j}.jpg",
                    f"rec-{i}",
                    "testprov",
                    "Bubo bubo",
                    "Animalia",
                    "CC0",
                ]
            )
    return path


def partition_digests(root: Path, stage_dir: str) -> dict[str, str]:
    folder = Path(root) / "manifests" / stage_dir
    return {p.name: sha256_file(p) for p in sorted(folder.glob("part-*.parquet"))}


@pytest.fixture(autouse=True)
def _no_ultralytics_patches():
    """Importing ultralytics (pytest.importorskip at collection, checkpoint builders) patches PIL
    and torch for the whole process; the stage undoes that, and so does every test here."""
    from stages.filter.megadetector import undo_ultralytics_patches

    undo_ultralytics_patches()
    yield
    undo_ultralytics_patches()


@pytest.fixture
def small_table(tmp_path: Path) -> Path:
    return write_url_table(tmp_path / "urls.csv", rows=300, hosts=3, duplicates_every=50)


@pytest.fixture(scope="session", autouse=True)
def _cancel_slurm_jobs_left_by_tests(tmp_path_factory: pytest.TempPathFactory):
    """A test that fails (or a demo run it started) can leave Slurm jobs queued or running that
    write under the session's temporary folder: cancel them at the end, so they never take the
    machine from later sessions."""
    yield
    import shutil

    if shutil.which("squeue") is None:
        return
    base = str(tmp_path_factory.getbasetemp())
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        listing = subprocess.run(["squeue", "-h", "-O", "JobID:30,StdOut:2000"],
                                 capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        leftovers = [line.split()[0] for line in listing.splitlines() if base in line]
        if leftovers:
            subprocess.run(["scancel", *leftovers], capture_output=True, timeout=30)
