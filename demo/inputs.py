"""The demo's provider-style inputs, built from the shipped corpus (demo/data/):

- a GBIF Darwin Core Archive (occurrence core + multimedia extension) whose basisOfRecord,
  publishers and event remarks exercise stage 01's image types (museum specimens, camera traps,
  citizen science) and drops (a material citation, a sound, an ftp URL, a repeated URL), with
  face photos attached to observations, planted copies, and verbatim names that exercise
  resolution: a typo, a synonym, missing ranks and a homonym;
- an EOL media manifest for a few other photos;
- a mini GBIF backbone with the real lineages of the demo species (demo/backbone.py) plus the
  synonym the archive uses;
- a held-out test set (photos that are in no provider input; re-encoded and resized copies of
  them are planted in the archive).

Every image URL points at the loopback server; every file is rebuilt only when its bytes change,
so a rerun on the same root and port skips every committed partition.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from demo.backbone import TAXON_HEADER, taxon_rows, vernacular_rows, write_dump, write_if_changed, zip_bytes
from demo.corpus import DATA_DIR, RANKS, Photo, corpus_dir, faces_dir, load_corpus
from demo.dwca import EOL_HEADER, write_dwca

CORE_TERMS = [
    "gbifID",
    "occurrenceID",
    "basisOfRecord",
    "scientificName",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
    "vernacularName",
    "publisher",
    "eventRemarks",
]
HIGHER = RANKS[:-1]  # kingdom..genus
DEMO_ID_BASE = 990_000_000  # taxon ids of rows the demo adds to the backbone
SCENES = DATA_DIR / "scenes"
PLANTED = DATA_DIR / "planted"
# Held out: registered as the test set `heldout`, never listed by a provider.
HELDOUT = ("ochotona_princeps.jpg", "strix_aluco.jpg", "giraffa_camelopardalis_2.jpg")
# Listed in the EOL manifest instead of the archive.
EOL_PHOTOS = (
    "amphiprion_ocellaris.jpg",
    "carassius_auratus.jpg",
    "perca_flavescens.jpg",
    "capros_aper.jpg",
    "crocodylus_porosus.jpg",
    "monodon_monoceros.jpg",
)
CITIZEN_SCIENCE_PUBLISHER = "iNaturalist.org"
OTHER_PUBLISHER = "Wikimedia Commons"
MUSEUM_PUBLISHER = "Natural History Museum (demo)"
CAMERA_TRAP_REMARKS = "Camera trap CT-04; Trigger Sensitivity: High"

# Verbatim names that exercise resolution: file -> (scientificName, species, genus, ranks blanked).
TYPOS = {"varanus_komodoensis.jpg": "Varanus komodoensys", "panthera_onca.jpg": "Panthera oncca"}
SYNONYM_FILE, SYNONYM, SYNONYM_ACCEPTED = "ursus_maritimus.jpg", "Thalarctos maritimus", "Ursus maritimus"
MISSING_RANKS_FILE = "lemur_catta.jpg"  # only kingdom and species given
HOMONYM = "Dugesia"  # an animal (flatworm) and a plant (Asteraceae) genus; the record says Plantae
# Face photos attached, as second images, to observations of these photos' occurrences.
FACES = {"astronaut.jpg": "canis_lupus_familiaris.jpg", "grace_hopper.jpg": "equus_caballus.jpg"}


@dataclass(frozen=True)
class Inputs:
    gbif: Path
    eol: Path
    backbone: Path
    testset: Path
    evalset: Path
    files: Path


def served_files(dest: Path) -> Path:
    """Every servable corpus file in one flat folder (the server serves one folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in (corpus_dir(), faces_dir(), SCENES, PLANTED):
        for path in sorted(folder.glob("*.jpg")):
            target = dest / path.name
            if not target.exists() or target.read_bytes() != path.read_bytes():
                shutil.copyfile(path, target)
    return dest


def _lineage(photo: Photo) -> dict[str, str]:
    return {rank: value for rank, value in photo.ranks.items() if rank != "species"}


class _Archive:
    """Occurrence and multimedia rows, numbered in the order they are added."""

    def __init__(self, url, fault_url) -> None:
        self.url = url
        self.fault_url = fault_url
        self.occurrences: list[dict[str, str]] = []
        self.media: list[dict[str, str]] = []

    def occurrence(self, basis: str, publisher: str, names: dict[str, str], **extra: str) -> str:
        gbif_id = str(4_100_000_000 + len(self.occurrences))
        self.occurrences.append(
            {
                "gbifID": gbif_id,
                "occurrenceID": f"urn:tolpipe-demo:occ:{gbif_id}",
                "basisOfRecord": basis,
                "publisher": publisher,
                **names,
                **extra,
            }
        )
        return gbif_id

    def image(
        self,
        gbif_id: str,
        file_name: str,
        licence: str,
        holder: str,
        url: str | None = None,
        media_type: str = "StillImage",
        media_format: str = "image/jpeg",
    ) -> None:
        self.media.append(
            {
                "gbifID": gbif_id,
                "type": media_type,
                "format": media_format,
                "identifier": url or self.url(file_name),
                "license": licence,
                "rightsHolder": holder,
            }
        )


def _photo_names(photo: Photo) -> dict[str, str]:
    names = {
        **_lineage(photo),
        "scientificName": photo.scientific_name,
        "species": photo.species,
        "vernacularName": photo.common_name,
    }
    if photo.file_name in TYPOS:
        names["scientificName"] = names["species"] = TYPOS[photo.file_name]
    elif photo.file_name == SYNONYM_FILE:
        names.update(scientificName=f"{SYNONYM} (Phipps, 1774)", species=SYNONYM, genus="Thalarctos")
    elif photo.file_name == MISSING_RANKS_FILE:
        names.update(phylum="", **{"class": ""}, order="", family="", genus="")
    return names


def build_archive(url, fault_url, photos: list[Photo]) -> _Archive:
    archive = _Archive(url, fault_url)
    by_file = {p.file_name: p for p in photos}
    occurrence_of: dict[str, str] = {}
    observed = [p for p in photos if p.file_name not in HELDOUT + EOL_PHOTOS]
    for i, photo in enumerate(observed):
        publisher = CITIZEN_SCIENCE_PUBLISHER if i % 2 else OTHER_PUBLISHER
        gbif_id = archive.occurrence("HUMAN_OBSERVATION", publisher, _photo_names(photo))
        archive.image(gbif_id, photo.file_name, photo.license, photo.author)
        occurrence_of[photo.file_name] = gbif_id
    for face, photo in FACES.items():  # an observer's portrait uploaded with the observation
        archive.image(occurrence_of[photo], face, "public domain", "see demo/data/faces/CREDITS.csv")
    _planted(archive, by_file)
    _museum(archive, by_file)
    _camera_traps(archive)
    _rule_drops(archive, by_file, occurrence_of)
    return archive


def _planted(archive: _Archive, by_file: dict[str, Photo]) -> None:
    """Copies in other observers' records: exact (MD5 duplicates), re-encoded and resized (kept:
    near-duplicates within training are not dropped), and copies of held-out test photos."""
    with open(PLANTED / "CREDITS.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            photo = by_file[row["source"].removeprefix("photos/")]
            gbif_id = archive.occurrence("HUMAN_OBSERVATION", CITIZEN_SCIENCE_PUBLISHER, _photo_names(photo))
            archive.image(gbif_id, row["file"], photo.license, photo.author)


def _museum(archive: _Archive, by_file: dict[str, Photo]) -> None:
    """Specimen records whose images are documents, labels and a collection photo."""
    plant = {"kingdom": "Plantae", "genus": HOMONYM, "scientificName": HOMONYM}
    basket_star = by_file["astrophyton_muriatum.jpg"]
    records = [
        ("specimen_label.jpg", plant),
        (
            "document_page.jpg",
            {
                **_lineage(basket_star),
                "scientificName": basket_star.scientific_name,
                "species": basket_star.species,
            },
        ),
        ("document_text.jpg", {"kingdom": "Animalia", "class": "Aves", "scientificName": "Aves"}),
        ("collection_coins.jpg", {"kingdom": "Animalia", "phylum": "Mollusca", "scientificName": "Mollusca"}),
    ]
    for file_name, names in records:
        gbif_id = archive.occurrence("PRESERVED_SPECIMEN", MUSEUM_PUBLISHER, names)
        archive.image(gbif_id, file_name, "public domain", "see demo/data/scenes/CREDITS.csv")


def _camera_traps(archive: _Archive) -> None:
    """Camera-trap records (event remarks): empty frames and composite frames."""
    boar = {
        "kingdom": "Animalia",
        "phylum": "Chordata",
        "class": "Mammalia",
        "order": "Artiodactyla",
        "family": "Suidae",
        "genus": "Sus",
        "species": "Sus scrofa",
        "scientificName": "Sus scrofa",
    }
    moose = {
        "kingdom": "Animalia",
        "phylum": "Chordata",
        "class": "Mammalia",
        "order": "Artiodactyla",
        "family": "Cervidae",
        "genus": "Alces",
        "species": "Alces alces",
        "scientificName": "Alces alces",
    }
    for file_name, names in (
        ("empty_grass.jpg", boar),
        ("composite_night_sus_scrofa.jpg", boar),
        ("empty_gravel.jpg", moose),
        ("composite_day_alces_alces.jpg", moose),
    ):
        gbif_id = archive.occurrence(
            "MACHINE_OBSERVATION", "Camera trap survey (demo)", names, eventRemarks=CAMERA_TRAP_REMARKS
        )
        archive.image(gbif_id, file_name, "public domain", "see demo/data/scenes/CREDITS.csv")


def _rule_drops(archive: _Archive, by_file: dict[str, Photo], occurrence_of: dict[str, str]) -> None:
    """Rows stage 01 or 02 drops, one per reason."""
    owl = occurrence_of["alcedo_atthis.jpg"]
    cited = archive.occurrence(
        "MATERIAL_CITATION",
        "Literature citations (demo)",
        {"kingdom": "Animalia", "scientificName": "Alcedo atthis"},
    )
    archive.image(
        cited, "alcedo_atthis.jpg", "CC0-1.0", "demo", url=archive.url("alcedo_atthis.jpg") + "?cited=1"
    )
    archive.image(owl, "call.mp3", "CC0-1.0", "demo", media_type="Sound", media_format="audio/mpeg")
    archive.image(owl, "", "CC0-1.0", "demo", url="ftp://example.org/alcedo_atthis.jpg")
    archive.image(owl, "alcedo_atthis.jpg", "CC0-1.0", "demo")  # the same URL again
    archive.image(owl, "no-such-photo.jpg", "CC0-1.0", "demo")  # 404
    archive.image(owl, "", "CC0-1.0", "demo", url=archive.fault_url("html"))
    archive.image(owl, "", "CC0-1.0", "demo", url=archive.fault_url("tiny"))


def eol_manifest(path: Path, url, photos: list[Photo]) -> Path:
    """EOL's media manifest columns plus the record column `scientific_name` (EOL keeps names in
    its taxon files; the manifest carries the page's name here so 03 has something to resolve)."""
    header = [*EOL_HEADER, "scientific_name"]
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for i, photo in enumerate(p for p in photos if p.file_name in EOL_PHOTOS):
        writer.writerow(
            [
                str(7_000_000 + i),
                str(46_000_000 + i),
                f"https://commons.wikimedia.org/{photo.file_name}",
                url(photo.file_name),
                photo.license,
                photo.author,
                photo.scientific_name,
            ]
        )
    return write_if_changed(path, text.getvalue().encode("utf-8"))


def backbone(dest: Path, photos: list[Photo]) -> Path:
    """The mini GBIF backbone (demo/backbone.py), the demo species' lineages where the recorded
    GBIF answers lack them, English common names, and the synonym the archive uses."""
    taxa = taxon_rows()
    extra, common = _photo_taxa(photos, taxa)
    accepted = next(
        r
        for r in taxa + extra
        if r["canonicalName"] == SYNONYM_ACCEPTED and r["taxonomicStatus"] == "accepted"
    )
    synonym = {k: "" for k in TAXON_HEADER} | {
        "taxonID": str(DEMO_ID_BASE + len(extra)),
        "datasetID": "tolpipe-demo",
        "parentNameUsageID": accepted["taxonID"],
        "acceptedNameUsageID": accepted["taxonID"],
        "scientificName": f"{SYNONYM} (Phipps, 1774)",
        "scientificNameAuthorship": "(Phipps, 1774)",
        "canonicalName": SYNONYM,
        "genericName": "Thalarctos",
        "specificEpithet": "maritimus",
        "taxonRank": "species",
        "taxonomicStatus": "synonym",
        **{r: accepted[r] for r in HIGHER},
    }
    return write_dump(dest, taxa + extra + [synonym], vernacular_rows(taxa) + common, as_zip=True)


def _photo_taxa(photos: list[Photo], existing: list[dict[str, str]]) -> tuple[list, list]:
    """Accepted rows for the photos' ranks the recorded GBIF answers lack, and English names."""
    known = {(r["canonicalName"], r["taxonRank"]) for r in existing if r["taxonomicStatus"] == "accepted"}
    rows: dict[tuple[str, str], dict[str, str]] = {}
    common = []
    for photo in photos:
        lineage = photo.ranks
        chain = [(rank, lineage[rank]) for rank in RANKS if lineage[rank]]
        parent = ""
        for rank, name in chain:
            key = (name, rank)
            if key not in known and key not in rows:
                taxon_id = str(DEMO_ID_BASE + len(rows))
                above = {r: lineage[r] for r in HIGHER[: RANKS.index(rank) + 1]}
                words = name.split()
                rows[key] = {k: "" for k in TAXON_HEADER} | {
                    "taxonID": taxon_id,
                    "parentNameUsageID": parent,
                    "scientificName": name,
                    "canonicalName": name,
                    "taxonRank": rank,
                    "taxonomicStatus": "accepted",
                    "genericName": words[0] if rank in ("genus", "species") else "",
                    "specificEpithet": words[1] if rank == "species" and len(words) > 1 else "",
                    "datasetID": "tolpipe-demo",
                    **above,
                }
                if rank == "species" and photo.common_name:
                    common.append(
                        {
                            "taxonID": taxon_id,
                            "vernacularName": photo.common_name,
                            "language": "en",
                            "country": "",
                            "countryCode": "",
                            "sex": "",
                            "lifeStage": "",
                            "source": "photo credits",
                        }
                    )
            parent = rows[key]["taxonID"] if key in rows else parent
    return list(rows.values()), common


def testset_folder(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in HELDOUT:
        target = dest / name
        if not target.exists() or target.read_bytes() != (corpus_dir() / name).read_bytes():
            shutil.copyfile(corpus_dir() / name, target)
    return dest


def eval_folder(dest: Path, photos: list[Photo]) -> Path:
    """The held-out photos as an evaluation set for stage 07: DIR/<species>/<photo> and taxa.csv
    with each label's lineage (training/evaldata.py's image-folder layout)."""
    by_file = {p.file_name: p for p in photos}
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["label", *RANKS])
    for name in HELDOUT:
        photo = by_file[name]
        target = dest / photo.species / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != photo.path.read_bytes():
            shutil.copyfile(photo.path, target)
        writer.writerow([photo.species, *(photo.ranks[r] for r in RANKS)])
    write_if_changed(dest / "taxa.csv", text.getvalue().encode("utf-8"))
    return dest


def build(folder: Path, url, fault_url) -> Inputs:
    """Every input under `folder`; `url(file)` and `fault_url(kind)` give loopback URLs."""
    photos = load_corpus()
    archive = build_archive(url, fault_url, photos)
    return Inputs(
        gbif=_write_archive(folder / "gbif-demo.zip", archive),
        eol=eol_manifest(folder / "eol-media.csv", url, photos),
        backbone=backbone(folder / "backbone.zip", photos),
        testset=testset_folder(folder / "heldout"),
        evalset=eval_folder(folder / "eval", photos),
        files=served_files(folder / "files"),
    )


def _write_archive(dest: Path, archive: _Archive) -> Path:
    """The archive as a zip with fixed entry times, written only when its bytes change."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_dwca(
            Path(scratch) / "dwca", archive.occurrences, archive.media, core_terms=CORE_TERMS, as_zip=False
        )
        members = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}
    return write_if_changed(dest, zip_bytes(members))
