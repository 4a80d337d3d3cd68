"""Small inputs in each provider's published layout, and a function that runs 01 -> 03 on them
through the real CLI with the offline backbone resolver.

- EOL: the media manifest (`ingest_fixtures.write_eol_manifest`, EOL_HEADER) and the Dynamic
  Hierarchy `taxon.tab` (DH 1.1 as distributed in `dh_v1.1.zip`: tab-separated, no quoting,
  columns taxonID, source, furtherInformationURL, acceptedNameUsageID, parentNameUsageID,
  scientificName, higherClassification, taxonRank, taxonomicStatus, taxonRemarks, datasetID,
  canonicalName, eolID, Landmark).
- BIOSCAN-5M: `BIOSCAN_5M_Insect_Dataset_metadata.csv` with the published columns (BIOSCAN-5M
  repository, BIOSCAN_images/README.md and the bioscan-dataset package's column list) and
  `BIOSCAN_5M_original_256.zip` with members bioscan5m/images/original_256/<split>/<chunk>/
  <processid>.jpg (no chunk folder for the small splits).
- FathomNet: a COCO export as `fathomnet-generate --format coco` writes it (info, licenses,
  images with coco_url/flickr_url, annotations with bbox, categories named by concept).
- folder: a CSV of labels with a `file` column, images under its folder.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.ledger import ManifestStore
from tests.conftest import cli
from tests.support.photo_corpus import corpus_dir
from tests.support.pipeline_root import settings

STAGES = ("01_ingest", "02_download", "03_taxonomy")

DH_HEADER = (
    "taxonID", "source", "furtherInformationURL", "acceptedNameUsageID", "parentNameUsageID",
    "scientificName", "higherClassification", "taxonRank", "taxonomicStatus", "taxonRemarks",
    "datasetID", "canonicalName", "eolID", "Landmark",
)  # fmt: skip
BIOSCAN_HEADER = (
    "processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus",
    "species", "dna_bin", "dna_barcode", "country", "province_state", "coord-lat", "coord-lon",
    "image_measurement_value", "area_fraction", "scale_factor", "inferred_ranks", "split",
    "index_bioscan_1M_insect", "chunk",
)  # fmt: skip
BIOSCAN_ZIP = "BIOSCAN_5M_original_256.zip"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def photos(n: int) -> list[Path]:
    """The first n shipped photos of the demo corpus (credited in its CREDITS.csv)."""
    files = sorted(corpus_dir().glob("*.jpg"))
    assert len(files) >= n, f"only {len(files)} photos shipped"
    return files[:n]


def write_dh_taxa(path: Path, rows: list[dict[str, str]]) -> Path:
    """taxon.tab of EOL's Dynamic Hierarchy (rows: dicts with DH column names)."""
    lines = ["\t".join(DH_HEADER)]
    lines += ["\t".join(row.get(col, "") for col in DH_HEADER) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dh_lineage(species: list[tuple[str, str, str]], ranks: dict[str, str]) -> list[dict[str, str]]:
    """DH rows: a chain of higher taxa (rank -> name, outermost first) and species
    (page id, canonical name, scientific name) under its last member."""
    rows, parent = [], ""
    for i, (rank, name) in enumerate(ranks.items()):
        taxon = f"EOL-{i:06d}"
        rows.append({"taxonID": taxon, "source": "trunk:1", "parentNameUsageID": parent,
                     "scientificName": name, "canonicalName": name, "taxonRank": rank,
                     "taxonomicStatus": "accepted", "eolID": str(9000 + i)})  # fmt: skip
        parent = taxon
    for page, canonical, scientific in species:
        rows.append({"taxonID": f"EOL-P{page}", "source": "trunk:1", "parentNameUsageID": parent,
                     "scientificName": scientific, "canonicalName": canonical,
                     "taxonRank": "species", "taxonomicStatus": "accepted", "eolID": page})  # fmt: skip
    return rows


def write_bioscan(folder: Path, rows: list[dict[str, str]], members: dict[str, bytes]) -> Path:
    """The metadata CSV (every published column; values from `rows`) and the image zip."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = folder / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    with open(metadata, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(BIOSCAN_HEADER)
        for row in rows:
            writer.writerow([row.get(col, "") for col in BIOSCAN_HEADER])
    write_zip(folder / BIOSCAN_ZIP, members)
    return metadata


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data)
    return path


def bioscan_member(split: str, chunk: str, processid: str) -> str:
    parts = ["bioscan5m/images/original_256", split, *([chunk] if chunk else []), f"{processid}.jpg"]
    return "/".join(parts)


def write_coco(path: Path, images: list[dict[str, Any]], annotations: list[tuple[int, int]],
               categories: dict[int, str], licenses: list[dict[str, Any]]) -> Path:  # fmt: skip
    """A COCO export; annotations as (image id, category id), one box each."""
    data = {
        "info": {"description": "FathomNet export", "version": "1.0", "year": 2026},
        "licenses": licenses,
        "images": images,
        "annotations": [
            {
                "id": i + 1,
                "image_id": image,
                "category_id": cat,
                "bbox": [10.0, 10.0, 50.0, 40.0],
                "area": 2000.0,
                "iscrowd": 0,
                "segmentation": [],
            }
            for i, (image, cat) in enumerate(annotations)
        ],  # fmt: skip
        "categories": [{"id": k, "name": v, "supercategory": ""} for k, v in categories.items()],
    }
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def run_01_to_03(root: Path, backbone: Path, sources: list[str], *extra: str) -> None:
    args = [*settings(backbone), "--set", "download.local_threads=2", *extra]
    cli(root, *args, "run", "ingest", *[a for s in sources for a in ("--source", s)])
    for stage in ("download", "taxonomy"):
        cli(root, *args, "run", stage)


def rows(root: Path, stage_dir: str) -> list[dict[str, Any]]:
    store = ManifestStore(root, stage_dir)
    out: list[dict[str, Any]] = []
    for index in sorted(store.committed_records()):
        out.extend(pq.read_table(store.part_path(index)).to_pylist())
    return out


def by_uuid(root: Path, stage_dir: str) -> dict[str, dict[str, Any]]:
    return {r["uuid"]: r for r in rows(root, stage_dir)}
