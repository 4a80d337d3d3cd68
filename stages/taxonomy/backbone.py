"""Offline resolution against a local GBIF backbone dump (through its SQLite index).

Matching follows GNVerifier's order: exact canonical form; then fuzzy, by edit distance between
stems (never for uninomials unless enabled); then partial, dropping trailing words (exact, then
fuzzy, on what is left). A synonym's current name is its accepted usage. The answers have the
same structure as the GNVerifier client's, so the same profiles decide among them.

Fuzzy candidates are found with the index, not by scanning: with one edit, either the first half
of the query's stem or its second half is intact, so candidates are the stems sharing the first
half as a prefix (index on stems) or the second half as a suffix (index on reversed stems).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from stages.taxonomy.index import INDEX_VERSION, connect, read_meta
from stages.taxonomy.names import RANKS, ParsedName, authors_agree, parse_name, stem_canonical
from stages.taxonomy.resolver import (
    ACCEPTED,
    EXACT,
    NO_MATCH,
    SYNONYM,
    Answer,
    BatchOutcome,
    Match,
    Resolver,
)

# Edit distances the stem index can answer completely (see the module docstring).
SUPPORTED_EDIT_DISTANCES = (0, 1)
# Depth limit when walking parent links (guards against cycles in a broken dump).
MAX_PARENT_DEPTH = 64
_HIGH = "\U0010ffff"

_COLUMNS = (
    "id, parent_id, accepted_id, canonical, stem, scientific_name, authorship, rank, status, "
    'kingdom, phylum, class, "order", family, genus, species'
)


@dataclass(frozen=True)
class Row:
    id: int
    parent_id: int | None
    accepted_id: int | None
    canonical: str | None
    stem: str | None
    scientific_name: str
    authorship: str
    rank: str | None
    status: str | None
    kingdom: str | None
    phylum: str | None
    class_: str | None
    order: str | None
    family: str | None
    genus: str | None
    species: str | None

    @property
    def is_synonym(self) -> bool:
        status = self.status or ""
        return self.accepted_id is not None and self.accepted_id != self.id and (
            "synonym" in status or "misapplied" in status
        )

    def classification(self) -> tuple[tuple[str, str], ...]:
        """kingdom..genus from the row's columns, the binomial as species, then the taxon itself
        when it is below species (or of another rank) and not already listed."""
        values = (self.kingdom, self.phylum, self.class_, self.order, self.family, self.genus,
                  self.species)  # fmt: skip
        path = [(rank, name) for rank, name in zip(RANKS, values, strict=True) if name]
        if self.canonical and all(name != self.canonical for _, name in path):
            path.append((self.rank or "unranked", self.canonical))
        return tuple(path)


class BackboneIndex:
    """Read-only queries on an index file; safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self.meta = read_meta(self._conn())
        if self.meta.get("version") != str(INDEX_VERSION):
            raise ConfigError(f"{self.path}: index version {self.meta.get('version')}, "
                              f"expected {INDEX_VERSION}; delete it to rebuild")  # fmt: skip

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    def _rows(self, sql: str, args: tuple) -> list[Row]:
        return [Row(*r) for r in self._conn().execute(sql, args).fetchall()]

    def by_id(self, taxon_id: int) -> Row | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM taxa WHERE id = ?", (taxon_id,))
        return rows[0] if rows else None

    def by_canonical(self, canonical: str) -> list[Row]:
        return self._rows(f"SELECT {_COLUMNS} FROM taxa WHERE canonical = ? ORDER BY id", (canonical,))

    def by_stem(self, stem: str) -> list[Row]:
        return self._rows(f"SELECT {_COLUMNS} FROM taxa WHERE stem = ? ORDER BY id", (stem,))

    def stems_with_prefix(self, prefix: str, min_len: int, max_len: int) -> list[str]:
        sql = ("SELECT DISTINCT stem FROM taxa WHERE stem >= ? AND stem < ? "
               "AND length(stem) BETWEEN ? AND ?")  # fmt: skip
        rows = self._conn().execute(sql, (prefix, prefix + _HIGH, min_len, max_len)).fetchall()
        return [r[0] for r in rows]

    def stems_with_suffix(self, suffix: str, min_len: int, max_len: int) -> list[str]:
        rev = suffix[::-1]
        sql = "SELECT rstem FROM rstems WHERE rstem >= ? AND rstem < ? AND length(rstem) BETWEEN ? AND ?"
        rows = self._conn().execute(sql, (rev, rev + _HIGH, min_len, max_len)).fetchall()
        return [r[0][::-1] for r in rows]

    def accepted_by_name(self, canonical: str, kingdom: str | None) -> list[Row]:
        """Non-synonym usages of a canonical name (in a kingdom when given), by id."""
        rows = [r for r in self.by_canonical(canonical) if not r.is_synonym]
        if kingdom:
            rows = [r for r in rows if r.kingdom == kingdom]
        return rows

    def vernaculars(self, taxon_id: int) -> list[tuple[str, str, str, str]]:
        """(name, language, country, source) rows of a taxon."""
        sql = "SELECT name, language, country, source FROM vernacular WHERE taxon_id = ?"
        return [tuple(r) for r in self._conn().execute(sql, (taxon_id,)).fetchall()]

    def classification_ids(self, row: Row) -> dict[str, str]:
        """Canonical name -> id along the parent chain of a row (ids of its classification)."""
        ids: dict[str, str] = {}
        current: Row | None = row
        for _ in range(MAX_PARENT_DEPTH):
            if current is None:
                break
            if current.canonical:
                ids.setdefault(current.canonical, str(current.id))
            if current.parent_id is None:
                break
            current = self.by_id(current.parent_id)
        return ids

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# ---------------------------------------------------------------------------------------------
# Edit distances


