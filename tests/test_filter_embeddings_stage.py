"""Stage 04's embedding filters end to end, with an embedder whose answers are known (the mean
colour of the image, tests/support/known_embedder.py): a support set built with
`tolpipe filter build-support-set`, museum rows labelled by their nearest centre and dropped
exactly when the label shows no organism; occurrences whose images sit in two partitions decided
as one (mixed, near-identical frames, sampled down to five)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.ledger import ManifestStore
from stages.filter.occurrences import OccurrenceRule, kept_uuids, occurrence_similarity
from tests.conftest import cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.filter_root import CITIZEN, Row, build_root, solid, write_table
from tests.support.known_embedder import SPEC, KnownEmbedder
from tests.support.loopback_server import LoopbackServer

pytest.importorskip("sklearn", reason="stage 04 tests need the filters extra")
FILTER = "04_filter"
MUSEUM = {"red": (220, 20, 20), "dark red": (150, 10, 30), "green": (20, 200, 30), "olive": (90, 160, 40)}
OCCURRENCES = {
    # mixed: red, green and blue images of one occurrence
    "occ-mixed": [(230, 10, 10), (10, 230, 10), (10, 10, 230)],
    # near-identical frames
    "occ-frames": [(120, 80, 40), (121, 80, 41), (119, 81, 40)],
    # seven similar-ish images: between the thresholds, sampled down to five
    "occ-many": [(200, 40, 40), (200, 120, 40), (200, 40, 120), (160, 160, 40), (200, 90, 90),
                 (170, 60, 140), (220, 130, 60)],
}  # fmt: skip


@pytest.fixture(scope="module")
def root_and_args(tmp_path_factory: pytest.TempPathFactory, gbif_dump: Path):  # noqa: F811
    base = tmp_path_factory.mktemp("embeddings")
    files = base / "files"
    files.mkdir()
    rows = []
    for name, rgb in MUSEUM.items():
        file = f"museum-{name.replace(' ', '-')}.jpg"
        solid(files / file, rgb)
        rows.append(Row(file, f"museum-{name}", 0, f"occ-{file}", "PRESERVED_SPECIMEN"))
    for occurrence, colours in OCCURRENCES.items():
        for i, rgb in enumerate(colours):
            file = f"{occurrence}-{i}.jpg"
            solid(files / file, rgb)
            rows.append(Row(file, file, i % 2, occurrence, "HUMAN_OBSERVATION", CITIZEN))  # two hosts
    support = base / "support"
    examples = {"specimen": [(10, 240, 10), (60, 200, 20)], "text_document": [(240, 10, 10)]}
    for label, colours in examples.items():
        (support / "_any" / label).mkdir(parents=True)
        for i, rgb in enumerate(colours):
            solid(support / "_any" / label / f"{i}.jpg", rgb)
    with LoopbackServer(hosts=2, folder=files) as server:
        table = write_table(base / "rows.csv", rows, server)
        root = base / "root"
        args = build_root(root, table, gbif_dump, batch_size=8)
    args += ["--set", f'filter.embedder="{SPEC}"']
    output = base / "support.npz"
    built = cli(root, *args, "filter", "build-support-set", str(support), "--output", str(output))
    assert "support set written" in built.stdout
    args += ["--set", f'filter.support_set="{output}"']
    cli(root, *args, "run", "filter")
    return root, args


def rows_by_source(root: Path) -> dict[str, dict]:
    ingest, out = ManifestStore(root, "01_ingest"), {}
    names = {}
    for i in ingest.committed_records():
        t = pq.read_table(ingest.part_path(i), columns=["uuid", "source_id"])
        names.update(zip(t["uuid"].to_pylist(), t["source_id"].to_pylist(), strict=True))
    store = ManifestStore(root, FILTER)
    for i in store.committed_records():
        for row in pq.read_table(store.part_path(i)).to_pylist():
            out[names[row["uuid"]]] = {**row, "partition": i}
    return out


def stored_embedding(root: Path, uuid: str) -> np.ndarray:
    """The known embedder's answer on the image as 02 stored it (JPEG moves colours a little)."""
    from PIL import Image

    for path in sorted((root / "store" / "images").glob("part-*.parquet")):
        t = pq.read_table(path, filters=[("uuid", "=", uuid)])
        if t.num_rows:
            return KnownEmbedder().embed([Image.open(io.BytesIO(t["jpeg"][0].as_py())).convert("RGB")])[0]
    raise AssertionError(f"{uuid} not in the image store")


def test_museum_rows_take_their_nearest_centre(root_and_args):
    root, _ = root_and_args
    rows = rows_by_source(root)
    expected = {"red": "text_document", "dark red": "text_document", "green": "specimen", "olive": "specimen"}
    for name, label in expected.items():
        row = rows[f"museum-{name}"]
        assert row["museum_filter"] == "applied" and row["museum_label"] == label, name
        assert row["status"] == ("dropped" if label == "text_document" else "ok"), name
        assert row["reason"] == ("museum_non_organism" if label == "text_document" else None)
        assert row["museum_model"].startswith("known mean-rgb 1")
    # The similarity is exactly the dot product with the nearest centre.
    from stages.filter.museum import SupportSet

    support = SupportSet.load(Path(root_and_args[1][-1].split("=", 1)[1].strip('"')), None)
    for name in expected:
        row = rows[f"museum-{name}"]
        vector = stored_embedding(root, row["uuid"])
        assert row["museum_similarity"] == pytest.approx(float((support.centres @ vector).max()), abs=1e-5)


def test_occurrences_across_partitions_are_decided_as_one(root_and_args):
    root, _ = root_and_args
    rows = rows_by_source(root)
    for occurrence, colours in OCCURRENCES.items():
        members = [rows[f"{occurrence}-{i}.jpg"] for i in range(len(colours))]
        assert len({m["partition"] for m in members}) == 2, "the occurrence spans two partitions"
        uuids = sorted(m["uuid"] for m in members)
        want = occurrence_similarity(np.stack([stored_embedding(root, u) for u in uuids]))
        for member in members:
            assert member["occurrence_filter"] == "applied"
            assert member["occurrence_images"] == len(colours)
            assert member["occurrence_similarity"] == pytest.approx(want, abs=1e-9)
    mixed = [rows[f"occ-mixed-{i}.jpg"] for i in range(3)]
    assert {m["reason"] for m in mixed} == {"mixed_occurrence"}
    frames = [rows[f"occ-frames-{i}.jpg"] for i in range(3)]
    assert all(f["occurrence_camera_trap"] for f in frames)
    # Near-identical frames are screened like camera-trap images; no MegaDetector configured.
    assert {f["camera_trap_filter"] for f in frames} == {"not_run"}
    many = [rows[f"occ-many-{i}.jpg"] for i in range(7)]
    assert 0.5 <= many[0]["occurrence_similarity"] < 0.95
    kept = kept_uuids([m["uuid"] for m in many], OccurrenceRule())
    for member in many:
        want = None if member["uuid"] in kept else "occurrence_downsampled"
        assert member["reason"] == want
    assert sum(m["status"] == "ok" for m in many) == 5


def test_support_set_of_another_embedder_is_refused(root_and_args, tmp_path: Path):
    root, args = root_and_args
    other = [*args, "--set", 'filter.embedder_weights="/etc/hostname"', "--set", "cluster.workers=1"]
    result = cli(root, *other, "run", "filter", "--rebuild", check=False)
    assert result.returncode != 0
    assert "rebuild it with `tolpipe filter build-support-set`" in result.stderr
