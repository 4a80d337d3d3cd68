"""Bad input: non-zero exit, one line naming the file and the problem, nothing committed lost."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, partition_digests


def _missing_url(d: Path) -> str:
    (d / "nourl.csv").write_text("link,source_id\nhttp://a.org/1.jpg,1\n")
    return "table:" + str(d / "nourl.csv")


def _empty(d: Path) -> str:
    (d / "empty.csv").write_bytes(b"")
    return "table:" + str(d / "empty.csv")


def _not_utf8(d: Path) -> str:
    (d / "latin1.csv").write_bytes(b"url,scientific_name\nhttp://a.org/1.jpg,Bubo bubo\n"
                                   + "http://a.org/2.jpg,Pic\xe9\n".encode("latin-1"))  # fmt: skip
    return "table:" + str(d / "latin1.csv")


def _wrong_types(d: Path) -> str:
    pq.write_table(pa.table({"url": pa.array([1, 2], pa.int64())}), d / "ints.parquet")
    return "table:" + str(d / "ints.parquet")


def _dwca_without_meta(d: Path) -> str:
    with zipfile.ZipFile(d / "dwca.zip", "w") as archive:
        archive.writestr("occurrence.txt", "id\tbasisOfRecord\n1\tHUMAN_OBSERVATION\n")
    return "gbif:" + str(d / "dwca.zip")


CASES = {
    "missing url column": (_missing_url, "nourl.csv", "url"),
    "empty file": (_empty, "empty.csv", "empty"),
    "non-UTF-8 bytes": (_not_utf8, "latin1.csv", "UTF-8"),
    "parquet with wrong types": (_wrong_types, "ints.parquet", "url"),
    "DwC-A without meta.xml": (_dwca_without_meta, "dwca.zip", "meta.xml"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_with_one_line_and_keeps_committed(tmp_path: Path, small_table: Path, case: str):
    make, file_name, problem = CASES[case]
    root = tmp_path / "root"
    cli(root, "run", "ingest", "--source", f"table:{small_table}")
    before = partition_digests(root, "01_ingest")
    bad = make(tmp_path)
    result = cli(root, "run", "ingest", "--source", f"table:{small_table}", "--source", bad, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert file_name in lines[0] and problem.lower() in lines[0].lower(), lines[0]
    assert "internal error" not in lines[0]
    assert partition_digests(root, "01_ingest") == before


def test_unknown_source_kind_and_missing_file(tmp_path: Path):
    result = cli(tmp_path, "run", "ingest", "--source", "ftp:/x.csv", check=False)
    assert result.returncode != 0 and "KIND:PATH" in result.stderr
    result = cli(tmp_path, "run", "ingest", "--source", f"table:{tmp_path / 'nope.csv'}", check=False)
    assert result.returncode != 0 and "nope.csv" in result.stderr
