from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.digest import digest_json, sha256_file
from pipeline.ledger import LedgerError, ManifestStore, stage_schema

SCHEMA = stage_schema(pa.field("value", pa.int64()))


def table(rows):
    return pa.Table.from_pylist(rows, schema=SCHEMA)


OK_ROWS = [
    {"uuid": "a", "status": "ok", "reason": None, "detail": None, "value": 1},
    {"uuid": "b", "status": "dropped", "reason": "too_small", "detail": "100x80", "value": 2},
    {"uuid": "c", "status": "failed", "reason": "timeout", "detail": "5 s", "value": 3},
]


def test_commit_writes_record_matching_file(tmp_path: Path):
    store = ManifestStore(tmp_path, "09_test")
    record = store.commit(0, table(OK_ROWS), SCHEMA, 3, {"in": "x"}, {"p": 1})
    assert record.sha256 == sha256_file(store.part_path(0))
    assert record.counts["by_status"] == {"ok": 1, "dropped": 1, "failed": 1}
    assert record.counts["by_reason"] == {"dropped:too_small": 1, "failed:timeout": 1}
    assert store.is_done(0, {"in": "x"}, digest_json({"p": 1}))
    assert not store.is_done(0, {"in": "y"}, digest_json({"p": 1}))
    assert not store.is_done(0, {"in": "x"}, digest_json({"p": 2}))


def test_same_table_gives_same_bytes(tmp_path: Path):
    a = ManifestStore(tmp_path / "a", "09_test")
    b = ManifestStore(tmp_path / "b", "09_test")
    a.commit(0, table(OK_ROWS), SCHEMA, 3, {}, {})
    b.commit(0, table(OK_ROWS), SCHEMA, 3, {}, {})
    assert sha256_file(a.part_path(0)) == sha256_file(b.part_path(0))


def test_tampered_file_is_not_done(tmp_path: Path):
    store = ManifestStore(tmp_path, "09_test")
    store.commit(0, table(OK_ROWS), SCHEMA, 3, {}, {})
    data = bytearray(store.part_path(0).read_bytes())
    data[100] ^= 0xFF
    store.part_path(0).write_bytes(bytes(data))
    assert not store.is_done(0, {}, digest_json({}))


@pytest.mark.parametrize(
    "rows, rows_in, message",
    [
        (OK_ROWS, 4, r"rows in \(4\) != ok \+ dropped \+ failed \(3\)"),
        ([{**OK_ROWS[0], "reason": "x"}], 1, "ok rows have no reason"),
        ([{**OK_ROWS[1], "reason": None}], 1, "ok rows have no reason"),
        ([{**OK_ROWS[0], "status": "maybe", "reason": "x"}], 1, "unknown status"),
        ([OK_ROWS[0], OK_ROWS[0]], 2, "duplicates"),
    ],
)
def test_invariants_are_enforced(tmp_path: Path, rows, rows_in, message):
    store = ManifestStore(tmp_path, "09_test")
    with pytest.raises(LedgerError, match=message):
        store.commit(0, table(rows), SCHEMA, rows_in, {}, {})
    assert not store.part_path(0).exists()


def test_side_files_are_committed_with_the_partition(tmp_path: Path):
    store = ManifestStore(tmp_path, "09_test")
    temp = tmp_path / "tmp-side"
    temp.write_bytes(b"jpeg bytes")
    record = store.commit(0, table(OK_ROWS), SCHEMA, 3, {}, {}, {"store/x/part-00000.bin": temp})
    assert (tmp_path / "store/x/part-00000.bin").read_bytes() == b"jpeg bytes"
    assert record.side_files["store/x/part-00000.bin"]["bytes"] == 10
    (tmp_path / "store/x/part-00000.bin").write_bytes(b"short")
    assert not store.is_done(0, {}, digest_json({}))
