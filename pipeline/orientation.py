"""EXIF orientation, read the same way wherever an image is decoded (02 stores upright images;
05 hashes test images, which are not stored by 02, upright too)."""

from __future__ import annotations

from PIL import Image

EXIF_ORIENTATION = 0x0112
# Orientation value -> the transpose that makes the image upright (1: already upright).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations whose transpose swaps width and height.
SWAPS_SIDES = {5, 6, 7, 8}


def exif_orientation(im: Image.Image) -> int:
    """The image's EXIF orientation, 1 when absent, unknown or unreadable (a broken EXIF block
    only loses the orientation)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001
        return 1
    return value if value in TRANSPOSE else 1
