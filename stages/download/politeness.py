"""Per-host politeness: an adaptive token bucket with a hard ceiling, Retry-After pauses, and
exponential backoff with jitter.

Buckets live in a process-wide registry keyed by host name, so every partition that a worker
process runs shares one bucket per host. The rates a bucket gets are the configured run-wide
rates divided by the number of processes that may fetch from the host at once (see
DownloadSettings.host_rate); the sum over processes therefore stays under the configured ceiling.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable

from stages.download.settings import DownloadSettings, HostRate

# Weight of the newest sample in the mean time-to-headers used to spot slow hosts.
LATENCY_EWMA_WEIGHT = 0.2


class TokenBucket:
    """Requests of one host: at most `burst` at once, then one per 1/`rate` seconds.

    Kept in the virtual-scheduling form of a token bucket (GCRA): `due` is when the next request
    would be due at the current rate; a request may go at due - (burst - 1) / rate, never before
    now or before a Retry-After pause ends. Each booking moves `due` on by 1/rate, so over any
    window of T seconds at most burst + ceiling * T requests are granted, a pause included: the
    requests booked during a pause leave one interval apart after it, not all at once.

    The rate adapts (AIMD) between floor and ceiling; the ceiling is never exceeded.
    """

    def __init__(self, limits: HostRate, increase: float, decrease: float, clock=time.monotonic):
        self.limits = limits
        self.rate = limits.rate
        self.increase = increase
        self.decrease = decrease
        self.clock = clock
        self.due = clock()
        self.paused_until = 0.0
        self.cap = limits.ceiling  # lowered for slow hosts
        self.latency: float | None = None
        self.lock = threading.Lock()

    def reserve(self) -> float:
        """Book the next request slot; return how long the caller must wait for it."""
        with self.lock:
            now = self.clock()
            interval = 1.0 / self.rate
            tolerance = max(0.0, self.limits.burst - 1.0) * interval
            at = max(now, self.paused_until, self.due - tolerance)
            self.due = max(self.due, at) + interval
            return at - now

    def acquire(
        self, sleep: Callable[[float], None] = time.sleep, on_wait: Callable[[float], None] | None = None
    ) -> float:
        """Block until this host may be sent a request; return the seconds waited. A caller
        whose slot came while a Retry-After pause began books again after the pause."""
        waited = 0.0
        while True:
            wait = self.reserve()
            if wait <= 0:
                return waited
            if on_wait is not None:
                on_wait(wait)
            sleep(wait)
            waited += wait
            with self.lock:
                if self.clock() >= self.paused_until:
                    return waited

    def pause(self, seconds: float) -> None:
        """Retry-After: no request to this host before now + seconds."""
        with self.lock:
            self.paused_until = max(self.paused_until, self.clock() + seconds)

    def on_success(self, latency_s: float, slow_latency_s: float, slow_rate: float) -> None:
        with self.lock:
            self.latency = (
                latency_s
                if self.latency is None
                else (1 - LATENCY_EWMA_WEIGHT) * self.latency + LATENCY_EWMA_WEIGHT * latency_s
            )
            self.cap = (
                min(self.limits.ceiling, slow_rate)
                if self.latency > slow_latency_s
                else (self.limits.ceiling)
            )
            self.rate = max(self.limits.floor, min(self.cap, self.rate + self.increase))

    def on_throttle(self) -> None:
        """The host said slow down (429 or 503): multiplicative decrease, not below the floor."""
        with self.lock:
            self.rate = max(self.limits.floor, self.rate * self.decrease)


class BucketRegistry:
    """Process-wide: one bucket per host, created with the first caller's limits."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, HostRate], TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, host: str, settings: DownloadSettings, shares: int) -> TokenBucket:
        limits = settings.host_rate(host, shares)
        key = (host, limits)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                # Settings changed (another run in this worker): start a fresh bucket.
                for old in [k for k in self._buckets if k[0] == host]:
                    del self._buckets[old]
                bucket = TokenBucket(limits, settings.rate_increase / max(1, shares),
                                     settings.rate_decrease)  # fmt: skip
                self._buckets[key] = bucket
            return bucket

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


BUCKETS = BucketRegistry()


def backoff_delay(attempt: int, settings: DownloadSettings, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential, jittered."""
    base = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
    jitter = settings.backoff_jitter
    return base * rng.uniform(1 - jitter, 1 + jitter)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def x_robots_blocked(values: list[str], token: str, blocked: tuple[str, ...]) -> str | None:
    """The blocked directive an X-Robots-Tag header carries for us (or for all agents), if any.

    A value is `[agent:] directive, directive, ...`; directives with their own colon
    (unavailable_after: DATE) are not taken for an agent name.
    """
    own_colon = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
    for value in values:
        agent, sep, rest = value.partition(":")
        if sep and agent.strip().lower() not in own_colon:
            target, directives = agent.strip().lower(), rest
        else:
            target, directives = None, value
        if target not in (None, token.lower()):
            continue
        for directive in directives.split(","):
            if directive.strip().lower() in blocked:
                return directive.strip().lower()
    return None
