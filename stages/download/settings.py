"""Typed, validated view of the [download] config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import __version__
from pipeline.constraints import problem
from pipeline.errors import ConfigError
from stages.download.fetch import host_name
from stages.download.images import ImageRules

# Keys that change speed or retry effort but not the rules that decide a row's outcome; they stay
# out of the params digest so that a `tolpipe retry` may use other values.
VOLATILE_PARAMS: tuple[str, ...] = (
    "deadline_s",
    "read_timeout_s",
    "max_attempts",
    "retry_statuses",
    "backoff_base_s",
    "backoff_max_s",
    "backoff_jitter",
    "max_retry_after_s",
    "circuit_failures",
    "rate_per_host",
    "burst",
    "rate_ceiling",
    "rate_floor",
    "rate_increase",
    "rate_decrease",
    "slow_host_latency_s",
    "slow_host_rate",
    "host_overrides",
    "rate_split_slots",
    "concurrency",
    "contact",
    "robots_ttl_s",
    "robots_failure_ttl_s",
    "robots_max_bytes",
    "watchdog_grace_s",
    "local_threads",
)

# Volatile keys that tune one run: a --set/--config value applies to that run alone unless
# --save (the contact identifies the operator, so it stays with the root).
TUNING_PARAMS: tuple[str, ...] = tuple(k for k in VOLATILE_PARAMS if k != "contact")

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
RATE_KEYS = ("rate_per_host", "burst", "rate_ceiling", "rate_floor")


@dataclass(frozen=True)
class HostRate:
    """Token-bucket settings of one host for one worker process (already split)."""

    rate: float
    burst: float
    ceiling: float
    floor: float


@dataclass(frozen=True)
class DownloadSettings:
    min_side: int
    max_side: int
    jpeg_quality: int
    jpeg_subsampling: str
    max_pixels: int
    max_body_bytes: int
    allowed_schemes: tuple[str, ...]
    max_redirects: int
    robots_txt: bool
    robots_user_agent: str
    x_robots_tag: bool
    x_robots_tag_directives: tuple[str, ...]
    store_row_group_rows: int
    deadline_s: float
    read_timeout_s: float
    max_attempts: int
    retry_statuses: tuple[int, ...]
    backoff_base_s: float
    backoff_max_s: float
    backoff_jitter: float
    max_retry_after_s: float
    circuit_failures: int
    rate_per_host: float
    burst: float
    rate_ceiling: float
    rate_floor: float
    rate_increase: float
    rate_decrease: float
    slow_host_latency_s: float
    slow_host_rate: float
    host_overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    rate_split_slots: int = 0
    concurrency: int = 32
    contact: str = ""
    robots_ttl_s: float = 86400.0
    robots_failure_ttl_s: float = 60.0
    robots_max_bytes: int = 512000
    watchdog_grace_s: float = 10.0
    local_threads: int = 2

    @property
    def user_agent(self) -> str:
        """Names the tool, its version and a contact (RFC 9110 product token + comment)."""
        contact = self.contact.strip() or "no contact configured: set download.contact"
        return f"{self.robots_user_agent}/{__version__} (+{contact})"

    def host_rate(self, host: str, shares: int) -> HostRate:
        """The bucket of `host` in this process: configured rates (with overrides) / shares."""
        values = {key: float(getattr(self, key)) for key in RATE_KEYS}
        values.update({k: float(v) for k, v in self.host_overrides.get(host, {}).items()})
        n = max(1, shares)
        ceiling = values["rate_ceiling"] / n
        return HostRate(
            rate=min(values["rate_per_host"] / n, ceiling),
            burst=max(1.0, values["burst"] / n),
            ceiling=ceiling,
            floor=min(values["rate_floor"] / n, ceiling),
        )


def image_rules(s: DownloadSettings) -> ImageRules:
    """The image rules of these settings (downloads and local images alike)."""
    return ImageRules(s.min_side, s.max_side, s.jpeg_quality, SUBSAMPLING[s.jpeg_subsampling], s.max_pixels)


def override_host(key: str) -> str:
    """A host_overrides key -> the politeness key it names: as host_name derives it from 01's host
    column (case, port and a trailing dot ignored; "[::1]:8080" -> "::1"), a bare IPv6 address
    kept whole, a Unicode name in the ASCII form fetch.parse_target gives it."""
    text = key.strip()
    bare_ipv6 = text.count(":") > 1 and not text.startswith("[")
    host = text.lower() if bare_ipv6 else host_name(text)
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid name: no URL has it either, and plan() warns about it
        return host


def normalise_overrides(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """host_overrides keyed by politeness key; two keys naming one host are an error."""
    out: dict[str, dict[str, float]] = {}
    written: dict[str, str] = {}
    for key, entry in overrides.items():
        host = override_host(key)
        if host in written:
            raise ConfigError(f"download.host_overrides: {written[host]!r} and {key!r} are both {host}")
        written[host] = key
        out[host] = {name: float(value) for name, value in entry.items()}
    return out


def unmatched_overrides(overrides: dict[str, Any], hosts: set[str], shown: int = 5) -> str | None:
    """A warning naming the host_overrides keys that no host of `hosts` (01's ok rows) matches."""
    known = {override_host(h) for h in hosts}
    missing = [key for key in overrides if override_host(key) not in known]
    if not missing:
        return None
    some = ", ".join(sorted(known)[:shown]) + (f", ... ({len(known)} in all)" if len(known) > shown else "")
    return (f"download.host_overrides: no ok row of 01 has host {', '.join(map(repr, missing))}; "
            f"those overrides are unused (hosts of 01: {some or 'none'})")  # fmt: skip


def load_settings(params: dict[str, Any]) -> DownloadSettings:
    """Build and validate settings from the stage's config section."""
    known = set(DownloadSettings.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown download settings: {', '.join(unknown)}")
    for key, value in params.items():  # ranges and choices documented in defaults.toml
        message = problem("download", key, value)
        if message:
            raise ConfigError(message)
    values = dict(params)
    values["host_overrides"] = normalise_overrides(params["host_overrides"])
    for key in ("allowed_schemes", "x_robots_tag_directives"):
        values[key] = tuple(str(v).lower() for v in values[key])
    values["retry_statuses"] = tuple(int(v) for v in values["retry_statuses"])
    settings = DownloadSettings(**values)
    _validate(settings)
    return settings


def _validate(s: DownloadSettings) -> None:
    """Rules across keys; each key's own range is checked by load_settings (and at config load)."""
    if s.rate_floor > s.rate_ceiling or s.rate_per_host > s.rate_ceiling:
        raise ConfigError("download: need rate_floor <= rate_per_host <= rate_ceiling")
