"""The resolver interface and the result structure every resolver returns.

A resolver answers name-strings against one data source at a time (GNVerifier's shape: one
`Answer` per name, each with the matched records as `Match`es). Both resolvers (`gnverifier`
over HTTP, `backbone` against a local GBIF dump) return exactly these types, so the resolution
profiles and the cache never know which one answered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from stages.taxonomy.names import RANKS

# Match types GNVerifier documents (v1) and newer servers send. Anything else is tolerated: it is
# kept verbatim in the output and treated as an inexact match (lineage must agree).
EXACT = "Exact"
NO_MATCH = "NoMatch"
KNOWN_MATCH_TYPES: tuple[str, ...] = (
    "Exact", "Fuzzy", "PartialExact", "PartialFuzzy", "NoMatch", "Virus", "FacetedSearch",
    "FuzzyRelaxed", "PartialFuzzyRelaxed", "ExactSpeciesGroup", "FuzzySpeciesGroup",
    "FuzzySpeciesGroupRelaxed",
)  # fmt: skip

ACCEPTED = "Accepted"
SYNONYM = "Synonym"


class ResolverError(Exception):
    """A batch could not be answered (HTTP error past the retry budget, bad response)."""


@dataclass(frozen=True)
class Match:
    """One matched record of a data source (GNVerifier's ResultData, the fields used here)."""

    data_source_id: int
    record_id: str
    match_type: str
    matched_name: str  # verbatim, with authorship
    matched_canonical: str
    matched_cardinality: int
    current_record_id: str
    current_name: str  # the accepted name, with authorship
    current_canonical: str
    taxonomic_status: str  # Accepted | Synonym | N/A
    # The current taxon's classification, most general first: ((rank, name), ...).
    classification: tuple[tuple[str, str], ...]
    edit_distance: int = 0
    stem_edit_distance: int = 0
    sort_score: float = 0.0

    @property
    def is_synonym(self) -> bool:
        return self.taxonomic_status == SYNONYM or (
            self.current_record_id != "" and self.current_record_id != self.record_id
        )

    def lineage(self) -> dict[str, str]:
        """The 7 output ranks of the current taxon (missing ranks absent)."""
        return {rank: name for rank, name in self.classification if rank in RANKS and name}

    @property
    def current_rank(self) -> str:
        """Rank of the current taxon: the classification entry carrying its canonical name."""
        for rank, name in reversed(self.classification):
            if name == self.current_canonical:
                return rank
        return ""

    def order_key(self) -> tuple[float, int, str]:
        """Deterministic ordering: best score first, then numeric, then textual record id."""
        rid = self.record_id
        return (-self.sort_score, int(rid) if rid.isdigit() else -1, rid)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["classification"] = [list(pair) for pair in self.classification]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Match:
        values = dict(data)
        values["classification"] = tuple(tuple(pair) for pair in data["classification"])
        return cls(**values)


@dataclass(frozen=True)
class Answer:
    """A resolver's answer for one name-string in one data source."""

    term: str
    source: int
    match_type: str
    results: tuple[Match, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "term": self.term, "source": self.source, "match_type": self.match_type,
            "results": [m.to_json() for m in self.results],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(
            data["term"], int(data["source"]), data["match_type"],
            tuple(Match.from_json(m) for m in data["results"]),
        )  # fmt: skip


@dataclass
class BatchOutcome:
    """One batch's fate: answers for all its terms, or an error for all of them."""

    terms: list[str]
    source: int
    answers: list[Answer] | None = None
    error: str | None = None


class Resolver:
    """Interface of a resolver. `identity()` names the data and matching options the answers
    depend on: it keys the answer cache and goes into every partition's inputs."""

    kind: str = "resolver"

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def sources(self) -> list[int]:
        """Data sources to try, in order."""
        raise NotImplementedError

    def verify(self, terms: Sequence[str], source: int) -> Iterator[BatchOutcome]:
        """Answer `terms` against `source`, batch by batch (never mixing sources). A batch that
        fails yields an outcome with `error` set; other batches are unaffected."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files."""