def within_one_edit(a: str, b: str) -> bool:
    """True when a and b differ by at most one insertion, deletion or substitution (O(n))."""
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if i == la:
        return True
    if la == lb:
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]


def levenshtein(a: str, b: str) -> int:
    if a == b:
        return 0
    if within_one_edit(a, b):  # the common case for fuzzy matches, in O(n)
        return 1
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


# ---------------------------------------------------------------------------------------------
# Matching (shared with the GNVerifier test server, which answers from the same index)


@dataclass(frozen=True)
class MatchOptions:
    uninomial_fuzzy: bool = False
    max_edit_distance: int = 1

    def __post_init__(self) -> None:
        if self.max_edit_distance not in SUPPORTED_EDIT_DISTANCES:
            raise ConfigError(
                f"taxonomy.max_edit_distance must be one of {SUPPORTED_EDIT_DISTANCES}, "
                f"got {self.max_edit_distance}"
            )


@dataclass(frozen=True)
class ScoredMatch:
    match: Match
    details: dict[str, float]  # GNVerifier's scoreDetails
    row: Row  # the matched row
    current: Row | None  # its current (accepted) row


# Weights of the score details in sortScore: each outranks all the ones after it, as in
# GNVerifier (cardinality, infraspecific rank, fuzzy-less, curated data, authorship, accepted).
SCORE_WEIGHTS = (
    ("cardinalityScore", 64.0), ("infraSpecificRankScore", 32.0), ("fuzzyLessScore", 16.0),
    ("curatedDataScore", 8.0), ("authorMatchScore", 4.0), ("acceptedNameScore", 2.0),
    ("parsingQualityScore", 1.0),
)  # fmt: skip
_FUZZY_LESS = {"Exact": 1.0, "Fuzzy": 0.75, "PartialExact": 0.5, "PartialFuzzy": 0.25}


def authorship_keys(authorship: str) -> tuple[set[str], str]:
    """Author keys and year of an authorship string ("(Zheng & Z., 1991)")."""
    parsed = parse_name("Aus bus " + authorship, "builtin", False) if authorship else None
    if parsed is None:
        return set(), ""
    return set(parsed.authors), parsed.year


def author_score(query: ParsedName, authorship: str) -> float:
    """1 when authors overlap (and years agree when both given), 0 when they differ, 0.5 when
    the query or the record has no authorship."""
    if not query.authors or not authorship:
        return 0.5
    authors, year = authorship_keys(authorship)
    if not authors:
        return 0.5
    return 1.0 if authors_agree(query.authors, query.year, authors, year) else 0.0


def _status_score(row: Row) -> float:
    if row.is_synonym:
        return 0.0
    return 0.5 if (row.status or "") == "doubtful" else 1.0


def score(match_type: str, query: ParsedName, row: Row) -> tuple[float, dict[str, float]]:
    cardinality = len(row.canonical.split(" ")) if row.canonical else 0
    details = {
        "cardinalityScore": 1.0 if cardinality == query.cardinality else 0.0,
        "infraSpecificRankScore": 0.0,
        "fuzzyLessScore": _FUZZY_LESS.get(match_type, 0.0),
        "curatedDataScore": 1.0,
        "authorMatchScore": author_score(query, row.authorship or ""),
        "acceptedNameScore": _status_score(row),
        "parsingQualityScore": 1.0,
    }
    total = sum(details[name] * weight for name, weight in SCORE_WEIGHTS)
    return round(total, 6), details


