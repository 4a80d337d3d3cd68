"""One attempt at one row: politeness, robots, fetch, HTTP semantics, image processing.

Returns an Outcome saying whether the row is decided (ok, dropped, or failed for good in this
run) or should be retried (with the server's Retry-After, or the scheduler's backoff).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from stages.download import reasons as R
from stages.download.deadline import Deadline
from stages.download.fetch import Fetcher, FetchError, Target
from stages.download.images import ImageError, StoredImage, md5_hex, process
from stages.download.politeness import BUCKETS, TokenBucket, parse_retry_after, x_robots_blocked
from stages.download.robots import ALLOW_ALL, ROBOTS, RobotsRules, RobotsVerdict
from stages.download.settings import DownloadSettings, image_rules

# Robots outcomes recorded in the manifest's `robots` column.
ROBOTS_OFF = "off"
ROBOTS_ALLOWED = "allowed"
ROBOTS_ABSENT = "absent"  # no usable robots.txt (4xx, unusable redirect): everything allowed
ROBOTS_DISALLOWED = "disallowed"
ROBOTS_UNAVAILABLE = "unavailable"
# Statuses that mean "slow down": the host's rate is cut when they come back.
THROTTLE_STATUSES = frozenset({429, 503})


@dataclass
class Outcome:
    reason: str | None  # None: ok
    detail: str | None = None
    final: bool = True
    retry_after_s: float | None = None  # the server's Retry-After, if it sent one
    immediate: bool = False  # retry without backoff (a kept-alive connection had gone stale)
    http_status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    body_bytes: int | None = None
    md5: str | None = None
    width: int | None = None
    height: int | None = None
    image: StoredImage | None = None  # the stored JPEG until the scheduler spools it
    stored_width: int | None = None
    stored_height: int | None = None
    stored_bytes: int | None = None
    stored_md5: str | None = None
    robots: str | None = None
    x_robots_tag: str | None = None
    wait_s: float = 0.0  # politeness waits (token bucket, Retry-After pause) in this attempt

    @property
    def log_code(self) -> str:
        return "ok" if self.reason is None else self.reason


@dataclass
class AttemptEnv:
    """What attempts of one partition share."""

    settings: DownloadSettings
    # Host -> how many processes may fetch from it at once (its rates are divided by that).
    host_shares: dict[str, int] = field(default_factory=dict)
    # Share for hosts not in host_shares (a redirect target): the most conservative split.
    default_share: int = 1

    def __post_init__(self) -> None:
        s = self.settings
        self.fetcher = Fetcher(
            s.user_agent, s.allowed_schemes, s.max_redirects, s.max_body_bytes, s.read_timeout_s
        )
        self.rules = image_rules(s)

    def bucket(self, host: str) -> TokenBucket:
        return BUCKETS.get(host, self.settings, self.host_shares.get(host, self.default_share))

    def robots(self, target: Target) -> RobotsVerdict:
        s = self.settings
        return ROBOTS.verdict(target.origin, self._fetch_robots, s.robots_ttl_s, s.robots_failure_ttl_s)

    def _fetch_robots(self, origin: str) -> RobotsVerdict:
        """RFC 9309 §2.3.1: 2xx parsed; 4xx = no rules; 5xx, 429 and network errors = no access."""
        s = self.settings

        def polite(target: Target) -> None:
            self.bucket(target.host).acquire()

        try:
            response = self.fetcher.fetch(
                f"{origin}/robots.txt", Deadline(s.deadline_s), polite,
                max_body_bytes=s.robots_max_bytes, truncate=True,
            )  # fmt: skip
        except FetchError as exc:
            if exc.reason in R.TRANSIENT:
                return RobotsVerdict(None, (exc.reason, f"robots.txt: {exc.detail}"), "failed")
            return RobotsVerdict(ALLOW_ALL, None, ROBOTS_ABSENT)
        status = response.status
        if 200 <= status < 300:
            text = response.body.decode("utf-8", errors="replace")
            return RobotsVerdict(RobotsRules.parse(text), None, "fetched")
        if status == 429 or status >= 500:
            detail = f"robots.txt answered {status} {response.reason_phrase}"
            return RobotsVerdict(None, (R.ROBOTS_UNAVAILABLE, detail), "failed")
        return RobotsVerdict(ALLOW_ALL, None, ROBOTS_ABSENT)


class Activity:
    """How long an attempt in progress may legitimately take: its deadline, plus the politeness
    waits it announced. The scheduler's watchdog abandons an attempt that runs past it."""

    def __init__(self, allowance_s: float):
        self.started = time.monotonic()
        self.allowance_s = allowance_s

    def extend(self, seconds: float) -> None:
        self.allowance_s += max(0.0, seconds)

    def overdue(self, now: float) -> bool:
        return now > self.started + self.allowance_s


