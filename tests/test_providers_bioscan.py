"""BIOSCAN-5M through 01 -> 03: metadata CSV + image zip read in place (never extracted).

Layout: the published `BIOSCAN_5M_Insect_Dataset_metadata.csv` columns and the
`bioscan5m/images/<imgtype>/<split>/<chunk>/<processid>.jpg` members of
`BIOSCAN_5M_original_256.zip`, as the BIOSCAN-5M repository (BIOSCAN_images/README.md) and the
bioscan-dataset package describe them (see tests/support/provider_fixtures.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.local_images import LOCAL_MISSING, UNSAFE_PATH, LocalReader, LocalReadError, member_problem
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.provider_fixtures import (
    BIOSCAN_ZIP,
    bioscan_member,
    by_uuid,
    photos,
    rows,
    run_01_to_03,
    write_bioscan,
    write_zip,
)

SPECIMENS = [  # processid, split, chunk, taxon, phylum, class, order, family, genus, species
    ("BIOUG01-22", "train", "a", "Apis mellifera", "Arthropoda", "Insecta", "Hymenoptera", "Apidae",
     "Apis", "Apis mellifera"),
    ("BIOUG02-22", "val", "", "Apis", "", "", "Hymenoptera", "Apidae", "Apis", ""),
    ("BIOUG03-22", "test", "", "Apis cerana", "Arthropoda", "Insecta", "Hymenoptera", "Apidae",
     "Apis", "Apis cerana"),
    ("../../../escape", "val", "", "Apis", "", "", "", "", "", ""),
]  # fmt: skip
MISSING = "BIOUG03-22"  # listed in the metadata, absent from the zip


def _dataset(folder: Path) -> tuple[Path, dict[str, bytes]]:
    images = photos(2)
    members = {bioscan_member(s[1], s[2], s[0]): images[i].read_bytes() for i, s in enumerate(SPECIMENS[:2])}
    # A hostile member name: no metadata row can reach it, and the reader refuses it by name.
    members["../escape.jpg"] = images[0].read_bytes()
    fields = (
        "processid",
        "split",
        "chunk",
        "taxon",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "species",
    )
    metadata = write_bioscan(folder, [dict(zip(fields, s, strict=True)) for s in SPECIMENS], members)
    return metadata, members


def test_bioscan_zip_through_taxonomy(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    metadata, members = _dataset(tmp_path / "bioscan")
    root = tmp_path / "root"
    run_01_to_03(root, gbif_dump, [f"bioscan:{metadata}"])

    ingested = {r["source_id"]: r for r in rows(root, "01_ingest")}
    assert set(ingested) == {s[0] for s in SPECIMENS}
    escape = ingested["../../../escape"]
    assert (escape["status"], escape["reason"]) == ("dropped", UNSAFE_PATH)
    first, second = ingested["BIOUG01-22"], ingested["BIOUG02-22"]
    assert first["status"] == second["status"] == "ok"
    assert (first["split"], second["split"]) == ("train", "val")
    assert first["local_member"] == "bioscan5m/images/original_256/train/a/BIOUG01-22.jpg"
    assert second["local_member"] == "bioscan5m/images/original_256/val/BIOUG02-22.jpg"
    assert first["local_root"] == str((tmp_path / "bioscan" / BIOSCAN_ZIP).resolve())
    # Insects only: the ranks the file leaves out are filled.
    assert (second["kingdom"], second["phylum"], second["class"]) == ("Animalia", "Arthropoda", "Insecta")
    assert {r["license"] for r in ingested.values()} == {"CC BY 3.0"}
    assert {r["rights_holder"] for r in ingested.values()} == {"Centre for Biodiversity Genomics"}

    downloaded = by_uuid(root, "02_download")
    got = downloaded[first["uuid"]]
    assert got["status"] == "ok" and got["http_status"] is None and got["attempt_log"] == "local"
    original = members[first["local_member"]]
    assert got["md5"] == hashlib.md5(original).hexdigest() and got["bytes"] == len(original)
    assert got["stored_width"] <= 720 and got["stored_md5"]
    missing = downloaded[ingested[MISSING]["uuid"]]
    assert (missing["status"], missing["reason"]) == ("dropped", LOCAL_MISSING)
    assert "BIOUG03-22.jpg" in missing["detail"]

    named = by_uuid(root, "03_taxonomy")
    assert set(named) == {first["uuid"], second["uuid"]}
    assert named[first["uuid"]]["species"] == "Apis mellifera"
    assert named[second["uuid"]]["genus"] == "Apis" and named[second["uuid"]]["species"] is None
    assert {r["resolution_status"] for r in named.values()} == {"resolved"}
    # Read in place: no image was written outside the work root's store.
    written = [p for p in tmp_path.rglob("*.jpg")]
    assert written == [], written


def test_reader_refuses_paths_that_leave_the_root(tmp_path: Path):
    image = photos(1)[0].read_bytes()
    archive = write_zip(tmp_path / "images.zip", {"../escape.jpg": image, "ok/in.jpg": image})
    reader = LocalReader(archive)
    assert reader.read("ok/in.jpg", 1 << 20) == image
    for member in ("../escape.jpg", "/etc/passwd", "ok/../../escape.jpg", "a\\..\\b.jpg"):
        with pytest.raises(LocalReadError) as caught:
            reader.read(member, 1 << 20)
        assert caught.value.reason == UNSAFE_PATH, member
    with pytest.raises(LocalReadError) as caught:
        reader.read("ok/absent.jpg", 1 << 20)
    assert caught.value.reason == LOCAL_MISSING

    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "in.jpg").write_bytes(image)
    (tmp_path / "outside.jpg").write_bytes(image)
    os.symlink(tmp_path / "outside.jpg", folder / "sub" / "link.jpg")
    tree = LocalReader(folder)
    assert tree.read("sub/in.jpg", 1 << 20) == image
    with pytest.raises(LocalReadError) as caught:
        tree.read("sub/link.jpg", 1 << 20)
    assert caught.value.reason == UNSAFE_PATH
    assert member_problem("train/a/x.jpg") is None
