"""A real mini GBIF backbone dump (Taxon.tsv + VernacularName.tsv, GBIF's column layout) built
from recorded GBIF API answers shipped with the reference data:

- the 749 GBIF Backbone usage records (r-cran-taxize fixtures), one Taxon.tsv row each;
- the 20 recorded /species/match answers and their alternatives (homonyms such as Dugesia and
  Satyrium, the synonym Spruceanthus marianus -> Cheilolejeunea mariana);
- the higher taxa and accepted species those records name by key (kingdomKey ... speciesKey),
  as accepted rows, so genus/family terms and synonym targets resolve too.

GBIF carries almost no vernacular names in these records (two), so well-known common names are
added by hand (several languages for some taxa, one taxon with only a German name) to exercise
the English-first rule. `SOURCE_1_TAXA` is a small hand-written second source (classification
facts from the Catalogue of Life; the ids are made up) for multi-source tests.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

# The recorded GBIF answers, shipped with the demo (see demo/data/gbif/README.md).
REFERENCE = Path(__file__).resolve().parent / "data" / "gbif"
USAGES = REFERENCE / "gbif_usages_from_r-cran-taxize.jsonl"
MATCHES = REFERENCE / "gbif_species_match_from_r-cran-taxize.json"

TAXON_HEADER = (
    "taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID",
    "scientificName", "scientificNameAuthorship", "canonicalName", "genericName",
    "specificEpithet", "infraspecificEpithet", "taxonRank", "nameAccordingTo", "namePublishedIn",
    "taxonomicStatus", "nomenclaturalStatus", "taxonRemarks", "kingdom", "phylum", "class",
    "order", "family", "genus",
)  # fmt: skip
VERNACULAR_HEADER = ("taxonID", "vernacularName", "language", "country", "countryCode", "sex",
                     "lifeStage", "source")  # fmt: skip
HIGHER = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
HAND_SOURCE = "hand-added test fixture"
# Files of a built dump, in this order; as zip entries with a fixed time (the zip epoch) and fixed
# permissions, so the same rows give the same bytes (and the same dump sha256) on every build.
DUMP_FILES = ("Taxon.tsv", "VernacularName.tsv")
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644  # regular file, rw-r--r--

# Well-known common names by canonical name (taxon in the fixture): (name, language).
HAND_VERNACULARS: dict[str, list[tuple[str, str]]] = {
    "Ursus arctos": [
        ("Braunbär", "de"),
        ("brown bear", "en"),
        ("Brown Bear", "en"),
        ("Ours brun", "fr"),
        ("Oso pardo", "es"),
    ],
    "Ursus maritimus": [("Eisbär", "de"), ("polar bear", "en"), ("Ours blanc", "fr")],
    "Ursus americanus": [("American black bear", "en"), ("Baribal", "de")],
    "Ursus thibetanus": [("Asian black bear", "en")],
    "Ursus spelaeus": [("Höhlenbär", "de"), ("Ours des cavernes", "fr")],
    "Apis mellifera": [
        ("Westliche Honigbiene", "de"),
        ("western honey bee", "en"),
        ("Abeille domestique", "fr"),
    ],
    "Apis cerana": [("Asiatic honey bee", "en")],
    "Apis dorsata": [("giant honey bee", "en")],
    "Apis florea": [("dwarf honey bee", "en")],
    "Quercus douglasii": [("blue oak", "en")],
    "Poa annua": [("Einjähriges Rispengras", "de"), ("annual meadow-grass", "en")],
    "Pinus contorta": [("lodgepole pine", "en"), ("Küsten-Kiefer", "de")],
    "Boa constrictor": [("boa constrictor", "en")],
    "Ursidae": [("bears", "en"), ("Bären", "de")],
    "Apidae": [("bees", "en")],
    "Ursus": [("Bären", "de")],
}

# A second data source (served as id 1 by the test server): real classifications, made-up ids.
SOURCE_1_TAXA: list[dict[str, str]] = [
    {"taxonID": "900000001", "scientificName": "Bubo bubo (Linnaeus, 1758)",
     "scientificNameAuthorship": "(Linnaeus, 1758)", "canonicalName": "Bubo bubo",
     "genericName": "Bubo", "specificEpithet": "bubo", "taxonRank": "species",
     "taxonomicStatus": "accepted", "kingdom": "Animalia", "phylum": "Chordata", "class": "Aves",
     "order": "Strigiformes", "family": "Strigidae", "genus": "Bubo"},
    {"taxonID": "900000002", "scientificName": "Bubo", "canonicalName": "Bubo",
     "genericName": "Bubo", "taxonRank": "genus", "taxonomicStatus": "accepted",
     "kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "Strigiformes",
     "family": "Strigidae", "genus": "Bubo"},
]  # fmt: skip


def _status(value: str) -> str:
    return value.lower().replace("_", " ")


def _words(canonical: str) -> list[str]:
    return canonical.split(" ") if canonical else []


def _row(**values: object) -> dict[str, str]:
    return {k: "" if values.get(k) is None else str(values.get(k)) for k in TAXON_HEADER}


def _name_parts(canonical: str, rank: str) -> dict[str, str]:
    words = _words(canonical)
    if rank in ("genus", "species", "subspecies", "variety", "form") and words:
        parts = {"genericName": words[0]}
        if len(words) > 1 and rank != "genus":
            parts["specificEpithet"] = words[1]
        if len(words) > 2:
            parts["infraspecificEpithet"] = words[2]
        return parts
    return {}


def _usage_row(record: dict) -> dict[str, str]:
    canonical = record.get("canonicalName") or ""
    rank = record["rank"].lower()
    synonym = "SYNONYM" in record["taxonomicStatus"]
    return _row(
        taxonID=record["key"], datasetID=record.get("datasetKey"),
        parentNameUsageID=record.get("parentKey"),
        acceptedNameUsageID=record.get("acceptedKey") if synonym else None,
        originalNameUsageID=record.get("basionymKey"), scientificName=record["scientificName"],
        scientificNameAuthorship=(record.get("authorship") or "").strip(),
        canonicalName=canonical, taxonRank=rank, namePublishedIn=record.get("publishedIn"),
        taxonomicStatus=_status(record["taxonomicStatus"]), taxonRemarks=record.get("remarks"),
        **{k: record.get(k) for k in HIGHER[:-1]}, **_name_parts(canonical, rank),
    )  # fmt: skip


def _match_row(answer: dict) -> dict[str, str]:
    canonical = answer.get("canonicalName") or ""
    sci = answer["scientificName"]
    authorship = sci[len(canonical) :].strip() if canonical and sci.startswith(canonical) else ""
    rank = answer["rank"].lower()
    keys = [answer.get(f"{r}Key") for r in HIGHER]
    parent = next((k for k in reversed(keys) if k and k != answer["usageKey"]), None)
    synonym = "SYNONYM" in answer["status"]
    return _row(
        taxonID=answer["usageKey"], parentNameUsageID=parent,
        acceptedNameUsageID=answer.get("acceptedUsageKey") if synonym else None,
        scientificName=sci, scientificNameAuthorship=authorship, canonicalName=canonical,
        taxonRank=rank, taxonomicStatus=_status(answer["status"]),
        **{k: answer.get(k) for k in HIGHER[:-1]}, **_name_parts(canonical, rank),
    )  # fmt: skip


def _higher_rows(record: dict) -> list[dict[str, str]]:
    """Accepted rows for the taxa a record names by key (its classification)."""
    rows, parent = [], None
    lineage: dict[str, str] = {}
    for rank in HIGHER:
        key, name = record.get(f"{rank}Key"), record.get(rank)
        if not key or not name:
            continue
        if rank != "species":
            lineage[rank] = name
        rows.append(_row(
            taxonID=key, parentNameUsageID=parent, scientificName=name, canonicalName=name,
            taxonRank=rank, taxonomicStatus="accepted", **lineage, **_name_parts(name, rank),
        ))  # fmt: skip
        parent = key
    return rows


def taxon_rows() -> list[dict[str, str]]:
    usages = [json.loads(line) for line in USAGES.read_text().splitlines() if line.strip()]
    answers = []
    for entry in json.loads(MATCHES.read_text()):
        response = entry["response"]
        if response.get("usageKey"):
            answers.append(response)
        answers.extend(a for a in response.get("alternatives", []) if a.get("usageKey"))
    rows: dict[str, dict[str, str]] = {}
    for record in usages:  # full usage records first: they win over derived rows
        rows.setdefault(str(record["key"]), _usage_row(record))
    for answer in answers:
        rows.setdefault(str(answer["usageKey"]), _match_row(answer))
    for record in [*usages, *answers]:
        for row in _higher_rows(record):
            rows.setdefault(row["taxonID"], row)
    return [rows[k] for k in sorted(rows, key=int)]


def vernacular_rows(taxa: list[dict[str, str]]) -> list[dict[str, str]]:
    rows = []
    for record in (json.loads(line) for line in USAGES.read_text().splitlines() if line.strip()):
        for v in record.get("vernacularNames") or []:
            language = {"eng": "en"}.get(v.get("language", ""), v.get("language", ""))
            rows.append({"taxonID": str(record["key"]), "vernacularName": v["vernacularName"],
                         "language": language, "source": v.get("source", "GBIF")})  # fmt: skip
    by_name: dict[str, str] = {}
    for taxon in taxa:
        if taxon["taxonomicStatus"] == "accepted" and taxon["canonicalName"]:
            by_name.setdefault(taxon["canonicalName"], taxon["taxonID"])
    for canonical, names in sorted(HAND_VERNACULARS.items()):
        for name, language in names:
            rows.append({"taxonID": by_name[canonical], "vernacularName": name,
                         "language": language, "source": HAND_SOURCE})  # fmt: skip
    return [{k: r.get(k, "") for k in VERNACULAR_HEADER} for r in rows]


def _tsv(header: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    lines = ["\t".join(header)]
    lines += ["\t".join(r[k].replace("\t", " ").replace("\n", " ") for k in header) for r in rows]
    return "\n".join(lines) + "\n"


def zip_bytes(members: dict[str, str]) -> bytes:
    """A zip of text members with fixed order, timestamps and permissions (same input, same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the platform, so the mode bits count
            info.external_attr = ZIP_MODE << 16
            archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()


def write_if_changed(path: Path, data: bytes) -> Path:
    """Write `data` to `path` (via a temp file and a rename) unless it already holds these bytes,
    so an unchanged file keeps its mtime (and the backbone index cached under that mtime)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, path)
    return path


def write_dump(dest: Path, taxa: list[dict[str, str]], vernaculars: list[dict[str, str]],
               as_zip: bool = False) -> Path:  # fmt: skip
    """Write Taxon.tsv + VernacularName.tsv into folder `dest` (or into the zip `dest`), the same
    bytes for the same rows; files that already hold those bytes are left untouched."""
    texts = dict(zip(DUMP_FILES, (_tsv(TAXON_HEADER, taxa), _tsv(VERNACULAR_HEADER, vernaculars)),
                     strict=True))  # fmt: skip
    if as_zip:
        return write_if_changed(dest, zip_bytes(texts))
    for name, text in texts.items():
        write_if_changed(dest / name, text.encode("utf-8"))
    return dest


def build_gbif_dump(dest: Path, as_zip: bool = False) -> Path:
    taxa = taxon_rows()
    return write_dump(dest, taxa, vernacular_rows(taxa), as_zip)


def build_source1_dump(dest: Path) -> Path:
    taxa = [_row(**t) for t in SOURCE_1_TAXA]
    vernaculars = [{"taxonID": "900000001", "vernacularName": "Eurasian eagle-owl",
                    "language": "en", "source": HAND_SOURCE}]  # fmt: skip
    return write_dump(dest, taxa, [{k: v.get(k, "") for k in VERNACULAR_HEADER} for v in vernaculars])
