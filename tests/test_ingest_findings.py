"""Ingest findings: undecodable bytes give one clean error line; licence and attribution follow
the record (a DwC-A media row falls back to its occurrence's licence and rights holder)."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ledger import ManifestStore
from stages.ingest.dwca import locate_undecodable
from stages.ingest.sources import iter_source
from tests.conftest import cli, partition_digests
from tests.support.ingest_fixtures import (
    OCCURRENCE_TERMS,
    sample_eol_rows,
    sample_media,
    sample_occurrences,
    write_dwca,
    write_eol_manifest,
)

# ---------------------------------------------------------------------------------------------
# Undecodable bytes: one line `tolpipe: error: FILE: ... offset N (line L)`, exit 2, nothing lost
# ---------------------------------------------------------------------------------------------


def _garbage(n: int = 4096, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def _first_bad_byte(data: bytes, encoding: str = "utf-8") -> tuple[int, int]:
    """Byte offset and 1-based line of the first byte `encoding` cannot decode."""
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.start, data[: exc.start].count(b"\n") + 1
    raise AssertionError("test data decodes")


def _table_all_garbage(d: Path) -> tuple[str, Path]:
    path = d / "urls.csv"
    path.write_bytes(_garbage())
    return "table", path


def _table_garbage_after_rows(d: Path) -> tuple[str, Path]:
    path = d / "urls.csv"
    rows = b"".join(b"http://a.example.org/%d.jpg,rec-%d\n" % (i, i) for i in range(20))
    path.write_bytes(b"url,source_id\n" + rows + _garbage())
    return "table", path


def _eol_garbage_after_rows(d: Path) -> tuple[str, Path]:
    path = write_eol_manifest(d / "eol.csv", sample_eol_rows(5))
    with open(path, "ab") as handle:
        handle.write(_garbage())
    return "eol", path


def _dwca_garbage(member: str, encoding: str = "UTF-8") -> Callable[[Path], tuple[str, Path]]:
    def make(d: Path) -> tuple[str, Path]:
        archive = write_dwca(d / "dwca", sample_occurrences(), sample_media(), as_zip=False,
                             encoding=encoding)  # fmt: skip
        with open(archive / member, "ab") as handle:
            handle.write(_garbage())
        return "gbif", archive / member

    return make


GARBAGE = {
    "table: random bytes": (_table_all_garbage, "utf-8"),
    "table: valid header and rows, then bytes": (_table_garbage_after_rows, "utf-8"),
    "eol: rows, then bytes": (_eol_garbage_after_rows, "utf-8"),
    "gbif: multimedia.txt": (_dwca_garbage("multimedia.txt"), "utf-8"),
    "gbif: occurrence.txt": (_dwca_garbage("occurrence.txt"), "utf-8"),
    "gbif: declared ascii": (_dwca_garbage("multimedia.txt", "ascii"), "ascii"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_undecodable_bytes_give_one_error_line_with_offset(tmp_path: Path, case: str):
    make, encoding = GARBAGE[case]
    root = tmp_path / "root"
    kind, bad_file = make(tmp_path)
    source = bad_file.parent if kind == "gbif" else bad_file
    result = cli(root, "run", "ingest", "--source", f"{kind}:{source}", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    offset, line = _first_bad_byte(bad_file.read_bytes(), encoding)
    assert lines[0].startswith(f"tolpipe: error: {bad_file}: "), lines[0]
    assert f"offset {offset} (line {line})" in lines[0], lines[0]
    assert result.returncode == 2
    assert partition_digests(root, "01_ingest") == {}  # checked before anything is written


# ---------------------------------------------------------------------------------------------
# Licence and rights holder: the media row's own value, else its occurrence's
# ---------------------------------------------------------------------------------------------

CORE_TERMS_WITH_RIGHTS = [*OCCURRENCE_TERMS, "license", "rightsHolder"]


def _rights_archive(dest: Path, *, as_zip: bool = True) -> Path:
    base = {"basisOfRecord": "HUMAN_OBSERVATION", "scientificName": "Bubo bubo", "kingdom": "Animalia"}
    occurrences = [
        {"gbifID": "1", **base, "license": "CC-BY-4.0", "rightsHolder": "Occurrence Holder"},
        {"gbifID": "2", **base},  # no licence, no holder
    ]
    image = {"type": "StillImage", "format": "image/jpeg"}
    media = [
        {"gbifID": "1", **image, "identifier": "https://a.example.org/blank.jpg"},
        {"gbifID": "1", **image, "identifier": "https://a.example.org/own.jpg",
         "license": "CC0-1.0", "rightsHolder": "Media Holder"},
        {"gbifID": "1", **image, "identifier": "https://a.example.org/own-licence.jpg",
         "license": "CC-BY-NC-4.0", "rightsHolder": "  "},
        {"gbifID": "1", **image, "identifier": "https://a.example.org/own-holder.jpg",
         "rightsHolder": "Photographer"},
        {"gbifID": "2", **image, "identifier": "https://a.example.org/none.jpg"},
        {"gbifID": "2", **image, "identifier": "https://a.example.org/media-only.jpg",
         "license": "CC-BY-SA-4.0", "rightsHolder": "Someone"},
        {"gbifID": "404", **image, "identifier": "https://a.example.org/orphan.jpg"},
    ]  # fmt: skip
    return write_dwca(dest, occurrences, media, core_terms=CORE_TERMS_WITH_RIGHTS, as_zip=as_zip)


EXPECTED_RIGHTS = {
    "https://a.example.org/blank.jpg": ("CC-BY-4.0", "Occurrence Holder"),
    "https://a.example.org/own.jpg": ("CC0-1.0", "Media Holder"),
    "https://a.example.org/own-licence.jpg": ("CC-BY-NC-4.0", "Occurrence Holder"),
    "https://a.example.org/own-holder.jpg": ("CC-BY-4.0", "Photographer"),
    "https://a.example.org/none.jpg": (None, None),
    "https://a.example.org/media-only.jpg": ("CC-BY-SA-4.0", "Someone"),
    "https://a.example.org/orphan.jpg": (None, None),
}


def _rights_by_url(table: pa.Table) -> dict[str, tuple[str | None, str | None]]:
    return {r["url"]: (r["license"], r["rights_holder"]) for r in table.to_pylist()}


@pytest.mark.parametrize("join_memory_bytes", [1 << 30, 1], ids=["in-memory join", "spilled join"])
def test_dwca_media_rights_fall_back_to_occurrence(tmp_path: Path, join_memory_bytes: int):
    archive = _rights_archive(tmp_path / "dwca.zip")
    batches = iter_source("gbif", archive, 3, join_memory_bytes=join_memory_bytes, temp_dir=tmp_path)
    assert _rights_by_url(pa.Table.from_batches(list(batches))) == EXPECTED_RIGHTS


def test_ingest_manifest_carries_occurrence_rights_for_blank_media_rights(tmp_path: Path):
    root = tmp_path / "root"
    archive = _rights_archive(tmp_path / "dwca", as_zip=False)
    cli(root, "run", "ingest", "--source", f"gbif:{archive}")
    store = ManifestStore(root, "01_ingest")
    table = pa.concat_tables([pq.read_table(p) for p in store.part_files()])
    assert _rights_by_url(table) == EXPECTED_RIGHTS


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64, 1 << 20])
@pytest.mark.parametrize(
    "data",
    [
        "a,b\nPic\u00e9,\u20ac\n".encode() + b"x\xe2\x82(\n",  # a 3-byte sequence cut short
        "a\n\u20ac\u20ac\n".encode() + b"\xff",
        b"\x80rest",
    ],
    ids=["truncated sequence", "after multibyte", "first byte"],
)
def test_locate_undecodable_is_exact_across_read_boundaries(data: bytes, chunk_bytes: int):
    found = locate_undecodable(lambda: io.BytesIO(data), "utf-8", chunk_bytes)
    assert found is not None and (found.offset, found.line) == _first_bad_byte(data)
    valid = "a\n\u20ac\n".encode()
    assert locate_undecodable(lambda: io.BytesIO(valid), "utf-8", chunk_bytes) is None
