"""Inputs of bench/bench_filter.py: the 44 real photos of tests/data re-encoded as stage 02 stores
images, and a work root built 01 -> 03 through the real CLI over copies of them.

Each of the `count` images is its own file (`00017-<photo>.jpg`), its own row and its own stored
image: the animals as citizen-science rows (one occurrence each), the portraits as `other` rows,
as tests/support/filter_root.py does. The files are served by the loopback server on HOSTS
hosts; 01 partitions by host, then by ingest.batch_size, which the bench sets so that the root has
about `partitions` partitions. 03 uses the mini GBIF backbone of the tests.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from pipeline.joined import iter_images
from pipeline.ledger import ManifestStore
from stages.download.images import encode_jpeg
from tests.support.backbone_fixture import build_gbif_dump
from tests.support.filter_root import CITIZEN, Row, build_root, write_table
from tests.support.loopback_server import LoopbackServer
from tests.support.photo_corpus import corpus_dir, faces_dir, load_corpus
from tests.support.pipeline_root import settings

STORED_SIDE = 720  # download.max_side
JPEG_QUALITY = 95  # download.jpeg_quality
JPEG_SUBSAMPLING = 2  # download.jpeg_subsampling "4:2:0"
HOSTS = 4  # loopback hosts the files are served from (01 partitions by host first)
BUILT = "built.txt"  # in a finished root folder: the image and partition counts it was built for


@dataclass(frozen=True)
class Stored:
    """One stored image of the root: 01's uuid and source_id (the file name), 02's JPEG bytes."""

    uuid: str
    name: str
    jpeg: bytes


def photos() -> list[Path]:
    """The 42 animal photos, then the 2 portraits."""
    return sorted(corpus_dir().glob("*.jpg")) + sorted(faces_dir().glob("*.jpg"))


def portrait_names() -> set[str]:
    return {p.name for p in faces_dir().glob("*.jpg")}


def stored_jpeg(path: Path) -> bytes:
    """The photo as stage 02 would store it: longest side STORED_SIDE, stage 02's JPEG settings."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    scale = STORED_SIDE / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return encode_jpeg(im.resize(size, Image.Resampling.LANCZOS), JPEG_QUALITY, JPEG_SUBSAMPLING)


def photo_of(name: str) -> str:
    """The shipped photo a file of the root is a copy of ("00017-fox.jpg" -> "fox.jpg")."""
    return name.split("-", 1)[1]


def write_files(folder: Path, count: int) -> list[Row]:
    """`count` files, photo i % 44 re-encoded at stored size under a name of its own; their rows."""
    species = {p.file_name: p.scientific_name for p in load_corpus()}
    portraits = portrait_names()
    distinct = [(p.name, stored_jpeg(p)) for p in photos()]
    rows = []
    for i in range(count):
        photo, data = distinct[i % len(distinct)]
        name = f"{i:05d}-{photo}"
        (folder / name).write_bytes(data)
        if photo in portraits:
            rows.append(Row(name, name, i % HOSTS, scientific_name="Homo sapiens"))
        else:
            rows.append(Row(name, name, i % HOSTS, f"occ-{i}", "HUMAN_OBSERVATION", CITIZEN,
                            scientific_name=species[photo]))  # fmt: skip
    return rows


def build(work: Path, count: int, partitions: int) -> tuple[Path, list[str]]:
    """A root built 01 -> 03 under `work` (reused when already built for these counts); returns it
    and the --set arguments later runs of it use."""
    root = work / "root-03"
    backbone = build_gbif_dump(work / "backbone.zip", as_zip=True)
    per_host = math.ceil(count / HOSTS)
    batch = math.ceil(per_host / max(1, math.ceil(partitions / HOSTS)))
    stamp = f"{count} images, ingest.batch_size {batch}\n"
    if (root / BUILT).is_file() and (root / BUILT).read_text() == stamp:
        return root, settings(backbone, batch_size=batch)
    folder = work / "files"
    for old in (root, folder):
        shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = write_files(folder, count)
    with LoopbackServer(hosts=HOSTS, folder=folder) as server:
        table = write_table(work / "images.csv", rows, server)
        args = build_root(root, table, backbone, batch_size=batch)
    (root / BUILT).write_text(stamp)
    return root, args


def source_ids(root: Path) -> dict[str, str]:
    """uuid -> source_id of every 01 row."""
    store = ManifestStore(root, "01_ingest")
    table = pa.concat_tables([pq.read_table(store.part_path(i), columns=["uuid", "source_id"])
                              for i in sorted(store.committed_records())])  # fmt: skip
    return dict(zip(table["uuid"].to_pylist(), table["source_id"].to_pylist(), strict=True))


def stored_images(root: Path) -> list[Stored]:
    """Every image of the root's store, as stage 04 reads it, in file-name order."""
    names = source_ids(root)
    found = [Stored(uuid, names[uuid], jpeg)
             for index in sorted(ManifestStore(root, "02_download").committed_records())
             for uuid, jpeg in iter_images(root, index)]  # fmt: skip
    return sorted(found, key=lambda s: s.name)


def stage_drops(root: Path, stage_dir: str = "04_filter") -> tuple[dict[str, int], set[str]]:
    """Counts by status of a stage's committed rows, and the source_ids it dropped as human_face."""
    store = ManifestStore(root, stage_dir)
    table = pa.concat_tables([pq.read_table(store.part_path(i), columns=["uuid", "status", "reason"])
                              for i in sorted(store.committed_records())])  # fmt: skip
    statuses = {r["values"]: r["counts"] for r in table["status"].value_counts().to_pylist()}
    names = source_ids(root)
    faces = table.filter(pc.equal(table["reason"], "human_face"))["uuid"].to_pylist()
    return statuses, {names[u] for u in faces}
