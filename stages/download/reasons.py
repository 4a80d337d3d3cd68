"""Stable reason codes of stage 02 and the status each one implies.

Permanent problems (the server answered and the answer will not change: 404, not an image, too
small, robots) make a row `dropped`; transient ones (429, 5xx, timeouts, DNS, connection, an open
circuit) make it `failed`, which `tolpipe retry download --reason ...` can re-attempt. Every code is
documented in manifests/README.md (section 02 download).
"""

from __future__ import annotations

# --- transient: status `failed`, retryable by `tolpipe retry download --reason CODE` -----------
HTTP_408 = "http_408"
HTTP_429 = "http_429"
HTTP_5XX = "http_5xx"  # any 5xx status; the exact one is in `http_status` and `detail`
TIMEOUT = "timeout"  # total deadline or socket inactivity timeout passed
DNS = "dns"  # the host name does not resolve (or resolution timed out)
CONNECTION = "connection"  # refused, reset, closed early, unreachable
TLS = "tls"  # TLS handshake or certificate error
TRUNCATED_BODY = "truncated_body"  # fewer bytes than Content-Length announced
BAD_RESPONSE = "bad_response"  # not valid HTTP (bad status line, header too long)
HOST_CIRCUIT_OPEN = "host_circuit_open"  # host's circuit breaker open: not attempted
ROBOTS_UNAVAILABLE = "robots_unavailable"  # robots.txt answered 5xx/429 (RFC 9309: disallow)
INTERNAL_ERROR = "internal_error"  # an unexpected exception; `detail` has it (please report)

# --- permanent: status `dropped` --------------------------------------------------------------
HTTP_4XX_PREFIX = "http_"  # http_404, http_403, http_410, ...: any 4xx other than 408 and 429
BAD_URL = "bad_url"  # unparsable URL or host name
BAD_SCHEME = "bad_scheme"  # scheme not in download.allowed_schemes (also on a redirect)
REDIRECT_LOOP = "redirect_loop"  # a redirect chain came back to a URL it had visited
TOO_MANY_REDIRECTS = "too_many_redirects"  # more than download.max_redirects redirects
BAD_REDIRECT = "bad_redirect"  # a 3xx without a usable Location header
ROBOTS_DISALLOWED = "robots_disallowed"  # robots.txt disallows the URL for our user agent
X_ROBOTS_TAG = "x_robots_tag"  # X-Robots-Tag carries a blocked directive (noai, noimageai)
TOO_LARGE_BODY = "too_large_body"  # body (or Content-Length) above download.max_body_bytes
EMPTY_BODY = "empty_body"  # a success status with zero bytes
NOT_IMAGE = "not_image"  # Pillow cannot identify the bytes as an image (HTML, text, ...)
DECODE_ERROR = "decode_error"  # identified as an image but cannot be decoded (truncated, corrupt)
DECOMPRESSION_BOMB = "decompression_bomb"  # more pixels than download.max_pixels
TOO_SMALL = "too_small"  # shortest side of the original below download.min_side
UNEXPECTED_STATUS = "unexpected_status"  # 1xx or other status that is neither success nor error
# Local images (pipeline.local_images; codes shared with that module):
UNSAFE_PATH = "unsafe_path"  # the member would read outside its root ('..', absolute, symlink)
LOCAL_MISSING = "local_missing"  # not in the archive, or no such file under the folder
LOCAL_READ_ERROR = "local_read_error"  # corrupt archive or I/O error (fix it, rerun with --rebuild)

TRANSIENT: frozenset[str] = frozenset(
    {
        HTTP_408,
        HTTP_429,
        HTTP_5XX,
        TIMEOUT,
        DNS,
        CONNECTION,
        TLS,
        TRUNCATED_BODY,
        BAD_RESPONSE,
        HOST_CIRCUIT_OPEN,
        ROBOTS_UNAVAILABLE,
        INTERNAL_ERROR,
    }
)

# What `tolpipe retry download --reason ...` accepts: every transient code (only failed rows are
# ever retried).
RETRYABLE: tuple[str, ...] = tuple(sorted(TRANSIENT))

# Transient codes that count towards a host's circuit breaker: the host itself misbehaves.
# `dns` is left out because a host's resolution is cached per run: all its rows share the outcome.
CIRCUIT_COUNTED: frozenset[str] = TRANSIENT - {
    DNS,
    HOST_CIRCUIT_OPEN,
    ROBOTS_UNAVAILABLE,
    INTERNAL_ERROR,
}


def http_reason(status: int) -> str:
    """Reason code of an HTTP error status."""
    if status >= 500:
        return HTTP_5XX
    return f"{HTTP_4XX_PREFIX}{status}"


def status_of(reason: str) -> str:
    """Manifest status (`failed` or `dropped`) implied by a reason code."""
    return "failed" if reason in TRANSIENT else "dropped"


class ReasonError(Exception):
    """A row-level problem with its stable reason code and a free-text detail for the manifest."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
