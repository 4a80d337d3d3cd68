"""Stage 06's caption rules, on the names 03 writes: full lineages, missing common names, missing
inner ranks, species epithets that repeat the genus, non-ASCII letters, and values that must
never reach a caption ("None", blanks, runs of spaces)."""

from __future__ import annotations

import itertools
import json
import unicodedata

import pytest

from stages.shard.captions import RANKS, names_of
from stages.shard.sample import attribution, json_member, member_names, taxon_members, text_members

MISSING = frozenset({"", "none", "null", "nan", "n/a", "unknown"})
BEAR = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia", "order": "Carnivora",
        "family": "Ursidae", "genus": "Ursus", "species": "Ursus arctos"}  # fmt: skip
BISON = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia", "order": "Artiodactyla",
         "family": "Bovidae", "genus": "Bison", "species": "Bison bison"}  # fmt: skip


def texts(ranks: dict, scientific: str | None = None, common: str | None = None, txt: str = "none") -> dict:
    names = names_of(ranks, scientific, common, MISSING)
    assert names is not None
    return {ext: data.decode("utf-8") for ext, data in text_members(names, txt).items()}


def test_full_lineage_with_common_name_gives_all_ten_files():
    got = texts(BEAR, "Ursus arctos", "brown bear", txt="taxon_com")
    lineage = "Animalia Chordata Mammalia Carnivora Ursidae Ursus arctos"
    tagged = ("kingdom Animalia phylum Chordata class Mammalia order Carnivora family Ursidae genus Ursus "
              "species arctos")  # fmt: skip
    assert got == {
        "sci.txt": "a photo of Ursus arctos.",
        "com.txt": "a photo of brown bear.",
        "taxon.txt": f"a photo of {lineage}.",
        "sci_com.txt": "a photo of Ursus arctos with common name brown bear.",
        "taxon_com.txt": f"a photo of {lineage} with common name brown bear.",
        "taxonTag.txt": f"a photo of {tagged}.",
        "taxonTag_com.txt": f"a photo of {tagged} with common name brown bear.",
        "scientific_name.txt": "Ursus arctos",
        "taxonomic_name.txt": lineage,
        "common_name.txt": "brown bear",
        "txt": f"a photo of {lineage} with common name brown bear.",
    }


@pytest.mark.parametrize("common", [None, "", "   ", "None", "null", "N/A"])
def test_missing_common_name_falls_back_to_the_scientific_name(common):
    got = texts(BEAR, "Ursus arctos", common)
    assert got["common_name.txt"] == "Ursus arctos"
    assert got["com.txt"] == "a photo of Ursus arctos."
    assert got["sci_com.txt"] == "a photo of Ursus arctos with common name Ursus arctos."
    assert got["taxonTag_com.txt"].endswith("species arctos with common name Ursus arctos.")


def test_genus_level_rows_name_the_resolved_taxon_and_fall_back_to_it():
    # 03 resolved Pseudanthias at genus rank: no species, no family, no common name.
    ranks = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Actinopterygii", "order": "Perciformes",
             "family": None, "genus": "Pseudanthias", "species": None}  # fmt: skip
    got = texts(ranks, "Pseudanthias", None)
    assert got["sci.txt"] == "a photo of Pseudanthias."
    assert got["taxon.txt"] == "a photo of Animalia Chordata Actinopterygii Perciformes Pseudanthias."
    assert got["taxonTag.txt"] == ("a photo of kingdom Animalia phylum Chordata class Actinopterygii "
                                   "order Perciformes genus Pseudanthias.")  # fmt: skip
    assert got["com.txt"] == "a photo of Pseudanthias."
    # Without 03's scientific name the most specific rank present names it.
    assert texts({**ranks, "genus": None}, None, None)["sci.txt"] == "a photo of Perciformes."


def test_missing_inner_ranks_are_left_out_without_double_spaces():
    ranks = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Actinopterygii", "order": None,
             "family": "Cichlidae", "genus": "Placidochromis",
             "species": "Placidochromis electra"}  # fmt: skip
    got = texts(ranks, "Placidochromis electra", "deepwater hap")
    assert got["taxonomic_name.txt"] == "Animalia Chordata Actinopterygii Cichlidae Placidochromis electra"
    assert got["taxonTag.txt"] == ("a photo of kingdom Animalia phylum Chordata class Actinopterygii family "
                                   "Cichlidae genus Placidochromis species electra.")  # fmt: skip
    holes = {**BEAR, "phylum": "None", "class": "  ", "order": "unknown"}
    assert texts(holes, None, "brown bear")["taxon.txt"] == "a photo of Animalia Ursidae Ursus arctos."


