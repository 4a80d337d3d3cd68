"""Resolution profiles: small ordered rules that decide among a resolver's matches for one query.

Each rule looks at the matches of one answer (one term, one data source) and either picks one
(the decision records the rule's name as the row's `resolution_strategy`) or passes. The rules
run in the configured order; when none decides, the engine tries the next data source, then the
next less specific query term, and finally keeps the input (forced_input).

Before any rule, matches whose kingdom contradicts the input's (after kingdom synonyms such as
Metazoa -> Animalia) are set aside when `require_kingdom_agreement` is on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.errors import ConfigError
from stages.taxonomy.names import RANKS, ParsedName, authors_agree, parse_name
from stages.taxonomy.resolver import EXACT, NO_MATCH, Match

# Ranks compared for homonyms and lineage agreement (species is what is being resolved).
LINEAGE_RANKS: tuple[str, ...] = RANKS[:-1]


@dataclass(frozen=True)
class RuleContext:
    """What the rules know of the input besides the matches."""

    lineage: Mapping[str, str]  # input kingdom..genus (kingdom normalised), missing ranks absent
    query: ParsedName  # the query term, parsed (authorship for the author rule)
    kingdom_synonyms: Mapping[str, str] = field(default_factory=dict)
    min_lineage_agreement: int = 1
    parser: str = "gnparser"

    def kingdom(self, name: str | None) -> str | None:
        return normalize_kingdom(name, self.kingdom_synonyms)


def normalize_kingdom(name: str | None, synonyms: Mapping[str, str]) -> str | None:
    """The kingdom a name stands for (synonyms matched case-insensitively)."""
    if name is None:
        return None
    direct = synonyms.get(name)
    if direct is not None:
        return direct
    folded = name.casefold()
    return next((v for k, v in synonyms.items() if k.casefold() == folded), name)


def _value(match: Match, rank: str, ctx: RuleContext) -> str | None:
    value = match.lineage().get(rank)
    return ctx.kingdom(value) if rank == "kingdom" else value


def _mine(rank: str, ctx: RuleContext) -> str | None:
    value = ctx.lineage.get(rank)
    return ctx.kingdom(value) if rank == "kingdom" else value


def conflicts(match: Match, ctx: RuleContext) -> int:
    """Ranks (above genus) where the input and the match both have a value and they differ."""
    count = 0
    for rank in LINEAGE_RANKS[:-1]:
        mine, theirs = _mine(rank, ctx), _value(match, rank, ctx)
        if mine and theirs and mine.casefold() != theirs.casefold():
            count += 1
    return count


def agreements(match: Match, ctx: RuleContext) -> int:
    """Ranks (kingdom..genus) where the input and the match have the same value."""
    count = 0
    for rank in LINEAGE_RANKS:
        mine, theirs = _mine(rank, ctx), _value(match, rank, ctx)
        if mine and theirs and mine.casefold() == theirs.casefold():
            count += 1
    return count


def kingdom_conflict(match: Match, ctx: RuleContext) -> bool:
    mine, theirs = _mine("kingdom", ctx), _value(match, "kingdom", ctx)
    return bool(mine and theirs and mine.casefold() != theirs.casefold())


def best(matches: Sequence[Match]) -> Match:
    return min(matches, key=lambda m: m.order_key())


def _taxa(matches: Sequence[Match]) -> set[str]:
    """Distinct current taxa among matches."""
    return {m.current_record_id for m in matches}


def _exact(matches: Sequence[Match]) -> list[Match]:
    return [m for m in matches if m.match_type == EXACT]


# ---------------------------------------------------------------------------------------------
# The rules. Signature: (matches of one answer, context) -> the chosen match or None.


def exact_accepted(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """The only exact match is an accepted name."""
    exact = _exact(matches)
    if len(exact) == 1 and not exact[0].is_synonym:
        return exact[0]
    return None


def accepted_among_synonyms(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """Several exact matches, of which the accepted ones are all one taxon."""
    exact = _exact(matches)
    accepted = [m for m in exact if not m.is_synonym]
    if len(exact) > 1 and accepted and len(_taxa(accepted)) == 1:
        return best(accepted)
    return None


def author_match(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """Exact matches of several taxa; the query's authorship agrees with exactly one."""
    exact = _exact(matches)
    if not ctx.query.authors or len(_taxa(exact)) < 2:
        return None
    agreeing = []
    for match in exact:
        parsed = parse_name(match.matched_name, ctx.parser, True)
        if authors_agree(ctx.query.authors, ctx.query.year, parsed.authors, parsed.year):
            agreeing.append(match)
    if agreeing and len(_taxa(agreeing)) == 1:
        return best(agreeing)
    return None