class _Hops:
    """Politeness and robots before each request of one attempt (redirects included)."""

    def __init__(self, env: AttemptEnv, activity: Activity):
        self.env = env
        self.activity = activity
        self.wait_s = 0.0
        self.robots = ROBOTS_OFF if not env.settings.robots_txt else None
        self.last_bucket: TokenBucket | None = None

    def __call__(self, target: Target) -> None:
        s = self.env.settings
        if s.robots_txt:
            # A robots.txt fetch (ours or one we wait for) has its own deadline.
            self.activity.extend(s.deadline_s)
            verdict = self.env.robots(target)
            if verdict.failure is not None:
                self.robots = ROBOTS_UNAVAILABLE
                raise FetchError(*verdict.failure, target.url)
            rules = verdict.rules or ALLOW_ALL
            if not rules.allowed(s.robots_user_agent, target.path):
                self.robots = ROBOTS_DISALLOWED
                raise FetchError(
                    R.ROBOTS_DISALLOWED, f"robots.txt of {target.origin} disallows {target.path}",
                    target.url,
                )  # fmt: skip
            if self.robots is None or self.robots == ROBOTS_ABSENT:
                self.robots = ROBOTS_ABSENT if verdict.source == ROBOTS_ABSENT else ROBOTS_ALLOWED
        self.last_bucket = self.env.bucket(target.host)
        # Each wait is announced first, so the watchdog does not take it for a hang.
        self.wait_s += self.last_bucket.acquire(on_wait=self.activity.extend)


def attempt(url: str, env: AttemptEnv, activity: Activity | None = None) -> Outcome:
    """One attempt at `url` (redirects followed); never raises for a network or content problem."""
    s = env.settings
    hops = _Hops(env, activity or Activity(0.0))
    try:
        response = env.fetcher.fetch(url, Deadline(s.deadline_s), hops)
    except FetchError as exc:
        retry = exc.reason in R.TRANSIENT and exc.reason not in (
            R.DNS, R.TLS, R.ROBOTS_UNAVAILABLE, R.INTERNAL_ERROR,
        ) and hops.robots != ROBOTS_UNAVAILABLE  # fmt: skip
        return Outcome(
            exc.reason, exc.detail, final=not retry, immediate=exc.reused_connection,
            final_url=exc.final_url, robots=hops.robots, wait_s=hops.wait_s,
        )  # fmt: skip
    tags = [str(v) for v in response.headers.get_all("X-Robots-Tag") or []]
    out = Outcome(
        None, http_status=response.status, final_url=response.final_url,
        content_type=response.content_type, robots=hops.robots, wait_s=hops.wait_s,
        x_robots_tag="; ".join(tags) or None,
    )  # fmt: skip
    bucket = hops.last_bucket
    status = response.status
    if bucket is not None:
        if status in THROTTLE_STATUSES:
            bucket.on_throttle()
        else:
            bucket.on_success(response.latency_s, s.slow_host_latency_s, s.slow_host_rate)
    if 200 <= status < 300:
        return _success(response.body, tags, out, env)
    line = f"{status} {response.reason_phrase}".strip()
    if status in s.retry_statuses:
        out.reason, out.detail, out.final = R.http_reason(status), line, False
        out.retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        if out.retry_after_s is not None and bucket is not None:
            bucket.pause(min(out.retry_after_s, s.max_retry_after_s))
        return out
    out.reason = R.http_reason(status) if status >= 400 else R.UNEXPECTED_STATUS
    out.detail = line
    return out


def _success(body: bytes, tags: list[str], out: Outcome, env: AttemptEnv) -> Outcome:
    s = env.settings
    out.body_bytes = len(body)
    out.md5 = md5_hex(body)
    if s.x_robots_tag and tags:
        blocked = x_robots_blocked(tags, s.robots_user_agent, s.x_robots_tag_directives)
        if blocked:
            out.reason, out.detail = R.X_ROBOTS_TAG, f"X-Robots-Tag: {out.x_robots_tag}"
            return out
    try:
        image = process(body, env.rules)
    except ImageError as exc:
        out.reason, out.detail, out.width, out.height = exc.reason, exc.detail, exc.width, exc.height
        return out
    out.image = image
    out.width, out.height = image.width, image.height
    out.stored_width, out.stored_height = image.stored_width, image.stored_height
    out.stored_bytes, out.stored_md5 = len(image.jpeg), image.stored_md5
    return out
