"""EOL through 01 -> 03: the media manifest joined on its page ids to EOL's taxon file (the
Dynamic Hierarchy taxon.tab), so its rows reach 03 with names; without a taxon file, ingest
refuses, or with --allow-unnamed ingests nameless rows and `tolpipe status` warns.

Layout: EOL's media manifest columns (`EOL content ID, EOL page ID, Medium Source URL, EOL
Full-Size Copy URL, License Name, Copyright Owner`) and DH 1.1's taxon.tab columns (see
tests/support/provider_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.ingest_fixtures import write_eol_manifest
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import settings
from tests.support.provider_fixtures import by_uuid, dh_lineage, rows, run_01_to_03, write_dh_taxa

PAGES = {  # EOL page id -> (canonical name, scientific name with authorship)
    "328580": ("Ursus arctos", "Ursus arctos Linnaeus, 1758"),
    "1045608": ("Apis mellifera", "Apis mellifera Linnaeus, 1758"),
}
UNKNOWN_PAGE = "99999999"
MAMMAL = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia", "order": "Carnivora",
          "family": "Ursidae", "genus": "Ursus"}  # fmt: skip
INSECT = {"kingdom": "Animalia", "phylum": "Arthropoda", "class": "Insecta", "order": "Hymenoptera",
          "family": "Apidae", "genus": "Apis"}  # fmt: skip


def _manifest(path: Path, server: LoopbackServer) -> Path:
    pages = [*PAGES, UNKNOWN_PAGE]
    return write_eol_manifest(path, [
        {"EOL content ID": str(20_000 + i), "EOL page ID": page,
         "Medium Source URL": f"https://provider.example.org/{i}.jpg",
         "EOL Full-Size Copy URL": server.image_url(0, 40 + i, 640, 480),
         "License Name": "cc-by-nc-sa-3.0", "Copyright Owner": f"Photographer {i}"}
        for i, page in enumerate(pages)
    ])  # fmt: skip


def _taxa(path: Path) -> Path:
    bear, bee = PAGES.items()
    rows_ = dh_lineage([(bear[0], *bear[1])], MAMMAL)
    bee_rows = dh_lineage([(bee[0], *bee[1])], INSECT)
    for row in bee_rows:  # distinct DH ids for the second chain
        row["taxonID"] = row["taxonID"].replace("EOL-", "EOL-B")
        row["parentNameUsageID"] = row["parentNameUsageID"].replace("EOL-", "EOL-B")
        if row["taxonRank"] != "species":
            row["eolID"] = str(int(row["eolID"]) + 500)
    # A synonym row of the same page never names it.
    synonym = {"taxonID": "EOL-SYN", "acceptedNameUsageID": f"EOL-P{bear[0]}", "eolID": bear[0],
               "scientificName": "Ursus horribilis Ord, 1815", "taxonRank": "species",
               "taxonomicStatus": "synonym"}  # fmt: skip
    return write_dh_taxa(path, [synonym, *rows_, *bee_rows])


def test_eol_manifest_with_taxon_file_gives_named_rows(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    data = tmp_path / "eol"
    data.mkdir()
    root = tmp_path / "root"
    with LoopbackServer(hosts=1) as server:
        manifest = _manifest(data / "media_manifest.csv", server)
        _taxa(data / "taxon.tab")
        run_01_to_03(root, gbif_dump, [f"eol:{manifest}"])

    ingested = {r["occurrence_id"]: r for r in rows(root, "01_ingest")}
    bear, bee = ingested["328580"], ingested["1045608"]
    assert bear["scientific_name"] == "Ursus arctos Linnaeus, 1758"
    assert {k: bear[k] for k in MAMMAL} == MAMMAL and bear["species"] == "Ursus arctos"
    assert {k: bee[k] for k in INSECT} == INSECT
    assert (bear["source_id"], bear["license"], bear["rights_holder"]) == (
        "20000",
        "cc-by-nc-sa-3.0",
        "Photographer 0",
    )
    unknown = ingested[UNKNOWN_PAGE]
    assert (unknown["status"], unknown["reason"]) == ("dropped", "eol_page_not_in_taxa")

    named = by_uuid(root, "03_taxonomy")
    assert named[bear["uuid"]]["species"] == "Ursus arctos"
    assert named[bee["uuid"]]["species"] == "Apis mellifera"
    assert {named[u]["resolution_status"] for u in (bear["uuid"], bee["uuid"])} == {"resolved"}
    assert by_uuid(root, "02_download")[bear["uuid"]]["http_status"] == 200


def test_eol_manifest_without_taxon_file_is_refused_or_warned(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    with LoopbackServer(hosts=1) as server:
        manifest = _manifest(tmp_path / "media_manifest.csv", server)
    root = tmp_path / "root"
    refused = cli(root, *settings(gbif_dump), "run", "ingest", "--source", f"eol:{manifest}", check=False)
    assert refused.returncode == 2
    message = refused.stderr.strip().splitlines()[-1]
    assert "no EOL taxon file" in message and "taxon.tab" in message and "--allow-unnamed" in message
    assert not (root / "manifests" / "01_ingest").exists() or not list(
        (root / "manifests" / "01_ingest").glob("part-*")
    )

    cli(root, *settings(gbif_dump), "run", "ingest", "--allow-unnamed", "--source", f"eol:{manifest}")
    ingested = rows(root, "01_ingest")
    assert {r["status"] for r in ingested} == {"ok"} and {r["scientific_name"] for r in ingested} == {None}
    status = cli(root, "status").stdout
    assert "warning: 3 ok row(s) carry no name" in status, status
