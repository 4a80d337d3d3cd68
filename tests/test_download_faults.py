"""Stage 02 against the loopback server's fault kinds: every input row comes out exactly once,
with the right status and reason, and the run ends (no hang on stalled or dribbling bodies)."""

from __future__ import annotations

import io
import time
from collections import Counter

import pytest
from PIL import Image

from stages.download import reasons as R
from tests.support.download_fixtures import (
    all_rows,
    config,
    run_download,
    server_fixture,  # noqa: F401 - the `server` fixture
    store_table,
    write_ingest,
)
from tests.support.loopback_server import fault_urls

# Bomb images are rejected with a reason; Pillow's warning about them is expected.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# fault name -> (status, reason, attempts); attempts None when not checked.
EXPECTED = {
    "ok": ("ok", None, 1),
    "http_404": ("dropped", "http_404", 1),
    "http_429_retry_after": ("ok", None, 2),
    "http_429_no_retry_after": ("ok", None, 2),
    "http_503": ("ok", None, 3),
    "http_503_always": ("failed", R.HTTP_5XX, 3),
    "reset": ("failed", R.CONNECTION, 3),
    "slow_body": ("failed", R.TIMEOUT, 3),
    "stalled_body": ("failed", R.TIMEOUT, 3),
    "truncated_jpeg": ("dropped", R.DECODE_ERROR, 1),
    "short_body": ("failed", R.TRUNCATED_BODY, 3),
    "html": ("dropped", R.NOT_IMAGE, 1),
    "zero_bytes": ("dropped", R.EMPTY_BODY, 1),
    "huge_dimensions": ("dropped", R.DECOMPRESSION_BOMB, 1),
    "decompression_bomb": ("dropped", R.DECOMPRESSION_BOMB, 1),
    "redirect_loop": ("dropped", R.REDIRECT_LOOP, 1),
    "redirect_bad_scheme": ("dropped", R.BAD_SCHEME, 1),
    "tiny": ("dropped", R.TOO_SMALL, 1),
    "unresolvable": ("failed", R.DNS, 1),
    "x_robots_tag": ("dropped", R.X_ROBOTS_TAG, 1),
}
FAULT_SETTINGS = {"deadline_s": 1.5, "read_timeout_s": 1.0, "max_attempts": 3}


def test_every_fault_kind_gets_its_status_and_reason(tmp_path, server):
    urls = fault_urls(server, host=0)
    assert set(urls) == set(EXPECTED)
    unresolvable = urls.pop("unresolvable")
    extra = {
        "stall_headers": server.image_url(0, 30, 800, 600, fault="stall_headers"),
        "png": server.image_url(0, 31, 1000, 500, ext="png"),
        "rotated": server.image_url(0, 32, 1024, 768, exif=6),
        "chain_ok": server.url(0, "/redirect/chain/3?to=/img/33/900x900.jpg"),
        "too_many_redirects": server.url(0, "/redirect/chain/9?to=/img/34/900x900.jpg"),
    }
    partitions = [list(urls.values()) + list(extra.values()), [unresolvable]]
    write_ingest(tmp_path, partitions)
    started = time.monotonic()
    records = run_download(tmp_path, config(**FAULT_SETTINGS))
    took = time.monotonic() - started
    # Bounded: the slowest rows are 3 attempts of a 1.5 s deadline, run in parallel.
    assert took < 30, f"download took {took:.1f} s"

    rows = all_rows(tmp_path)
    by_url = {r["url"]: r for r in rows}
    assert len(rows) == len(by_url) == sum(len(p) for p in partitions)
    assert sum(r["rows"] for r in records.values()) == len(rows)
    for name, url in {**urls, "unresolvable": unresolvable}.items():
        status, reason, attempts = EXPECTED[name]
        row = by_url[url]
        assert (row["status"], row["reason"]) == (status, reason), (name, row["detail"])
        assert row["attempts"] == attempts, (name, row["attempt_log"])
        assert len(row["attempt_log"].split()) == attempts

    assert by_url[extra["stall_headers"]]["reason"] == R.TIMEOUT
    assert by_url[extra["too_many_redirects"]]["reason"] == R.TOO_MANY_REDIRECTS
    assert by_url[urls["http_429_retry_after"]]["retry_after_s"] == 1.0
    assert by_url[urls["http_503"]]["attempt_log"] == "http_5xx http_5xx ok"
    tiny = by_url[urls["tiny"]]
    assert (tiny["width"], tiny["height"]) == (160, 120)

    ok = {name: by_url[url] for name, url in {**urls, **extra}.items()
          if by_url[url]["status"] == "ok"}  # fmt: skip
    assert set(ok) == {"ok", "http_429_retry_after", "http_429_no_retry_after", "http_503", "png",
                       "rotated", "chain_ok"}  # fmt: skip
    assert (ok["ok"]["width"], ok["ok"]["height"]) == (1024, 768)
    assert (ok["ok"]["stored_width"], ok["ok"]["stored_height"]) == (720, 540)
    assert (ok["png"]["stored_width"], ok["png"]["stored_height"]) == (720, 360)
    # EXIF orientation 6: a 1024x768 file shown upright as 768x1024.
    assert (ok["rotated"]["width"], ok["rotated"]["height"]) == (768, 1024)
    assert (ok["rotated"]["stored_width"], ok["rotated"]["stored_height"]) == (540, 720)
    assert ok["chain_ok"]["final_url"].endswith("/img/33/900x900.jpg")

    store = store_table(tmp_path, 0)
    stored = dict(zip(store["uuid"].to_pylist(), store["jpeg"].to_pylist(), strict=True))
    assert set(stored) == {r["uuid"] for r in ok.values()}
    for row in ok.values():
        im = Image.open(io.BytesIO(stored[row["uuid"]]))
        assert im.format == "JPEG" and im.mode == "RGB"
        assert im.size == (row["stored_width"], row["stored_height"])
        assert len(stored[row["uuid"]]) == row["stored_bytes"]
    assert store_table(tmp_path, 1).num_rows == 0


