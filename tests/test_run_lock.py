"""kill -9 leaves no litter, and one run at a time holds a root.

- A run killed between a temp file's write and its rename (forced by the test hook in
  pipeline.atomic), in each of 01, 02 and 03: the rerun leaves exactly the files an
  uninterrupted run leaves, and the same manifests and image store.
- A killed run left as a zombie (never reaped), and leftovers named after a live process id:
  the next run removes them all; nothing depends on process ids.
- Two runs at once: the second is refused, naming the first; once the first is killed, a new run
  takes over its root.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.atomic import KILL_BEFORE_PUBLISH_ENV
from pipeline.digest import sha256_file
from pipeline.litter import find_litter
from pipeline.runlock import LOCK_NAME
from pipeline.runrecord import read_runs
from tests.conftest import REPO, cli, kill_group, start_cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import STAGES, settings, store_files, tree_files, write_source


@pytest.fixture(name="server", scope="module")
def server_fixture() -> Iterator[LoopbackServer]:
    with LoopbackServer(hosts=3) as srv:
        yield srv


@pytest.fixture(name="templates", scope="module")
def templates_fixture(server: LoopbackServer, gbif_dump: Path, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    """Roots that hold everything before 01, 02 and 03, and one with all three done."""
    base = tmp_path_factory.mktemp("templates")
    source = write_source(base / "urls.csv", server, [0, 1, 2], 7)
    args = settings(gbif_dump, batch_size=3)
    roots = {}
    before = base / "before-ingest"
    before.mkdir()
    roots["ingest"] = before
    current = before
    for stage in ("ingest", "download", "taxonomy"):
        done = base / f"after-{stage}"
        shutil.copytree(current, done)
        extra = ["--source", f"table:{source}"] if stage == "ingest" else []
        cli(done, *args, "run", stage, *extra)
        current = done
        if stage != "taxonomy":
            roots[{"ingest": "download", "download": "taxonomy"}[stage]] = done
    roots["all"] = current
    roots["source"] = source
    return roots


def run_args(stage: str, templates: dict[str, Path], backbone: Path) -> list[str]:
    extra = ["--source", f"table:{templates['source']}"] if stage == "ingest" else []
    return [*settings(backbone, batch_size=3), "run", stage, *extra]


def same_outputs(root: Path, reference: Path) -> None:
    """Same files, and the same bytes for every manifest partition and store file (02's
    manifests hold fetch times: its rows are compared without them by the crash tests)."""
    assert tree_files(root) == tree_files(reference)
    for stage in ("01_ingest", "03_taxonomy"):
        for path in sorted((reference / "manifests" / stage).glob("part-*.parquet")):
            assert sha256_file(root / path.relative_to(reference)) == sha256_file(path), path
    for rel in store_files(reference):
        assert sha256_file(root / rel) == sha256_file(reference / rel), rel


@pytest.mark.parametrize(
    "stage, marker",
    [
        ("ingest", "h000001-s0000.parquet"),  # a staging file of the shuffle
        ("ingest", "part-00002.parquet"),  # a manifest partition
        ("ingest", "part-00004.json"),  # a commit record
        ("download", "part-00001.parquet"),  # the image store side file (published first)
        ("download", "part-00003.json"),
        ("taxonomy", "part-00002.parquet"),
    ],
)
def test_kill_between_write_and_rename_leaves_no_litter(
    tmp_path: Path, templates: dict[str, Path], gbif_dump: Path, stage: str, marker: str  # noqa: F811
):
    reference, root = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(templates[stage], reference)
    shutil.copytree(templates[stage], root)
    args = run_args(stage, templates, gbif_dump)
    cli(reference, *args)

    killed = cli(root, *args, check=False, env={KILL_BEFORE_PUBLISH_ENV: marker})
    assert killed.returncode == -9, killed.stderr
    # Killed right before the rename: the temp file is there, written in full.
    assert find_litter(root).paths

    rerun = cli(root, *args)
    assert "temp file(s) of killed runs" in rerun.stderr
    assert find_litter(root).paths == []
    same_outputs(root, reference)
    assert last_run(root, stage)["housekeeping"]["temp_files_removed"]["count"] >= 1


@pytest.mark.parametrize("stage", ["ingest", "download", "taxonomy"])
def test_kill_9_at_random_moments_leaves_no_litter(
    tmp_path: Path, templates: dict[str, Path], gbif_dump: Path, stage: str  # noqa: F811
):
    """Random kills of the whole process group (driver and worker processes), then a rerun:
    the files of an uninterrupted run, no more (the crash-resume tests of each stage compare
    contents over more trials)."""
    reference = tmp_path / "reference"
    shutil.copytree(templates[stage], reference)
    args = run_args(stage, templates, gbif_dump)
    started = time.monotonic()
    cli(reference, *args, processes=True)
    duration = time.monotonic() - started
    rng = random.Random(f"{stage}-20261202")
    for trial in range(4):
        root = tmp_path / f"trial-{trial}"
        shutil.copytree(templates[stage], root)
        proc = start_cli(root, *args)
        time.sleep(rng.uniform(0.1, duration))
        kill_group(proc)
        cli(root, *args, processes=True)
        assert find_litter(root).paths == [], f"trial {trial}"
        same_outputs(root, reference)


def last_run(root: Path, stage: str) -> dict:
    stage_dir = next(d for d in STAGES if d.endswith(stage))
    return read_runs(root, stage_dir)[-1]


def is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_zombie_and_reused_pid_leftovers_are_removed(
    tmp_path: Path, templates: dict[str, Path], gbif_dump: Path  # noqa: F811
):
    reference, root = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(templates["download"], reference)
    shutil.copytree(templates["download"], root)
    args = run_args("download", templates, gbif_dump)
    cli(reference, *args)

    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root),
           "--set", "cluster.local_processes=false", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, KILL_BEFORE_PUBLISH_ENV: "part-00002.parquet"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not is_zombie(proc.pid):  # killed and never reaped: /proc still lists it
            assert time.monotonic() < deadline, "the run was not killed"
            time.sleep(0.05)
        left = find_litter(root).paths
        # A spool named the way earlier versions named them, after a process id that is alive
        # (this test's): a pid check would keep it for ever.
        legacy = root / "work" / "02_download" / "spool" / f"part-00000-{os.getpid()}-0a1b2c3d4e5f.spool"
        legacy.parent.mkdir(parents=True, exist_ok=True)
        legacy.write_bytes(b"x" * 1000)

        cli(root, *args)  # the zombie still exists while the next run starts
        assert is_zombie(proc.pid)
    finally:
        proc.wait()
    assert left and all(not p.exists() for p in left)
    assert not legacy.exists()
    assert find_litter(root).paths == []
    same_outputs(root, reference)


def wait_for_holder(root: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first run ended before the second started"
        text = (root / LOCK_NAME).read_text() if (root / LOCK_NAME).exists() else ""
        if text.strip():
            return json.loads(text)
        time.sleep(0.02)
    raise AssertionError("the first run never took the lock")


def test_second_run_is_refused_naming_the_first_then_takes_over_once_it_is_killed(
    tmp_path: Path, templates: dict[str, Path], gbif_dump: Path  # noqa: F811
):
    root = tmp_path / "root"
    shutil.copytree(templates["download"], root)
    args = run_args("download", templates, gbif_dump)
    # A slow first run: 1 request per second per host.
    slow = ["--set", "download.rate_per_host=1.0", "--set", "download.rate_floor=0.5",
            "--set", "download.burst=1.0"]  # fmt: skip
    first = start_cli(root, *args[:-2], *slow, *args[-2:])
    try:
        holder = wait_for_holder(root, first)
        assert holder["pid"] == first.pid
        second = cli(root, *args, check=False)
        assert second.returncode == 4
        line = second.stderr.strip()
        assert len(line.splitlines()) == 1
        assert f"pid {first.pid}" in line and holder["host"] in line and holder["started_utc"] in line
        assert "in use by run" in line
    finally:
        kill_group(first)
    status = cli(root, "status").stdout
    assert "killed" in status  # the first run's record never finished
    third = cli(root, *args)
    assert f"took over the work root from run {holder['run_tag']}" in third.stderr
    assert last_run(root, "download")["outcome"] == "ok"
    assert (root / LOCK_NAME).read_text() == ""  # released cleanly
