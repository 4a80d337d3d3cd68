"""Images at shard time: the stored JPEG bytes as they are, or, when shard.resize_shortest_side
is set, shrunk so the shortest side is that many pixels, keeping the aspect ratio (never
squashed, never enlarged). Shrinking decodes with Pillow's JPEG draft mode (1/2, 1/4, 1/8
scale when the target is that much smaller), box-resizes to the exact size and re-encodes a
baseline JPEG with fixed settings: the same bytes in give the same bytes out."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


class ImageUnreadable(ValueError):
    """The stored bytes could not be decoded for resizing."""


@dataclass(frozen=True)
class ShardImage:
    jpeg: bytes
    width: int
    height: int
    resized: bool

    @property
    def md5(self) -> str:
        return md5_hex(self.jpeg)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def shortest_side_size(width: int, height: int, shortest: int) -> tuple[int, int]:
    """(w, h) with min(w, h) == shortest and the aspect ratio kept; unchanged when the image is
    not larger than that."""
    side = min(width, height)
    if side <= shortest:
        return width, height
    scale = shortest / side
    if width <= height:
        return shortest, max(1, round(height * scale))
    return max(1, round(width * scale)), shortest


def shrink(jpeg: bytes, width: int, height: int, shortest: int, quality: int, subsampling: str) -> ShardImage:
    """The shard's image of stored bytes whose size 02 recorded (width x height)."""
    out_w, out_h = shortest_side_size(width, height, shortest)
    if shortest <= 0 or (out_w, out_h) == (width, height):
        return ShardImage(jpeg, width, height, resized=False)
    try:
        with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as im:
            drafted = im.draft("RGB", (out_w, out_h))
            box = drafted[1] if drafted else None
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            small = rgb.resize((out_w, out_h), Image.Resampling.BOX, box=box)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageUnreadable(f"{type(exc).__name__}: {exc}") from None
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=quality, subsampling=SUBSAMPLING[subsampling], optimize=False,
               progressive=False)  # fmt: skip
    return ShardImage(buffer.getvalue(), out_w, out_h, resized=True)
