"""Decode, verify, orient, shrink and re-encode one downloaded image.

Rules (BioCLIP 2 / TreeOfLife-200M): shortest side of the original < min_side -> too_small;
longest side > max_side -> shrunk to max_side keeping the aspect ratio with an area (box) filter,
never upscaled; stored as JPEG. Decoding is what bounds throughput, so JPEGs are decoded with
Pillow's draft mode directly at 1/2, 1/4 or 1/8 scale when the target is at least that much
smaller, and the box resize then makes the exact size. Every stored image is re-encoded (which
also drops metadata such as GPS EXIF) with fixed settings, so the same input gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from pipeline.orientation import SWAPS_SIDES, TRANSPOSE, exif_orientation
from stages.download import reasons as R

# Formats Pillow may open (JPEG includes multi-picture JPEGs). Others (EPS would run
# Ghostscript, PSD, ...) are `not_image`.
Image.init()
IMAGE_FORMATS = tuple(f for f in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP") if f in Image.OPEN)
# Background for transparent images (white, as img2dataset's alpha matting).
BACKGROUND = (255, 255, 255)

# Images between Pillow's limit and twice it only warn; ours are rejected explicitly below with
# a reason, so the warning would be noise in worker logs.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(R.ReasonError):
    def __init__(self, reason: str, detail: str, width: int | None = None, height: int | None = None):
        super().__init__(reason, detail)
        self.width = width
        self.height = height


@dataclass(frozen=True)
class ImageRules:
    min_side: int
    max_side: int
    jpeg_quality: int
    jpeg_subsampling: int  # 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0
    max_pixels: int


@dataclass(frozen=True)
class StoredImage:
    jpeg: bytes
    width: int  # original, as displayed (EXIF orientation applied)
    height: int
    stored_width: int
    stored_height: int
    stored_md5: str


class _ScratchFile(threading.local):
    """A per-thread real file to encode into: Pillow releases the GIL while encoding to a file
    descriptor, but holds it while encoding to a BytesIO (threads would then encode one at a
    time)."""

    handle: io.FileIO | None = None

    def get(self) -> io.FileIO:
        if self.handle is None:
            if hasattr(os, "memfd_create"):  # in memory, no disk I/O (Linux)
                fd = os.memfd_create("tolpipe-jpeg")
            else:
                fd, path = tempfile.mkstemp(prefix="tolpipe-jpeg-")
                os.unlink(path)
            self.handle = io.FileIO(fd, "w+b")
        return self.handle


_SCRATCH = _ScratchFile()


def encode_jpeg(im: Image.Image, quality: int, subsampling: int) -> bytes:
    """Deterministic baseline JPEG bytes of an RGB image."""
    scratch = _SCRATCH.get()
    scratch.seek(0)
    scratch.truncate()
    im.save(scratch, "JPEG", quality=quality, subsampling=subsampling, optimize=False,
            progressive=False)  # fmt: skip
    size = scratch.tell()
    return os.pread(scratch.fileno(), size, 0)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Longest side to max_side keeping the aspect ratio; never upscale."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def open_image(body: bytes, rules: ImageRules) -> Image.Image:
    """Identify the bytes (header only, nothing decoded yet) and check the pixel limit."""
    if not body:
        raise ImageError(R.EMPTY_BODY, "zero-byte body")
    try:
        im = Image.open(io.BytesIO(body), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(R.DECOMPRESSION_BOMB, str(exc)) from None
    except UnidentifiedImageError:
        head = body[:16]
        raise ImageError(R.NOT_IMAGE, f"not an image of {IMAGE_FORMATS}; starts {head!r}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(R.DECODE_ERROR, f"header: {exc}") from None
    width, height = im.size
    if width * height > rules.max_pixels:
        raise ImageError(
            R.DECOMPRESSION_BOMB,
            f"{width}x{height} = {width * height} px > {rules.max_pixels}",
            width, height,
        )  # fmt: skip
    return im


def process(body: bytes, rules: ImageRules) -> StoredImage:
    """The stored JPEG of a downloaded body, or ImageError with a reason code."""
    im = open_image(body, rules)
    orientation = exif_orientation(im)
    raw_w, raw_h = im.size
    width, height = (raw_h, raw_w) if orientation in SWAPS_SIDES else (raw_w, raw_h)
    if min(width, height) < rules.min_side:
        raise ImageError(R.TOO_SMALL, f"{width}x{height}: shortest side < {rules.min_side}", width, height)
    # Work in the file's own (unoriented) coordinates; orient the small result at the end.
    out_w, out_h = target_size(raw_w, raw_h, rules.max_side)
    try:
        box = None
        if im.format in ("JPEG", "MPO") and (out_w, out_h) != (raw_w, raw_h):
            drafted = im.draft("RGB", (out_w, out_h))
            box = drafted[1] if drafted else None
        im.load()
        im = im if im.mode in ("RGB", "L") else _to_rgb(im)
        if im.size != (out_w, out_h):
            im = im.resize((out_w, out_h), Image.Resampling.BOX, box=box)
        im = _to_rgb(im)
        if orientation != 1:
            im = im.transpose(TRANSPOSE[orientation])
    except Image.DecompressionBombError as exc:
        raise ImageError(R.DECOMPRESSION_BOMB, str(exc), width, height) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(R.DECODE_ERROR, f"{type(exc).__name__}: {exc}", width, height) from None
    jpeg = encode_jpeg(im, rules.jpeg_quality, rules.jpeg_subsampling)
    return StoredImage(jpeg, width, height, im.width, im.height, md5_hex(jpeg))