def test_robots_txt_disallow_and_unavailable(tmp_path, server):
    server.set_robots(1, "User-agent: *\nDisallow: /img/\nAllow: /img/7/\n")
    server.set_robots(2, status=503)
    urls = [
        server.image_url(1, 7, 800, 600),  # allowed by the longer Allow rule
        server.image_url(1, 8, 800, 600),  # disallowed
        server.image_url(2, 9, 800, 600),  # robots.txt unreachable (503): no access
        server.image_url(0, 10, 800, 600),  # no robots.txt (404): everything allowed
    ]
    write_ingest(tmp_path, [[urls[0], urls[1]], [urls[2]], [urls[3]]])
    run_download(tmp_path, config())
    by_url = {r["url"]: r for r in all_rows(tmp_path)}
    got = [(by_url[u]["status"], by_url[u]["reason"], by_url[u]["robots"]) for u in urls]
    assert got == [
        ("ok", None, "allowed"),
        ("dropped", R.ROBOTS_DISALLOWED, "disallowed"),
        ("failed", R.ROBOTS_UNAVAILABLE, "unavailable"),
        ("ok", None, "absent"),
    ]
    # robots.txt is fetched once per host, however many rows the host has.
    assert len(server.requests(1, "/robots.txt")) == 1
    # A disallowed URL is never requested.
    assert server.requests(1, "/img/8/") == []


def test_robots_and_x_robots_tag_can_be_turned_off(tmp_path, server):
    server.set_robots(0, "User-agent: *\nDisallow: /\n")
    urls = [server.image_url(0, 40, 800, 600), server.image_url(0, 41, 800, 600, xrobots="noai")]
    write_ingest(tmp_path, [urls])
    run_download(tmp_path, config(robots_txt=False, x_robots_tag=False))
    rows = all_rows(tmp_path)
    assert [(r["status"], r["robots"]) for r in rows] == [("ok", "off"), ("ok", "off")]
    assert rows[1]["x_robots_tag"] == "noai"
    assert server.requests(0, "/robots.txt") == []


@pytest.mark.parametrize(
    ("header", "blocked"),
    [("noai", True), ("tolpipe: noimageai", True), ("otherbot: noai", False), ("noindex", False)],
)
def test_x_robots_tag_directives(tmp_path, server, header, blocked):
    url = server.image_url(0, 50, 800, 600, xrobots=header)
    write_ingest(tmp_path, [[url]])
    run_download(tmp_path, config())
    row = all_rows(tmp_path)[0]
    assert (row["reason"] == R.X_ROBOTS_TAG) is blocked
    assert row["x_robots_tag"] == header


def test_circuit_breaker_cuts_a_dead_host(tmp_path, server):
    """A host that keeps failing: after `circuit_failures` rows the rest are not fetched."""
    dead = [server.image_url(0, 60 + i, 800, 600, status=503) for i in range(30)]
    write_ingest(tmp_path, [dead])
    run_download(tmp_path, config(circuit_failures=4, max_attempts=2, concurrency=2))
    rows = all_rows(tmp_path)
    reasons = Counter(r["reason"] for r in rows)
    assert reasons[R.HTTP_5XX] == 4 and reasons[R.HOST_CIRCUIT_OPEN] == 26
    # In partition order: the first four failed, every later row was cut.
    assert [r["reason"] for r in rows[:4]] == [R.HTTP_5XX] * 4
    assert all(r["status"] == "failed" and r["attempts"] == 0 for r in rows[4:])
    # Far fewer requests than 30 rows x 2 attempts (the suspicion stops dispatching early).
    assert len(server.requests(0, "/img/")) < 20
