"""Resolution of real GBIF names, the same cases through both resolvers: the offline backbone
resolver and the GNVerifier HTTP client talking to the loopback server (which answers from the
same dump)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.taxonomy.backbone import BackboneIndex, BackboneResolver, MatchOptions
from stages.taxonomy.cache import AnswerCache
from stages.taxonomy.engine import Engine, Settings
from stages.taxonomy.gnverifier import GNVerifierResolver
from stages.taxonomy.names import invalid_token_set, make_tuple
from stages.taxonomy.profiles import Profiles
from stages.taxonomy.vernacular import CommonNames
from tests.support.backbone_fixture import gbif_dump, gbif_index, source1_index  # noqa: F401
from tests.support.gnverifier_server import GNVerifierServer

PROFILES = ["exact_accepted", "accepted_among_synonyms", "author_match", "homonym_by_lineage",
            "synonym_to_accepted", "same_lineage", "inexact_with_lineage"]  # fmt: skip
SYNONYMS = {"Metazoa": "Animalia", "Viridiplantae": "Plantae", "Archaeplastida": "Plantae"}
QUERY_ORDER = ("species", "scientific_name", "genus", "family", "order", "class", "phylum", "kingdom")
INVALID = invalid_token_set(["unknown", "null", "none", "", "n/a"])
FIELDS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "scientific_name")


def tuple_of(**values: str | None):
    return make_tuple([values.get(f) for f in FIELDS], INVALID)


@pytest.fixture(scope="module")
def server(gbif_index: Path) -> Iterator[GNVerifierServer]:  # noqa: F811
    with GNVerifierServer({11: gbif_index}) as srv:
        yield srv


def make_engine(kind: str, index: Path, server: GNVerifierServer, cache_dir: Path,
                uninomial_fuzzy: bool = False) -> Engine:  # fmt: skip
    if kind == "backbone":
        resolver = BackboneResolver(index, 11, "gnparser", True, MatchOptions(uninomial_fuzzy, 1), 50)
    else:
        resolver = GNVerifierResolver(server.url, [11, 1, 179], 50, 10.0, 2, 0.01, 0.05, 2, True,
                                      uninomial_fuzzy)  # fmt: skip
    common = CommonNames(BackboneIndex(index), 11, ["en"], False, "family")
    settings = Settings(QUERY_ORDER, "gnparser", True, SYNONYMS, 1, progress=False)
    return Engine(resolver, AnswerCache(cache_dir / "cache.sqlite"), Profiles(PROFILES),
                  settings, common, {"uninomial_fuzzy": uninomial_fuzzy})  # fmt: skip


@pytest.fixture(params=["backbone", "gnverifier"])
def engine(request, gbif_index: Path, server: GNVerifierServer, tmp_path: Path) -> Engine:  # noqa: F811
    return make_engine(request.param, gbif_index, server, tmp_path)


def resolve_one(engine: Engine, **values: str | None) -> dict:
    names = tuple_of(**values)
    return engine.resolve([names])[names.key]


def test_exact_accepted(engine: Engine):
    d = resolve_one(engine, kingdom="Animalia", genus="Ursus", species="Ursus arctos")
    assert d["resolution_status"] == "resolved"
    assert d["strategy"] == "exact_accepted" and d["match_type"] == "Exact"
    assert (d["data_source_id"], d["record_id"]) == (11, "2433433")
    assert d["ranks"] == {"kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia",
                          "order": "Carnivora", "family": "Ursidae", "genus": "Ursus",
                          "species": "Ursus arctos"}  # fmt: skip
    assert (d["query_term"], d["query_rank"]) == ("Ursus arctos", "species")
    # English first among German, French, Spanish and two English spellings.
    assert d["common_name_language"] == "en" and d["common_name"].casefold() == "brown bear"
    assert d["common_name_rank"] == "species"


def test_exact_synonym_resolves_to_accepted_name(engine: Engine):
    d = resolve_one(engine, kingdom="Plantae", species="Spruceanthus marianus")
    assert d["strategy"] == "synonym_to_accepted" and d["match_type"] == "Exact"
    assert d["scientific_name"] == "Cheilolejeunea mariana" and d["record_id"] == "7362076"
    assert d["ranks"]["species"] == "Cheilolejeunea mariana"
    assert d["ranks"]["family"] == "Lejeuneaceae" and d["ranks"]["phylum"] == "Marchantiophyta"


def test_fuzzy_typo_in_binomial(engine: Engine):
    d = resolve_one(engine, kingdom="Plantae", family="Fagaceae", species="Quercus duglasii")
    assert d["match_type"] == "Fuzzy" and d["strategy"] == "inexact_with_lineage"
    assert d["query_rank"] == "species" and d["record_id"] == "2878266"
    assert d["ranks"]["species"] == "Quercus douglasii" and d["common_name"] == "blue oak"


def test_fuzzy_match_rejected_when_lineage_disagrees(engine: Engine):
    d = resolve_one(engine, kingdom="Animalia", species="Quercus duglasii")
    assert d["resolution_status"] == "resolved"
    # The plant is set aside (kingdom conflict); what is left is the kingdom term.
    assert d["query_rank"] == "kingdom" and d["ranks"] == {"kingdom": "Animalia"}


def test_partial_unknown_epithet_gives_genus(engine: Engine):
    d = resolve_one(engine, kingdom="Animalia", species="Ursus unknownus")
    assert d["match_type"] == "PartialExact" and d["strategy"] == "inexact_with_lineage"
    assert d["ranks"]["genus"] == "Ursus" and "species" not in d["ranks"]
    assert d["taxon_rank"] == "genus" and d["record_id"] == "2433406"


@pytest.mark.parametrize(
    ("lineage", "record", "phylum", "strategy"),
    [({"kingdom": "Animalia"}, "2502872", "Platyhelminthes", "kingdom_guard+accepted_among_synonyms"),
     ({"kingdom": "Metazoa"}, "2502872", "Platyhelminthes", "kingdom_guard+accepted_among_synonyms"),
     ({"kingdom": "Plantae"}, "3091142", "Tracheophyta", "kingdom_guard+exact_accepted"),
     ({"kingdom": "Viridiplantae"}, "3091142", "Tracheophyta", "kingdom_guard+exact_accepted"),
     ({"phylum": "Platyhelminthes"}, "2502872", "Platyhelminthes", "homonym_by_lineage"),
     ({"family": "Asteraceae"}, "3091142", "Tracheophyta", "homonym_by_lineage")],
)  # fmt: skip
def test_homonym_resolved_by_higher_ranks(engine: Engine, lineage: dict, record: str, phylum: str,
                                          strategy: str):  # fmt: skip
    d = resolve_one(engine, genus="Dugesia", **lineage)
    assert d["strategy"] == strategy and d["record_id"] == record
    assert d["ranks"]["phylum"] == phylum
    assert d["ranks"]["kingdom"] in ("Animalia", "Plantae")  # synonyms normalised


def test_homonym_without_lineage_is_not_guessed(engine: Engine):
    d = resolve_one(engine, genus="Satyrium")
    assert d["resolution_status"] == "forced_input"
    assert d["ranks"] == {"genus": "Satyrium"}


def test_uninomial_is_not_fuzzy_matched(engine: Engine):
    d = resolve_one(engine, kingdom="Animalia", genus="Ursuss")
    assert d["query_rank"] == "kingdom" and "genus" not in d["ranks"]
    alone = resolve_one(engine, genus="Ursuss")
    assert alone["resolution_status"] == "forced_input"


def test_uninomial_fuzzy_when_enabled(gbif_index: Path, server: GNVerifierServer, tmp_path: Path):  # noqa: F811
    for kind in ("backbone", "gnverifier"):
        engine = make_engine(kind, gbif_index, server, tmp_path / kind, uninomial_fuzzy=True)
        d = resolve_one(engine, kingdom="Animalia", genus="Ursuss")
        assert (d["match_type"], d["ranks"].get("genus"), d["query_rank"]) == ("Fuzzy", "Ursus", "genus")


def test_author_disambiguates_two_usages(engine: Engine):
    with_author = resolve_one(engine, kingdom="Animalia", species="Ursus maritimus",
                              scientific_name="Ursus maritimus Linnaeus, 1758")  # fmt: skip
    assert with_author["strategy"] == "author_match" and with_author["record_id"] == "7778867"
    plain = resolve_one(engine, kingdom="Animalia", species="Ursus maritimus")
    assert plain["strategy"] == "same_lineage" and plain["record_id"] == "2433451"
    assert plain["common_name"] == "polar bear"


def test_unknown_name_is_forced_to_input(engine: Engine):
    d = resolve_one(engine, kingdom="Bogus", genus="Zzyzxia", species="Zzyzxia qwertyi")
    assert d["status"] == "ok" and d["resolution_status"] == "forced_input"
    assert d["ranks"] == {"kingdom": "Bogus", "genus": "Zzyzxia", "species": "Zzyzxia qwertyi"}
    assert d["strategy"] is None and "no rule decided" in d["detail"]


def test_empty_input(engine: Engine):
    d = resolve_one(engine, kingdom="unknown", genus="N/A", species="  ", scientific_name="NULL")
    assert d["resolution_status"] == "empty_input" and d["ranks"] == {}


def test_species_epithet_joined_to_genus(engine: Engine):
    d = resolve_one(engine, kingdom="Animalia", genus="Apis", species="mellifera")
    assert d["ranks"]["species"] == "Apis mellifera" and d["query_term"] == "Apis mellifera"
    assert d["common_name"] == "western honey bee"


def test_common_name_in_another_language_when_no_english(engine: Engine):
    d = resolve_one(engine, kingdom="Animalia", species="Ursus spelaeus")
    assert (d["common_name"], d["common_name_language"]) == ("Höhlenbär", "de")


CASES = [
    {"kingdom": "Animalia", "species": "Ursus arctos"},
    {"kingdom": "Plantae", "species": "Spruceanthus marianus"},
    {"kingdom": "Plantae", "family": "Fagaceae", "species": "Quercus duglasii"},
    {"kingdom": "Animalia", "species": "Ursus unknownus"},
    {"kingdom": "Metazoa", "genus": "Dugesia"},
    {"kingdom": "Plantae", "genus": "Satyrium"},
    {"kingdom": "Animalia", "genus": "Ursuss"},
    {"kingdom": "Bogus", "species": "Zzyzxia qwertyi"},
    {"kingdom": "unknown"},
    {"kingdom": "Animalia", "species": "Ursus maritimus",
     "scientific_name": "Ursus maritimus Linnaeus, 1758"},
    {"kingdom": "Plantae", "species": "Poa annua", "scientific_name": "Poa annua var. annua"},
    {"species": "Pinus contorta"},
    {"kingdom": "Animalia", "species": "Euparatettixoides longipennis"},
    {"genus": "Apis", "species": "Apis mellifera"},
    {"family": "Ursidae"},
]  # fmt: skip


def test_both_resolvers_decide_alike(gbif_index: Path, server: GNVerifierServer, tmp_path: Path):  # noqa: F811
    tuples = [tuple_of(**case) for case in CASES]
    results = {}
    for kind in ("backbone", "gnverifier"):
        engine = make_engine(kind, gbif_index, server, tmp_path / kind)
        decisions = engine.resolve(tuples)
        # The detail of forced rows lists the sources tried: 11 alone offline, 11, 1, 179 online.
        results[kind] = [{k: v for k, v in decisions[t.key].items() if k != "detail"} for t in tuples]
    assert results["backbone"] == results["gnverifier"]
    statuses = {d["resolution_status"] for d in results["backbone"]}
    assert statuses == {"resolved", "forced_input", "empty_input"}


def test_unknown_match_type_from_server_is_tolerated(gbif_index: Path, tmp_path: Path):  # noqa: F811
    with GNVerifierServer({11: gbif_index}) as srv:
        srv.match_type_overrides["Quercus duglasii"] = "FuzzyQuantumRelaxed"
        engine = make_engine("gnverifier", gbif_index, srv, tmp_path)
        d = resolve_one(engine, kingdom="Plantae", species="Quercus duglasii")
    assert d["match_type"] == "FuzzyQuantumRelaxed"
    assert d["strategy"] == "inexact_with_lineage" and d["record_id"] == "2878266"


def test_second_source_used_when_first_has_no_match(gbif_index: Path, source1_index: Path,  # noqa: F811
                                                    tmp_path: Path):  # fmt: skip
    with GNVerifierServer({11: gbif_index, 1: source1_index}) as srv:
        engine = make_engine("gnverifier", gbif_index, srv, tmp_path)
        d = resolve_one(engine, kingdom="Animalia", species="Bubo bubo")
        sources = [r.sources for r in srv.verification_requests()]
    assert (d["data_source_id"], d["record_id"], d["ranks"]["family"]) == (1, "900000001", "Strigidae")
    assert sources == [[11], [1]]  # one source per request, in the configured order


def test_chunked_resolution_decides_alike(gbif_index: Path, server: GNVerifierServer, tmp_path: Path):  # noqa: F811
    from dataclasses import replace

    tuples = [tuple_of(**case) for case in CASES]
    whole = make_engine("backbone", gbif_index, server, tmp_path / "whole").resolve(tuples)
    chunked_engine = make_engine("backbone", gbif_index, server, tmp_path / "chunked")
    chunked_engine.settings = replace(chunked_engine.settings, chunk_size=2)
    assert chunked_engine.resolve(tuples) == whole
