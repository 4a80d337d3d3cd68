"""Stage 02 building blocks: image rules, robots.txt matching, the total deadline, the circuit
rule, the watchdog, settings validation and the image store's determinism."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_defaults
from pipeline.errors import ConfigError
from stages.download import reasons as R
from stages.download import scheduler as scheduler_module
from stages.download.attempt import AttemptEnv, Outcome
from stages.download.circuit import HostCircuit
from stages.download.deadline import Deadline
from stages.download.fetch import Fetcher, FetchError, host_name, parse_target
from stages.download.images import ImageError, ImageRules, process, target_size
from stages.download.robots import RobotsRules
from stages.download.scheduler import RowTask, Scheduler
from stages.download.settings import load_settings
from stages.download.store import Spool, write_store
from tests.support.download_fixtures import FAST, server_fixture  # noqa: F401 - `server`
from tests.support.loopback_server import ImageFactory, bomb_png

# Bomb images are rejected with a reason; Pillow's warning about them is expected.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


RULES = ImageRules(min_side=224, max_side=720, jpeg_quality=95, jpeg_subsampling=2,
                   max_pixels=89_478_485)  # fmt: skip


def jpeg(width: int, height: int, seed: int = 1, exif: int = 0) -> bytes:
    return ImageFactory.render(seed, width, height, "jpg", exif, 90)


@pytest.mark.parametrize(
    ("size", "want"),
    [((2048, 1536), (720, 540)), ((1536, 2048), (540, 720)), ((720, 300), (720, 300)),
     ((500, 400), (500, 400)), ((3000, 225), (720, 54)), ((721, 721), (720, 720))],
)  # fmt: skip
def test_target_size_keeps_aspect_and_never_upscales(size, want):
    assert target_size(*size, 720) == want


def test_draft_decode_matches_a_full_decode_and_box_resize():
    body = jpeg(2048, 1536)
    stored = process(body, RULES)
    assert (stored.width, stored.height, stored.stored_width, stored.stored_height) == (
        2048, 1536, 720, 540,
    )  # fmt: skip
    full = Image.open(io.BytesIO(body)).convert("RGB").resize((720, 540), Image.Resampling.BOX)
    ours = Image.open(io.BytesIO(stored.jpeg)).convert("RGB")
    diff = np.abs(np.asarray(ours, np.int16) - np.asarray(full, np.int16))
    assert diff.mean() < 3.0  # DCT-domain scaling vs. pixel-domain: visually the same
    assert process(body, RULES).jpeg == stored.jpeg  # deterministic bytes


def test_small_images_are_not_upscaled_and_too_small_is_dropped():
    kept = process(jpeg(500, 300), RULES)
    assert (kept.stored_width, kept.stored_height) == (500, 300)
    with pytest.raises(ImageError) as err:
        process(jpeg(640, 223), RULES)
    assert (err.value.reason, err.value.width, err.value.height) == (R.TOO_SMALL, 640, 223)


def test_exif_orientation_is_applied():
    stored = process(jpeg(1600, 1200, exif=6), RULES)
    assert (stored.width, stored.height) == (1200, 1600)
    assert (stored.stored_width, stored.stored_height) == (540, 720)
    assert "exif" not in Image.open(io.BytesIO(stored.jpeg)).info  # metadata dropped


def test_transparent_png_goes_on_white_and_becomes_rgb():
    im = Image.new("RGBA", (400, 300), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (100, 100, 200, 200))
    out = io.BytesIO()
    im.save(out, "PNG")
    stored = process(out.getvalue(), RULES)
    back = Image.open(io.BytesIO(stored.jpeg))
    assert back.mode == "RGB"
    assert all(abs(a - b) < 8 for a, b in zip(back.getpixel((10, 10)), (255, 255, 255), strict=True))
    assert back.getpixel((150, 150))[2] > 240


def test_hostile_bodies_get_reasons():
    cases = {
        b"": R.EMPTY_BODY,
        b"<html>hello</html>": R.NOT_IMAGE,
        b"%!PS-Adobe-3.0 EPSF-3.0\n": R.NOT_IMAGE,  # EPS would run Ghostscript: never opened
        jpeg(800, 600)[:2000]: R.DECODE_ERROR,
        bomb_png(): R.DECOMPRESSION_BOMB,
    }
    for body, reason in cases.items():
        with pytest.raises(ImageError) as err:
            process(body, RULES)
        assert err.value.reason == reason, body[:20]


def test_robots_rules_follow_rfc_9309():
    rules = RobotsRules.parse(
        "User-agent: otherbot\nDisallow: /\n\n"
        "User-agent: *\nDisallow: /private\nAllow: /private/open\nDisallow: /*.gif$\n"
        "Disallow: /tmp/*/cache\n\n"
        "User-agent: TolPipe\nDisallow: /img/\nAllow: /img/public\n"
    )
    ours = "tolpipe"
    assert not rules.allowed(ours, "/img/1.jpg")
    assert rules.allowed(ours, "/img/public/1.jpg")  # longer Allow wins
    assert rules.allowed(ours, "/private/x")  # our own group replaces `*`
    assert not rules.allowed("somebot", "/private/x")
    assert rules.allowed("somebot", "/private/open/x")
    assert not rules.allowed("somebot", "/a/b.gif") and rules.allowed("somebot", "/a/b.gif?x=1")
    assert not rules.allowed("somebot", "/tmp/abc/cache/x")
    assert not rules.allowed("otherbot", "/anything")
    assert rules.allowed("otherbot", "/robots.txt")
    assert RobotsRules.parse("User-agent: *\nDisallow:\n").allowed(ours, "/x")
    tie = RobotsRules.parse("User-agent: *\nDisallow: /a\nAllow: /a\n")
    assert tie.allowed(ours, "/a/b")


def test_url_parsing_and_schemes():
    target = parse_target("HTTP://Example.ORG:8080/a b/ü.jpg?q=1 2#frag", ("http", "https"))
    assert (target.scheme, target.host, target.port) == ("http", "example.org", 8080)
    assert target.path == "/a%20b/%C3%BC.jpg?q=1%202"
    for url, reason in (("ftp://x.org/a.jpg", R.BAD_SCHEME), ("data:image/png;base64,AAAA",
                        R.BAD_SCHEME), ("http:///nohost", R.BAD_URL),
                        ("http://x.org:99999/", R.BAD_URL)):  # fmt: skip
        with pytest.raises(FetchError) as err:
            parse_target(url, ("http", "https"))
        assert err.value.reason == reason, url
    assert host_name("Example.org:8080") == "example.org"
    assert host_name("[::1]:80") == "::1"


def test_total_deadline_stops_a_dribbling_body(server):
    """3,000 bytes/s never leaves the socket idle for the 2 s read timeout; the reaper still
    ends the request at its 1.5 s deadline."""
    fetcher = Fetcher("tolpipe/test", ("http", "https"), 5, 1 << 26, read_timeout_s=2.0)
    url = server.image_url(0, 5, 1024, 768, bps=3000)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetcher.fetch(url, Deadline(1.5))
    took = time.monotonic() - started
    assert err.value.reason == R.TIMEOUT
    assert 1.4 < took < 2.5


def test_body_size_limit(server):
    fetcher = Fetcher("tolpipe/test", ("http", "https"), 5, 10_000, read_timeout_s=2.0)
    with pytest.raises(FetchError) as err:
        fetcher.fetch(server.image_url(0, 6, 1024, 768), Deadline(5))
    assert err.value.reason == R.TOO_LARGE_BODY


def test_tls_error_is_classified(server):
    fetcher = Fetcher("tolpipe/test", ("http", "https"), 5, 1 << 26, read_timeout_s=2.0)
    # An https request to a plain-HTTP port: the handshake fails.
    url = server.base_url(0).replace("http://", "https://") + "/img/1/640x480.jpg"
    with pytest.raises(FetchError) as err:
        fetcher.fetch(url, Deadline(5))
    assert err.value.reason == R.TLS


def test_circuit_rule_does_not_depend_on_completion_order():
    finals = {0: R.TIMEOUT, 1: None, 2: R.CONNECTION, 3: R.HTTP_5XX, 4: None, 5: "http_404"}
    outcomes = []
    for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 4, 3, 1]):
        circuit = HostCircuit(threshold=2, rows=list(range(8)))
        seen: dict[int, str | None] = {}
        cut: list[int] = []
        for row in order:
            if row in seen:
                continue
            seen[row] = finals[row]
            for c in circuit.advance(seen):
                seen[c] = R.HOST_CIRCUIT_OPEN
                cut.append(c)
        outcomes.append((sorted(cut), {r: seen[r] for r in sorted(seen)}))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    # Rows 2 and 3 failed in a row: rows 4.. are cut whatever they returned.
    assert outcomes[0][0] == [4, 5, 6, 7]


def test_watchdog_abandons_a_stuck_attempt(tmp_path, monkeypatch):
    release = threading.Event()

    def stuck(url, env, activity=None):
        if "stuck" in url:
            release.wait(60)
        return Outcome("http_404", "404 Not Found", http_status=404)

    monkeypatch.setattr(scheduler_module, "attempt", stuck)
    params = {**load_defaults()["download"], **FAST, "deadline_s": 0.5, "watchdog_grace_s": 0.5}
    env = AttemptEnv(load_settings(params))
    tasks = [RowTask(0, "http://a.org/stuck", "a.org"), RowTask(1, "http://a.org/fine", "a.org")]
    spool = Spool(tmp_path / "x.spool")
    started = time.monotonic()
    finals = Scheduler(tasks, env, spool).run()
    took = time.monotonic() - started
    release.set()
    spool.close()
    assert finals[0].outcome.reason == R.TIMEOUT and "watchdog" in finals[0].outcome.detail
    assert finals[1].outcome.reason == "http_404"
    assert took < 3


def test_settings_are_validated():
    base = load_defaults()["download"]
    for bad in ({"jpeg_quality": 0}, {"rate_floor": 50.0}, {"allowed_schemes": ["ftp"]},
                {"jpeg_subsampling": "4:1:1"}, {"host_overrides": {"a.org": {"speed": 1}}},
                {"concurrency": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            load_settings({**base, **bad})


def test_image_store_bytes_are_deterministic(tmp_path):
    images = [(f"id-{i}", jpeg(300, 300, seed=i)) for i in range(5)]
    write_store(tmp_path / "a.parquet", images, row_group_rows=2)
    write_store(tmp_path / "b.parquet", images, row_group_rows=2)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    write_store(tmp_path / "empty.parquet", [], row_group_rows=2)
    assert (tmp_path / "empty.parquet").stat().st_size > 0