def homonym_by_lineage(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """Exact homonyms told apart by the input's higher ranks: no conflicting rank, the most
    agreeing ranks (at least min_lineage_agreement); accepted names before synonyms on ties."""
    exact = _exact(matches)
    if len(_taxa(exact)) < 2:
        return None
    scored = [(agreements(m, ctx), m) for m in exact if conflicts(m, ctx) == 0]
    scored = [(a, m) for a, m in scored if a >= ctx.min_lineage_agreement]
    if not scored:
        return None
    top = max(a for a, _ in scored)
    leaders = [m for a, m in scored if a == top]
    if len(_taxa(leaders)) == 1:
        return best(leaders)
    accepted = [m for m in leaders if not m.is_synonym]
    if accepted and len(_taxa(accepted)) == 1:
        return best(accepted)
    return None


def synonym_to_accepted(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """All exact matches are synonyms of one accepted taxon: take the accepted name."""
    exact = _exact(matches)
    if exact and all(m.is_synonym for m in exact) and len(_taxa(exact)) == 1:
        return best(exact)
    return None


def same_lineage(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """The exact matches differ (e.g. an accepted and a doubtful usage) but give the same
    7-rank lineage: the best-scored one is taken."""
    exact = _exact(matches)
    if len(exact) > 1 and len({tuple(sorted(m.lineage().items())) for m in exact}) == 1:
        return best(exact)
    return None


def inexact_with_lineage(matches: Sequence[Match], ctx: RuleContext) -> Match | None:
    """Fuzzy, partial and unknown match types count only when the lineage agrees with the input:
    no conflicting rank and at least min_lineage_agreement agreeing ones; among those, the
    closest (edit distance); ties must share one lineage."""
    inexact = [m for m in matches if m.match_type not in (EXACT, NO_MATCH)]
    agreeing = [
        m for m in inexact
        if conflicts(m, ctx) == 0 and agreements(m, ctx) >= ctx.min_lineage_agreement
    ]  # fmt: skip
    if not agreeing:
        return None
    closest = min(m.edit_distance for m in agreeing)
    leaders = [m for m in agreeing if m.edit_distance == closest]
    if len({tuple(sorted(m.lineage().items())) for m in leaders}) != 1:
        return None
    return best(leaders)


KINGDOM_GUARD = "kingdom_guard"
Rule = Callable[[Sequence[Match], RuleContext], Match | None]
RULES: dict[str, Rule] = {
    "exact_accepted": exact_accepted,
    "accepted_among_synonyms": accepted_among_synonyms,
    "author_match": author_match,
    "homonym_by_lineage": homonym_by_lineage,
    "synonym_to_accepted": synonym_to_accepted,
    "same_lineage": same_lineage,
    "inexact_with_lineage": inexact_with_lineage,
}


@dataclass(frozen=True)
class Choice:
    match: Match
    strategy: str


class Profiles:
    """The configured, ordered rule list."""

    def __init__(self, names: Sequence[str], require_kingdom_agreement: bool = True):
        unknown = [n for n in names if n not in RULES]
        if unknown:
            raise ConfigError(f"taxonomy.profiles: unknown rule(s) {unknown}; known: {list(RULES)}")
        if not names:
            raise ConfigError("taxonomy.profiles: at least one rule is needed")
        self.names = list(names)
        self.require_kingdom_agreement = require_kingdom_agreement

    def decide(self, matches: Sequence[Match], ctx: RuleContext) -> Choice | None:
        """The first rule's pick; its strategy is prefixed with "kingdom_guard+" when matches
        of another kingdom were set aside first (the guard, not the rule, told homonyms apart)."""
        pool = list(matches)
        prefix = ""
        if self.require_kingdom_agreement:
            pool = [m for m in pool if not kingdom_conflict(m, ctx)]
            if len(pool) < len(matches):
                prefix = KINGDOM_GUARD + "+"
        if not pool:
            return None
        for name in self.names:
            chosen = RULES[name](pool, ctx)
            if chosen is not None:
                return Choice(chosen, prefix + name)
        return None
