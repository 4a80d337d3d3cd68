"""Name strings: the stemmer against gnparser's, both parsers, ids, invalid tokens, query terms."""

from __future__ import annotations

import json

import pytest

from stages.taxonomy.names import (
    BuiltinParser,
    author_key,
    get_parser,
    invalid_token_set,
    make_tuple,
    name_id,
    parse_name,
    query_terms,
    stem_canonical,
    stem_word,
)
from tests.support.backbone_fixture import USAGES

INVALID = invalid_token_set(["unknown", "null", "none", "", "n/a"])
ORDER = ["species", "scientific_name", "genus", "family", "order", "class", "phylum", "kingdom"]


def fixture_names() -> list[str]:
    records = [json.loads(line) for line in USAGES.read_text().splitlines() if line.strip()]
    return sorted({r["scientificName"] for r in records})


def test_stems_equal_gnparser_on_every_fixture_name_and_edge_words():
    gnp = get_parser("gnparser")
    words = ["douglasii", "arvensis", "jubata", "atque", "albaque", "que", "aeque", "ja", "vivax",
             "jus", "vii", "ant", "xus", "abiae", "uiuque", "quorumque", "x-z-nigrum", "lius"]  # fmt: skip
    names = fixture_names() + [f"Aus {w}" for w in words]
    checked = 0
    for name in names:
        raw = gnp.raw(name)
        canonical = raw.get("canonical")
        if not canonical or raw.get("hybrid"):
            continue
        assert stem_canonical(canonical["simple"]) == canonical["stemmed"], name
        checked += 1
    assert checked > 700


def test_stem_word_rules():
    assert stem_word("douglasii") == "douglas"
    assert stem_word("vulgaris") == "uulgar"  # v -> u
    assert stem_word("atque") == "atque"  # -que exception
    assert stem_word("albaque") == "alb"  # -que removed, then -a
    assert stem_word("ja") == "ja"  # shorter than 3: untouched


def test_name_id_is_gnverifier_uuid5():
    assert name_id("Bubo bubo (Linnaeus, 1758)") == "0eeccd70-eaf2-5c51-ad8b-46cfb3db1645"
    assert get_parser("gnparser").raw("Pomatomus saltator")["id"] == name_id("Pomatomus saltator")


def test_builtin_parser_agrees_with_gnparser_on_fixture_names():
    gnp, builtin = get_parser("gnparser"), BuiltinParser()
    agree = total = 0
    for name in fixture_names():
        reference = gnp.parse(name)
        if not reference.parsed or "×" in name:
            continue
        total += 1
        mine = builtin.parse(name)
        agree += (mine.canonical, mine.cardinality) == (reference.canonical, reference.cardinality)
    assert total > 700 and agree / total > 0.98


def test_parse_extracts_canonical_and_authors():
    parsed = parse_name("Quercus douglasii Hook. & Arn.")
    assert (parsed.canonical, parsed.cardinality, parsed.authors) == ("Quercus douglasii", 2, ("hook", "arn"))
    lower = parse_name("quercus douglasii")
    assert lower.canonical == "Quercus douglasii" and lower.verbatim == "quercus douglasii"
    assert not parse_name("quercus douglasii", capitalize=False).parsed
    assert parse_name("Poa annua var. annua").canonical == "Poa annua annua"
    assert author_key("Montealegre-Z.") == "montealegre-z"


@pytest.mark.parametrize("token", ["unknown", "UNKNOWN", "null", "None", "", "  ", "n/a", "N/A"])
def test_invalid_tokens_become_missing(token: str):
    names = make_tuple([token, None, None, None, None, "Ursus", None, None], INVALID)
    assert names.get("kingdom") is None and names.get("genus") == "Ursus"


def test_epithet_joined_and_whitespace_collapsed():
    names = make_tuple(["Animalia", None, None, None, None, " Apis ", "mellifera", None], INVALID)
    assert names.get("species") == "Apis mellifera"
    spaced = make_tuple([None, None, None, None, None, None, "Apis   mellifera", None], INVALID)
    assert spaced.get("species") == "Apis mellifera"
    assert names.key != spaced.key and names.key == make_tuple(
        ["Animalia", None, None, None, None, "Apis", "Apis mellifera", None], INVALID).key  # fmt: skip


def test_query_terms_most_specific_first_without_repeats():
    names = make_tuple(["Animalia", "Chordata", "Mammalia", "Carnivora", "Ursidae", "Ursus",
                        "Ursus arctos", "Ursus arctos Linnaeus, 1758"], INVALID)  # fmt: skip
    terms = query_terms(names, ORDER, "gnparser")
    assert [(t.term, t.rank) for t in terms] == [
        ("Ursus arctos Linnaeus, 1758", "species"),  # the authorship rides along
        ("Ursus", "genus"), ("Ursidae", "family"), ("Carnivora", "order"),
        ("Mammalia", "class"), ("Chordata", "phylum"), ("Animalia", "kingdom"),
    ]  # fmt: skip
    sub = make_tuple([None, None, None, None, None, None, "Boa constrictor",
                      "Boa constrictor nebulosa (Lazell, 1964)"], INVALID)  # fmt: skip
    assert [t.rank for t in query_terms(sub, ORDER, "gnparser")] == ["species", "scientific_name"]
    assert query_terms(make_tuple([None] * 8, INVALID), ORDER, "gnparser") == []


def test_uninomial_shortcut_agrees_with_gnparser():
    records = [json.loads(line) for line in USAGES.read_text().splitlines() if line.strip()]
    words = sorted({r[k] for r in records for k in ("kingdom", "phylum", "class", "order", "family",
                                                     "genus") if r.get(k)})  # fmt: skip
    assert len(words) > 100
    gnp = get_parser("gnparser")
    for word in words:
        fast, full = parse_name(word), gnp.parse(word)
        assert (fast.canonical, fast.cardinality, fast.parsed) == (full.canonical, full.cardinality, True)
