"""The shipped real-photo corpus: files, image sizes, licences, names; and its extraction code."""

from __future__ import annotations

import csv
import re
import struct
import zlib

import pytest
from PIL import Image

from demo.extract_gcompris import RccError, parse_credits, read_rcc
from tests.support.photo_corpus import RANKS, corpus_dir, faces_dir, load_corpus

LONGEST_SIDE = 512  # shipped photos are downscaled to this
MIN_SHORT_SIDE = 224  # stage 02 drops anything smaller (download.min_side)
MAX_CORPUS_BYTES = 3_000_000
LICENCES = {"public domain", "CC0-1.0"}
BINOMIAL = re.compile(r"^[A-Z][a-z]+ [a-z]+( [a-z]+)?$")  # genus species [infraspecific]
UNINOMIAL = re.compile(r"^[A-Z][a-z]+$")

CORPUS = load_corpus()


def test_credits_list_every_shipped_photo_once():
    listed = [photo.file_name for photo in CORPUS]
    assert len(listed) == len(set(listed))
    assert set(listed) == {path.name for path in corpus_dir().glob("*.jpg")}
    assert 40 <= len(listed) <= 60


@pytest.mark.parametrize("photo", CORPUS, ids=lambda photo: photo.file_name)
def test_photo_is_a_downscaled_jpeg_stage_02_accepts(photo):
    with Image.open(photo.path) as image:
        assert image.format == "JPEG"
        image.verify()
    with Image.open(photo.path) as image:
        image.load()  # full decode, not only the header
        assert image.mode == "RGB"
        assert max(image.size) <= LONGEST_SIDE
        assert min(image.size) >= MIN_SHORT_SIDE


def test_corpus_stays_small():
    total = sum(photo.path.stat().st_size for photo in CORPUS)
    assert total < MAX_CORPUS_BYTES


@pytest.mark.parametrize("photo", CORPUS, ids=lambda photo: photo.file_name)
def test_photo_is_public_domain_or_cc0_with_credits(photo):
    assert photo.license in LICENCES
    assert photo.author.strip()
    assert photo.source.startswith("https://")
    assert photo.origin.startswith("gcompris-qt-data ")


@pytest.mark.parametrize("photo", CORPUS, ids=lambda photo: photo.file_name)
def test_scientific_name_agrees_with_the_ranks(photo):
    ranks = photo.ranks
    assert ranks["kingdom"] == "Animalia"
    for rank in RANKS[:-1]:
        assert ranks[rank] == "" or UNINOMIAL.match(ranks[rank]), rank
    if ranks["species"]:
        assert BINOMIAL.match(photo.scientific_name)
        assert photo.scientific_name.startswith(ranks["species"])
        assert ranks["species"].split()[0] == ranks["genus"]
    else:  # identified above species: the name is the lowest stated rank
        assert UNINOMIAL.match(photo.scientific_name)
        assert photo.scientific_name == next(ranks[r] for r in reversed(RANKS) if ranks[r])
    assert photo.common_name.strip()


def test_most_photos_are_identified_to_species():
    at_species = [photo for photo in CORPUS if photo.species]
    assert len(at_species) >= 0.9 * len(CORPUS)


def test_face_photos_are_public_domain_jpegs():
    with open(faces_dir() / "CREDITS.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["file"] for row in rows} == {path.name for path in faces_dir().glob("*.jpg")}
    assert len(rows) == 2
    for row in rows:
        assert row["license"] == "public domain" and row["author"] and row["source"]
        with Image.open(faces_dir() / row["file"]) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB"
            assert max(image.size) == LONGEST_SIDE and min(image.size) >= MIN_SHORT_SIDE


# ---- the .rcc reader and the README parser used by demo/extract_gcompris.py ----------


def build_rcc(version: int) -> bytes:
    """A Qt resource collection laid out as Qt's rcc writes it (breadth-first tree):
    /top.txt (stored), /a/x.txt (stored), /a/y.bin (zlib, qCompress framing)."""
    compressed_body = b"compressible " * 50
    entries = [  # (name, flags, child count or payload, first child)
        ("", 0x02, 2, 1), ("a", 0x02, 2, 3), ("top.txt", 0x00, b"top level", None),
        ("x.txt", 0x00, b"inside a", None),
        ("y.bin", 0x01, struct.pack(">I", len(compressed_body)) + zlib.compress(compressed_body),
         None),
    ]  # fmt: skip
    names, data, tree = b"", b"", b""
    for name, flags, value, first in entries:
        encoded = name.encode("utf-16-be")
        name_offset = len(names)
        names += struct.pack(">HI", len(name), 0) + encoded
        if flags & 0x02:
            tree += struct.pack(">IHII", name_offset, flags, value, first)
        else:
            tree += struct.pack(">IHHHI", name_offset, flags, 0, 0, len(data))
            data += struct.pack(">I", len(value)) + value
        if version >= 2:
            tree += bytes(8)  # last-modified time
    header_size = 24 if version >= 3 else 20
    data_offset = header_size
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0x01)
    return header + data + names + tree


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reader_walks_the_tree_and_inflates_zlib_entries(version):
    files = read_rcc(build_rcc(version))
    assert files == {
        "top.txt": b"top level",
        "a/x.txt": b"inside a",
        "a/y.bin": b"compressible " * 50,
    }


def test_rcc_reader_rejects_other_files():
    with pytest.raises(RccError, match="qres"):
        read_rcc(b"RIFF" + bytes(40))
    truncated = build_rcc(3)[:-30]
    with pytest.raises(RccError, match="truncated"):
        read_rcc(truncated)


def test_credit_blocks_with_inline_and_listed_files():
    readme = (
        "Copyright: Timothee Giet, 2018\nLicense: CC-BY-SA 4.0\nFiles:\nquestion.svg\n\n"
        "Copyright: Kurt Kaiser\nLicense: CC0-1.0\n"
        "Source: https://commons.wikimedia.org/wiki/File:American_Bison_9.jpg\n"
        "Files:\nbison.webp\nbison2.webp\n\n"
        "Files: heron.webp\nSource: https://example.org/heron\nLicense: Public domain\n"
        "Copyright: Stephan Sprinz\nComments: cropping\n"
    )
    credits = parse_credits(readme)
    assert credits["bison.webp"] == credits["bison2.webp"]
    assert credits["bison.webp"].author == "Kurt Kaiser"
    assert credits["bison.webp"].license == "CC0-1.0"
    assert credits["bison.webp"].source.endswith("File:American_Bison_9.jpg")
    assert credits["heron.webp"].license == "Public domain"
    assert credits["heron.webp"].author == "Stephan Sprinz"
    assert credits["question.svg"].source == ""
