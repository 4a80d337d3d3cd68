"""Typed, validated view of the [download] config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import __version__
from pipeline.errors import ConfigError

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
)

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


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"download.{name} must be > 0, got {value!r}")


def load_settings(params: dict[str, Any]) -> DownloadSettings:
    """Build and validate settings from the stage's config section."""
    known = set(DownloadSettings.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown download settings: {', '.join(unknown)}")
    values = dict(params)
    for key in ("allowed_schemes", "x_robots_tag_directives"):
        values[key] = tuple(str(v).lower() for v in values[key])
    values["retry_statuses"] = tuple(int(v) for v in values["retry_statuses"])
    settings = DownloadSettings(**values)
    _validate(settings)
    return settings


def _validate(s: DownloadSettings) -> None:
    for name in (
        "min_side", "max_side", "max_pixels", "max_body_bytes", "store_row_group_rows",
        "deadline_s", "read_timeout_s", "max_attempts", "rate_per_host", "burst", "rate_ceiling",
        "rate_floor", "concurrency", "circuit_failures", "robots_max_bytes", "slow_host_rate",
    ):  # fmt: skip
        _positive(name, getattr(s, name))
    if not 1 <= s.jpeg_quality <= 100:
        raise ConfigError(f"download.jpeg_quality must be in 1..100, got {s.jpeg_quality}")
    if s.jpeg_subsampling not in SUBSAMPLING:
        raise ConfigError(
            f"download.jpeg_subsampling must be one of {sorted(SUBSAMPLING)}, got {s.jpeg_subsampling!r}"
        )
    if s.rate_floor > s.rate_ceiling or s.rate_per_host > s.rate_ceiling:
        raise ConfigError("download: need rate_floor <= rate_per_host <= rate_ceiling")
    if not 0 <= s.backoff_jitter < 1:
        raise ConfigError(f"download.backoff_jitter must be in [0, 1), got {s.backoff_jitter}")
    if not 0 < s.rate_decrease <= 1:
        raise ConfigError(f"download.rate_decrease must be in (0, 1], got {s.rate_decrease}")
    bad = sorted(set(s.allowed_schemes) - {"http", "https"})
    if bad:
        raise ConfigError(f"download.allowed_schemes: only http and https are supported, got {bad}")
    if not isinstance(s.host_overrides, dict):
        raise ConfigError("download.host_overrides must be a table of host -> {rate keys}")
    for host, over in s.host_overrides.items():
        if not isinstance(over, dict) or set(over) - set(RATE_KEYS):
            raise ConfigError(f"download.host_overrides.{host}: expected a table with keys among {RATE_KEYS}")
