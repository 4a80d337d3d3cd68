"""The camera-trap filter through stage 04: MegaDetector v6's real architecture with seeded,
untrained weights saved to a local file (one checkpoint biased to the animal class, one to the
person class), on real photos marked as camera-trap images; then re-thresholded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ledger import ManifestStore
from tests.conftest import cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.filter_root import Row, build_root, write_table
from tests.support.loopback_server import LoopbackServer
from tests.support.photo_corpus import corpus_dir

pytest.importorskip("ultralytics", reason="the camera-trap filter needs the megadetector extra")
FILTER = "04_filter"
PHOTOS = ["giraffa_camelopardalis.jpg", "bison_bison.jpg", "alces_alces.jpg"]


@pytest.fixture(scope="module")
def camera_root(tmp_path_factory: pytest.TempPathFactory, gbif_dump: Path):  # noqa: F811
    base = tmp_path_factory.mktemp("camera")
    files = base / "files"
    files.mkdir()
    rows = []
    for i, name in enumerate(PHOTOS):
        shutil.copy(corpus_dir() / name, files / name)
        rows.append(Row(name, f"trap-{i}", 0, f"trap-occ-{i}", "MACHINE_OBSERVATION",
                        event_remarks="camera trap, trigger sensitivity high"))  # fmt: skip
    with LoopbackServer(hosts=1, folder=files) as server:
        table = write_table(base / "traps.csv", rows, server)
        root = base / "root"
        args = build_root(root, table, gbif_dump)
    return root, args


def manifest(root: Path) -> pa.Table:
    store = ManifestStore(root, FILTER)
    return pa.concat_tables([pq.read_table(store.part_path(i)) for i in sorted(store.committed_records())])


@pytest.mark.parametrize("favour, kept", [(0, True), (1, False)])
def test_megadetector_decides_camera_trap_frames(camera_root, tmp_path: Path, tmp_path_factory, favour: int,
                                                 kept: bool):  # fmt: skip
    from tests.support.megadetector_weights import cached_weights

    weights = cached_weights(tmp_path_factory, favour=favour)
    root, args = camera_root
    root = Path(shutil.copytree(root, tmp_path / "root"))
    md = ["--set", f'filter.megadetector_weights="{weights}"', "--set", "filter.megadetector_image_size=640"]
    cli(root, *args, *md, "run", "filter")
    table = manifest(root)
    assert table.num_rows == len(PHOTOS)
    assert set(table["camera_trap_filter"].to_pylist()) == {"applied"}
    labels = table["camera_trap_model"].to_pylist()
    assert all(label.startswith("MegaDetector MDV6-yolov9-c sha256:") for label in labels)
    if kept:
        assert set(table["status"].to_pylist()) == {"ok"}
        assert all(count > 0 for count in table["md_animal_count"].to_pylist())
        # Re-thresholded above every stored confidence: every frame becomes empty, no model.
        cli(root, *args, *md, "--set", "filter.animal_threshold=1.0", "rethreshold", "filter")
        assert set(manifest(root)["reason"].to_pylist()) == {"empty_frame"}
    else:
        assert set(table["reason"].to_pylist()) == {"empty_frame"}
        assert all(count > 0 for count in table["md_person_count"].to_pylist())
        assert set(table["md_animal_count"].to_pylist()) == {0}
