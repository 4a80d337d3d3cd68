"""Rebuild demo/data/scenes/ (museum and camera-trap negatives, composite camera-trap frames) and
demo/data/planted/ (duplicates and near-duplicates of corpus photos), byte for byte.

- Documents, a collection photo and empty ground frames come from scikit-image's sample data
  (public domain or CC0; the wheel is fetched with `pip download`, nothing is installed). Pages
  narrower than stage 02's 224 px minimum are enlarged 2x so they reach the filters.
- The specimen label is drawn here (Pillow's default font): generated, public domain.
- Composite camera-trap frames paste a corpus photo, shrunk, on an empty frame (a night one is
  grey with sensor noise, as infrared frames are). They are labelled composites in CREDITS.csv.
- Planted copies: exact byte copies, JPEG re-encodes and resizes (shortest side 240 px) of
  corpus photos.

    .venv/bin/python -m demo.extract_scenes                 # runs pip download scikit-image
    .venv/bin/python -m demo.extract_scenes --wheel FILE    # an already downloaded wheel
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from demo.corpus import DATA_DIR, corpus_dir

SKIMAGE_VERSION = "0.26.0"
JPEG_QUALITY = 90  # shipped scenes: good quality, small files
NOISE_SEED = 7
SCENES = DATA_DIR / "scenes"
PLANTED = DATA_DIR / "planted"
SKIMAGE_SOURCE = f"PyPI scikit-image=={SKIMAGE_VERSION}: skimage/data/"

# file -> (skimage file, enlarge, subject, licence, author, source)
FROM_SKIMAGE = {
    "document_page.jpg": (
        "page.png",
        2,
        "scanned printed page (museum negative: document)",
        "public domain",
        "scikit-image contributors",
        "skimage.data.page(); scanned page",
    ),
    "document_text.jpg": (
        "text.png",
        2,
        "photo of a sign with text (museum negative: document)",
        "public domain",
        "Wikipedia user Corner",
        "https://en.wikipedia.org/wiki/File:Corner.png (skimage.data.text)",
    ),
    "collection_coins.jpg": (
        "coins.png",
        1,
        "Greek coins, a museum collection photo (museum negative)",
        "no known copyright restrictions",
        "Brooklyn Museum",
        "https://www.brooklynmuseum.org/opencollection/archives/image/51611 (skimage.data.coins)",
    ),
    "empty_grass.jpg": (
        "grass.png",
        1,
        "empty grass frame (camera-trap negative)",
        "CC0-1.0",
        "linolafett",
        "https://www.deviantart.com/linolafett/art/Grass-01-434853879 (skimage.data.grass)",
    ),
    "empty_gravel.jpg": (
        "gravel.png",
        1,
        "empty gravel frame (camera-trap negative)",
        "CC0-1.0",
        "CC0Textures",
        "https://cc0textures.com/view.php?tex=Gravel04 (skimage.data.gravel)",
    ),
}
# Composite camera-trap frames: file -> (background scene, corpus photo, night, placement).
COMPOSITES = {
    "composite_night_sus_scrofa.jpg": ("empty_grass.jpg", "sus_scrofa_domesticus.jpg", True, (150, 210)),
    "composite_day_alces_alces.jpg": ("empty_gravel.jpg", "alces_alces.jpg", False, (120, 160)),
}
# Planted copies: file -> (corpus photo, kind). Kinds: exact (same bytes), reencode (JPEG q=70),
# small (shrunk to a shortest side of SMALL_SIDE px, q=90).
PLANTED_COPIES = {
    "copy_exact_bison_bison.jpg": ("bison_bison.jpg", "exact"),
    "copy_exact_ara_macao.jpg": ("ara_macao.jpg", "exact"),
    "copy_reencode_lemur_catta.jpg": ("lemur_catta.jpg", "reencode"),
    "copy_small_koala.jpg": ("phascolarctos_cinereus.jpg", "small"),
    # Copies of the held-out test photos (demo/heldout.py): leaks the dedup stage must catch.
    "leak_exact_ochotona_princeps.jpg": ("ochotona_princeps.jpg", "exact"),
    "leak_reencode_strix_aluco.jpg": ("strix_aluco.jpg", "reencode"),
    "leak_small_giraffa_camelopardalis_2.jpg": ("giraffa_camelopardalis_2.jpg", "small"),
}
REENCODE_QUALITY = 70
# Shortest side of the shrunk copies: above stage 02's 224 px minimum, so they reach dedup.
SMALL_SIDE = 240
CREDITS_HEADER = ["file", "subject", "license", "author", "source", "origin"]


def _jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _skimage_wheel(wheel: Path | None, scratch: Path) -> Path:
    if wheel is not None:
        return wheel
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(scratch),
            f"scikit-image=={SKIMAGE_VERSION}",
        ],
        check=True,
    )
    return next(scratch.glob("scikit_image-*.whl"))


def _label() -> Image.Image:
    """A herbarium specimen label, drawn: the kind of image museum records often carry."""
    image = Image.new("RGB", (640, 400), (236, 230, 212))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=26)
    lines = [
        "HERBARIUM TOLPIPE DEMO",
        "",
        "Dugesia mexicana A.Gray",
        "Asteraceae",
        "Chihuahua, Mexico",
        "leg. C. G. Pringle  No. 1208",
        "det. 1886",
    ]
    for i, line in enumerate(lines):
        draw.text((36, 30 + 48 * i), line, fill=(40, 35, 30), font=font)
    draw.rectangle((12, 12, 627, 387), outline=(60, 50, 40), width=3)
    return image


def _composite(
    background: Image.Image, photo: Image.Image, night: bool, size: tuple[int, int]
) -> Image.Image:
    frame = background.convert("RGB").copy()
    animal = photo.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    frame.paste(animal, ((frame.width - size[0]) // 2, frame.height - size[1] - 40))
    if night:
        grey = np.asarray(frame.convert("L"), dtype=np.float32)
        noise = np.random.default_rng(NOISE_SEED).normal(0.0, 12.0, grey.shape)
        frame = Image.fromarray(np.clip(grey * 0.8 + noise, 0, 255).astype(np.uint8)).convert("RGB")
    return frame


def _planted(kind: str, source: Path) -> bytes:
    if kind == "exact":
        return source.read_bytes()
    with Image.open(source) as image:
        image = image.convert("RGB")
        if kind == "reencode":
            return _jpeg(image, REENCODE_QUALITY)
        scale = SMALL_SIDE / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        return _jpeg(image.resize(size, Image.Resampling.LANCZOS))


def build(wheel: Path | None) -> None:
    SCENES.mkdir(parents=True, exist_ok=True)
    PLANTED.mkdir(parents=True, exist_ok=True)
    credits = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        zipfile.ZipFile(_skimage_wheel(wheel, Path(scratch))) as archive,
    ):
        for name, (member, enlarge, subject, licence, author, source) in FROM_SKIMAGE.items():
            with Image.open(io.BytesIO(archive.read(f"skimage/data/{member}"))) as image:
                image = image.convert("RGB")
                if enlarge > 1:
                    image = image.resize(
                        (image.width * enlarge, image.height * enlarge), Image.Resampling.LANCZOS
                    )
                (SCENES / name).write_bytes(_jpeg(image))
            credits.append([name, subject, licence, author, source, SKIMAGE_SOURCE + member])
    (SCENES / "specimen_label.jpg").write_bytes(_jpeg(_label()))
    credits.append(
        [
            "specimen_label.jpg",
            "herbarium specimen label (museum negative), generated",
            "public domain",
            "tolpipe",
            "drawn by demo/extract_scenes.py",
            "generated",
        ]
    )
    for name, (background, photo, night, size) in COMPOSITES.items():
        with Image.open(SCENES / background) as back, Image.open(corpus_dir() / photo) as animal:
            (SCENES / name).write_bytes(_jpeg(_composite(back, animal, night, size)))
        when = "night infrared look" if night else "daylight"
        credits.append(
            [
                name,
                f"COMPOSITE camera-trap frame ({when}): {photo} pasted on {background}",
                "public domain",
                "tolpipe (composite of credited files)",
                f"photos/{photo} + scenes/{background}",
                "generated composite",
            ]
        )
    _write_credits(SCENES / "CREDITS.csv", credits)
    planted = []
    for name, (photo, kind) in PLANTED_COPIES.items():
        (PLANTED / name).write_bytes(_planted(kind, corpus_dir() / photo))
        planted.append(
            [
                name,
                f"{kind} copy of photos/{photo}",
                "as photos/" + photo,
                "see photos/CREDITS.csv",
                f"photos/{photo}",
                f"generated ({kind})",
            ]
        )
    _write_credits(PLANTED / "CREDITS.csv", planted)


def _write_credits(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CREDITS_HEADER)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded scikit-image wheel")
    build(parser.parse_args(argv).wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
