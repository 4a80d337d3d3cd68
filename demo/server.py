"""A loopback image server for the demo, download tests and benchmarks.

Several hosts (127.0.0.2, 127.0.0.3, ... on this machine's loopback range), each a threaded HTTP
server with a bounded number of handler threads, serving:

- `/img/<seed>/<w>x<h>.<jpg|png>`: an image generated deterministically from the seed (smooth
  colour fields plus fine noise, so that it compresses and decodes like a photo);
- `/files/<name>`: files from a folder;
- `/robots.txt`: per-host text (404 when none is set);
- `/redirect/loop/<a|b>`, `/redirect/chain/<n>?to=PATH`, `/redirect/to?url=URL`: redirects.

Query parameters on `/img/...` inject faults: `status=429|503|500|404&times=N&retry_after=S`,
`fault=reset|slow|stall|stall_headers|truncate|short|html|empty|huge|bomb` (`times=N`: only the
first N requests of that exact URL; default: every request), `bps=N` (per-request bandwidth),
`latency_ms=N`, `xrobots=VALUE` (X-Robots-Tag header), `exif=1..8` (EXIF orientation).
Unknown parameters are ignored (a benchmark may add `k=<n>` to make URLs unique). `set_down(host)`
makes a whole host answer 503.

Every request is logged (monotonic time, host, path, status; status 0 = connection reset) so
tests can measure per-host rates from the server's side. Run `python -m demo.server
--help` to serve by hand (the demo does).
"""

from __future__ import annotations

import argparse
import csv
import email.utils
import io
import mimetypes
import random
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from PIL import Image

# A name under the .invalid TLD never resolves (RFC 6761 §6.4).
UNRESOLVABLE_HOST = "images.tolpipe-test.invalid"
FAULTS = ("reset", "slow", "stall", "stall_headers", "truncate", "short", "html", "empty", "huge",
          "bomb")  # fmt: skip
HTML_BODY = b"<!doctype html><html><head><title>Gallery</title></head><body>Not an image</body></html>"
# Decompression bomb: a 1-bit PNG whose header claims this many pixels per side (~12 KB on the
# wire, 100 Mpx decoded: above Pillow's default limit of 89,478,485 px).
BOMB_SIDE = 10_000
# Huge dimensions: a JPEG whose frame header claims this size (a few hundred bytes on the wire).
HUGE_SIDE = 65_000
# Side of the noise block tiled over generated images.
NOISE_TILE = 96


@dataclass(frozen=True)
class LogEntry:
    time: float  # time.monotonic() when the request line was read
    host: str
    path: str
    status: int  # 0: connection reset without a response


