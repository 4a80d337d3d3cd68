"""Politeness measured from the server's own request log: per-host rates under their ceilings
while several hosts are served at once by several worker processes, Retry-After honoured, and
the User-Agent."""

from __future__ import annotations

import time

from pipeline.runner import run_stage
from stages.download.politeness import TokenBucket, parse_retry_after, x_robots_blocked
from stages.download.settings import HostRate, load_settings
from tests.support.download_fixtures import (
    DOWNLOAD,
    all_rows,
    config,
    run_download,
    server_fixture,  # noqa: F401 - the `server` fixture
    write_ingest,
)


def max_in_window(times: list[float], window: float) -> int:
    """Most requests whose arrival falls in any interval of `window` seconds."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] - start <= window:
            j += 1
        best = max(best, j - i)
    return best


def test_per_host_rates_stay_under_ceilings_across_worker_processes(tmp_path, server):
    """Host 0 has two partitions, fetched at the same time by the two worker processes: each
    process gets half its rates. Hosts 1 and 2 (one partition each, host 2 with a lower per-host
    override) are then served at the same time. The server's log shows at most
    burst + ceiling * T requests per host in any window of T seconds."""
    per_part = 12
    urls = {
        (h, p): [server.image_url(h, 100 * h + 20 * p + i, 320, 320) for i in range(n)]
        for h, p, n in ((0, 0, per_part), (0, 1, per_part), (1, 0, 2 * per_part),
                        (2, 0, 2 * per_part))
    }  # fmt: skip
    write_ingest(tmp_path, list(urls.values()))
    ceiling, burst, low = 8.0, 2.0, 4.0
    cfg = config(
        rate_per_host=ceiling, rate_ceiling=ceiling, burst=burst, rate_floor=1.0,
        host_overrides={"127.0.0.4": {"rate_per_host": low, "rate_ceiling": low}},
    )  # fmt: skip
    cfg["cluster"]["workers"] = 2
    run_stage(tmp_path, DOWNLOAD, cfg)
    assert [r["status"] for r in all_rows(tmp_path)] == ["ok"] * 6 * per_part

    for host, cap in ((0, ceiling), (1, ceiling), (2, low)):
        times = [e.time for e in server.requests(host, "/img/")]
        assert len(times) == 2 * per_part
        for window in (1.0, 2.0):
            # +1: a request granted at a window's edge may arrive just inside it.
            allowed = burst + cap * window + 1
            assert max_in_window(times, window) <= allowed, (host, window, sorted(times))

    def span(key: tuple[int, int]) -> tuple[float, float]:
        paths = {u.split("/", 3)[3] for u in urls[key]}
        times = [e.time for e in server.requests(key[0]) if e.path.lstrip("/") in paths]
        return min(times), max(times)

    def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    # Host 0's two partitions ran at the same time (so its rate really was split), and hosts 1
    # and 2 were served at the same time.
    assert overlap(span((0, 0)), span((0, 1)))
    assert overlap(span((1, 0)), span((2, 0)))


def test_retry_after_pauses_the_host(tmp_path, server):
    first = server.image_url(0, 200, 640, 480, status=429, times=1, retry_after=1)
    others = [server.image_url(0, 201 + i, 640, 480) for i in range(4)]
    dated = server.image_url(1, 210, 640, 480, status=503, times=1, retry_after="date:2")
    write_ingest(tmp_path, [[first, *others], [dated]])
    run_download(tmp_path, config(concurrency=1))

    log = server.requests(0, "/img/")
    assert log[0].status == 429 and log[0].path.startswith("/img/200/")
    # Nothing reaches the host until Retry-After has passed, not even other URLs.
    assert all(e.time - log[0].time >= 0.95 for e in log[1:])
    retried = [e for e in log[1:] if e.path == log[0].path]
    assert len(retried) == 1 and retried[0].status == 200
    # An HTTP-date Retry-After (2 s ahead; whole seconds, so at least 1 s) is honoured too.
    dated_log = server.requests(1, "/img/")
    assert [e.status for e in dated_log] == [503, 200]
    assert dated_log[1].time - dated_log[0].time >= 0.95
    rows = {r["url"]: r for r in all_rows(tmp_path)}
    assert rows[first]["attempt_log"] == "http_429 ok" and rows[first]["retry_after_s"] == 1.0


def test_retry_after_longer_than_the_maximum_fails_the_row(tmp_path, server):
    url = server.image_url(0, 220, 640, 480, status=429, retry_after=3600)
    write_ingest(tmp_path, [[url]])
    started = time.monotonic()
    run_download(tmp_path, config(max_retry_after_s=5.0))
    assert time.monotonic() - started < 5
    row = all_rows(tmp_path)[0]
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "http_429", 1)
    assert "exceeds download.max_retry_after_s" in row["detail"]


def test_user_agent_names_tool_version_and_contact(tmp_path, server):
    from pipeline import __version__

    seen: list[str] = []
    original = server.handle

    def spy(handler):
        seen.append(handler.headers.get("User-Agent"))
        original(handler)

    server.handle = spy  # type: ignore[method-assign]
    write_ingest(tmp_path, [[server.image_url(0, 230, 640, 480)]])
    run_download(tmp_path, config(contact="mailto:data-team@example.org"))
    assert seen and set(seen) == {f"tolpipe/{__version__} (+mailto:data-team@example.org)"}


def test_token_bucket_bound_and_adaptation():
    clock = [0.0]
    bucket = TokenBucket(HostRate(rate=4.0, burst=2.0, ceiling=6.0, floor=1.0), 0.5, 0.5,
                         clock=lambda: clock[0])  # fmt: skip
    waits = [bucket.reserve() for _ in range(6)]
    # Two tokens of burst, then one every 1/4 s.
    assert waits == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    for _ in range(10):
        bucket.on_success(0.01, slow_latency_s=2.0, slow_rate=6.0)
    assert bucket.rate == 6.0  # additive increase stops at the ceiling
    bucket.on_throttle()
    assert bucket.rate == 3.0
    for _ in range(10):
        bucket.on_success(5.0, slow_latency_s=2.0, slow_rate=2.5)
    assert bucket.rate == 2.5  # a slow host is capped at the slow rate


def test_rate_split_between_processes():
    from pipeline.config import load_defaults

    params = load_defaults()["download"]
    params["host_overrides"] = {"a.org": {"rate_ceiling": 30.0}}
    settings = load_settings(params)
    assert settings.host_rate("b.org", 2) == HostRate(5.0, 5.0, 9.0, 1.0)
    assert settings.host_rate("a.org", 3).ceiling == 10.0


def test_retry_after_and_x_robots_parsing():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    blocked = ("noai", "noimageai")
    assert x_robots_blocked(["noindex, NoAI"], "tolpipe", blocked) == "noai"
    assert x_robots_blocked(["googlebot: noai"], "tolpipe", blocked) is None
    assert x_robots_blocked(["unavailable_after: 2030-01-01, noimageai"], "tolpipe", blocked) == ("noimageai")


def test_retry_after_holds_back_requests_already_booked_by_other_threads(tmp_path, server):
    """With many fetch threads, rows of the host are already waiting on its token bucket when
    the 429 arrives; none of them may reach the host before Retry-After has passed, and after
    it the host gets at most `burst` requests at once, then the bucket's rate."""
    first = server.image_url(0, 240, 640, 480, status=429, times=1, retry_after=2)
    others = [server.image_url(0, 241 + i, 640, 480) for i in range(10)]
    write_ingest(tmp_path, [[first, *others]])
    rate, burst = 5.0, 1.0
    run_download(tmp_path, config(concurrency=8, rate_per_host=rate, rate_ceiling=rate, burst=burst,
                                  rate_floor=rate, circuit_failures=100))  # fmt: skip

    log = server.requests(0, "/img/")
    throttled = next(e for e in log if e.status == 429)
    answered_at = throttled.time  # the 429 went out when it was logged
    after = [e.time for e in log if e.time > answered_at]
    assert after, "the other rows were fetched"
    assert min(after) - answered_at >= 1.95, sorted(t - answered_at for t in after)
    assert max_in_window(after, 1.0) <= burst + rate * 1.0 + 1
    assert {r["status"] for r in all_rows(tmp_path)} == {"ok"}
