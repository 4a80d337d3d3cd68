"""Stage 04 end to end on real photos, through the real CLI: the face filter drops exactly the
portraits, filters without models say so, thresholds are re-applied without any model, a kill
-9 and rerun gives the same bytes, and `--partitions` in pieces equals one run."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from pipeline.runrecord import read_runs
from tests.conftest import cli, kill_group, partition_digests, start_cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.filter_root import build_root, photo_rows, write_table
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import tree_files

pytest.importorskip("facenet_pytorch", reason="stage 04 tests need the filters extra")
FILTER = "04_filter"


@pytest.fixture(scope="module")
def photos_root(tmp_path_factory: pytest.TempPathFactory, gbif_dump: Path) -> tuple[Path, list[str]]:  # noqa: F811
    """01 -> 03 over the 42 animal photos and the 2 portraits, 8 rows per partition."""
    base = tmp_path_factory.mktemp("filter")
    folder = base / "files"
    folder.mkdir()
    rows = photo_rows(folder, hosts=2)
    with LoopbackServer(hosts=2, folder=folder) as server:
        table = write_table(base / "photos.csv", rows, server)
        root = base / "root"
        args = build_root(root, table, gbif_dump, batch_size=8)
    return root, args


def copy_root(photos_root: tuple[Path, list[str]], dest: Path) -> tuple[Path, list[str]]:
    root, args = photos_root
    shutil.copytree(root, dest)
    return dest, args


def manifest(root: Path) -> pa.Table:
    store = ManifestStore(root, FILTER)
    return pa.concat_tables([pq.read_table(store.part_path(i)) for i in sorted(store.committed_records())])


def source_ids(root: Path) -> dict[str, str]:
    store = ManifestStore(root, "01_ingest")
    table = pa.concat_tables([pq.read_table(store.part_path(i), columns=["uuid", "source_id"])
                              for i in store.committed_records()])  # fmt: skip
    return dict(zip(table["uuid"].to_pylist(), table["source_id"].to_pylist(), strict=True))


def test_face_filter_drops_exactly_the_portraits(photos_root, tmp_path: Path):
    root, args = copy_root(photos_root, tmp_path / "root")
    result = cli(root, *args, "run", "filter")
    table = manifest(root)
    assert table.num_rows == 44
    names = source_ids(root)
    dropped = table.filter(pc.equal(table["reason"], "human_face")).to_pylist()
    assert sorted(names[r["uuid"]] for r in dropped) == ["face-astronaut.jpg", "face-grace_hopper.jpg"]
    for row in dropped:
        assert row["face_count"] == 1 and row["face_prob_max"] >= 0.985
        assert row["detail"].startswith("human_face: 1 face(s)")
        assert row["face_model"].startswith("facenet-pytorch MTCNN 2.5.3 sha256:")
    animals = table.filter(pc.invert(pc.is_in(table["uuid"], pa.array([r["uuid"] for r in dropped]))))
    assert animals.num_rows == 42 and set(animals["status"].to_pylist()) == {"ok"}
    assert set(table["face_filter"].to_pylist()) == {"applied"}
    # No camera-trap or museum rows here; the citizen-science rows are in the occurrence
    # filter's scope, which has no embedder configured: not_run, and the run says so.
    assert set(table["camera_trap_filter"].to_pylist()) == {"not_applicable"}
    assert set(table["museum_filter"].to_pylist()) == {"not_applicable"}
    assert set(animals["occurrence_filter"].to_pylist()) == {"not_run"}
    assert "occurrence filter not run (no model)" in result.stdout
    status = cli(root, "status").stdout
    assert "camera_trap filter not run (no model): set filter.megadetector_weights" in status


def test_filter_workers_are_threads_of_the_command_by_default(photos_root, tmp_path: Path):
    """With the default cluster (worker processes), the filter runs on threads of the command's
    own process (cluster.threaded_stages): torch is imported and MTCNN loaded once."""
    root, args = copy_root(photos_root, tmp_path / "root")
    cli(root, *args, "run", "filter", processes=True)
    run = read_runs(root, FILTER)[-1]
    driver_pid = int(run["run_id"].rsplit("-", 1)[1])
    records = ManifestStore(root, FILTER).committed_records()
    assert len(records) > 1
    assert {int(r["computed_on"]["pid"]) for r in records.values()} == {driver_pid}
    assert run["config"]["cluster"]["threaded_stages"] == ["filter"]


def test_required_filter_without_a_model_fails_clearly(photos_root, tmp_path: Path):
    root, args = copy_root(photos_root, tmp_path / "root")
    result = cli(root, *args, "--set", "filter.camera_trap_required=true", "run", "filter", check=False)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "megadetector_weights" in line
    assert not ManifestStore(root, FILTER).committed_records()


def test_rethreshold_changes_decisions_without_loading_a_model(photos_root, tmp_path: Path):
    from pipeline.config import load_config
    from pipeline.runner import rethreshold_stage
    from stages.filter.models import MODEL_REQUESTS

    root, args = copy_root(photos_root, tmp_path / "root")
    cli(root, *args, "run", "filter")
    before = {i: r["sha256"] for i, r in ManifestStore(root, FILTER).committed_records().items()}
    scores = manifest(root).drop_columns(["status", "reason", "detail"])

    config = load_config(root, overrides=["filter.face_threshold=1.0", "cluster.local_processes=false",
                                          "run.progress=false"])  # fmt: skip
    requests = MODEL_REQUESTS["count"]
    data = rethreshold_stage(root, FILTER, config)
    assert MODEL_REQUESTS["count"] == requests  # no model asked for
    assert sorted(data["partitions_rethresholded"]) == sorted(before)
    table = manifest(root)
    assert set(table["status"].to_pylist()) == {"ok"}  # no face reaches probability 1.0
    assert table.drop_columns(["status", "reason", "detail"]).equals(scores)  # scores untouched
    after = {i: r["sha256"] for i, r in ManifestStore(root, FILTER).committed_records().items()}
    changed = {i for i in before if before[i] != after[i]}
    assert changed and len(changed) < len(before)  # only the partitions with a portrait changed
    assert read_runs(root, FILTER)[-1]["command"] == "rethreshold"
    # A plain run with the new threshold finds everything done.
    cli(root, *args, "--set", "filter.face_threshold=1.0", "run", "filter")
    assert read_runs(root, FILTER)[-1]["partitions_computed"] == 0

    refused = cli(root, *args, "--set", "filter.face_min_px=30", "rethreshold", "filter", check=False)
    assert refused.returncode == 3 and "filter.face_min_px" in refused.stderr


def test_kill_9_during_filter_then_rerun_is_byte_identical(photos_root, tmp_path: Path):
    reference, args = copy_root(photos_root, tmp_path / "reference")
    started = time.monotonic()
    cli(reference, *args, "run", "filter")
    duration = time.monotonic() - started
    want = partition_digests(reference, FILTER)
    rng = random.Random(2026)
    for trial in range(3):
        root, _ = copy_root(photos_root, tmp_path / f"trial-{trial}")
        proc = start_cli(root, *args, "run", "filter")
        time.sleep(rng.uniform(0.3, 0.9) * duration)
        kill_group(proc)
        cli(root, *args, "run", "filter")
        assert partition_digests(root, FILTER) == want, f"trial {trial}"
        assert tree_files(root) == tree_files(reference), f"trial {trial}"


def test_partitions_in_pieces_equal_one_run(photos_root, tmp_path: Path):
    reference, args = copy_root(photos_root, tmp_path / "reference")
    cli(reference, *args, "run", "filter")
    want = partition_digests(reference, FILTER)
    assert len(want) >= 6
    root, _ = copy_root(photos_root, tmp_path / "root")
    cli(root, *args, "run", "filter", "--partitions", "0-1")
    cli(root, *args, "run", "filter", "--partitions", "4,5")
    assert sorted(ManifestStore(root, FILTER).committed_records()) == [0, 1, 4, 5]
    # A later stage would refuse the incomplete stage.
    record = read_runs(root, FILTER)[-1]
    assert record["partitions_not_selected"] == len(want) - 2 and record["partitions_computed"] == 2
    cli(root, *args, "run", "filter")
    assert partition_digests(root, FILTER) == want
    assert {p: sha256_file(root / "manifests" / FILTER / p) for p in want} == want
