"""Each resolution rule on its own, on matches shaped like real GBIF answers."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from stages.taxonomy import profiles as P
from stages.taxonomy.names import parse_name
from stages.taxonomy.resolver import Match

ANIMAL = (("kingdom", "Animalia"), ("phylum", "Platyhelminthes"), ("class", "Rhabditophora"),
          ("order", "Tricladida"), ("family", "Dugesiidae"), ("genus", "Dugesia"))  # fmt: skip
PLANT = (("kingdom", "Plantae"), ("phylum", "Tracheophyta"), ("class", "Magnoliopsida"),
         ("order", "Asterales"), ("family", "Asteraceae"), ("genus", "Dugesia"))  # fmt: skip
MITE = (("kingdom", "Animalia"), ("phylum", "Arthropoda"), ("class", "Arachnida"),
        ("order", "Trombidiformes"), ("family", "Calyptostomatidae"), ("genus", "Smaris"))  # fmt: skip
SYNONYMS = {"Metazoa": "Animalia", "Viridiplantae": "Plantae"}


def match(record: str, name: str, classification: tuple, current: str | None = None,
          current_name: str = "", match_type: str = "Exact", score: float = 90.0,
          distance: int = 0) -> Match:  # fmt: skip
    canonical = parse_name(name).canonical
    current = current or record
    return Match(
        data_source_id=11, record_id=record, match_type=match_type, matched_name=name,
        matched_canonical=canonical, matched_cardinality=len(canonical.split()),
        current_record_id=current, current_name=current_name or name,
        current_canonical=parse_name(current_name).canonical if current_name else canonical,
        taxonomic_status="Accepted" if current == record else "Synonym",
        classification=classification, edit_distance=distance, sort_score=score,
    )  # fmt: skip


GIRARD = match("2502872", "Dugesia Girard, 1851", ANIMAL)
GRAY = match("3091142", "Dugesia A.Gray", PLANT)
BERLESE = match("3253009", "Dugesia Berlese, 1883", MITE, current="6006594", current_name="Smaris")


def ctx(lineage: dict | None = None, query: str = "Dugesia", agreement: int = 1) -> P.RuleContext:
    return P.RuleContext(lineage=lineage or {}, query=parse_name(query), kingdom_synonyms=SYNONYMS,
                         min_lineage_agreement=agreement)  # fmt: skip


def test_exact_accepted_needs_a_single_accepted_exact_match():
    assert P.exact_accepted([GIRARD], ctx()) is GIRARD
    assert P.exact_accepted([BERLESE], ctx()) is None
    assert P.exact_accepted([GIRARD, GRAY], ctx()) is None


def test_accepted_among_synonyms():
    assert P.accepted_among_synonyms([GIRARD, BERLESE], ctx()) is GIRARD
    assert P.accepted_among_synonyms([GIRARD, GRAY, BERLESE], ctx()) is None


def test_author_match_picks_the_usage_whose_authors_agree():
    assert P.author_match([GIRARD, GRAY], ctx(query="Dugesia Girard, 1851")) is GIRARD
    assert P.author_match([GIRARD, GRAY], ctx(query="Dugesia Gray")) is GRAY
    assert P.author_match([GIRARD, GRAY], ctx(query="Dugesia Girard, 1900")) is None  # year differs
    assert P.author_match([GIRARD, GRAY], ctx(query="Dugesia")) is None


def test_homonym_by_lineage_uses_higher_ranks_and_kingdom_synonyms():
    candidates = [GIRARD, GRAY, BERLESE]
    assert P.homonym_by_lineage(candidates, ctx({"phylum": "Platyhelminthes"})) is GIRARD
    assert P.homonym_by_lineage(candidates, ctx({"kingdom": "Viridiplantae"})) is GRAY
    # Kingdom alone leaves Dugesia Girard and the mite synonym tied: the accepted name wins.
    assert P.homonym_by_lineage(candidates, ctx({"kingdom": "Metazoa"})) is GIRARD
    assert P.homonym_by_lineage(candidates, ctx({})) is None
    assert P.homonym_by_lineage(candidates, ctx({"kingdom": "Fungi"})) is None


def test_synonym_to_accepted():
    other = match("9999", "Dugesia Other, 1900", MITE, current="6006594", current_name="Smaris",
                  score=89.0)
    assert P.synonym_to_accepted([BERLESE, other], ctx()) is BERLESE
    assert P.synonym_to_accepted([BERLESE, GIRARD], ctx()) is None


def test_same_lineage_takes_the_best_scored():
    doubtful = match("7778867", "Ursus maritimus Linnaeus, 1758", ANIMAL, score=92.0)
    accepted = match("2433451", "Ursus maritimus Phipps, 1774", ANIMAL, score=93.0)
    assert P.same_lineage([doubtful, accepted], ctx()) is accepted
    assert P.same_lineage([GIRARD, GRAY], ctx()) is None


def test_inexact_only_with_agreeing_lineage():
    fuzzy = match("2502872", "Dugesia Girard, 1851", ANIMAL, match_type="Fuzzy", distance=1)
    assert P.inexact_with_lineage([fuzzy], ctx({"kingdom": "Animalia"})) is fuzzy
    assert P.inexact_with_lineage([fuzzy], ctx({})) is None  # nothing to agree with
    assert P.inexact_with_lineage([fuzzy], ctx({"kingdom": "Plantae"})) is None
    assert P.inexact_with_lineage([fuzzy], ctx({"kingdom": "Animalia"}, agreement=2)) is None
    odd = match("2502872", "Dugesia Girard, 1851", ANIMAL, match_type="FuzzySpeciesGroupRelaxed")
    assert P.inexact_with_lineage([odd], ctx({"genus": "Dugesia"})) is odd
    assert P.inexact_with_lineage([GIRARD], ctx({"kingdom": "Animalia"})) is None  # exact: not its job


def test_profiles_apply_rules_in_order_behind_the_kingdom_guard():
    profiles = P.Profiles(list(P.RULES))
    choice = profiles.decide([GIRARD, GRAY, BERLESE], ctx({"kingdom": "Plantae"}))
    assert choice is not None and choice.match is GRAY
    assert choice.strategy == "kingdom_guard+exact_accepted"
    unguarded = P.Profiles(list(P.RULES), require_kingdom_agreement=False)
    choice = unguarded.decide([GIRARD, GRAY, BERLESE], ctx({"kingdom": "Plantae"}))
    assert choice is not None and (choice.match, choice.strategy) == (GRAY, "homonym_by_lineage")
    only_exact = P.Profiles(["exact_accepted"])
    assert only_exact.decide([GIRARD, GRAY], ctx({})) is None
    with pytest.raises(ConfigError, match="unknown rule"):
        P.Profiles(["exact_accepted", "coin_flip"])
