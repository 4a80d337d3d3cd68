"""FathomNet through 01 -> 03: a COCO export's images (coco_url over loopback HTTP), each labelled
with its annotations' concept; images naming several concepts are dropped, or keep the concept
with most boxes when so configured.

Layout: COCO object detection format (cocodataset.org/#format-data) as `fathomnet-generate
--format coco` writes it: info, licenses, images (id, file_name = image uuid + extension,
width, height, license, coco_url, flickr_url, date_captured), annotations (id, image_id,
category_id, bbox, area, iscrowd, segmentation), categories (id, name = concept)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import settings
from tests.support.provider_fixtures import by_uuid, rows, run_01_to_03, write_coco

CONCEPTS = {1: "Caridina mongziensis", 2: "Thais dayunensis", 3: "Ursus maritimus"}
UUIDS = [f"0a1b2c3d-0000-4000-8000-00000000000{i}" for i in range(4)]
LICENSES = [{"id": 1, "name": "CC BY-NC-ND 4.0", "url": "https://creativecommons.org/licenses/by-nc-nd/4.0/"}]


def _export(path: Path, server: LoopbackServer) -> Path:
    images = [
        {"id": i + 1, "file_name": f"{u}.png", "width": 640, "height": 480, "license": 1,
         "coco_url": server.image_url(0, 70 + i, 640, 480), "flickr_url": "",
         "date_captured": "2021-05-04 12:00:00"}
        for i, u in enumerate(UUIDS)
    ]  # fmt: skip
    images[3].pop("license")  # no licence in the export for this image
    annotations = [
        (1, 1),
        (1, 1),  # one concept, two boxes
        (2, 2),
        (2, 2),
        (2, 1),  # two concepts: 2 boxes of Thais, 1 of Caridina
        (4, 3),
    ]  # image 3 has no annotation
    return write_coco(path, images, annotations, CONCEPTS, LICENSES)


def test_fathomnet_coco_export_through_taxonomy(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    root = tmp_path / "root"
    with LoopbackServer(hosts=1) as server:
        export = _export(tmp_path / "fathomnet.json", server)
        run_01_to_03(root, gbif_dump, [f"fathomnet:{export}"])

    ingested = {r["source_id"]: r for r in rows(root, "01_ingest")}
    assert set(ingested) == set(UUIDS)
    single, several, empty, bear = (ingested[u] for u in UUIDS)
    assert (single["status"], single["scientific_name"], single["provider"]) == (
        "ok",
        "Caridina mongziensis",
        "fathomnet",
    )
    assert single["license"] == "CC BY-NC-ND 4.0" and bear["license"] is None
    assert (several["status"], several["reason"]) == ("dropped", "multiple_concepts")
    assert "Thais dayunensis (2), Caridina mongziensis (1)" in several["detail"]
    assert (empty["status"], empty["reason"]) == ("dropped", "no_concept")

    named = by_uuid(root, "03_taxonomy")
    assert set(named) == {single["uuid"], bear["uuid"]}
    assert named[single["uuid"]]["species"] == "Caridina mongziensis"
    assert named[bear["uuid"]]["species"] == "Ursus maritimus"
    assert named[single["uuid"]]["input_scientific_name"] == "Caridina mongziensis"


def test_fathomnet_most_boxes_rule_keeps_the_main_concept(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    root = tmp_path / "root"
    with LoopbackServer(hosts=1) as server:
        export = _export(tmp_path / "fathomnet.json", server)
    cli(root, *settings(gbif_dump), "--set", 'ingest.fathomnet_multiple_concepts="most_boxes"',
        "run", "ingest", "--source", f"fathomnet:{export}")  # fmt: skip
    several = {r["source_id"]: r for r in rows(root, "01_ingest")}[UUIDS[1]]
    assert (several["status"], several["scientific_name"]) == ("ok", "Thais dayunensis")
