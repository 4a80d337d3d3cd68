"""Name strings: input tuples, invalid tokens, query terms, canonical forms and stems.

Canonical forms come from gnparser (the Global Names parser, the same library the GNVerifier
service uses) when `name_parser = "gnparser"`, or from a small built-in parser for platforms
without its binary. Stems are computed here in both cases (a port of gnparser's Latin stemmer,
checked against gnparser by the tests), so an index built once matches queries from either parser.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.digest import digest_json
from pipeline.errors import ConfigError

# The 7 ranks of the output, most general first.
RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
# Input fields of a name tuple: the 7 ranks plus the verbatim scientific name.
INPUT_FIELDS: tuple[str, ...] = (*RANKS, "scientific_name")

# UUIDv5 namespace of Global Names: uuid5(NAMESPACE_DNS, "globalnames.org").
GLOBALNAMES_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "globalnames.org")


def name_id(name: str) -> str:
    """The GNVerifier/gnparser `id` of a name-string."""
    return str(uuid.uuid5(GLOBALNAMES_NAMESPACE, name))


# ---------------------------------------------------------------------------------------------
# Input tuples


@dataclass(frozen=True)
class NameTuple:
    """One unique verbatim taxonomy of the input (the work unit of the stage)."""

    values: tuple[str | None, ...]  # in INPUT_FIELDS order

    def get(self, field: str) -> str | None:
        return self.values[INPUT_FIELDS.index(field)]

    @property
    def key(self) -> str:
        """A stable digest naming this tuple in the caches."""
        return digest_json(list(self.values))[:32]

    def is_empty(self) -> bool:
        return all(v is None for v in self.values)


_SPACES = re.compile(r"\s+")


def clean_value(value: str | None, invalid_tokens: frozenset[str]) -> str | None:
    """Trim and collapse whitespace; invalid tokens ("unknown", "n/a", ...) become None."""
    if value is None:
        return None
    text = _SPACES.sub(" ", str(value)).strip()
    if text.casefold() in invalid_tokens:
        return None
    return text


def make_tuple(raw: Sequence[str | None], invalid_tokens: frozenset[str]) -> NameTuple:
    """Clean raw input values (INPUT_FIELDS order). A species given as a bare epithet ("bubo")
    is joined to the genus ("Bubo bubo"), since providers use both forms."""
    values = [clean_value(v, invalid_tokens) for v in raw]
    genus, species = values[RANKS.index("genus")], values[RANKS.index("species")]
    if species and genus and " " not in species and species[:1].islower():
        values[RANKS.index("species")] = f"{genus} {species}"
    return NameTuple(tuple(values))


def invalid_token_set(tokens: Iterable[str]) -> frozenset[str]:
    return frozenset(t.strip().casefold() for t in tokens)


# ---------------------------------------------------------------------------------------------
# Latin stemming (gnparser's variant of the Schinke stemmer, noun forms)

_QUE_EXCEPTIONS = frozenset((
    "atque", "quoque", "neque", "itaque", "absque", "apsque", "abusque", "adaeque", "adusque",
    "denique", "deque", "susque", "oblique", "peraeque", "plenisque", "quandoque", "quisque",
    "quaeque", "cuiusque", "cuique", "quemque", "quamque", "quaque", "quique", "quorumque",
    "quarumque", "quibusque", "quosque", "quasque", "quotusquisque", "quousque", "ubique",
    "undique", "usque", "uterque", "utique", "utroque", "utribique", "torque", "coque",
    "concoque", "contorque", "detorque", "decoque", "excoque", "extorque", "obtorque", "optorque",
    "retorque", "recoque", "attorque", "incoque", "intorque", "praetorque"
))  # fmt: skip
_NOUN_SUFFIXES = (
    "ibus", "ius", "ae", "am", "as", "em", "es", "ia", "ii", "is", "nt", "os", "ud", "um", "us",
    "a", "e", "i", "o", "u",
)  # fmt: skip
# A suffix is removed only if at least this many letters remain.
_MIN_STEM = 2


def stem_word(word: str) -> str:
    """Stem one epithet: words shorter than 3 letters stay as they are; otherwise j->i, v->u,
    an enclitic -que is removed (except in the classical exception list), then the longest
    matching noun suffix if the stem keeps at least 2 letters."""
    if len(word) < 3:
        return word
    word = word.replace("j", "i").replace("v", "u")
    if word.endswith("que"):
        if word in _QUE_EXCEPTIONS:
            return word
        word = word[:-3]
    for suffix in _NOUN_SUFFIXES:
        if word.endswith(suffix):
            if len(word) - len(suffix) >= _MIN_STEM:
                return word[: -len(suffix)]
            return word
    return word


def stem_canonical(canonical: str) -> str:
    """Stem a simple canonical form: capitalised words (genera) and signs stay, epithets are
    stemmed ("Bubo bubo" -> "Bubo bub")."""
    return " ".join(w if not w[:1].islower() else stem_word(w) for w in canonical.split(" "))


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class ParsedName:
    verbatim: str
    parsed: bool
    canonical: str  # simple canonical form ("" when unparsed)
    canonical_full: str
    cardinality: int
    authors: tuple[str, ...]  # normalised author surnames, for authorship comparison
    year: str
    virus: bool = False

    @property
    def stem(self) -> str:
        return stem_canonical(self.canonical)

    @property
    def id(self) -> str:
        return name_id(self.verbatim)


def author_key(author: str) -> str:
    """A comparable form of one author string: the last word without dots, case-folded
    ("L." -> "l", "Hook." -> "hook", "Zheng" -> "zheng")."""
    words = [w for w in re.split(r"[\s.]+", author) if w]
    return words[-1].casefold() if words else ""


def authors_agree(
    authors_a: Iterable[str], year_a: str, authors_b: Iterable[str], year_b: str
) -> bool:
    """Two authorships agree when their author keys overlap and their years (when both are
    given) are equal: initials and "ex"/"&" variations do not separate them."""
    same_authors = bool(set(authors_a) & set(authors_b))
    return same_authors and (not year_a or not year_b or year_a == year_b)


class GnParser:
    """gnparser's shared library, called through ctypes (its own handle, so the memory of every
    answer is freed; the package's helper leaks it)."""

    def __init__(self) -> None:
        try:
            import gnparser  # noqa: F401  (locates the library)
        except ImportError:
            raise ConfigError(
                "taxonomy.name_parser = 'gnparser' needs the gnparser package "
                "(pip install gnparser), or set taxonomy.name_parser = 'builtin'"
            ) from None
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"gnparser cannot be loaded on this platform: {exc}") from None
        folder = os.path.dirname(__import__("gnparser").__file__)
        names = [n for n in os.listdir(folder) if n.startswith("libgnparser")]
        lib = None
        for lib_name in sorted(names):
            try:
                lib = ctypes.CDLL(os.path.join(folder, lib_name))
                break
            except OSError:
                continue
        if lib is None:
            raise ConfigError(f"no loadable gnparser library in {folder}")
        self._parse = lib.ParseToString
        self._parse.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                ctypes.c_int]  # fmt: skip
        self._parse.restype = ctypes.c_void_p
        self._free = lib.FreeMemory
        self._free.argtypes = [ctypes.c_void_p]
        self._free.restype = None

    def raw(self, name: str) -> dict:
        pointer = self._parse(name.encode("utf-8"), b"compact", None, 0, 0)
        try:
            return json.loads(ctypes.string_at(pointer).decode("utf-8"))
        finally:
            self._free(pointer)

    def parse(self, name: str) -> ParsedName:
        data = self.raw(name)
        canonical = data.get("canonical") or {}
        authorship = data.get("authorship") or {}
        return ParsedName(
            verbatim=name,
            parsed=bool(data.get("parsed")) and bool(canonical),
            canonical=canonical.get("simple", ""),
            canonical_full=canonical.get("full", ""),
            cardinality=int(data.get("cardinality") or 0),
            authors=tuple(author_key(a) for a in authorship.get("authors", []) if author_key(a)),
            year=str(authorship.get("year", "")).strip("()"),
            virus=bool(data.get("virus")),
        )


