"""Work roots for stage 04 tests, built 01 -> 03 through the real CLI from real photos.

Served from one folder by the loopback server: the 42 shipped animal photos (citizen science,
one occurrence each unless grouped), the two shipped portraits (image type `other`), and images
generated here for the cases no photo shows: solid colours for museum specimens and occurrences
whose embeddings the known embedder predicts (tests/support/known_embedder.py), and camera-trap
frames. Rows are spread over the server's hosts, so one occurrence can span two partitions.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tests.conftest import cli
from tests.support.photo_corpus import corpus_dir, faces_dir, load_corpus
from tests.support.pipeline_root import settings

CITIZEN = "iNaturalist.org"
FIELDS = ["url", "source_id", "provider", "occurrence_id", "scientific_name", "kingdom", "license",
          "basis_of_record", "publisher", "event_remarks"]  # fmt: skip


@dataclass
class Row:
    file: str
    source_id: str
    host: int = 0
    occurrence_id: str = ""
    basis_of_record: str = ""
    publisher: str = ""
    event_remarks: str = ""
    scientific_name: str = "Animalia"
    extra: dict = field(default_factory=dict)


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (320, 256)) -> Path:
    Image.new("RGB", size, rgb).save(path, quality=95)
    return path


def photo_rows(folder: Path, hosts: int) -> list[Row]:
    """The animal photos (citizen science, one occurrence each) and the portraits (`other`)."""
    rows = []
    for i, photo in enumerate(load_corpus()):
        shutil.copy(corpus_dir() / photo.file_name, folder / photo.file_name)
        rows.append(Row(photo.file_name, f"photo-{i}", i % hosts, f"occ-photo-{i}", "HUMAN_OBSERVATION",
                        CITIZEN, scientific_name=photo.scientific_name))  # fmt: skip
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(faces_dir() / name, folder / name)
        rows.append(Row(name, f"face-{name}", 0, scientific_name="Homo sapiens"))
    return rows


def write_table(path: Path, rows: list[Row], server) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({
                "url": server.url(row.host, f"/files/{row.file}"), "source_id": row.source_id,
                "provider": "filter-test", "occurrence_id": row.occurrence_id,
                "scientific_name": row.scientific_name, "kingdom": "Animalia", "license": "CC0-1.0",
                "basis_of_record": row.basis_of_record, "publisher": row.publisher,
                "event_remarks": row.event_remarks,
            })  # fmt: skip
    return path


def build_root(root: Path, table: Path, backbone: Path, batch_size: int = 16) -> list[str]:
    """01 -> 03 on `table`; returns the --set arguments later runs of the same root use."""
    args = settings(backbone, batch_size=batch_size)
    cli(root, *args, "run", "ingest", "--source", f"table:{table}")
    cli(root, *args, "run", "download")
    cli(root, *args, "run", "taxonomy")
    return args
