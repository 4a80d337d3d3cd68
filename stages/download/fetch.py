"""HTTP GET with a total deadline, a body size limit, a scheme allowlist and a redirect limit.

Built on http.client so that every socket operation is under our control: resolution runs in a
bounded helper thread, each read gets min(read timeout, time left), and the deadline reaper shuts
down a socket whose total deadline passed. Connections are kept alive per thread and host.
Network and protocol failures raise FetchError with a stable reason code; HTTP error statuses are
returned (the caller decides what they mean).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from stages.download import reasons as R
from stages.download.deadline import REAPER, Deadline

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Body bytes read from a redirect or error response to keep its connection reusable; a longer
# body closes the connection instead.
DRAIN_LIMIT = 64 * 1024
READ_CHUNK = 256 * 1024
# Keep-alive connections one fetch thread keeps open (one per host it talks to).
CONNECTIONS_PER_THREAD = 4
# How long a resolved (or failed) host name is cached, seconds.
DNS_TTL_S = 300.0
DNS_FAILURE_TTL_S = 60.0
PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


class FetchError(R.ReasonError):
    def __init__(self, reason: str, detail: str, final_url: str | None = None):
        super().__init__(reason, detail)
        self.final_url = final_url
        self.reused_connection = False


@dataclass(frozen=True)
class Target:
    """One request's URL, split and normalised."""

    url: str
    scheme: str
    host: str  # lower-case ASCII (IDNA) host name or IP literal
    port: int
    path: str  # path and query, percent-encoded

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_target(url: str, allowed_schemes: tuple[str, ...]) -> Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise FetchError(R.BAD_URL, f"unparsable URL: {exc}", url) from None
    scheme = parts.scheme.lower()
    if scheme not in allowed_schemes:
        raise FetchError(R.BAD_SCHEME, f"scheme {scheme or '(none)'!r} not allowed", url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchError(R.BAD_URL, "URL has no host", url)
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise FetchError(R.BAD_URL, f"host {host!r} is not a valid name", url) from None
    path = quote(parts.path or "/", safe=PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=PATH_SAFE + "=&")
    default_port = 443 if scheme == "https" else 80
    return Target(url, scheme, host, port or default_port, path)


def host_name(host: str) -> str:
    """A host as written in a manifest ("Example.org:8080", "[::1]:80") -> politeness key."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name.rstrip(".") if sep and port.isdigit() else host.rstrip(".")


@dataclass
class Response:
    status: int
    reason_phrase: str
    final_url: str
    headers: http.client.HTTPMessage
    body: bytes
    redirects: int
    latency_s: float  # request sent -> response headers, last hop

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class Resolver:
    """Host name -> addresses, cached per process; each lookup bounded by the time left."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[float, list[tuple] | FetchError]] = {}
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int, timeout: float) -> list[tuple]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, (host, port))]
        key = (host, port)
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] > time.monotonic():
            if isinstance(cached[1], FetchError):
                raise cached[1]
            return cached[1]
        result: list[tuple] | FetchError = self._lookup(host, port, timeout)
        ttl = DNS_FAILURE_TTL_S if isinstance(result, FetchError) else DNS_TTL_S
        with self._lock:
            self._cache[key] = (time.monotonic() + ttl, result)
        if isinstance(result, FetchError):
            raise result
        return result

    @staticmethod
    def _lookup(host: str, port: int, timeout: float) -> list[tuple] | FetchError:
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["ok"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                box["error"] = exc

        # getaddrinfo cannot be interrupted: run it aside and stop waiting at the deadline.
        thread = threading.Thread(target=run, name="dns", daemon=True)
        thread.start()
        thread.join(max(0.0, timeout))
        if "ok" in box:
            return [(family, addr) for family, _, _, _, addr in box["ok"]]  # type: ignore[union-attr]
        if "error" in box:
            return FetchError(R.DNS, f"cannot resolve {host}: {box['error']}")
        return FetchError(R.DNS, f"resolving {host} took longer than {timeout:.1f} s")


RESOLVER = Resolver()
_TLS_CONTEXT: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        _TLS_CONTEXT = ssl.create_default_context()
    return _TLS_CONTEXT


def _new_connection(target: Target, addresses: list[tuple], timeout: float):
    def create(_address, conn_timeout, source_address=None):
        last: OSError | None = None
        for family, addr in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(conn_timeout)
            try:
                sock.connect(addr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError("no address to connect to")

    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=tls_context())  # fmt: skip
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    # Connect to the address resolved under our deadline; Host header and SNI keep the name.
    conn._create_connection = create  # type: ignore[attr-defined]
    return conn


class _ThreadConnections(threading.local):
    def __init__(self) -> None:
        self.pool: OrderedDict[tuple[str, str, int], http.client.HTTPConnection] = OrderedDict()


_CONNECTIONS = _ThreadConnections()


def _take_connection(target: Target) -> http.client.HTTPConnection | None:
    return _CONNECTIONS.pool.pop((target.scheme, target.host, target.port), None)


def _keep_connection(target: Target, conn: http.client.HTTPConnection) -> None:
    pool = _CONNECTIONS.pool
    pool[(target.scheme, target.host, target.port)] = conn
    while len(pool) > CONNECTIONS_PER_THREAD:
        _, old = pool.popitem(last=False)
        old.close()


def close_thread_connections() -> None:
    while _CONNECTIONS.pool:
        _CONNECTIONS.pool.popitem()[1].close()


def _classify(exc: BaseException, fired: bool, deadline_s: float) -> FetchError:
    if fired or isinstance(exc, TimeoutError | socket.timeout):
        what = "total deadline" if fired else "socket timeout"
        return FetchError(R.TIMEOUT, f"{what} passed ({deadline_s:.1f} s budget): {exc!r}")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return FetchError(R.TLS, f"TLS error: {exc}")
    if isinstance(exc, http.client.InvalidURL):
        return FetchError(R.BAD_URL, str(exc))
    if isinstance(exc, http.client.IncompleteRead):
        return FetchError(R.TRUNCATED_BODY, f"connection closed mid-body: {exc!r}")
    if isinstance(exc, OSError):
        return FetchError(R.CONNECTION, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, http.client.HTTPException):
        return FetchError(R.BAD_RESPONSE, f"{type(exc).__name__}: {exc}")
    raise exc


@dataclass
class Fetcher:
    """Fetch one URL (following redirects) under one Deadline."""

    user_agent: str
    allowed_schemes: tuple[str, ...]
    max_redirects: int
    max_body_bytes: int
    read_timeout_s: float
    resolver: Resolver = RESOLVER

    def fetch(
        self,
        url: str,
        deadline: Deadline,
        before_request: Callable[[Target], None] = lambda target: None,
        max_body_bytes: int | None = None,
        truncate: bool = False,
    ) -> Response:
        """GET url. `before_request` runs (deadline paused) before each hop: politeness, robots.
        A success body over the limit is too_large_body, or cut at the limit when `truncate`."""
        limit = self.max_body_bytes if max_body_bytes is None else max_body_bytes
        seen = {url}
        current = url
        redirects = 0
        while True:
            target = parse_target(current, self.allowed_schemes)
            with deadline.paused():
                before_request(target)
            try:
                response = self._exchange(target, deadline, limit, truncate)
            except FetchError as exc:
                exc.final_url = current
                raise
            response.redirects = redirects
            if response.status not in REDIRECT_STATUSES:
                return response
            location = response.headers.get("Location")
            if not location:
                raise FetchError(R.BAD_REDIRECT, f"{response.status} without Location", current)
            following = urljoin(current, location.strip())
            if following in seen:
                raise FetchError(R.REDIRECT_LOOP, f"redirect back to {following}", current)
            redirects += 1
            if redirects > self.max_redirects:
                raise FetchError(R.TOO_MANY_REDIRECTS, f"more than {self.max_redirects} redirects", current)
            seen.add(following)
            current = following

    def _timeout(self, deadline: Deadline) -> float:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise FetchError(R.TIMEOUT, f"total deadline passed ({deadline.budget_s:.1f} s)")
        return min(self.read_timeout_s, remaining)

    def _exchange(self, target: Target, deadline: Deadline, limit: int, truncate: bool = False) -> Response:
        addresses = self.resolver.resolve(target.host, target.port, self._timeout(deadline))
        conn = _take_connection(target)
        if conn is not None:
            try:
                return self._on_connection(conn, target, deadline, limit, truncate)
            except FetchError as exc:
                # The server may have closed this kept-alive connection while it was idle. The
                # attempt still counts (a reset after the server read the request looks the same,
                # and counting both keeps `attempts` deterministic); the caller retries at once.
                exc.reused_connection = exc.reason == R.CONNECTION
                raise
        conn = _new_connection(target, addresses, self._timeout(deadline))
        try:
            conn.connect()
        except Exception as exc:  # noqa: BLE001 - mapped to a reason code
            conn.close()
            raise _classify(exc, False, deadline.budget_s) from None
        return self._on_connection(conn, target, deadline, limit, truncate)

    def _on_connection(
        self,
        conn: http.client.HTTPConnection,
        target: Target,
        deadline: Deadline,
        limit: int,
        truncate: bool,
    ) -> Response:
        sock = conn.sock
        end = deadline.end()
        watch = REAPER.watch(sock, end if end is not None else time.monotonic() + deadline.budget_s)
        keep = False
        try:
            sock.settimeout(self._timeout(deadline))
            sent = time.monotonic()
            conn.putrequest("GET", target.path, skip_accept_encoding=True)
            conn.putheader("User-Agent", self.user_agent)
            conn.putheader("Accept", "image/*, */*;q=0.5")
            conn.putheader("Accept-Encoding", "identity")
            conn.endheaders()
            resp = conn.getresponse()
            latency = time.monotonic() - sent
            ok = 200 <= resp.status < 300
            strict = ok and not truncate
            body, complete = self._read_body(resp, sock, deadline, limit if ok else DRAIN_LIMIT, strict)
            if watch.fired:  # the reaper cut the body short
                raise FetchError(R.TIMEOUT, f"total deadline passed ({deadline.budget_s:.1f} s)")
            keep = complete and not resp.will_close
            return Response(resp.status, resp.reason, target.url, resp.headers, body, 0, latency)
        except FetchError as exc:
            if watch.fired and exc.reason != R.TIMEOUT:
                raise FetchError(
                    R.TIMEOUT, f"total deadline passed ({deadline.budget_s:.1f} s): {exc.detail}"
                ) from None
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a reason code
            raise _classify(exc, watch.fired, deadline.budget_s) from None
        finally:
            REAPER.unwatch(watch)
            if keep and not watch.fired:
                _keep_connection(target, conn)
            else:
                conn.close()

    def _read_body(
        self,
        resp: http.client.HTTPResponse,
        sock: socket.socket,
        deadline: Deadline,
        limit: int,
        strict: bool,
    ) -> tuple[bytes, bool]:
        """Body up to `limit` bytes; (body, fully read). Over the limit: too_large_body when
        `strict` (a success body), else the partial body (a redirect or error page)."""
        declared = resp.getheader("Content-Length")
        if strict and declared and declared.isdigit() and int(declared) > limit:
            raise FetchError(R.TOO_LARGE_BODY, f"Content-Length {declared} > {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            sock.settimeout(self._timeout(deadline))
            chunk = resp.read1(READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if strict:
                    raise FetchError(R.TOO_LARGE_BODY, f"body over {limit} bytes")
                return b"".join(chunks), False
        if resp.length:  # bytes announced but never sent
            raise FetchError(R.TRUNCATED_BODY, f"got {size} of {size + resp.length} bytes announced")
        resp.close()
        return b"".join(chunks), True
