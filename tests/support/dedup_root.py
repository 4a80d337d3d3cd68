"""Work roots and test sets for stage 05 tests, from the shipped photos.

Training rows (served by the loopback server, taken 01 -> 04 through the real CLI): 41 of the 42
animal photos as citizen-science rows, the last as a museum specimen (outside PDQ's default
scope), a byte-identical copy of one photo under another name (an MD5 group of two), and a flat
grey image. The test set is a folder of images made from some of the photos: a JPEG re-encode, a 50%
resize, a slight and a strong blur (each must be caught by PDQ, the strong one a few bits away),
a crop and a mirror image (must not), a byte-exact copy (caught by MD5), a re-encode of the museum
photo (outside PDQ's scope by default), another flat grey image (another size and format: its PDQ
hash equals the flat training image's, but flat images have quality 0 and must not match), and a
photo that is not in the training data at all.
"""

from __future__ import annotations

import argparse
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

from tests.conftest import cli
from tests.support.filter_root import CITIZEN, Row, write_table
from tests.support.photo_corpus import corpus_dir, faces_dir, load_corpus
from tests.support.pipeline_root import settings

# Which photo each test image is made from, and how.
REENCODED = "panthera_onca.jpg"
RESIZED = "giraffa_camelopardalis.jpg"  # giraffa_camelopardalis_2.jpg: another photo, same species
BLURRED = "strix_aluco.jpg"
HEAVY_BLUR = "canis_lupus_familiaris.jpg"  # a few bits away: used to re-apply a smaller radius
CROPPED = "bison_bison.jpg"
MIRRORED = "lemur_catta.jpg"
EXACT = "ara_macao.jpg"
MUSEUM = "capros_aper.jpg"  # served as a museum specimen only; re-encoded in the test set
COPIED = "ursus_maritimus.jpg"  # served twice, under two names
FLAT_GREY = (128, 128, 128)  # a 320x256 JPEG in training, a 300x300 PNG in the test set
OUTSIDER = "grace_hopper.jpg"  # in the test set only

# Test ids (paths in the test folder) and the training photo each must (or must not) catch.
CAUGHT_PDQ = {"reencode/panthera_onca.jpg": REENCODED, "half/giraffa_camelopardalis.jpg": RESIZED,
              "blur/strix_aluco.jpg": BLURRED, "blur4/canis_lupus_familiaris.jpg": HEAVY_BLUR}  # fmt: skip
NOT_CAUGHT = {"crop/bison_bison.jpg": CROPPED, "mirror/lemur_catta.jpg": MIRRORED}
CAUGHT_MD5 = {"exact/ara_macao.jpg": EXACT}
NO_FACES = ["--set", "filter.face_image_types=[]"]  # stage 04 without models: every row passes


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def flat(rgb: tuple[int, int, int], size: tuple[int, int] = (320, 256)) -> bytes:
    return jpeg(Image.new("RGB", size, rgb), 95)


def training_rows(folder: Path) -> list[Row]:
    """Write the training files into `folder`; their rows, one host, in source order."""
    rows = []
    for i, photo in enumerate(load_corpus()):
        if photo.file_name == MUSEUM:
            continue
        shutil.copy(corpus_dir() / photo.file_name, folder / photo.file_name)
        rows.append(Row(photo.file_name, f"photo-{photo.file_name}", 0, f"occ-{i}", "HUMAN_OBSERVATION",
                        CITIZEN, scientific_name=photo.scientific_name))  # fmt: skip
    shutil.copy(corpus_dir() / MUSEUM, folder / f"museum-{MUSEUM}")
    rows.append(Row(f"museum-{MUSEUM}", f"museum-{MUSEUM}", 0, "occ-museum", "PRESERVED_SPECIMEN",
                    scientific_name="Capros aper"))  # fmt: skip
    (folder / "flat-grey.jpg").write_bytes(flat(FLAT_GREY))
    rows.append(Row("flat-grey.jpg", "flat-grey.jpg", 0, "occ-flat", "HUMAN_OBSERVATION", CITIZEN))
    shutil.copy(corpus_dir() / COPIED, folder / f"copy-{COPIED}")
    rows.append(Row(f"copy-{COPIED}", f"copy-{COPIED}", 0, "occ-copy", "HUMAN_OBSERVATION", CITIZEN,
                    scientific_name="Ursus maritimus"))  # fmt: skip
    return rows


def write_testset(folder: Path) -> Path:
    """The test set folder (ids: paths relative to it)."""
    def put(rel: str, data: bytes) -> None:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)

    def photo(name: str) -> Image.Image:
        with Image.open(corpus_dir() / name) as im:
            return im.convert("RGB")

    put("reencode/panthera_onca.jpg", jpeg(photo(REENCODED), 75))
    half = photo(RESIZED)
    put("half/giraffa_camelopardalis.jpg", jpeg(half.resize((half.width // 2, half.height // 2),
                                                            Image.Resampling.LANCZOS)))  # fmt: skip
    put("blur/strix_aluco.jpg", jpeg(photo(BLURRED).filter(ImageFilter.GaussianBlur(1))))
    put("blur4/canis_lupus_familiaris.jpg", jpeg(photo(HEAVY_BLUR).filter(ImageFilter.GaussianBlur(4))))
    crop = photo(CROPPED)
    w, h = crop.size
    put("crop/bison_bison.jpg", jpeg(crop.crop((w // 10, h // 10, w - w // 10, h - h // 10))))
    put("mirror/lemur_catta.jpg", jpeg(ImageOps.mirror(photo(MIRRORED))))
    put("exact/ara_macao.jpg", (corpus_dir() / EXACT).read_bytes())
    put(f"museum/{MUSEUM}", jpeg(photo(MUSEUM), 75))
    out = io.BytesIO()
    Image.new("RGB", (300, 300), FLAT_GREY).save(out, "PNG")
    put("flat/grey.png", out.getvalue())
    put(f"outsider/{OUTSIDER}", (faces_dir() / OUTSIDER).read_bytes())
    (folder / "README.txt").write_text("not an image: skipped\n")
    return folder


def build_root(root: Path, table: Path, backbone: Path, batch_size: int) -> list[str]:
    """01 -> 04 on `table`; returns the --set arguments later runs of the same root use."""
    args = settings(backbone, batch_size=batch_size) + NO_FACES
    cli(root, *args, "run", "ingest", "--source", f"table:{table}")
    for stage in ("download", "taxonomy", "filter"):
        cli(root, *args, "run", stage)
    return args


@dataclass(frozen=True)
class Served:
    table: Path
    testset: Path


def serve_files(base: Path, server) -> Served:
    folder = base / "files"
    folder.mkdir(parents=True, exist_ok=True)
    rows = training_rows(folder)
    return Served(write_table(base / "training.csv", rows, server), write_testset(base / "testset"))


def run_testsets(root: Path, *argv: str, overrides: list[str] | None = None) -> str:
    """Run `tolpipe testsets ARGV` through the command's own parser and functions (in process);
    returns what it prints."""
    from pipeline.cli import _global_options
    from pipeline.config import load_config
    from stages.dedup.testsets import ACTIONS, add_parser

    parser = argparse.ArgumentParser(prog="tolpipe")
    _global_options(parser, suppress=False)
    add_parser(parser.add_subparsers(dest="command", required=True), _global_options)
    args = parser.parse_args(["--root", str(root), "testsets", *argv])
    args.overrides = [*args.overrides, *getattr(args, "overrides_after", []), *(overrides or [])]
    config = load_config(root, args.config, args.overrides)
    return ACTIONS[args.testsets_action](Path(args.root), config, args)