_RANK_MARKERS = frozenset((
    "var.", "var", "subsp.", "subsp", "ssp.", "ssp", "f.", "fo.", "forma", "subvar.", "subf.",
    "cv.", "nothosubsp.", "nothovar.", "morph.", "ab.", "agg.", "sp.", "spp.", "cf.", "aff."
))  # fmt: skip
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")
_WORD = re.compile(r"^[a-zë-ü][a-zë-ü-]*$")


class BuiltinParser:
    """A small canonicaliser for platforms without gnparser: genus, then lower-case epithets
    (rank markers, hybrid signs and a parenthesised subgenus skipped), the rest is authorship."""

    def parse(self, name: str) -> ParsedName:
        tokens = name.replace("×", " × ").split()
        if not tokens or not tokens[0][:1].isupper() or not tokens[0].isalpha():
            return ParsedName(name, False, "", "", 0, (), "")
        words, full, index = [tokens[0]], [tokens[0]], 1
        while index < len(tokens):
            token = tokens[index]
            if token == "×" or token.casefold() in _RANK_MARKERS:
                if token.casefold() not in ("sp.", "spp.", "cf.", "aff.", "agg."):
                    full.append(token)
                index += 1
                continue
            if token.startswith("(") and token.endswith(")") and token[1:2].isupper() and index == 1:
                index += 1  # subgenus
                continue
            if not _WORD.match(token):
                break
            words.append(token)
            full.append(token)
            index += 1
        tail = " ".join(tokens[index:])
        authors = tuple(
            k for k in (author_key(a) for a in re.split(r"[,&()]|\bex\b|\bet\b", tail)) if k
            and not k.isdigit()
        )
        year = _YEAR.search(tail)
        return ParsedName(
            verbatim=name, parsed=True, canonical=" ".join(words),
            canonical_full=" ".join(full), cardinality=len(words), authors=authors,
            year=year.group(0) if year else "",
        )  # fmt: skip


