"""Stage 06's determinism and resume, through the real CLI: byte-identical shards across runs and
across 1 and 4 workers; kill -9 at fixed points (while staging; before a shard's rename; after it,
before its manifest) and at a random moment, then a rerun, gives the same tars and manifests and
leaves nothing behind; a lost shard is rebuilt alone; fewer shards remove the old ones."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from pipeline.atomic import KILL_BEFORE_PUBLISH_ENV
from pipeline.config import load_config
from pipeline.ledger import ManifestStore
from pipeline.runrecord import read_runs
from stages.shard.verify import verify
from tests.conftest import cli, kill_group, partition_digests, start_cli
from tests.support.pipeline_root import tree_files
from tests.support.shard_root import SHARD, copy_root, shard_files, shard_root, tar_paths  # noqa: F401

# The test root is built through stage 04's face filter and stage 05's dedup.
pytest.importorskip("facenet_pytorch", reason="the test root is built through 04 (filters extra)")
pytest.importorskip("pdqhash", reason="the test root is built through 05 (dedup extra)")
SMALL = ["--set", "shard.samples_per_shard=8", "--set", "shard.staging_rows=20"]


@pytest.fixture(scope="module")
def reference(shard_root, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:  # noqa: F811
    """Stage 06 run once on a copy of the root (one worker thread); and how long it took."""
    root, args = copy_root(shard_root, tmp_path_factory.mktemp("reference") / "root")
    started = time.monotonic()
    cli(root, *args, *SMALL, "--set", "cluster.workers=1", "run", "shard")
    return root, time.monotonic() - started


def outputs(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    return shard_files(root), partition_digests(root, SHARD)


def assert_same_as(root: Path, reference: Path) -> None:
    assert outputs(root) == outputs(reference)
    assert tree_files(root) == tree_files(reference)  # no temp file, staging or stray shard left
    assert verify(root, load_config(root)) == []


def test_same_inputs_give_byte_identical_shards_across_runs_and_worker_counts(
    shard_root, reference, tmp_path  # noqa: F811
):

    ref, _ = reference
    assert len(tar_paths(ref)) == 6
    again, args = copy_root(shard_root, tmp_path / "again")
    cli(again, *args, *SMALL, "--set", "cluster.workers=1", "run", "shard")
    assert_same_as(again, ref)
    four, args = copy_root(shard_root, tmp_path / "four")
    cli(four, *args, *SMALL, "--set", "cluster.workers=4", "run", "shard", processes=True)
    assert_same_as(four, ref)
    # A rerun finds every shard done and rewrites nothing.
    cli(four, *args, "run", "shard")
    assert read_runs(four, SHARD)[-1]["partitions_computed"] == 0
    assert_same_as(four, ref)


@pytest.mark.parametrize("point", ["group-00001.blob", "shard-00003.tar", "part-00002.parquet"])
def test_kill_9_at_a_fixed_point_then_rerun_is_identical(shard_root, reference, tmp_path, point):  # noqa: F811
    ref, _ = reference
    root, args = copy_root(shard_root, tmp_path / "root")
    killed = cli(root, *args, *SMALL, "run", "shard", check=False, env={KILL_BEFORE_PUBLISH_ENV: point})
    assert killed.returncode == -9
    assert not (root / "shards" / "sizes.json").exists()
    cli(root, *args, "run", "shard")
    assert_same_as(root, ref)


def test_kill_9_at_a_random_moment_then_rerun_is_identical(shard_root, reference, tmp_path):  # noqa: F811
    ref, duration = reference
    rng = random.Random(2026)
    for trial in range(2):
        root, args = copy_root(shard_root, tmp_path / f"trial-{trial}")
        proc = start_cli(root, "--set", "cluster.local_processes=false", *args, *SMALL, "run", "shard")
        time.sleep(rng.uniform(0.5, 0.95) * duration)
        kill_group(proc)
        cli(root, *args, *SMALL, "run", "shard")
        assert_same_as(root, ref)


def test_a_lost_shard_is_rebuilt_alone_and_fewer_shards_remove_the_old_ones(reference, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(reference[0], root)
    want = outputs(root)
    (root / "shards" / "shard-00002.tar").unlink()
    cli(root, "--set", "run.progress=false", "run", "shard")
    assert read_runs(root, SHARD)[-1]["partitions_computed"] == 1
    assert outputs(root) == want
    assert not list((root / "work" / SHARD).glob("staging-*"))  # removed once every shard is in

    refused = cli(root, "--set", "shard.samples_per_shard=20", "run", "shard", check=False)
    assert refused.returncode == 3 and "shard.samples_per_shard" in refused.stderr
    cli(root, "--set", "shard.samples_per_shard=20", "--set", "run.progress=false", "run", "shard",
        "--rebuild")  # fmt: skip
    assert [p.name for p in tar_paths(root)] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    assert sorted(ManifestStore(root, SHARD).committed_records()) == [0, 1, 2]
    assert read_runs(root, SHARD)[-1]["partitions_removed"] == [3, 4, 5]
    assert verify(root, load_config(root)) == []
