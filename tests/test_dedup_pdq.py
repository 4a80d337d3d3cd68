"""PDQ hashing on the shipped photos, as the stage does it (canonical luma square, pdqhash): a
JPEG re-encode, a 50% resize and a slight blur of every photo stay within the default radius of
the photo as stage 02 stores it; crops, mirror images and other photos stay far beyond the search
radius; Pillow's draft decoding moves hashes by a few bits at most; flat images get quality 0;
transparency, EXIF orientation and undecodable bytes are handled."""

from __future__ import annotations

import io
from itertools import combinations

import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageFilter, ImageOps

from stages.dedup.pdq import PdqHash, canonical_luma, hash_luma, pdq_hash, try_hash
from stages.dedup.settings import HashSettings
from tests.support.photo_corpus import corpus_dir, load_corpus

SETTINGS = HashSettings(canonical_px=160, draft_factor=2)
NO_DRAFT = HashSettings(canonical_px=160, draft_factor=1000)  # draft never reduces
RADIUS = 10  # dedup.pdq_max_distance
SEARCH_RADIUS = 16  # dedup.pdq_search_radius
DRAFT_TOLERANCE = 8  # bits draft decoding may move a hash: well inside RADIUS


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def distance(a: PdqHash, b: PdqHash) -> int:
    return (int.from_bytes(a.code, "big") ^ int.from_bytes(b.code, "big")).bit_count()


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    found = {}
    for photo in load_corpus():
        with Image.open(corpus_dir() / photo.file_name) as im:
            found[photo.file_name] = im.convert("RGB")
    return found


@pytest.fixture(scope="module")
def stored(photos) -> dict[str, PdqHash]:
    """Each photo as stage 02 stores it (re-encoded at quality 95; none is above 720 px)."""
    return {name: pdq_hash(jpeg(im, 95), SETTINGS) for name, im in photos.items()}


def variants(im: Image.Image) -> dict[str, bytes]:
    w, h = im.size
    return {
        "reencode_q75": jpeg(im, 75),
        "resize_50": jpeg(im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        "blur_1px": jpeg(im.filter(ImageFilter.GaussianBlur(1))),
        "crop_10": jpeg(im.crop((w // 10, h // 10, w - w // 10, h - h // 10))),
        "mirror": jpeg(ImageOps.mirror(im)),
    }


def test_near_duplicates_of_every_photo_within_the_radius_others_far(photos, stored):
    worst: dict[str, int] = {}
    best_far: dict[str, int] = {}
    for name, im in photos.items():
        for kind, data in variants(im).items():
            d = distance(stored[name], pdq_hash(data, SETTINGS))
            if kind in ("crop_10", "mirror"):
                best_far[kind] = min(best_far.get(kind, 256), d)
            else:
                worst[kind] = max(worst.get(kind, 0), d)
    assert max(worst.values()) <= RADIUS, worst
    assert min(best_far.values()) > 2 * SEARCH_RADIUS, best_far
    others = min(distance(stored[a], stored[b]) for a, b in combinations(sorted(stored), 2))
    assert others > 2 * SEARCH_RADIUS
    assert {h.quality for h in stored.values()} == {100}


def test_draft_decoding_moves_hashes_by_a_few_bits_at_most(photos):
    """Large JPEGs (3x the photos: 960-1536 px) are decoded at 1/2 or 1/4 scale by the draft
    mode; the hash must stay within DRAFT_TOLERANCE of a full decode's."""
    moved = []
    for im in photos.values():
        big = jpeg(im.resize((im.width * 3, im.height * 3), Image.Resampling.LANCZOS))
        with Image.open(io.BytesIO(big)) as probe:
            probe.draft("L", (320, 320))
            assert probe.size[0] < im.width * 3  # the draft really reduced it
        moved.append(distance(pdq_hash(big, SETTINGS), pdq_hash(big, NO_DRAFT)))
    assert max(moved) <= DRAFT_TOLERANCE, sorted(moved)


def test_flat_images_get_quality_zero():
    for rgb in ((128, 128, 128), (40, 90, 160), (255, 255, 255)):
        found = pdq_hash(jpeg(Image.new("RGB", (320, 256), rgb), 95), SETTINGS)
        assert found.quality == 0


def test_transparent_pixels_are_white(photos):
    im = photos["panthera_onca.jpg"]
    rgba = im.convert("RGBA")
    alpha = Image.new("L", im.size, 255)
    alpha.paste(0, (0, 0, im.width // 4, im.height))  # the left quarter transparent
    rgba.putalpha(alpha)
    png = io.BytesIO()
    rgba.save(png, "PNG")
    flattened = im.copy()
    flattened.paste((255, 255, 255), (0, 0, im.width // 4, im.height))
    assert distance(pdq_hash(png.getvalue(), SETTINGS), pdq_hash(jpeg(flattened, 95), SETTINGS)) <= 4


def test_exif_orientation_is_applied(photos):
    im = photos["strix_aluco.jpg"]
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels must be turned 90 degrees clockwise to be upright
    rotated = io.BytesIO()
    im.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=95, exif=exif.tobytes())
    assert distance(pdq_hash(rotated.getvalue(), SETTINGS), pdq_hash(jpeg(im, 95), SETTINGS)) <= 4


def test_canonical_square_and_luma_hash_is_pdqhash_on_grey_rgb(photos):
    luma = canonical_luma(jpeg(photos["bison_bison.jpg"]), SETTINGS)
    assert luma.shape == (160, 160) and luma.dtype == np.uint8
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.stack([luma] * 3, axis=2)))
    found = hash_luma(luma)
    assert found.code == np.packbits(bits.astype(np.uint8)).tobytes() and found.quality == quality
    assert len(found.hex) == 64


def test_undecodable_bytes_give_an_error_not_a_hash():
    found, error = try_hash(b"\xff\xd8\xff\xe0 not really a jpeg", SETTINGS)
    assert found is None and error
    assert error.split(":")[0] in ("OSError", "UnidentifiedImageError", "SyntaxError")