PARSERS = ("gnparser", "builtin")
_parsers: dict[str, object] = {}
_parsers_lock = threading.Lock()


def get_parser(kind: str) -> GnParser | BuiltinParser:
    if kind not in PARSERS:
        raise ConfigError(f"taxonomy.name_parser must be one of {PARSERS}, got {kind!r}")
    with _parsers_lock:
        if kind not in _parsers:
            _parsers[kind] = GnParser() if kind == "gnparser" else BuiltinParser()
        return _parsers[kind]  # type: ignore[return-value]


# A plain capitalised Latin word: its own canonical form (no parser call needed).
_UNINOMIAL = re.compile(r"^[A-Z][a-z]+$")


@lru_cache(maxsize=65_536)
def parse_name(name: str, kind: str = "gnparser", capitalize: bool = True) -> ParsedName:
    """Parse a name-string; with `capitalize`, a lower-case first letter is raised first (as
    GNVerifier's withCapitalization does)."""
    text = name[:1].upper() + name[1:] if capitalize and name[:1].islower() else name
    if _UNINOMIAL.match(text):  # the common higher-rank value; the tests check gnparser agrees
        return ParsedName(name, True, text, text, 1, (), "")
    parsed = get_parser(kind).parse(text)
    if text != name:
        parsed = ParsedName(name, parsed.parsed, parsed.canonical, parsed.canonical_full,
                            parsed.cardinality, parsed.authors, parsed.year, parsed.virus)  # fmt: skip
    return parsed


# ---------------------------------------------------------------------------------------------
# Query terms


@dataclass(frozen=True)
class QueryTerm:
    term: str  # the string sent to the resolver
    rank: str  # the input field it came from


def query_terms(
    names: NameTuple, order: Sequence[str], parser: str, capitalize: bool = True
) -> list[QueryTerm]:
    """The tuple's query terms, most specific first (in `order`), one per distinct canonical
    form. When the scientific name is the species with authorship, the species query carries
    the authorship (so the author rule can use it)."""
    unknown = set(order) - set(INPUT_FIELDS)
    if unknown:
        raise ConfigError(f"taxonomy.query_order: unknown fields {sorted(unknown)}")
    sci = names.get("scientific_name")
    sci_parsed = parse_name(sci, parser, capitalize) if sci else None
    seen: set[str] = set()
    terms: list[QueryTerm] = []
    for field in order:
        value = names.get(field)
        if not value:
            continue
        parsed = parse_name(value, parser, capitalize)
        key = parsed.canonical or value
        if key in seen:
            continue
        seen.add(key)
        if (
            field == "species" and sci and sci_parsed is not None
            and sci_parsed.canonical == parsed.canonical and sci_parsed.authors
        ):  # fmt: skip
            value = sci
        terms.append(QueryTerm(value, field))
    return terms
