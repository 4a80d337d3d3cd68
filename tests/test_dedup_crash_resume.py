"""kill -9 during stage 05, then rerun: the manifests are byte-identical to an uninterrupted run's
and nothing is left behind, whether the kill (of the driver and its worker processes) lands as
soon as the run has started, written its MD5 plan, built its test index or committed its first
partition, at a random moment, or right before a file of the MD5 plan, the test index, the PDQ
cache or a manifest is published."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from pipeline.atomic import KILL_BEFORE_PUBLISH_ENV
from pipeline.ledger import ManifestStore
from pipeline.runrecord import read_runs
from tests.conftest import cli, kill_group, partition_digests, start_cli
from tests.support import dedup_root as D
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import tree_files

pytest.importorskip("pdqhash", reason="stage 05 needs the dedup extra")
DEDUP = "05_dedup"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, gbif_dump: Path) -> tuple[Path, list[str]]:  # noqa: F811
    base = tmp_path_factory.mktemp("dedup-crash")
    with LoopbackServer(hosts=1, folder=base / "files") as server:
        served = D.serve_files(base, server)
        root = base / "root"
        args = D.build_root(root, served.table, gbif_dump, batch_size=7)
    D.run_testsets(root, "add", "heldout", "--images", str(served.testset))
    return root, args


@pytest.fixture(scope="module")
def reference(built, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An uninterrupted run, and how long it took."""
    root = tmp_path_factory.mktemp("dedup-reference") / "root"
    shutil.copytree(built[0], root)
    started = time.monotonic()
    cli(root, *built[1], "run", "dedup", processes=True)  # as start_cli runs it
    return root, time.monotonic() - started


def _started(root: Path) -> bool:
    return any((root / "manifests" / DEDUP / "_runs").glob("*.json"))


def _planned(root: Path) -> bool:
    return any((root / "work" / DEDUP).glob("md5-*"))


def _indexed(root: Path) -> bool:
    return any((root / "work" / DEDUP).glob("tests-*"))


def _committed(root: Path) -> bool:
    return any((root / "manifests" / DEDUP / "_commits").glob("part-*.json"))


MOMENTS = {"run started": _started, "MD5 plan written": _planned, "test index built": _indexed,
           "first partition committed": _committed}  # fmt: skip


def kill_when(root: Path, args: list[str], moment) -> None:
    """Start `run dedup` (the default cluster: worker processes) and kill -9 its process group
    as soon as `moment(root)` holds."""
    proc = start_cli(root, *args, "run", "dedup")
    deadline = time.monotonic() + 120
    while not moment(root) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    kill_group(proc)


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_during_the_run_then_rerun_is_byte_identical(built, reference, tmp_path: Path, moment: str):
    source, args = built
    root = tmp_path / "root"
    shutil.copytree(source, root)
    kill_when(root, args, MOMENTS[moment])
    assert read_runs(root, DEDUP)[-1]["outcome"] == "running"  # killed mid-run
    done = len(ManifestStore(root, DEDUP).committed_records())
    cli(root, *args, "run", "dedup")
    assert read_runs(root, DEDUP)[-1]["partitions_skipped"] == done
    assert partition_digests(root, DEDUP) == partition_digests(reference[0], DEDUP)
    assert tree_files(root) == tree_files(reference[0])


def test_kill_9_at_random_moments_then_rerun_is_byte_identical(built, reference, tmp_path: Path):
    source, args = built
    want = partition_digests(reference[0], DEDUP)
    assert len(want) == 7
    rng = random.Random(2027)
    for trial in range(2):
        root = tmp_path / f"trial-{trial}"
        shutil.copytree(source, root)
        proc = start_cli(root, *args, "run", "dedup")
        time.sleep(rng.uniform(0.3, 0.95) * reference[1])
        kill_group(proc)
        cli(root, *args, "run", "dedup")
        assert partition_digests(root, DEDUP) == want, f"trial {trial}"
        assert tree_files(root) == tree_files(reference[0]), f"trial {trial}"


@pytest.mark.parametrize("point", ["pass-00000.parquet", "bundle.json", "part-00003-", "part-00004.parquet"])
def test_kill_right_before_a_publish_then_rerun_is_byte_identical(
    built, reference, tmp_path: Path, point: str
):
    source, args = built
    root = tmp_path / "root"
    shutil.copytree(source, root)
    killed = cli(root, *args, "run", "dedup", check=False, env={KILL_BEFORE_PUBLISH_ENV: point})
    assert killed.returncode == -9, killed.stderr
    assert any(".tmp-" in p for p in tree_files(root))  # the kill left a temp file behind
    cli(root, *args, "run", "dedup")
    assert partition_digests(root, DEDUP) == partition_digests(reference[0], DEDUP)
    assert tree_files(root) == tree_files(reference[0])
