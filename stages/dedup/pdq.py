"""PDQ hashes of images, computed one canonical way for training and test images alike.

An image is decoded to luma (a JPEG with Pillow's draft mode: libjpeg decodes only the Y channel,
at 1/2, 1/4 or 1/8 scale when that still leaves `draft_factor` x `canonical_px` pixels on both
sides), turned upright by its EXIF orientation, laid on white where it is transparent, resized
to a `canonical_px` square with an anti-aliased bilinear filter, and hashed by pdqhash (Meta's
PDQ: 256 bits and a quality score 0-100). The fixed square gives PDQ's own downsampling the same
window for every input size: without it a photo and its 50% resize differ by up to 32 bits on the
shipped photos, with it by at most a few (see stages/dedup/defaults.toml).

The hash is kept as 32 bytes, most significant bit first: its hex is the usual PDQ hex string.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.orientation import TRANSPOSE, exif_orientation
from stages.dedup.settings import HashSettings

WHITE = (255, 255, 255, 255)
HASH_BYTES = 32

# Errors an undecodable image raises (Pillow's own and those of its plugins).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
# Large test images only warn below twice Pillow's limit; the error above it is kept.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class PdqHash:
    code: bytes  # 32 bytes, most significant bit first
    quality: int

    @property
    def hex(self) -> str:
        return self.code.hex()


def _luma(im: Image.Image) -> Image.Image:
    """8-bit luma; transparent pixels over white (as the download stage stores them)."""
    if im.mode == "L":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        background = Image.new("RGBA", im.size, WHITE)
        background.alpha_composite(im.convert("RGBA"))
        return background.convert("L")
    if im.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    if im.mode in ("RGB", "P", "1"):
        return im.convert("L")
    return im.convert("RGB").convert("L")


def canonical_luma(data: bytes, settings: HashSettings) -> np.ndarray:
    """The `canonical_px` square of luma an image is hashed from (uint8, 2-D)."""
    side = settings.canonical_px
    with Image.open(io.BytesIO(data)) as im:
        if im.format in ("JPEG", "MPO"):
            im.draft("L", (side * settings.draft_factor, side * settings.draft_factor))
        orientation = exif_orientation(im)
        im.load()
        luma = _luma(im)
    if orientation != 1:
        luma = luma.transpose(TRANSPOSE[orientation])
    return np.asarray(luma.resize((side, side), Image.Resampling.BILINEAR))


def hash_luma(luma: np.ndarray) -> PdqHash:
    """PDQ of a luma image. pdqhash takes RGB; equal channels give back the luma exactly."""
    import pdqhash

    bits, quality = pdqhash.compute(np.broadcast_to(luma[:, :, None], (*luma.shape, 3)))
    return PdqHash(np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality))


def pdq_hash(data: bytes, settings: HashSettings) -> PdqHash:
    """The PDQ hash of an encoded image; raises one of DECODE_ERRORS when it cannot be decoded."""
    return hash_luma(canonical_luma(data, settings))


def try_hash(data: bytes, settings: HashSettings) -> tuple[PdqHash | None, str | None]:
    """(hash, None), or (None, 'ExceptionType: message') for an image that cannot be decoded."""
    try:
        return pdq_hash(data, settings), None
    except DECODE_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"