def to_match(
    index: BackboneIndex, source_id: int, match_type: str, query: ParsedName, matched: str, row: Row
) -> ScoredMatch:
    """A record as a Match: its current row is the accepted usage for a synonym."""
    current = row
    status = ACCEPTED
    if row.is_synonym:
        status = SYNONYM
        current = index.by_id(row.accepted_id) if row.accepted_id is not None else None
    elif row.accepted_id is not None and row.accepted_id != row.id:
        status = "N/A"
    base = current or row
    sort_score, details = score(match_type, query, row)
    stem = row.stem or ""
    match = Match(
        data_source_id=source_id,
        record_id=str(row.id),
        match_type=match_type,
        matched_name=row.scientific_name or row.canonical or "",
        matched_canonical=row.canonical or "",
        matched_cardinality=len(row.canonical.split(" ")) if row.canonical else 0,
        current_record_id=str(current.id) if current else str(row.accepted_id or row.id),
        current_name=(current.scientific_name or current.canonical or "") if current else "",
        current_canonical=(current.canonical or "") if current else "",
        taxonomic_status=status,
        classification=base.classification(),
        edit_distance=levenshtein(matched, row.canonical or ""),
        stem_edit_distance=levenshtein(stem_canonical(matched), stem),
        sort_score=sort_score,
    )
    return ScoredMatch(match, details, row, current)


def fuzzy_rows(index: BackboneIndex, canonical: str, max_ed: int) -> list[Row]:
    """Rows whose stem is within max_ed edits of the stem of `canonical` (other canonicals)."""
    if max_ed == 0:
        return []
    stem = stem_canonical(canonical)
    n = len(stem)
    half = n // 2
    candidates = set(index.stems_with_prefix(stem[:half], n - 1, n + 1))
    candidates.update(index.stems_with_suffix(stem[half:], n - 1, n + 1))
    rows: list[Row] = []
    for candidate in sorted(c for c in candidates if within_one_edit(stem, c)):
        rows.extend(r for r in index.by_stem(candidate) if r.canonical != canonical)
    return rows


def match_name(
    index: BackboneIndex, source_id: int, query: ParsedName, options: MatchOptions
) -> tuple[str, list[ScoredMatch]]:
    """Overall match type and the scored matches (best first) of one parsed name."""
    if not query.parsed or not query.canonical:
        return NO_MATCH, []
    words = query.canonical.split(" ")

    def exact(name: str) -> list[Row]:
        return index.by_canonical(name)

    def fuzzy(name: str) -> list[Row]:
        if len(name.split(" ")) == 1 and not options.uninomial_fuzzy:
            return []
        return fuzzy_rows(index, name, options.max_edit_distance)

    attempts: list[tuple[str, str, Any]] = [(EXACT, query.canonical, exact),
                                            ("Fuzzy", query.canonical, fuzzy)]  # fmt: skip
    for size in range(len(words) - 1, 0, -1):
        partial = " ".join(words[:size])
        attempts += [("PartialExact", partial, exact), ("PartialFuzzy", partial, fuzzy)]
    for match_type, name, find in attempts:
        rows = find(name)
        if rows:
            scored = [to_match(index, source_id, match_type, query, name, r) for r in rows]
            scored.sort(key=lambda s: s.match.order_key())
            return match_type, scored
    return NO_MATCH, []


# ---------------------------------------------------------------------------------------------
# The resolver


class BackboneResolver(Resolver):
    """Resolver over a local backbone index; one data source (the dump's, GBIF = 11)."""

    kind = "backbone"

    def __init__(
        self,
        index_path: str | Path,
        source_id: int,
        parser: str,
        capitalize: bool,
        options: MatchOptions,
        batch_size: int,
    ):
        self.index = BackboneIndex(index_path)
        self.source_id = source_id
        self.parser = parser
        self.capitalize = capitalize
        self.options = options
        self.batch_size = max(1, batch_size)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "dump_sha256": self.index.meta["dump_sha256"],
            "index_version": INDEX_VERSION, "source_id": self.source_id, "parser": self.parser,
            "capitalize": self.capitalize, "uninomial_fuzzy": self.options.uninomial_fuzzy,
            "max_edit_distance": self.options.max_edit_distance,
        }  # fmt: skip

    def sources(self) -> list[int]:
        return [self.source_id]

    def answer(self, term: str, source: int) -> Answer:
        if source != self.source_id:
            return Answer(term, source, NO_MATCH)
        query = parse_name(term, self.parser, self.capitalize)
        match_type, scored = match_name(self.index, source, query, self.options)
        return Answer(term, source, match_type, tuple(s.match for s in scored))

    def verify(self, terms: Sequence[str], source: int) -> Iterator[BatchOutcome]:
        for start in range(0, len(terms), self.batch_size):
            batch = list(terms[start : start + self.batch_size])
            yield BatchOutcome(batch, source, answers=[self.answer(t, source) for t in batch])

    def close(self) -> None:
        self.index.close()

