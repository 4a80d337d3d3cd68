"""The backbone dump's on-disk index, offline matching, and common-name choice."""

from __future__ import annotations

import os
import sqlite3
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, InputError
from stages.taxonomy.backbone import (
    BackboneIndex,
    MatchOptions,
    fuzzy_rows,
    levenshtein,
    match_name,
    within_one_edit,
)
from stages.taxonomy.index import Dump, ensure_index
from stages.taxonomy.names import parse_name
from stages.taxonomy.vernacular import CommonNames, choose
from tests.support.backbone_fixture import build_gbif_dump, gbif_dump, gbif_index  # noqa: F401


def table_rows(path: Path, table: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


def test_zip_and_folder_dumps_index_alike(tmp_path: Path, gbif_index: Path):  # noqa: F811
    folder = build_gbif_dump(tmp_path / "dump")
    index = ensure_index(folder, tmp_path / "index")
    assert table_rows(index, "taxa") == table_rows(gbif_index, "taxa")
    assert table_rows(index, "vernacular") == table_rows(gbif_index, "vernacular")
    meta = BackboneIndex(index).meta
    assert int(meta["taxa"]) > 1000 and int(meta["vernaculars"]) >= 30
    assert meta["dump_sha256"] != BackboneIndex(gbif_index).meta["dump_sha256"]  # zip vs folder


def test_index_is_cached_by_size_and_mtime(tmp_path: Path):
    dump = build_gbif_dump(tmp_path / "backbone.zip", as_zip=True)
    first = ensure_index(dump, tmp_path / "index")
    stamp = first.stat().st_mtime_ns
    assert ensure_index(dump, tmp_path / "index") == first and first.stat().st_mtime_ns == stamp
    os.utime(dump, ns=(stamp + 10**9, stamp + 10**9))  # touched: a new index
    second = ensure_index(dump, tmp_path / "index")
    assert second != first and second.exists()
    assert not list((tmp_path / "index").glob(".tmp-*"))


def test_bad_dumps_are_named_in_errors(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        Dump(tmp_path / "missing.zip")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("README", "nothing")
    with pytest.raises(InputError, match="no Taxon.tsv"):
        Dump(empty)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "Taxon.tsv").write_text("taxonID\tscientificName\n1\tAus bus\n")
    with pytest.raises(InputError, match=r"lacks column.*canonicalName"):
        ensure_index(folder, tmp_path / "index")
    dump = build_gbif_dump(tmp_path / "ids")
    text = (dump / "Taxon.tsv").read_text().splitlines()
    text[5] = "x" + text[5]
    (dump / "Taxon.tsv").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match="line 6: taxonID 'x"):
        ensure_index(dump, tmp_path / "index2")
    with pytest.raises(ConfigError, match="max_edit_distance"):
        MatchOptions(max_edit_distance=2)


def test_edit_distance_helpers():
    pairs = [("Quercus douglas", "Quercus duglas"), ("Ursus", "Ursuss"), ("abc", "abd"),
             ("abc", "acb"), ("Bubo bub", "Bubo bub"), ("", "a"), ("abc", "xyz")]  # fmt: skip
    for a, b in pairs:
        assert within_one_edit(a, b) == (levenshtein(a, b) <= 1), (a, b)


def test_fuzzy_finds_typos_anywhere_in_the_stem(gbif_index: Path):  # noqa: F811
    index = BackboneIndex(gbif_index)
    for typo, expected in [("Prsus arctos", "Ursus arctos"), ("Ursus arctus", "Ursus arctos"),
                           ("Ursus arcts", "Ursus arctos"), ("Uxsus arctos", "Ursus arctos")]:  # fmt: skip
        assert expected in {r.canonical for r in fuzzy_rows(index, typo, 1)}, typo
    assert fuzzy_rows(index, "Ursus arctos", 0) == []


def test_match_order_exact_fuzzy_partial(gbif_index: Path):  # noqa: F811
    index = BackboneIndex(gbif_index)
    options = MatchOptions()

    def kind(name: str) -> str:
        return match_name(index, 11, parse_name(name), options)[0]

    assert kind("Ursus arctos") == "Exact"
    assert kind("Ursus arctus") == "Fuzzy"
    assert kind("Ursus arctos onetwo") == "PartialExact"
    assert kind("Ursus arctus onetwo") == "PartialFuzzy"
    assert kind("Ursuss") == "NoMatch"  # uninomials are not fuzzy-matched by default
    assert match_name(index, 11, parse_name("Ursuss"), MatchOptions(uninomial_fuzzy=True))[0] == "Fuzzy"
    _, scored = match_name(index, 11, parse_name("Spruceanthus marianus"), options)
    synonym = scored[0].match
    assert synonym.taxonomic_status == "Synonym" and synonym.current_record_id == "7362076"
    assert synonym.current_canonical == "Cheilolejeunea mariana"


def test_common_name_choice_is_deterministic_and_english_first():
    rows = [("Braunbär", "de", "", "a"), ("Brown Bear", "en", "", "z"), ("brown bear", "eng", "", "b"),
            ("Grizzly", "en", "", "a"), ("Ours brun", "fr", "", "a")]  # fmt: skip
    # English first; "brown bear" is given by two rows (case-insensitively), Grizzly by one.
    assert choose(rows, ["en"]) == ("brown bear", "en")
    assert choose(list(reversed(rows)), ["en"]) == ("brown bear", "en")
    assert choose(rows, ["fr", "en"]) == ("Ours brun", "fr")
    assert choose([("Höhlenbär", "de", "", ""), ("x", "", "", "")], ["en"]) == ("Höhlenbär", "de")
    assert choose([], ["en"]) is None


def test_common_names_climb_only_when_configured(gbif_index: Path):  # noqa: F811
    index = BackboneIndex(gbif_index)
    lineage = {"kingdom": "Animalia", "family": "Ursidae", "genus": "Ursus", "species": "Ursus alpinus"}
    plain = CommonNames(index, 11, ["en"], climb=False, climb_to="family")
    assert plain.lookup("", 1, "Ursus alpinus", "species", lineage) is None
    climbing = CommonNames(index, 11, ["en"], climb=True, climb_to="family")
    found = climbing.lookup("", 1, "Ursus alpinus", "species", lineage)
    assert (found.name, found.rank, found.language) == ("Bären", "genus", "de")
    to_genus = CommonNames(index, 11, ["en"], climb=True, climb_to="genus")
    assert to_genus.lookup("", 1, "Ursus alpinus", "species", {**lineage, "genus": "Nogenus"}) is None
