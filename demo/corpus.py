"""The shipped corpus of real organism photos with known taxa (demo/data/photos/).

Each photo is listed in CREDITS.csv with its scientific name, the ranks kingdom..species where
they are settled (empty strings otherwise), an English common name, licence, author and source.
Rebuilt by demo/extract_gcompris.py; described in demo/data/photos/README.md.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# The seven ranks of the ingest manifest, in order.
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
# Licences the corpus may contain.
SHIPPABLE_LICENCES = ("public domain", "CC0-1.0")


@dataclass(frozen=True)
class Photo:
    file_name: str
    scientific_name: str
    kingdom: str
    phylum: str
    class_: str  # `class` in CREDITS.csv and in the manifests
    order: str
    family: str
    genus: str
    species: str
    common_name: str
    license: str
    author: str
    source: str  # the Wikimedia Commons (or Flickr) page of the original
    origin: str  # where in the Debian package the photo was taken from

    @property
    def path(self) -> Path:
        return corpus_dir() / self.file_name

    @property
    def ranks(self) -> dict[str, str]:
        """kingdom..species under the manifest's column names; "" where not stated."""
        return {rank: getattr(self, "class_" if rank == "class" else rank) for rank in RANKS}


def corpus_dir() -> Path:
    return DATA_DIR / "photos"


def faces_dir() -> Path:
    """Public-domain portraits (one face each) for face-filter tests; see its CREDITS.csv."""
    return DATA_DIR / "faces"


def load_corpus() -> list[Photo]:
    """Every photo of CREDITS.csv, in file order."""
    column_of = {f.name: ("class" if f.name == "class_" else f.name) for f in fields(Photo)}
    column_of["file_name"] = "file"
    with open(corpus_dir() / "CREDITS.csv", newline="", encoding="utf-8") as handle:
        return [Photo(**{name: row[column] for name, column in column_of.items()})
                for row in csv.DictReader(handle)]  # fmt: skip
