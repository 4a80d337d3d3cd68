"""The resolution loop: unique name tuples -> decisions, through the cache and the resolver.

Every tuple walks its query terms (most specific first) and, for each term, the data sources in
order. All tuples advance together in rounds; in each round the distinct (source, term) queries
still needed are looked up in the answer cache, and only the missing ones go to the resolver,
batch by batch (one source per batch). As each batch comes back its answers are cached and the
tuples waiting on it are decided (or moved to their next source/term); the decisions are cached
at once. A batch that fails fails only the tuples waiting on it (reason `resolver_error`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.digest import digest_json
from pipeline.progress import Progress
from stages.taxonomy.cache import AnswerCache
from stages.taxonomy.names import RANKS, NameTuple, QueryTerm, parse_name, query_terms
from stages.taxonomy.profiles import Choice, Profiles, RuleContext, normalize_kingdom
from stages.taxonomy.resolver import Answer, Resolver
from stages.taxonomy.vernacular import CommonNames

RESOLVED, FORCED_INPUT, EMPTY_INPUT = "resolved", "forced_input", "empty_input"
RESOLVER_ERROR = "resolver_error"


@dataclass(frozen=True)
class Settings:
    query_order: tuple[str, ...]
    parser: str
    capitalize: bool
    kingdom_synonyms: Mapping[str, str]
    min_lineage_agreement: int
    progress: bool = True
    progress_interval_s: float = 10.0
    # Tuples resolved together (all their rounds) before the next ones: bounds memory and keeps
    # parsed names in the parser's cache; batches to the resolver form within a chunk.
    chunk_size: int = 20_000


@dataclass
class _State:
    names: NameTuple
    terms: list[QueryTerm]
    term_index: int = 0
    source_index: int = 0
    tried: list[str] = field(default_factory=list)

    @property
    def term(self) -> QueryTerm:
        return self.terms[self.term_index]


def empty_decision(status: str) -> dict[str, Any]:
    return {
        "status": "ok", "reason": None, "detail": None, "resolution_status": status,
        "ranks": {}, "scientific_name": None, "taxon_rank": None, "strategy": None,
        "match_type": None, "data_source_id": None, "record_id": None, "query_term": None,
        "query_rank": None, "common_name": None, "common_name_rank": None,
        "common_name_language": None,
    }  # fmt: skip


class Engine:
    def __init__(
        self,
        resolver: Resolver,
        cache: AnswerCache,
        profiles: Profiles,
        settings: Settings,
        common_names: CommonNames | None,
        output_params: Mapping[str, Any],
    ):
        self.resolver = resolver
        self.cache = cache
        self.profiles = profiles
        self.settings = settings
        self.common_names = common_names
        self.sources = resolver.sources()
        self.resolver_digest = digest_json(resolver.identity())
        # Decisions depend on the answers (resolver identity), on every output parameter and on
        # the common-name data.
        self.params_digest = digest_json({
            "resolver": resolver.identity(), "sources": self.sources, "params": dict(output_params),
            "common_names": common_names.identity() if common_names else None,
        })  # fmt: skip

    # -- decisions ---------------------------------------------------------------------------

    def _input_lineage(self, names: NameTuple) -> dict[str, str]:
        lineage = {rank: names.get(rank) for rank in RANKS[:-1]}
        lineage["kingdom"] = normalize_kingdom(lineage["kingdom"], self.settings.kingdom_synonyms)
        return {k: v for k, v in lineage.items() if v}

    def _resolved(self, state: _State, choice: Choice) -> dict[str, Any]:
        match = choice.match
        ranks = match.lineage()
        if "kingdom" in ranks:
            ranks["kingdom"] = normalize_kingdom(ranks["kingdom"], self.settings.kingdom_synonyms) or ""
        name = match.current_canonical or match.matched_canonical
        rank = match.current_rank or ""
        decision = empty_decision(RESOLVED)
        decision.update({
            "ranks": ranks, "scientific_name": name or None, "taxon_rank": rank or None,
            "strategy": choice.strategy, "match_type": match.match_type,
            "data_source_id": match.data_source_id,
            "record_id": match.current_record_id or match.record_id,
            "query_term": state.term.term, "query_rank": state.term.rank,
        })  # fmt: skip
        if self.common_names is not None and name:
            found = self.common_names.lookup(
                match.current_record_id, match.data_source_id, name, rank or "species", ranks
            )
            if found:
                decision.update({"common_name": found.name, "common_name_rank": found.rank,
                                 "common_name_language": found.language})  # fmt: skip
        return decision

    def _forced(self, state: _State) -> dict[str, Any]:
        names = state.names
        ranks = {rank: names.get(rank) for rank in RANKS if names.get(rank)}
        if "kingdom" in ranks:
            ranks["kingdom"] = normalize_kingdom(ranks["kingdom"], self.settings.kingdom_synonyms)
        first = state.terms[0]
        parsed = parse_name(first.term, self.settings.parser, self.settings.capitalize)
        decision = empty_decision(FORCED_INPUT)
        decision.update({
            "ranks": ranks, "scientific_name": parsed.canonical or first.term,
            "query_term": first.term, "query_rank": first.rank,
            "detail": "no rule decided for " + "; ".join(state.tried),
        })  # fmt: skip
        return decision

    @staticmethod
    def _failed(state: _State, source: int, error: str) -> dict[str, Any]:
        decision = empty_decision(None)  # type: ignore[arg-type]
        decision.update({
            "status": "failed", "reason": RESOLVER_ERROR, "resolution_status": None,
            "detail": error, "query_term": state.term.term, "query_rank": state.term.rank,
            "data_source_id": source,
        })  # fmt: skip
        return decision

    def _step(self, state: _State, answer: Answer) -> tuple[dict[str, Any] | None, bool]:
        """Decide a tuple from one answer: (decision, False), or (None, True) to go on."""
        source = self.sources[state.source_index]
        ctx = RuleContext(
            lineage=self._input_lineage(state.names),
            query=parse_name(state.term.term, self.settings.parser, self.settings.capitalize),
            kingdom_synonyms=self.settings.kingdom_synonyms,
            min_lineage_agreement=self.settings.min_lineage_agreement,
            parser=self.settings.parser,
        )  # fmt: skip
        choice = self.profiles.decide(answer.results, ctx)
        if choice is not None:
            return self._resolved(state, choice), False
        state.tried.append(f"{state.term.rank} {state.term.term!r} in source {source}: "
                           f"{answer.match_type}, {len(answer.results)} match(es)")  # fmt: skip
        state.source_index += 1
        if state.source_index == len(self.sources):
            state.source_index = 0
            state.term_index += 1
        if state.term_index == len(state.terms):
            return self._forced(state), False
        return None, True

    # -- the loop ----------------------------------------------------------------------------

    def resolve(self, tuples: Iterable[NameTuple], retry_failed: bool = True) -> dict[str, dict]:
        """Decide every tuple not decided yet (failed ones again when `retry_failed`), then
        return all their decisions (key -> decision)."""
        by_key = {t.key: t for t in tuples}
        self.resolve_pending(by_key.values(), retry_failed)
        return self.cache.get_decisions(self.params_digest, list(by_key))

    def resolve_pending(self, tuples: Iterable[NameTuple], retry_failed: bool = True) -> int:
        """Decide the tuples without a (non-failed, unless not `retry_failed`) decision in the
        cache; decisions go to the cache only, so memory stays bounded by one chunk. Returns how
        many tuples were resolved."""
        by_key = {t.key: t for t in tuples}
        done = self.cache.decided_keys(self.params_digest, list(by_key), not retry_failed)
        todo = [by_key[k] for k in sorted(by_key) if k not in done]
        progress = Progress("03_taxonomy", len(todo), unit="names",
                            enabled=self.settings.progress,
                            interval_s=self.settings.progress_interval_s)  # fmt: skip
        progress.message(f"{len(by_key):,} unique name tuples, {len(done):,} already decided, "
                         f"{len(todo):,} to resolve")  # fmt: skip
        size = max(1, self.settings.chunk_size)
        for start in range(0, len(todo), size):
            self._resolve_chunk(todo[start : start + size], progress)
        return len(todo)

    def _resolve_chunk(self, chunk: Sequence[NameTuple], progress: Progress) -> None:
        states: list[_State] = []
        empties: list[tuple[str, dict]] = []
        for names in chunk:
            terms = query_terms(names, self.settings.query_order, self.settings.parser,
                                self.settings.capitalize)  # fmt: skip
            if terms:
                states.append(_State(names, terms))
            else:
                empties.append((names.key, empty_decision(EMPTY_INPUT)))
        self._record(empties, progress)
        while states:
            states = self._round(states, progress)

    def _record(self, new: Sequence[tuple[str, dict]], progress: Progress) -> None:
        self.cache.put_decisions(self.params_digest, new)
        if new:
            progress.advance(len(new))

    def _round(self, states: list[_State], progress: Progress) -> list[_State]:
        waiting: dict[tuple[int, str], list[_State]] = defaultdict(list)
        for state in states:
            waiting[(self.sources[state.source_index], state.term.term)].append(state)
        going_on: list[_State] = []

        def settle(answers: Sequence[Answer]) -> None:
            new = []
            for answer in answers:
                for state in waiting.pop((answer.source, answer.term), []):
                    decision, more = self._step(state, answer)
                    if more:
                        going_on.append(state)
                    else:
                        new.append((state.names.key, decision))
            self._record(new, progress)

        def fail(source: int, terms: Sequence[str], error: str) -> None:
            new = []
            for term in terms:
                for state in waiting.pop((source, term), []):
                    new.append((state.names.key, self._failed(state, source, error)))
            self._record(new, progress)

        for source in self.sources:
            terms = sorted({term for s, term in waiting if s == source})
            if not terms:
                continue
            cached = self.cache.get_answers(self.resolver_digest, source, terms)
            settle([cached[t] for t in terms if t in cached])
            missing = [t for t in terms if t not in cached]
            for outcome in self.resolver.verify(missing, source):
                if outcome.answers is not None:
                    self.cache.put_answers(self.resolver_digest, outcome.answers)
                    settle(outcome.answers)
                else:
                    fail(source, outcome.terms, outcome.error or "unknown resolver error")
        return going_on