@pytest.mark.parametrize("genus,species,sci,term", [
    ("Bison", "Bison bison", "Bison bison", "bison"),  # tautonym: the epithet repeats the genus
    ("Gorilla", "Gorilla gorilla", "Gorilla gorilla", "gorilla"),
    ("Bison", "bison", "Bison bison", "bison"),  # a bare epithet is joined to the genus
    (None, "Bison bison", "Bison bison", "Bison bison"),  # no genus: the binomial names it
    ("Bos", "Bison bison", "Bison bison", "Bison bison"),  # a disagreeing genus is not dropped
])  # fmt: skip
def test_species_epithet_repeating_the_genus(genus, species, sci, term):
    ranks = {**BISON, "genus": genus, "species": species}
    got = texts(ranks, sci, None)
    assert got["scientific_name.txt"] == sci
    lineage = " ".join(v for v in (*[ranks[r] for r in RANKS[:5]], genus, term) if v)
    assert got["taxonomic_name.txt"] == lineage
    assert got["taxonTag.txt"].endswith(f"species {term}.")
    assert "Bison Bison bison" not in got["taxon.txt"] and "bison bison bison" not in got["taxon.txt"].lower()


def test_a_species_value_that_is_only_the_genus_is_no_species():
    got = texts({**BISON, "species": "Bison"}, "Bison", None)
    assert got["sci.txt"] == "a photo of Bison."
    assert got["taxon.txt"] == "a photo of Animalia Chordata Mammalia Artiodactyla Bovidae Bison."
    assert got["taxonTag.txt"].endswith("family Bovidae genus Bison.")


def test_non_ascii_letters_are_kept_and_normalised():
    decomposed = unicodedata.normalize("NFD", "Höhlenbär")
    assert decomposed != "Höhlenbär"
    got = texts({**BEAR, "species": "Ursus spelaeus"}, "Ursus spelaeus", decomposed)
    assert got["common_name.txt"] == "Höhlenbär"  # NFC: one code point per letter
    assert got["com.txt"].encode("utf-8") == "a photo of Höhlenbär.".encode()
    names = names_of({**BEAR, "genus": "Aëdes", "species": "Aëdes aegypti"}, None, "Gelbfiebermücke", MISSING)
    assert names is not None and names.taxonomic.endswith("Aëdes aegypti")
    row = {"uuid": "u", "rights_holder": "Zoë Ångström", "common_name": decomposed, "scientific_name": None,
           **BEAR}  # fmt: skip
    taxon = taxon_members(row, MISSING, "none")
    assert taxon is not None
    data = json_member(attribution(row, taxon.fields))
    assert "Zoë Ångström".encode() in data and "Höhlenbär".encode() in data  # UTF-8, not \\u escapes
    assert json.loads(data)["common_name"] == "Höhlenbär"


def test_no_caption_ever_holds_none_or_a_double_space():
    values = [None, "", "None", " null ", "Ursus", "Ursus  arctos", " Carnivora\t"]
    for kingdom, genus, species, common in itertools.product(["Animalia", None, "NONE"], values, values,
                                                             [None, "brown  bear", "None"]):  # fmt: skip
        ranks = {**BEAR, "kingdom": kingdom, "genus": genus, "species": species}
        names = names_of(ranks, None, common, MISSING)
        assert names is not None
        for text in text_members(names, "sci_com").values():
            decoded = text.decode("utf-8")
            assert "None" not in decoded and "NONE" not in decoded and "null" not in decoded
            assert "  " not in decoded and decoded == decoded.strip() and "\t" not in decoded


def test_a_row_without_any_name_has_no_taxon():
    assert names_of(dict.fromkeys(RANKS), None, "a common name", MISSING) is None
    assert names_of(dict.fromkeys(RANKS, "None"), "  ", None, MISSING) is None


def test_member_names_are_the_documented_files():
    assert member_names("taxon_com") == sorted(
        ["jpg", "json", "txt", "sci.txt", "com.txt", "taxon.txt", "sci_com.txt", "taxon_com.txt",
         "taxonTag.txt", "taxonTag_com.txt", "scientific_name.txt", "taxonomic_name.txt",
         "common_name.txt"])  # fmt: skip
    assert "txt" not in member_names("none")
