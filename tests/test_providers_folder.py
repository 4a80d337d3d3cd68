"""Local images through 01 -> 03: a folder of images with a CSV of labels, read by 02 through the
same image rules as downloads; paths that leave the folder are refused, never read. And a
`kill -9` during a local-image download: the rerun equals an uninterrupted run, byte for byte.

Layout: the `folder` source is tolpipe's own (a CSV with a `file` column and the `table`
record columns; images under the CSV's folder); the crash test reads a BIOSCAN-5M-style zip
(tests/support/provider_fixtures.py)."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from pipeline.atomic import KILL_BEFORE_PUBLISH_ENV
from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from stages.download.store import store_rel_path
from tests.conftest import cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.download_fixtures import stable
from tests.support.loopback_server import bomb_png
from tests.support.pipeline_root import settings, tree_files
from tests.support.provider_fixtures import (
    bioscan_member,
    by_uuid,
    photos,
    rows,
    run_01_to_03,
    write_bioscan,
)

LABELS = [  # file, scientific_name, license, rights_holder
    ("bears/polar.jpg", "Ursus maritimus", "CC BY 4.0", "A. Photographer"),
    ("bee.jpg", "Apis mellifera", "CC0-1.0", None),
    ("../outside.jpg", "Apis mellifera", "CC0-1.0", None),
    ("/etc/hostname", "Apis mellifera", "CC0-1.0", None),
    ("link.jpg", "Apis mellifera", "CC0-1.0", None),  # a symlink to ../outside.jpg
    ("missing.jpg", "Apis mellifera", "CC0-1.0", None),
    ("tiny.png", "Apis mellifera", "CC0-1.0", None),
    ("bomb.png", "Apis mellifera", "CC0-1.0", None),  # 10,000 x 10,000 px declared in a tiny file
    ("notes.txt", "Apis mellifera", "CC0-1.0", None),
]


def _tree(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "bears").mkdir(parents=True)
    first, second = photos(2)
    shutil.copy(first, folder / "bears" / "polar.jpg")
    shutil.copy(second, folder / "bee.jpg")
    shutil.copy(first, tmp_path / "outside.jpg")
    os.symlink(tmp_path / "outside.jpg", folder / "link.jpg")
    tiny = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tiny, "PNG")
    (folder / "tiny.png").write_bytes(tiny.getvalue())
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "notes.txt").write_text("not an image\n")
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "scientific_name", "license", "rights_holder"])
        writer.writerows(LABELS)
    return labels


def test_folder_of_images_through_taxonomy(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    labels = _tree(tmp_path)
    root = tmp_path / "root"
    run_01_to_03(root, gbif_dump, [f"folder:{labels}"])

    ingested = {r["source_id"]: r for r in rows(root, "01_ingest")}
    assert set(ingested) == {label[0] for label in LABELS}
    for climbing in ("../outside.jpg", "/etc/hostname"):
        assert (ingested[climbing]["status"], ingested[climbing]["reason"]) == ("dropped", "unsafe_path")
    polar = ingested["bears/polar.jpg"]
    assert (polar["license"], polar["rights_holder"], polar["provider"]) == (
        "CC BY 4.0",
        "A. Photographer",
        "labels",
    )

    downloaded = by_uuid(root, "02_download")
    # The same image rules as downloaded bytes; paths leaving the root are never read.
    expected = {"link.jpg": "unsafe_path", "missing.jpg": "local_missing", "tiny.png": "too_small",
                "bomb.png": "decompression_bomb", "notes.txt": "not_image"}  # fmt: skip
    reasons = {f: downloaded[ingested[f]["uuid"]]["reason"] for f in expected}
    assert reasons == expected
    assert downloaded[ingested["link.jpg"]["uuid"]]["md5"] is None  # refused before reading
    got = downloaded[polar["uuid"]]
    original = (tmp_path / "images" / "bears" / "polar.jpg").read_bytes()
    assert got["md5"] == hashlib.md5(original).hexdigest() and got["http_status"] is None
    assert got["attempt_log"] == "local" and got["attempts"] == 1

    named = by_uuid(root, "03_taxonomy")
    assert set(named) == {polar["uuid"], ingested["bee.jpg"]["uuid"]}
    assert named[polar["uuid"]]["species"] == "Ursus maritimus"


def _snapshot(root: Path) -> dict[int, tuple]:
    store = ManifestStore(root, "02_download")
    return {i: (stable(pq.read_table(store.part_path(i))), sha256_file(root / store_rel_path(i)))
            for i in sorted(store.committed_records())}  # fmt: skip


def test_kill_9_during_local_download_then_resume_equals_uninterrupted(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    images = photos(24)
    specimens = [(f"BIOUG{i:03d}-22", "train", "0123456789abcdef"[i % 16]) for i in range(len(images))]
    members = {
        bioscan_member(s, c, p): img.read_bytes() for (p, s, c), img in zip(specimens, images, strict=True)
    }
    metadata = write_bioscan(tmp_path / "bioscan", [
        {"processid": p, "split": s, "chunk": c, "taxon": "Apis mellifera"} for p, s, c in specimens
    ], members)  # fmt: skip
    args = [*settings(gbif_dump, batch_size=6), "--set", "cluster.workers=2"]
    template = tmp_path / "template"
    cli(template, *args, "run", "ingest", "--source", f"bioscan:{metadata}")

    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    cli(reference, *args, "run", "download")
    want = _snapshot(reference)
    assert len(want) == 4 and all(t["status"].to_pylist() == ["ok"] * 6 for t, _ in want.values())

    root = tmp_path / "killed"
    shutil.copytree(template, root)
    killed = cli(
        root, *args, "run", "download", check=False, env={KILL_BEFORE_PUBLISH_ENV: "part-00002.parquet"}
    )
    assert killed.returncode == -9, killed.stderr
    assert len(ManifestStore(root, "02_download").committed_records()) < 4
    cli(root, *args, "run", "download")
    got = _snapshot(root)
    assert sorted(got) == sorted(want)
    for index, (table, store_sha) in want.items():
        assert got[index][0].equals(table), f"manifest part {index} differs"
        assert got[index][1] == store_sha, f"image store part {index} differs"
    assert tree_files(root) == tree_files(reference)
