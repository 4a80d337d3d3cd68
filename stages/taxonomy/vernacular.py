"""Common names from the backbone dump's VernacularName.tsv, chosen deterministically.

Whichever resolver decided the taxonomy, common names come from the local backbone dump
(`taxonomy.backbone_path`): by the record id when the deciding source is the dump's own (GBIF,
11), otherwise by the resolved canonical name within its kingdom.

Ordering of candidate names for one taxon (first wins):
1. language: the position of the name's language in `common_name_languages` (default English);
   names in other languages after them, by language code; names without a language last;
2. more rows giving the same name (case-insensitively) in that language first: the name most
   sources agree on;
3. the name's source, then the name itself (case-folded, then as written).

With `common_name_climb`, a taxon without a name gives way to its genus, then family, ... up to
`common_name_climb_to`; the rank the name came from is recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import ConfigError
from stages.taxonomy.backbone import BackboneIndex
from stages.taxonomy.names import RANKS

# Language spellings found in GBIF's VernacularName.tsv and API, mapped to ISO 639-1.
LANGUAGE_ALIASES = {"eng": "en", "english": "en", "deu": "de", "ger": "de", "fra": "fr",
                    "fre": "fr", "spa": "es", "nld": "nl", "dut": "nl", "por": "pt"}  # fmt: skip


def normalize_language(code: str) -> str:
    code = code.strip().lower()
    return LANGUAGE_ALIASES.get(code, code)


@dataclass(frozen=True)
class CommonName:
    name: str
    language: str
    rank: str


def choose(rows: Sequence[tuple[str, str, str, str]], languages: Sequence[str]) -> tuple[str, str] | None:
    """The (name, language) to use among (name, language, country, source) rows, or None."""
    if not rows:
        return None
    preferred = [normalize_language(code) for code in languages]
    counts = Counter((normalize_language(lang), name.casefold()) for name, lang, _, _ in rows)

    def key(row: tuple[str, str, str, str]) -> tuple:
        name, lang, _, source = row
        lang = normalize_language(lang)
        if lang in preferred:
            lang_rank: tuple = (0, preferred.index(lang), "")
        else:
            lang_rank = (1, 0, lang) if lang else (2, 0, "")
        return (lang_rank, -counts[(lang, name.casefold())], source, name.casefold(), name)

    name, lang, _, _ = min(rows, key=key)
    return name, normalize_language(lang)


class CommonNames:
    def __init__(
        self,
        index: BackboneIndex,
        source_id: int,
        languages: Sequence[str],
        climb: bool,
        climb_to: str,
    ):
        if climb_to not in RANKS:
            raise ConfigError(f"taxonomy.common_name_climb_to must be one of {RANKS}, got {climb_to!r}")
        self.index = index
        self.source_id = source_id
        self.languages = list(languages)
        self.climb = climb
        self.climb_to = climb_to

    def identity(self) -> dict:
        return {"dump_sha256": self.index.meta["dump_sha256"], "source_id": self.source_id,
                "languages": self.languages, "climb": self.climb, "climb_to": self.climb_to}  # fmt: skip

    def _by_id(self, taxon_id: str) -> tuple[str, str] | None:
        if not taxon_id.isdigit():
            return None
        return choose(self.index.vernaculars(int(taxon_id)), self.languages)

    def _by_name(self, name: str, rank: str, kingdom: str | None) -> tuple[str, str] | None:
        rows = self.index.accepted_by_name(name, kingdom)
        ranked = [r for r in rows if r.rank == rank] or rows
        for row in ranked:  # by id: deterministic among same-name usages
            found = choose(self.index.vernaculars(row.id), self.languages)
            if found:
                return found
        return None

    def lookup(
        self, record_id: str, source_id: int, name: str, rank: str, lineage: dict[str, str]
    ) -> CommonName | None:
        """The common name of a resolved taxon (`record_id` of `source_id`, `name` at `rank`),
        climbing its `lineage` when configured."""
        kingdom = lineage.get("kingdom")
        found = self._by_id(record_id) if source_id == self.source_id else None
        if found is None and source_id != self.source_id:
            found = self._by_name(name, rank, kingdom)
        if found:
            return CommonName(found[0], found[1], rank)
        if not self.climb:
            return None
        top = RANKS.index(self.climb_to)
        start = RANKS.index(rank) - 1 if rank in RANKS else len(RANKS) - 1
        for position in range(start, top - 1, -1):
            higher = RANKS[position]
            if higher in lineage and lineage[higher] != name:
                found = self._by_name(lineage[higher], higher, kingdom)
                if found:
                    return CommonName(found[0], found[1], higher)
        return None