class ImageFactory:
    """Deterministic generated images, cached (LRU bounded by bytes)."""

    def __init__(self, cache_bytes: int = 512 * 1024 * 1024, quality: int = 90):
        self.cache: OrderedDict[tuple, bytes] = OrderedDict()
        self.cache_bytes = cache_bytes
        self.size = 0
        self.quality = quality
        self.lock = threading.Lock()

    def get(self, seed: int, width: int, height: int, fmt: str = "jpg", exif: int = 0) -> bytes:
        key = (seed, width, height, fmt, exif)
        with self.lock:
            data = self.cache.get(key)
            if data is not None:
                self.cache.move_to_end(key)
                return data
        data = self.render(seed, width, height, fmt, exif, self.quality)
        with self.lock:
            self.cache[key] = data
            self.size += len(data)
            while self.size > self.cache_bytes and len(self.cache) > 1:
                _, old = self.cache.popitem(last=False)
                self.size -= len(old)
        return data

    @staticmethod
    def render(seed: int, width: int, height: int, fmt: str, exif: int, quality: int) -> bytes:
        rng = np.random.default_rng(seed)
        coarse = rng.integers(0, 256, (max(2, height // 48), max(2, width // 48), 3), np.uint8)
        im = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BILINEAR)
        # Fine grain from a tiled noise block: photo-like JPEG sizes, cheap for big images.
        tile = rng.integers(-10, 11, (NOISE_TILE, NOISE_TILE, 3), np.int16)
        reps = (-(-height // NOISE_TILE), -(-width // NOISE_TILE), 1)
        noise = np.tile(tile, reps)[:height, :width]
        pixels = np.clip(np.asarray(im, np.int16) + noise, 0, 255).astype(np.uint8)
        im = Image.fromarray(pixels, "RGB")
        out = io.BytesIO()
        if fmt == "png":
            im.save(out, "PNG", compress_level=1)
        else:
            kwargs = {}
            if exif:
                tags = Image.Exif()
                tags[0x0112] = exif
                kwargs["exif"] = tags.tobytes()
            im.save(out, "JPEG", quality=quality, **kwargs)
        return out.getvalue()


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels, all zero: tiny compressed, huge decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def huge_jpeg(side: int = HUGE_SIDE) -> bytes:
    """A small JPEG whose frame header is patched to claim side x side pixels."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 160, 90)).save(out, "JPEG", quality=80)
    data = bytearray(out.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: LoopbackServer, max_threads: int):
        self.app = app
        self.slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        # Bounded: the accept loop waits while max_threads handlers run.
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up mid-exchange (deadlines, resets: what fault tests provoke) are
        # expected; anything else is still printed.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts
    server_version = "tolpipe-loopback/1.0"
    timeout = 30  # idle keep-alive connections are closed after this many seconds

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.app.handle(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature of the base
        return


class LoopbackServer:
    """Start with `with LoopbackServer(hosts=3) as server:` or start()/stop()."""

    def __init__(
        self,
        hosts: int = 2,
        first_address: int = 2,
        port: int = 0,
        latency_s: float = 0.0,
        bandwidth_bps: int = 0,
        folder: str | Path | None = None,
        max_threads: int = 128,
        log_size: int = 200_000,
        image_cache_bytes: int = 512 * 1024 * 1024,
    ):
        self.addresses = [f"127.0.0.{first_address + i}" for i in range(hosts)]
        self.requested_port = port
        self.latency_s = latency_s
        self.bandwidth_bps = bandwidth_bps
        self.folder = Path(folder).resolve() if folder else None
        self.max_threads = max_threads
        self.images = ImageFactory(image_cache_bytes)
        self.robots: dict[str, str] = {}
        self.robots_status: dict[str, int] = {}
        self.down: set[str] = set()  # hosts answering 503 to everything but robots.txt
        self.log: deque[LogEntry] = deque(maxlen=log_size)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.servers: list[_Server] = []
        self.threads: list[threading.Thread] = []
        self._bomb: bytes | None = None
        self._huge: bytes | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LoopbackServer:
        for address in self.addresses:
            server = _Server((address, self.requested_port), self, self.max_threads)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1},
                name=f"loopback-{address}", daemon=True,
            )  # fmt: skip
            thread.start()
            self.servers.append(server)
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- addresses -----------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return list(self.addresses)

    def base_url(self, host: int = 0) -> str:
        address, port = self.servers[host].server_address[:2]
        return f"http://{address}:{port}"

    def url(self, host: int, path: str) -> str:
        return self.base_url(host) + path

    def image_url(
        self, host: int, seed: int, width: int, height: int, ext: str = "jpg", **params: object
    ) -> str:
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())
        return self.url(host, f"/img/{seed}/{width}x{height}.{ext}" + (f"?{query}" if query else ""))

    def unresolvable_url(self, path: str = "/img/1/640x480.jpg") -> str:
        return f"http://{UNRESOLVABLE_HOST}{path}"

    def set_robots(self, host: int, text: str | None = None, status: int | None = None) -> None:
        address = self.addresses[host]
        if text is not None:
            self.robots[address] = text
        if status is not None:
            self.robots_status[address] = status

    def warm(self, urls: list[str]) -> None:
        """Render the generated images of these URLs into the cache (not logged), so that a
        first run is not slower than the next ones."""
        for url in urls:
            parts = urlsplit(url)
            segments = [s for s in parts.path.split("/") if s]
            if segments[:1] != ["img"] or len(segments) != 3:
                continue
            size, _, ext = segments[2].partition(".")
            width, height = (int(v) for v in size.split("x"))
            exif = int(parse_qs(parts.query).get("exif", ["0"])[-1])
            self.images.get(int(segments[1]), width, height, ext, exif)

    def set_down(self, host: int, down: bool = True) -> None:
        """Make a host answer 503 to every request (robots.txt excepted), or bring it back."""
        (self.down.add if down else self.down.discard)(self.addresses[host])

    def requests(self, host: int | None = None, path_prefix: str = "") -> list[LogEntry]:
        with self.lock:
            entries = list(self.log)
        return [
            e
            for e in entries
            if (host is None or e.host == self.addresses[host]) and e.path.startswith(path_prefix)
        ]

    # ---- request handling ----------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, arrived: float, status: int) -> None:
        with self.lock:
            self.log.append(LogEntry(arrived, handler.server.server_address[0], handler.path, status))

    def _count(self, handler: BaseHTTPRequestHandler) -> int:
        key = (handler.server.server_address[0], handler.path)
        with self.lock:
            self.counts[key] += 1
            return self.counts[key]

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server stops; False when stopping."""
        return not self.stopping.wait(seconds) if seconds > 0 else not self.stopping.is_set()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        latency = self.latency_s + float(query.get("latency_ms", 0)) / 1000
        if not self._wait(latency):
            handler.close_connection = True
            return
        status = self._route(handler, parts.path, query)
        self._record(handler, arrived, status)

    def _route(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> int:
        segments = [s for s in path.split("/") if s]
        if path == "/robots.txt":
            return self._robots(handler)
        if handler.server.server_address[0] in self.down:
            return self._send(handler, 503, b"down for maintenance", "text/plain")
        if segments[:1] == ["img"] and len(segments) == 3:
            return self._image(handler, segments, query)
        if segments[:1] == ["files"] and self.folder is not None:
            return self._file(handler, "/".join(segments[1:]))
        if segments[:2] == ["redirect", "loop"] and len(segments) == 3:
            other = "b" if segments[2] == "a" else "a"
            return self._send(handler, 302, b"", headers={"Location": f"/redirect/loop/{other}"})
        if segments[:2] == ["redirect", "chain"] and len(segments) == 3:
            left = int(segments[2])
            target = query.get("to", "/img/1/640x480.jpg")
            location = target if left <= 1 else f"/redirect/chain/{left - 1}?to={quote(target)}"
            return self._send(handler, 302, b"", headers={"Location": location})
        if segments[:2] == ["redirect", "to"] and "url" in query:
            return self._send(handler, 302, b"", headers={"Location": query["url"]})
        return self._send(handler, 404, b"not found", "text/plain")

    def _robots(self, handler: BaseHTTPRequestHandler) -> int:
        address = handler.server.server_address[0]
        status = self.robots_status.get(address)
        if status is not None:
            return self._send(handler, status, b"", "text/plain")
        text = self.robots.get(address)
        if text is None:
            return self._send(handler, 404, b"no robots.txt", "text/plain")
        return self._send(handler, 200, text.encode(), "text/plain")

    def _file(self, handler: BaseHTTPRequestHandler, name: str) -> int:
        assert self.folder is not None
        path = (self.folder / name).resolve()
        if not path.is_file() or self.folder not in path.parents:
            return self._send(handler, 404, b"not found", "text/plain")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return self._send(handler, 200, path.read_bytes(), ctype)

    def _image(self, handler: BaseHTTPRequestHandler, segments: list[str], query: dict) -> int:
        seed = int(segments[1])
        size, _, ext = segments[2].partition(".")
        width, height = (int(v) for v in size.split("x"))
        times = int(query.get("times", -1))
        count = self._count(handler)
        active = times < 0 or count <= times
        headers = {}
        if "xrobots" in query:
            headers["X-Robots-Tag"] = query["xrobots"]
        if active and "status" in query:
            if "retry_after" in query:
                value = query["retry_after"]
                if value.startswith("date:"):
                    when = time.time() + float(value[5:])
                    value = email.utils.formatdate(when, usegmt=True)
                headers["Retry-After"] = value
            status = int(query["status"])
            return self._send(handler, status, f"error {status}".encode(), "text/plain", headers)
        fault = query.get("fault") if active else None
        if fault == "reset":
            return self._reset(handler)
        if fault == "stall_headers":
            self._wait(float(query.get("stall_s", 3600)))
            handler.close_connection = True
            return -1
        if fault == "html":
            return self._send(handler, 200, HTML_BODY, "text/html; charset=utf-8", headers)
        if fault == "empty":
            return self._send(handler, 200, b"", "image/jpeg", headers)
        if fault == "huge":
            self._huge = self._huge or huge_jpeg()
            return self._send(handler, 200, self._huge, "image/jpeg", headers)
        if fault == "bomb":
            self._bomb = self._bomb or bomb_png()
            return self._send(handler, 200, self._bomb, "image/png", headers)
        body = self.images.get(seed, width, height, ext, int(query.get("exif", 0)))
        ctype = "image/png" if ext == "png" else "image/jpeg"
        if fault == "truncate":  # a corrupt file, consistently announced
            return self._send(handler, 200, body[: len(body) // 2], ctype, headers)
        if fault == "short":  # Content-Length promises more than is sent
            return self._send(handler, 200, body, ctype, headers, cut_at=len(body) // 2)
        if fault == "stall":
            return self._send(handler, 200, body, ctype, headers, stall_at=min(1024, len(body) // 2),
                              stall_s=float(query.get("stall_s", 3600)))  # fmt: skip
        bps = int(query.get("bps", 0)) if fault == "slow" or "bps" in query else 0
        return self._send(handler, 200, body, ctype, headers, bps=bps)

    def _reset(self, handler: BaseHTTPRequestHandler) -> int:
        handler.close_connection = True
        sock: socket.socket = handler.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # with a zero linger: RST once the handler's file objects are closed
        return 0

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        ctype: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        bps: int = 0,
        cut_at: int | None = None,
        stall_at: int | None = None,
        stall_s: float = 0.0,
    ) -> int:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        try:
            self._write_body(handler, body, bps or self.bandwidth_bps, cut_at, stall_at, stall_s)
        except OSError:  # the client went away (its deadline passed): nothing to do
            handler.close_connection = True
        return status

    def _write_body(self, handler, body, bps, cut_at, stall_at, stall_s) -> None:
        if cut_at is not None:
            handler.wfile.write(body[:cut_at])
            handler.close_connection = True
            return
        if stall_at is not None:
            handler.wfile.write(body[:stall_at])
            self._wait(stall_s)
            handler.close_connection = True
            return
        if not bps:
            handler.wfile.write(body)
            return
        step = max(1, bps // 20)  # 20 writes a second
        for start in range(0, len(body), step):
            if not self._wait(step / bps):
                handler.close_connection = True
                return
            handler.wfile.write(body[start : start + step])


# ---- URL lists for tests, benchmarks and the demo ----------------------------------------------
# (width, height) of generated images: small ones (too small), sizes at and under the 720 px
# limit, and camera-like sizes far above it.
MIXED_SIZES = [
    (160, 120), (320, 240), (480, 360), (640, 480), (720, 540), (800, 600), (1024, 768),
    (600, 800), (1280, 960), (1600, 1200), (1200, 1600), (2048, 1536), (2400, 1600),
]  # fmt: skip


def mixed_image_urls(
    server: LoopbackServer,
    count: int,
    seed: int = 0,
    distinct: int = 0,
    sizes: list[tuple[int, int]] | None = None,
) -> list[str]:
    """`count` image URLs spread round-robin over the hosts, sizes drawn from MIXED_SIZES.
    With `distinct` > 0 only that many different images exist (URL i shows image i % distinct)
    and a `k` parameter keeps the URLs unique: cheap for the server, the same work for a
    downloader (which cannot know that two URLs carry the same bytes)."""
    rng = random.Random(seed)
    chosen = [rng.choice(sizes or MIXED_SIZES) for _ in range(distinct or count)]
    urls = []
    for i in range(count):
        image = i % distinct if distinct else i
        extra = {"k": i} if distinct else {}
        urls.append(server.image_url(i % len(server.hosts), image, *chosen[image], **extra))
    return urls


def fault_urls(server: LoopbackServer, host: int = 0) -> dict[str, str]:
    """One URL per fault kind (name -> URL), for tests and the demo."""
    img = server.image_url
    return {
        "ok": img(host, 11, 1024, 768),
        "http_404": server.url(host, "/missing/photo.jpg"),
        "http_429_retry_after": img(host, 12, 800, 600, status=429, times=1, retry_after=1),
        "http_429_no_retry_after": img(host, 13, 800, 600, status=429, times=1),
        "http_503": img(host, 14, 800, 600, status=503, times=2),
        "http_503_always": img(host, 15, 800, 600, status=503),
        "reset": img(host, 16, 800, 600, fault="reset"),
        "slow_body": img(host, 17, 800, 600, fault="slow", bps=2000),
        "stalled_body": img(host, 18, 800, 600, fault="stall"),
        "truncated_jpeg": img(host, 19, 800, 600, fault="truncate"),
        "short_body": img(host, 20, 800, 600, fault="short"),
        "html": img(host, 21, 800, 600, fault="html"),
        "zero_bytes": img(host, 22, 800, 600, fault="empty"),
        "huge_dimensions": img(host, 23, 800, 600, fault="huge"),
        "decompression_bomb": img(host, 24, 800, 600, fault="bomb"),
        "redirect_loop": server.url(host, "/redirect/loop/a"),
        "redirect_bad_scheme": server.url(host, "/redirect/to?url=" + quote("ftp://127.0.0.1/x.jpg")),
        "tiny": img(host, 25, 160, 120),
        "unresolvable": server.unresolvable_url(),
        "x_robots_tag": img(host, 26, 800, 600, xrobots="noai"),
    }


def write_url_csv(path: Path, urls: list[str], provider: str = "loopback") -> Path:
    """A `table` source for `tolpipe run ingest --source table:PATH`."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "source_id", "provider", "scientific_name", "kingdom", "license"])
        for i, url in enumerate(urls):
            writer.writerow([url, f"rec-{i}", provider, "Bubo bubo", "Animalia", "CC0"])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.server",
        description="Serve generated images (and injected faults) on several loopback hosts.",
    )
    parser.add_argument("--hosts", type=int, default=4, help="number of hosts (127.0.0.2, ...)")
    parser.add_argument("--first-address", type=int, default=2, help="last octet of the first host")
    parser.add_argument("--port", type=int, default=8000, help="port on every host (0: any)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    parser.add_argument("--bandwidth-kbps", type=float, default=0.0, help="per-response cap (0: none)")
    parser.add_argument("--folder", type=Path, help="serve this folder's files under /files/")
    parser.add_argument("--duration", type=float, default=3600.0, help="stop after this many seconds")
    parser.add_argument("--write-urls", type=Path, help="write a CSV of image URLs (ingest table)")
    parser.add_argument("--count", type=int, default=100, help="URLs to write with --write-urls")
    parser.add_argument("--with-faults", action="store_true", help="add one URL per fault kind")
    parser.add_argument("--seed", type=int, default=0, help="seed of the URL mix")
    parser.add_argument(
        "--distinct",
        type=int,
        default=0,
        help="only this many different images behind the URLs (0: all differ)",
    )
    parser.add_argument("--warm", action="store_true", help="render the images before serving")
    parser.add_argument(
        "--sizes",
        help="image sizes to draw from, e.g. 640x480,4000x3000 (default: a mix from 160x120 to 2400x1600)",
    )
    args = parser.parse_args(argv)
    server = LoopbackServer(
        hosts=args.hosts, first_address=args.first_address, port=args.port,
        latency_s=args.latency_ms / 1000, bandwidth_bps=int(args.bandwidth_kbps * 1000 / 8),
        folder=args.folder,
    ).start()  # fmt: skip
    for i in range(args.hosts):
        print(f"host {i}: {server.base_url(i)}", flush=True)
    if args.write_urls:
        sizes = None
        if args.sizes:
            sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        urls = mixed_image_urls(server, args.count, args.seed, args.distinct, sizes)
        if args.with_faults:
            urls += list(fault_urls(server).values())
        if args.warm:
            server.warm(urls)
        write_url_csv(args.write_urls, urls)
        print(f"wrote {len(urls)} URLs to {args.write_urls}", flush=True)
    print("ready", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(args.duration)
    server.stop()
    print(f"served {len(server.log)} requests", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
