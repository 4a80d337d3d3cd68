"""`make demo`: the pipeline end to end on shipped, real data, offline.

- Images: the 42 public-domain organism photos in tests/data/photos (real photos, real species),
  served by the loopback test server on three loopback addresses, plus a few URLs that show the
  download stage's drop reasons (a missing file, an HTML page, a too-small image, a non-http URL,
  a repeated URL).
- Taxonomy: an offline GBIF-backbone dump built from 749 real GBIF usage records
  (tests/data/gbif) plus the photos' own classification as listed in their credits; two names are
  misspelled on purpose to show fuzzy matching.
- Reruns: the inputs are rebuilt with the same bytes (fixed zip timestamps, order, permissions)
  and left untouched when unchanged, so a rerun on the same root and port skips every partition.
- Stages: every stage this version implements, through the real CLI (`tolpipe run all`).

    python -m tests.support.demo --root demo [--port 8741]
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
from pathlib import Path

from tests.support.backbone_fixture import (
    TAXON_HEADER,
    taxon_rows,
    vernacular_rows,
    write_dump,
    write_if_changed,
)
from tests.support.loopback_server import LoopbackServer
from tests.support.photo_corpus import Photo, corpus_dir, load_corpus

REPO = Path(__file__).resolve().parents[2]
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
MISSPELLED = {"Varanus komodoensis": "Varanus komodoensys", "Panthera onca": "Panthera oncca"}
DEMO_ID_BASE = 990_000_000  # taxon ids of the photos' own classification rows


def rank_of(photo: Photo, rank: str) -> str:
    return getattr(photo, "class_" if rank == "class" else rank) or ""


def photo_taxa(photos: list[Photo], existing: list[dict[str, str]]) -> tuple[list, list]:
    """Accepted Taxon.tsv rows for the photos' ranks that the GBIF records lack, and their
    English common names."""
    known = {(r["canonicalName"], r["taxonRank"]) for r in existing if r["taxonomicStatus"] == "accepted"}
    rows: dict[tuple[str, str], dict[str, str]] = {}
    vernaculars = []
    for photo in photos:
        lineage = {rank: rank_of(photo, rank) for rank in RANKS}
        chain = [(rank, lineage[rank]) for rank in RANKS if lineage[rank]]
        if photo.species:
            chain.append(("species", photo.species))
        parent = ""
        for rank, name in chain:
            key = (name, rank)
            if key not in known and key not in rows:
                taxon_id = str(DEMO_ID_BASE + len(rows))
                above = {r: lineage[r] for r in RANKS[: RANKS.index(rank) + 1]} if rank in RANKS else lineage
                words = name.split()
                rows[key] = {k: "" for k in TAXON_HEADER} | {
                    "taxonID": taxon_id, "parentNameUsageID": parent, "scientificName": name,
                    "canonicalName": name, "taxonRank": rank, "taxonomicStatus": "accepted",
                    "genericName": words[0] if rank in ("genus", "species") else "",
                    "specificEpithet": words[1] if rank == "species" and len(words) > 1 else "",
                    "datasetID": "tolpipe-demo", **{r: v or "" for r, v in above.items()},
                }  # fmt: skip
                if rank == "species" and photo.common_name:
                    vernaculars.append({"taxonID": taxon_id, "vernacularName": photo.common_name,
                                        "language": "en", "source": "photo credits"})  # fmt: skip
            parent = rows[key]["taxonID"] if key in rows else parent
    return list(rows.values()), vernaculars


def build_backbone(dest: Path, photos: list[Photo]) -> Path:
    taxa = taxon_rows()
    extra, extra_vernaculars = photo_taxa(photos, taxa)
    vernaculars = vernacular_rows(taxa) + [
        {k: v.get(k, "") for k in ("taxonID", "vernacularName", "language", "country", "countryCode",
                                   "sex", "lifeStage", "source")}
        for v in extra_vernaculars
    ]  # fmt: skip
    return write_dump(dest, taxa + extra, vernaculars, as_zip=True)


def write_sources(path: Path, server: LoopbackServer, photos: list[Photo]) -> Path:
    fields = ["url", "source_id", "provider", "occurrence_id", "scientific_name", *RANKS, "species",
              "common_name", "license", "rights_holder", "publisher"]  # fmt: skip
    rows = []
    for i, photo in enumerate(photos):
        name = MISSPELLED.get(photo.scientific_name, photo.scientific_name)
        rows.append({
            "url": server.url(i % len(server.hosts), f"/files/{photo.file_name}"),
            "source_id": Path(photo.file_name).stem, "provider": "gcompris-demo",
            "occurrence_id": f"occ-{Path(photo.file_name).stem}",
            "scientific_name": name, **{r: rank_of(photo, r) for r in RANKS},
            "species": MISSPELLED.get(photo.species or "", photo.species or ""),
            "common_name": photo.common_name, "license": photo.license,
            "rights_holder": photo.author, "publisher": "Wikimedia Commons",
        })  # fmt: skip
    faults = {
        "missing-file": server.url(0, "/files/no-such-photo.jpg"),
        "html-page": server.url(1, "/img/5/800x600.jpg?fault=html"),
        "tiny-image": server.image_url(2, 7, 120, 90),
        "ftp-url": "ftp://example.org/photo.jpg",
        "repeated-url": rows[0]["url"],
    }
    for key, url in faults.items():
        rows.append({"url": url, "source_id": key, "provider": "gcompris-demo",
                     "scientific_name": "Bubo bubo", "license": "CC0-1.0"})  # fmt: skip
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return write_if_changed(path, text.getvalue().encode("utf-8"))


def tolpipe(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root), *args]
    print("$ tolpipe --root", root, *args, flush=True)
    result = subprocess.run(cmd, cwd=REPO, text=True)
    if result.returncode != 0:
        sys.exit(f"demo: `tolpipe {' '.join(args)}` failed with exit code {result.returncode}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("demo"), help="work root (default: demo)")
    parser.add_argument("--port", type=int, default=8741, help="loopback port of the image server")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    photos = load_corpus()
    backbone = build_backbone(inputs / "backbone.zip", photos)
    with LoopbackServer(hosts=3, port=args.port, folder=corpus_dir(), latency_s=0.01) as server:
        source = write_sources(inputs / "photos.csv", server, photos)
        settings = [
            "--set", f'taxonomy.backbone_path="{backbone}"',
            "--set", "download.rate_per_host=20.0", "--set", "download.rate_ceiling=40.0",
        ]  # fmt: skip
        tolpipe(root, *settings, "run", "ingest", "--source", f"table:{source}")
        tolpipe(root, *settings, "run", "all")
    tolpipe(root, "status")
    sample = _first_ok_uuid(root)
    if sample:
        tolpipe(root, "audit", sample)
    print(f"\ndemo: done. Outputs under {root}; rerun `make demo` to see resume skip every partition.")
    return 0


def _first_ok_uuid(root: Path) -> str | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folders = sorted((root / "manifests").glob("0*_*"))
    if not folders:
        return None
    for path in sorted(folders[-1].glob("part-*.parquet")):
        table = pq.read_table(path, columns=["uuid", "status"])
        ok = table.filter(pc.equal(table["status"], "ok"))
        if ok.num_rows:
            return ok["uuid"][0].as_py()
    return None


if __name__ == "__main__":
    sys.exit(main())
