"""Per-row rules of stage 01: URL checks, still-image test, image type, collection area, drops,
and the deterministic sample id.

All parameters come from the `[ingest]` config section (stages/ingest/defaults.toml documents
each one and where its default comes from). Text comparisons ignore case; basisOfRecord values
are compared without separators, so `PreservedSpecimen` (Darwin Core) equals
`PRESERVED_SPECIMEN` (GBIF's interpreted enumeration).

Drop reasons, first match wins (URL problems first: a row that cannot be fetched is reported as
such whatever else is wrong with it):

1. `missing_url`, `malformed_url`, `bad_scheme`  (see `url_problem`); for local images (source
   kinds bioscan and folder) instead `unsafe_path` (see `pipeline.local_images.member_problem`)
   or `missing_url` (no image path)
1b. the reader's own decision (`reader_reason`: `eol_page_not_in_taxa`, `multiple_concepts`,
   `no_concept`)
2. `not_still_image`            (see `is_still_image`)
3. `material_citation`          (basisOfRecord MATERIAL_CITATION, when `drop_material_citation`)
4. `camera_trap_too_many_images` (camera-trap row whose occurrence has more than
   `camera_trap_max_images` images)

Image type, first match wins: `museum_specimen` (basisOfRecord), `camera_trap` (event remarks,
or machine observation by a known camera-trap publisher), `citizen_science` (publisher), else
`other`. A physical specimen is the strongest evidence; camera-trap evidence comes before the
publisher lists because some publishers (e.g. Sibecocenter LLC) are in both and the camera-trap
rules (empty-frame filter, images per occurrence) must see those rows.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError
from pipeline.local_images import UNSAFE_PATH, member_problem

# Fixed project namespace of sample ids: changing it changes every uuid.
TOLPIPE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tolpipe.invalid/sample")
UUID_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a trimmed field by accident

STATUS_OK = "ok"
STATUS_DROPPED = "dropped"

REASON_MISSING_URL = "missing_url"
REASON_MALFORMED_URL = "malformed_url"
REASON_BAD_SCHEME = "bad_scheme"
REASON_NOT_STILL_IMAGE = "not_still_image"
REASON_MATERIAL_CITATION = "material_citation"
REASON_CAMERA_TRAP_TOO_MANY = "camera_trap_too_many_images"
REASON_UNSAFE_PATH = UNSAFE_PATH
# Source kinds whose images are read from this machine (pipeline.local_images), not downloaded.
LOCAL_KINDS = frozenset({"bioscan", "folder"})
# Reasons decided by the provider readers (eol_taxa.py, fathomnet.py), applied by classify.
READER_REASONS = ("eol_page_not_in_taxa", "multiple_concepts", "no_concept")
# The rules' own reasons (local images add REASON_UNSAFE_PATH, see _local_columns).
REASONS = (
    REASON_MISSING_URL,
    REASON_MALFORMED_URL,
    REASON_BAD_SCHEME,
    REASON_NOT_STILL_IMAGE,
    REASON_MATERIAL_CITATION,
    REASON_CAMERA_TRAP_TOO_MANY,
)

MUSEUM_SPECIMEN = "museum_specimen"
CAMERA_TRAP = "camera_trap"
CITIZEN_SCIENCE = "citizen_science"
OTHER = "other"
IMAGE_TYPES = (MUSEUM_SPECIMEN, CAMERA_TRAP, CITIZEN_SCIENCE, OTHER)

UNCATEGORIZED = "Uncategorized"
# The museum collection areas of constants.md (one support set per area in the museum filter).
COLLECTION_AREAS = (
    "Plant",
    "Fungi",
    "Insect",
    "Invertebrate Zoology",
    "Microbiology",
    "Fishes",
    "Amphibians",
    "Reptiles",
    "Birds",
    "Mammals",
    "Vertebrate Others",
    UNCATEGORIZED,
)
TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
MATERIAL_CITATION = "MATERIAL_CITATION"

DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_ASCII = re.compile(r"^[a-z0-9_~%-]+(\.[a-z0-9_~%-]+)*$")
_NOT_LETTER = re.compile(r"[^A-Za-z]")


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AreaRule:
    """A collection area and the taxon names (per rank, lower-cased) that select it."""

    area: str
    names: dict[str, frozenset[str]]


@dataclass(frozen=True)
class RuleParams:
    allowed_schemes: frozenset[str]
    strict_media_kinds: frozenset[str]
    still_image_types: frozenset[str]
    image_format_marker: str
    museum_basis_of_record: frozenset[str]
    drop_material_citation: bool
    camera_trap_remarks: tuple[str, ...]
    camera_trap_basis_of_record: frozenset[str]
    camera_trap_publishers: frozenset[str]
    camera_trap_max_images: int
    citizen_science_publishers: frozenset[str]
    collection_areas: tuple[AreaRule, ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RuleParams:
        """Build from the `[ingest]` section; a missing or ill-typed key is a ConfigError."""

        def get(key: str, kind: type) -> Any:
            if key not in params:
                raise ConfigError(f"ingest.{key} is missing")
            value = params[key]
            if kind is list:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"ingest.{key} must be a list of strings, got {value!r}")
            elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"ingest.{key} must be {kind.__name__}, got {value!r}")
            return value

        def lowered(key: str) -> frozenset[str]:
            return frozenset(v.strip().lower() for v in get(key, list))

        def basis(key: str) -> frozenset[str]:
            return frozenset(basis_key(v) for v in get(key, list))

        return cls(
            allowed_schemes=lowered("allowed_schemes"),
            strict_media_kinds=lowered("strict_media_kinds"),
            still_image_types=lowered("still_image_types"),
            image_format_marker=get("image_format_marker", str).lower(),
            museum_basis_of_record=basis("museum_basis_of_record"),
            drop_material_citation=get("drop_material_citation", bool),
            camera_trap_remarks=tuple(v.lower() for v in get("camera_trap_remarks", list) if v),
            camera_trap_basis_of_record=basis("camera_trap_basis_of_record"),
            camera_trap_publishers=lowered("camera_trap_publishers"),
            camera_trap_max_images=get("camera_trap_max_images", int),
            citizen_science_publishers=lowered("citizen_science_publishers"),
            collection_areas=_area_rules(params.get("collection_areas")),
        )


def _area_rules(value: Any) -> tuple[AreaRule, ...]:
    if not isinstance(value, list):
        raise ConfigError("ingest.collection_areas must be a list of tables")
    rules = []
    for i, entry in enumerate(value):
        where = f"ingest.collection_areas[{i}]"
        if not isinstance(entry, dict) or entry.get("area") not in COLLECTION_AREAS:
            raise ConfigError(f"{where}: 'area' must be one of {', '.join(COLLECTION_AREAS)}")
        unknown = set(entry) - {"area", *TAXON_RANKS}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (ranks: {TAXON_RANKS})")
        names = {}
        for rank in TAXON_RANKS:
            values = entry.get(rank, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{where}.{rank} must be a list of strings")
            if values:
                names[rank] = frozenset(v.strip().lower() for v in values)
        rules.append(AreaRule(entry["area"], names))
    return tuple(rules)


def basis_key(value: str) -> str:
    """Compare form of a basisOfRecord: letters only, upper case (PreservedSpecimen ==
    PRESERVED_SPECIMEN == preserved specimen)."""
    return _NOT_LETTER.sub("", value).upper()


# ---------------------------------------------------------------------------------------------
# Scalar rules
# ---------------------------------------------------------------------------------------------


def url_problem(
    url: str | None, allowed_schemes: Sequence[str] = ("http", "https")
) -> tuple[str, str] | None:
    """Why a URL cannot be downloaded, as (reason, detail), or None when it is fine.

    - `missing_url`: null or blank.
    - `malformed_url`: control characters, unparsable, no scheme, no host, bad port, or a host
      name that is not a DNS name / IP literal. (Spaces are allowed: downloaders encode them.)
    - `bad_scheme`: a scheme outside `allowed_schemes` (ftp:, file:, data:, javascript: ...).
    """
    if url is None or not url.strip():
        return REASON_MISSING_URL, "no URL"
    url = url.strip()
    if _CONTROL.search(url):
        return REASON_MALFORMED_URL, "control character in URL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return REASON_MALFORMED_URL, f"cannot parse URL: {exc}"
    scheme = parts.scheme.lower()
    if not scheme:
        return REASON_MALFORMED_URL, "no scheme (expected e.g. https://)"
    if scheme not in {s.lower() for s in allowed_schemes}:
        return REASON_BAD_SCHEME, f"scheme {scheme!r} not in {', '.join(allowed_schemes)}"
    host = parts.hostname
    if not host:
        return REASON_MALFORMED_URL, "no host"
    if not _valid_host(host, parts.netloc):
        return REASON_MALFORMED_URL, f"invalid host {host!r}"
    if port == 0:
        return REASON_MALFORMED_URL, "port 0"
    return None


def _valid_host(host: str, netloc: str) -> bool:
    if "[" in netloc:  # IPv6 literal: urlsplit has checked the brackets
        return ":" in host
    host = host.rstrip(".")
    if host.isascii():
        return bool(_HOST_ASCII.match(host))
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def url_host(url: str | None) -> str | None:
    """The partitioning/politeness key of a URL: lower-case host name, trailing dot removed,
    credentials dropped, IPv6 in brackets, and `:port` only when the port is not the scheme's
    default (http 80, https 443): different ports may be different services, and the original
    keyed on the network location. None when the URL has no host or does not parse."""
    if url is None:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    host = host.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return host


def is_still_image(
    media_type: str | None,
    media_format: str | None,
    *,
    strict: bool = True,
    still_image_types: Sequence[str] = ("StillImage",),
    image_format_marker: str = "image",
) -> bool:
    """True when a media row is a still image: its type (a name or a URI whose last segment is
    the name, e.g. http://purl.org/dc/dcmitype/StillImage) is in `still_image_types`, or its
    format contains `image_format_marker` (image/jpeg). When both are missing the row counts as
    an image unless `strict` (GBIF rows must say so; EOL and table rows need not)."""
    kind = _last_segment(media_type)
    if kind is not None and kind.lower() in {t.lower() for t in still_image_types}:
        return True
    fmt = (media_format or "").strip()
    if image_format_marker.lower() in fmt.lower():
        return True
    return not strict and kind is None and not fmt


def _last_segment(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return value.strip().rstrip("/").rsplit("/", 1)[-1]


def sample_uuid(provider: str | None, source_id: str | None, url: str | None) -> str:
    """Deterministic sample id: UUIDv5 in `TOLPIPE_NAMESPACE` of
    `provider \\x1f source_id \\x1f url` (None -> empty string)."""
    name = UUID_SEPARATOR.join(v or "" for v in (provider, source_id, url))
    return _uuid5_hex(name)


_NAMESPACE_BYTES = TOLPIPE_NAMESPACE.bytes


def _uuid5_hex(name: str) -> str:
    # Same result as str(uuid.uuid5(TOLPIPE_NAMESPACE, name)), about 2.5x faster.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def sample_uuids(table: pa.Table) -> pa.Array:
    """`sample_uuid` of every row of a table with `provider`, `source_id` and `url` columns."""
    providers = table.column("provider").to_pylist()
    source_ids = table.column("source_id").to_pylist()
    urls = table.column("url").to_pylist()
    return pa.array(
        [sample_uuid(p, s, u) for p, s, u in zip(providers, source_ids, urls, strict=True)],
        pa.string(),
    )


# ---------------------------------------------------------------------------------------------
# Vectorized rules over a table of records
# ---------------------------------------------------------------------------------------------


def _lower(table: pa.Table, name: str) -> pa.ChunkedArray:
    return pc.utf8_lower(pc.utf8_trim_whitespace(table.column(name)))


def _in(values: pa.ChunkedArray, allowed: frozenset[str]) -> pa.ChunkedArray:
    if not allowed:
        return _all(len(values), False)
    return pc.fill_null(pc.is_in(values, value_set=pa.array(sorted(allowed), pa.string())), False)


def _all(n: int, value: bool) -> pa.Array:
    return pa.array([value] * n, pa.bool_())


def _basis_keys(table: pa.Table) -> pa.ChunkedArray:
    letters = pc.replace_substring_regex(table.column("basis_of_record"), "[^A-Za-z]", "")
    return pc.utf8_upper(letters)


def still_image_mask(table: pa.Table, rp: RuleParams) -> pa.ChunkedArray:
    """Vector form of `is_still_image`; strictness per row from `source_kind`."""
    kind = pc.utf8_lower(pc.replace_substring_regex(table.column("media_type"), r"^.*/", ""))
    kind = pc.utf8_trim_whitespace(kind)
    fmt = pc.utf8_trim_whitespace(table.column("media_format"))
    by_type = _in(kind, rp.still_image_types)
    by_format = pc.fill_null(pc.match_substring(fmt, rp.image_format_marker, ignore_case=True), False)
    no_info = pc.and_(
        pc.or_kleene(pc.is_null(kind), pc.equal(kind, "")).fill_null(True),
        pc.or_kleene(pc.is_null(fmt), pc.equal(fmt, "")).fill_null(True),
    )
    lenient = pc.invert(_in(_lower(table, "source_kind"), rp.strict_media_kinds))
    return pc.or_(pc.or_(by_type, by_format), pc.and_(no_info, lenient))


def image_types(table: pa.Table, rp: RuleParams) -> pa.ChunkedArray:
    """museum_specimen / camera_trap / citizen_science / other per row (see module doc)."""
    n = table.num_rows
    basis = _basis_keys(table)
    publisher = _lower(table, "publisher")
    museum = _in(basis, rp.museum_basis_of_record)
    remarks = table.column("event_remarks")
    camera = _all(n, False)
    for phrase in rp.camera_trap_remarks:
        hit = pc.fill_null(pc.match_substring(remarks, phrase, ignore_case=True), False)
        camera = pc.or_(camera, hit)
    by_publisher = pc.and_(
        _in(basis, rp.camera_trap_basis_of_record), _in(publisher, rp.camera_trap_publishers)
    )
    camera = pc.or_(camera, by_publisher)
    citizen = _in(publisher, rp.citizen_science_publishers)
    out = pa.array([OTHER] * n, pa.string())
    for mask, label in ((citizen, CITIZEN_SCIENCE), (camera, CAMERA_TRAP), (museum, MUSEUM_SPECIMEN)):
        out = pc.if_else(mask, label, out)  # later (higher precedence) labels overwrite
    return out


def collection_areas(table: pa.Table, rp: RuleParams) -> pa.ChunkedArray:
    """Collection area from the taxonomy columns: the first rule (in config order) with a name
    at any of its ranks wins; `Uncategorized` when none matches."""
    lowered = {rank: _lower(table, rank) for rank in TAXON_RANKS}
    out = pa.array([UNCATEGORIZED] * table.num_rows, pa.string())
    for rule in reversed(rp.collection_areas):  # earlier rules overwrite later ones
        hit = _all(table.num_rows, False)
        for rank, names in rule.names.items():
            hit = pc.or_(hit, _in(lowered[rank], names))
        out = pc.if_else(hit, rule.area, out)
    return out


def _simple_url_pattern(schemes: frozenset[str]) -> str | None:
    """RE2 pattern of URLs that `url_problem` accepts and whose host is plain: an allowed
    scheme, a dotted ASCII host name without port or credentials, printable rest. Group
    `host`. Such URLs (nearly all) skip the per-row Python parse."""
    if not schemes:
        return None
    alternatives = "|".join(re.escape(s) for s in sorted(schemes))
    label = r"[A-Za-z0-9_-]+"
    return rf"^(?i:{alternatives})://(?P<host>{label}(?:\.{label})*)\.?(?:[/?#][^\x00-\x1f\x7f]*)?$"


def url_columns(urls: pa.ChunkedArray | pa.Array, rp: RuleParams) -> tuple[list, list, list]:
    """(reason, detail, host) per URL: `url_problem` and `url_host`, vectorized for simple URLs."""
    pattern = _simple_url_pattern(rp.allowed_schemes)
    n = len(urls)
    hosts: list[str | None] = [None] * n
    if pattern is not None:
        match = pc.extract_regex(urls, pattern)
        hosts = pc.utf8_lower(pc.struct_field(match, [0])).to_pylist()
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    schemes = sorted(rp.allowed_schemes)
    values: list[str | None] | None = None
    for i in [i for i, host in enumerate(hosts) if host is None]:
        if values is None:
            values = urls.to_pylist()
        problem = url_problem(values[i], schemes)
        if problem is not None:
            reasons[i], details[i] = problem
        hosts[i] = url_host(values[i])
    return reasons, details, hosts


def classify(table: pa.Table | Any, params: Mapping[str, Any]) -> pa.Table:
    """Apply the ingest rules to records (`RECORD_SCHEMA` columns plus `images_in_occurrence`,
    an integer column: images of the row's occurrence, null when unknown).

    Returns a table with one row per input row and the columns
    `status` (ok | dropped), `reason` (null when ok), `detail` (null when ok),
    `image_type`, `collection_area` (null unless museum_specimen) and `host` (`url_host`, also
    on dropped rows when the URL has a readable host).
    `params` is the `[ingest]` config section. A pandas DataFrame is accepted too.
    """
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    rp = RuleParams.from_params(params)
    types = image_types(table, rp)
    areas = pc.if_else(
        pc.equal(types, MUSEUM_SPECIMEN), collection_areas(table, rp), pa.scalar(None, pa.string())
    )
    reasons, details, hosts = url_columns(table.column("url"), rp)
    _local_columns(table, reasons, details, hosts)
    _reader_decisions(table, reasons, details)
    counts = table.column("images_in_occurrence")
    # Later rules only apply to rows that no earlier rule dropped (see the module doc).
    later = [
        (REASON_NOT_STILL_IMAGE, pc.invert(still_image_mask(table, rp))),
        (REASON_MATERIAL_CITATION, _material_citation_mask(table, rp)),
        (REASON_CAMERA_TRAP_TOO_MANY, pc.and_(
            pc.equal(types, CAMERA_TRAP),
            pc.fill_null(pc.greater(counts, rp.camera_trap_max_images), False),
        )),
    ]  # fmt: skip
    for code, mask in later:
        for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)):
            if reasons[i] is None:
                reasons[i], details[i] = code, _detail(code, table, int(i), rp)
    status = [STATUS_OK if r is None else STATUS_DROPPED for r in reasons]
    return pa.table(
        {
            "status": pa.array(status, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
            "image_type": _plain(types),
            "collection_area": _plain(areas),
            "host": pa.array(hosts, pa.string()),
        }
    )


def _local_columns(table: pa.Table, reasons: list, details: list, hosts: list) -> None:
    """Local images: the member path is checked instead of the URL; the host is the root's name."""
    if "local_member" not in table.column_names:
        return
    kinds = table.column("source_kind").to_pylist()
    local = [i for i, k in enumerate(kinds) if (k or "").lower() in LOCAL_KINDS]
    if not local:
        return
    members = table.column("local_member").to_pylist()
    urls = table.column("url").to_pylist()
    for i in local:
        problem = member_problem(members[i])
        if members[i] is None or not str(members[i]).strip():
            reasons[i], details[i] = REASON_MISSING_URL, "no image path"
        elif problem is not None:
            reasons[i], details[i] = REASON_UNSAFE_PATH, problem
        else:
            reasons[i], details[i] = None, None
        url = urls[i] or ""
        hosts[i] = url.split("://", 1)[1].split("/", 1)[0].lower() if "://" in url else None


def _reader_decisions(table: pa.Table, reasons: list, details: list) -> None:
    if "reader_reason" not in table.column_names:
        return
    codes = table.column("reader_reason").to_pylist()
    texts = table.column("reader_detail").to_pylist()
    for i, code in enumerate(codes):
        if code is not None and reasons[i] is None:
            reasons[i], details[i] = code, texts[i]


def _material_citation_mask(table: pa.Table, rp: RuleParams) -> pa.ChunkedArray:
    if not rp.drop_material_citation:
        return _all(table.num_rows, False)
    return pc.fill_null(pc.equal(_basis_keys(table), basis_key(MATERIAL_CITATION)), False)


def _detail(code: str, table: pa.Table, i: int, rp: RuleParams) -> str:
    if code == REASON_NOT_STILL_IMAGE:
        media_type = table.column("media_type")[i].as_py()
        media_format = table.column("media_format")[i].as_py()
        return f"type={media_type!r} format={media_format!r}"
    if code == REASON_MATERIAL_CITATION:
        return "basisOfRecord is MATERIAL_CITATION"
    count = table.column("images_in_occurrence")[i].as_py()
    return f"camera-trap occurrence has {count} images > {rp.camera_trap_max_images}"


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
