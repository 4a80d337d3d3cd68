"""Work roots for stage 06 tests, built 01 -> 05 through the real CLI from real photos.

The 42 shipped animal photos are served by the loopback server from three hosts, as `table` rows
of two providers that carry the photos' lineage from CREDITS.csv, the author as rights holder and
the licence. 03 resolves them against a GBIF-layout backbone built here from those lineages
(`build_corpus_dump`), so the 03 rows keep the corpus's gaps (photos without an order or family,
genus-level photos without a species) and its tautonyms (Bison bison, Alces alces); every
NO_COMMON_EVERY-th species has no common name. Added rows cover what the photos do not:

- `Ursus spelaeus` (the polar bear photo with a JPEG comment added, so 05 does not drop it as
  an MD5 duplicate), given by name alone: 03 resolves it and gives it only a German common name,
  Höhlenbär (non-ASCII);
- a row with no taxonomy at all (another photo, commented likewise): 03 keeps it
  (`empty_input`), 06 must account for it;
- the two shipped portraits: 04's face filter drops them, so 06 never sees them.

The root is built 01 -> 05 (05 dedup with no test set registered: MD5 dedup only).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from tests.conftest import cli
from tests.support.backbone_fixture import VERNACULAR_HEADER, _row, write_dump
from tests.support.loopback_server import LoopbackServer
from tests.support.photo_corpus import RANKS, Photo, corpus_dir, faces_dir, load_corpus
from tests.support.pipeline_root import settings

HOSTS = 3
# Every NO_COMMON_EVERY-th photo's species gets no vernacular name in the dump (captions fall back).
NO_COMMON_EVERY = 4
PROVIDERS = ("inaturalist-test", "museum-test")
FIELDS = ["url", "source_id", "provider", "occurrence_id", "scientific_name", *RANKS, "common_name",
          "license", "rights_holder", "basis_of_record", "publisher"]  # fmt: skip
NO_TAXON_ID = "no-taxon"
CAVE_BEAR_ID = "cave-bear"


CAVE_BEAR = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia", "order": "Carnivora",
             "family": "Ursidae", "genus": "Ursus", "species": "Ursus spelaeus"}  # fmt: skip


def _lineages(photos: list[Photo]) -> list[dict[str, str]]:
    return [photo.ranks for photo in photos] + [CAVE_BEAR]


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment after its start marker: other bytes (another MD5),
    the same image."""
    payload = text.encode("utf-8")
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def corpus_taxa(photos: list[Photo]) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Taxon.tsv rows (GBIF's layout) for every taxon the lineages name, each accepted, its
    classification the ranks above it; and taxon id by canonical name."""
    rows: dict[str, dict[str, str]] = {}
    for lineage in _lineages(photos):
        above: dict[str, str] = {}
        parent = ""
        for rank in RANKS:
            name = lineage[rank]
            if not name:
                continue
            key = f"{rank}:{name}"
            if key not in rows:
                words = name.split(" ")
                parts = {"genericName": words[0]} if rank in ("genus", "species") else {}
                if rank == "species":
                    parts["specificEpithet"] = words[1]
                rows[key] = _row(taxonID=str(len(rows) + 1), parentNameUsageID=parent, scientificName=name,
                                 canonicalName=name, taxonRank=rank, taxonomicStatus="accepted",
                                 **above, **({rank: name} if rank != "species" else {}), **parts)  # fmt: skip
            parent = rows[key]["taxonID"]
            if rank != "species":
                above[rank] = name
    ids = {row["canonicalName"]: row["taxonID"] for row in rows.values()}
    return list(rows.values()), ids


def corpus_vernaculars(photos: list[Photo], ids: dict[str, str]) -> list[dict[str, str]]:
    """English names from CREDITS.csv for the species (some left without), and the cave bear's
    German one."""
    rows = []
    for i, photo in enumerate(photos):
        if photo.species and photo.common_name and i % NO_COMMON_EVERY != NO_COMMON_EVERY - 1:
            rows.append({"taxonID": ids[photo.species], "vernacularName": photo.common_name,
                         "language": "en"})  # fmt: skip
    rows.append({"taxonID": ids["Ursus spelaeus"], "vernacularName": "Höhlenbär", "language": "de"})
    unique = {(r["taxonID"], r["vernacularName"]): r for r in rows}
    return [{k: r.get(k, "") for k in VERNACULAR_HEADER} for r in unique.values()]


def build_corpus_dump(dest: Path) -> Path:
    """A GBIF-layout backbone zip of the corpus's taxa, so 03 resolves every photo's lineage."""
    photos = load_corpus()
    taxa, ids = corpus_taxa(photos)
    return write_dump(dest, taxa, corpus_vernaculars(photos, ids), as_zip=True)


@dataclass(frozen=True)
class SourceRow:
    file: str
    source_id: str
    host: int
    values: dict[str, str]


def source_rows(folder: Path) -> list[SourceRow]:
    """Copy the served files into `folder`; the rows of the table source, in file order."""
    rows = []
    for i, photo in enumerate(load_corpus()):
        shutil.copy(photo.path, folder / photo.file_name)
        values = {"scientific_name": photo.scientific_name, **photo.ranks, "common_name": photo.common_name,
                  "license": photo.license, "rights_holder": photo.author,
                  "provider": PROVIDERS[i % 2]}  # fmt: skip
        rows.append(SourceRow(photo.file_name, f"photo-{i}", i % HOSTS, values))
    (folder / "cave_bear.jpg").write_bytes(with_comment((corpus_dir() / "ursus_maritimus.jpg").read_bytes(),
                                                        "cave bear"))  # fmt: skip
    rows.append(SourceRow("cave_bear.jpg", CAVE_BEAR_ID, 1, {
        "scientific_name": "Ursus spelaeus", "license": "CC0-1.0",
        "rights_holder": "Zoë Ångström", "provider": PROVIDERS[1]}))  # fmt: skip
    (folder / "unnamed.jpg").write_bytes(with_comment((corpus_dir() / "felis_catus.jpg").read_bytes(),
                                                      "no name"))  # fmt: skip
    rows.append(SourceRow("unnamed.jpg", NO_TAXON_ID, 2, {"license": "CC0-1.0", "provider": PROVIDERS[0]}))
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(faces_dir() / name, folder / name)
        rows.append(SourceRow(name, f"face-{name}", 0, {"scientific_name": "Homo sapiens",
                                                         "kingdom": "Animalia", "provider": PROVIDERS[0]}))
    return rows


def write_source(path: Path, rows: list[SourceRow], server: LoopbackServer) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            url = server.url(row.host, f"/files/{row.file}")
            fixed = {"url": url, "source_id": row.source_id, "occurrence_id": f"occ-{row.source_id}",
                     "basis_of_record": "HUMAN_OBSERVATION"}  # fmt: skip
            writer.writerow({**{f: "" for f in FIELDS}, **row.values, **fixed})
    return path


def build_shard_root(base: Path, batch_size: int = 8) -> tuple[Path, list[str]]:
    """01 -> 05 over the rows above (8 rows per 01 partition) with the corpus's backbone; returns
    the root and the --set arguments later runs of the same root use."""
    folder = base / "files"
    folder.mkdir(parents=True)
    rows = source_rows(folder)
    root = base / "root"
    args = settings(build_corpus_dump(base / "backbone.zip"), batch_size=batch_size)
    with LoopbackServer(hosts=HOSTS, folder=folder) as server:
        table = write_source(base / "photos.csv", rows, server)
        cli(root, *args, "run", "ingest", "--source", f"table:{table}")
        cli(root, *args, "run", "download")
    cli(root, *args, "run", "taxonomy")
    cli(root, *args, "run", "filter")
    cli(root, *args, "run", "dedup")
    return root, args


SHARD = "06_shard"
UPSTREAM_OK = 44  # rows 05 keeps: 42 photos, the cave bear, the row without taxonomy


_BUILT: dict[str, tuple[Path, list[str]]] = {}


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A root built 01 -> 05 once per test session (each module importing this fixture gets its
    own fixture, so the root is kept here); tests work on copies (copy_root)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = build_shard_root(tmp_path_factory.mktemp("shard"))
    return _BUILT[key]


def copy_root(built: tuple[Path, list[str]], dest: Path) -> tuple[Path, list[str]]:
    root, args = built
    shutil.copytree(root, dest)
    return dest, args


def manifest(root: Path) -> pa.Table:
    """Every committed 06 partition's rows, in partition order."""
    store = ManifestStore(root, SHARD)
    return pa.concat_tables([pq.read_table(store.part_path(i)) for i in sorted(store.committed_records())])


def shard_files(root: Path) -> dict[str, str]:
    """shards/<name> -> sha256, for every file in shards/ (tars, sizes.json, README.txt)."""
    folder = root / "shards"
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def tar_paths(root: Path, prefix: str = "shard") -> list[Path]:
    return sorted((root / "shards").glob(f"{prefix}-*.tar"))
