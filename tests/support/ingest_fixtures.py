"""Small, real ingest inputs: Darwin Core Archives (zip or folder), EOL media manifests, CSV and
Parquet URL tables, and record tables for the rule functions.

Rows are dicts keyed by Darwin Core / Dublin Core local term names (`gbifID`, `basisOfRecord`,
`identifier`, ...); `TERM_URIS` gives the full term written to meta.xml.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from demo.dwca import (  # noqa: F401 (re-exported for the ingest tests)
    AC_MULTIMEDIA,
    EOL_HEADER,
    GBIF_MULTIMEDIA,
    MULTIMEDIA_TERMS,
    OCCURRENCE,
    OCCURRENCE_TERMS,
    TERM_URIS,
    term_uri,
    write_dwca,
    write_eol_manifest,
)
from stages.ingest.sources import RECORD_SCHEMA


def sample_occurrences() -> list[dict[str, Any]]:
    """Occurrences covering each image type and a few collection areas."""
    return [
        {"gbifID": "1", "occurrenceID": "urn:occ:1", "basisOfRecord": "PRESERVED_SPECIMEN",
         "scientificName": "Quercus robur L.", "kingdom": "Plantae", "phylum": "Tracheophyta",
         "class": "Magnoliopsida", "order": "Fagales", "family": "Fagaceae", "genus": "Quercus",
         "species": "Quercus robur", "publisher": "Natural History Museum"},
        {"gbifID": "2", "occurrenceID": "urn:occ:2", "basisOfRecord": "HUMAN_OBSERVATION",
         "scientificName": "Bubo bubo", "kingdom": "Animalia", "phylum": "Chordata",
         "class": "Aves", "genus": "Bubo", "species": "Bubo bubo", "vernacularName": "Eurasian eagle-owl",
         "publisher": "iNaturalist.org"},
        {"gbifID": "3", "basisOfRecord": "MACHINE_OBSERVATION", "kingdom": "Animalia",
         "phylum": "Chordata", "class": "Mammalia", "genus": "Vulpes", "specificEpithet": "vulpes",
         "eventRemarks": "Camera trap deployment 4; Trigger Sensitivity: High",
         "institutionCode": "CT-INST"},
        {"gbifID": "4", "occurrenceID": "urn:occ:4", "basisOfRecord": "MATERIAL_CITATION",
         "kingdom": "Animalia", "phylum": "Arthropoda", "class": "Insecta", "genus": "Apis",
         "datasetName": "Literature citations"},
    ]  # fmt: skip


def sample_media() -> list[dict[str, Any]]:
    """Multimedia rows for `sample_occurrences`: images, a sound, bad URLs and an orphan."""
    return [
        {"gbifID": "1", "type": "StillImage", "format": "image/jpeg",
         "identifier": "https://images.example.org/q1.jpg", "license": "CC0", "rightsHolder": "NHM"},
        {"gbifID": "1", "type": "Sound", "format": "audio/mpeg",
         "identifier": "https://images.example.org/q1.mp3"},
        {"gbifID": "2", "type": "StillImage", "format": "image/jpeg",
         "identifier": "https://inat.example.org/photos/2/large.jpg", "license": "CC-BY"},
        {"gbifID": "3", "type": "", "format": "image/png",
         "identifier": "http://camtrap.example.org:8080/f3.png"},
        {"gbifID": "4", "type": "StillImage", "identifier": "https://lit.example.org/p4.jpg"},
        {"gbifID": "2", "type": "StillImage", "identifier": "ftp://files.example.org/2.jpg"},
        {"gbifID": "2", "type": "StillImage", "identifier": ""},
        {"gbifID": "999", "type": "StillImage", "identifier": "https://orphan.example.org/x.jpg"},
    ]  # fmt: skip


def sample_eol_rows(n: int = 3) -> list[dict[str, Any]]:
    return [
        {"EOL content ID": str(1000 + i), "EOL page ID": str(45511218 + i),
         "Medium Source URL": f"https://source.example.org/{i}.jpg",
         "EOL Full-Size Copy URL": f"https://content.eol.example.org/data/media/{i}.jpg",
         "License Name": "cc-by-nc-sa-3.0", "Copyright Owner": f"Owner {i}"}
        for i in range(n)
    ]  # fmt: skip


def write_table_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                    delimiter: str = ",") -> Path:  # fmt: skip
    """A CSV (or TSV) URL table with a header row."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return path


def write_table_parquet(path: Path, table: pa.Table | Sequence[dict[str, Any]]) -> Path:
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(list(table))
    pq.write_table(table, path)
    return path


def default_ingest_params() -> dict[str, Any]:
    """The `[ingest]` section of stages/ingest/defaults.toml."""
    path = Path(__file__).resolve().parents[2] / "stages" / "ingest" / "defaults.toml"
    with open(path, "rb") as handle:
        return tomllib.load(handle)["ingest"]


def record_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Records with `RECORD_SCHEMA` (unset columns null; source_kind defaults to gbif) plus
    `images_in_occurrence` (int32), for the rule functions."""
    fields = list(RECORD_SCHEMA) + [pa.field("images_in_occurrence", pa.int32())]
    data = {f.name: [row.get(f.name) for row in rows] for f in fields}
    data["source_kind"] = [row.get("source_kind", "gbif") for row in rows]
    data["source_row"] = [row.get("source_row", i) for i, row in enumerate(rows)]
    return pa.table(data, schema=pa.schema(fields))
