"""`tolpipe show` (pipeline.show) and the end-of-run summary (pipeline.summary), on small roots
built through the CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import show
from pipeline.errors import TolpipeError
from pipeline.ledger import ManifestStore, stage_schema
from pipeline.runrecord import read_runs
from pipeline.show import show_rows
from pipeline.summary import format_elapsed, format_run_summary, retryable_help
from tests.conftest import cli, write_url_table


@pytest.fixture(scope="module")
def ingest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 rows over 3 hosts (3 partitions); every 50th row repeats the URL before it: 5 rows
    dropped duplicate_url, spread over the partitions (2, 2, 1)."""
    base = tmp_path_factory.mktemp("show")
    table = write_url_table(base / "urls.csv", rows=300, hosts=3, duplicates_every=50)
    root = base / "root"
    cli(root, "run", "ingest", "--source", f"table:{table}")
    return root


@pytest.fixture(scope="module")
def taxonomy_root(ingest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ingest root plus a 03_taxonomy manifest without a url column, committed
    through the ledger with 01's partition indices: every third ok row failed resolver_error."""
    root = tmp_path_factory.mktemp("taxonomy") / "root"
    shutil.copytree(ingest_root, root)
    schema = stage_schema(pa.field("kingdom", pa.string()))
    ingest = ManifestStore(root, "01_ingest")
    for index in ingest.committed_records():
        ok = pq.read_table(ingest.part_path(index), filters=[("status", "=", "ok")])
        failed = [i % 3 == 0 for i in range(ok.num_rows)]
        table = pa.table(
            {
                "uuid": ok.column("uuid"),
                "status": ["failed" if f else "ok" for f in failed],
                "reason": ["resolver_error" if f else None for f in failed],
                "detail": ["HTTP 503 Service Unavailable" if f else None for f in failed],
                "kingdom": ok.column("kingdom"),
            },
            schema=schema,
        )
        ManifestStore(root, "03_taxonomy").commit(index, table, schema, ok.num_rows, {}, {})
    return root


def _manifest_uuids(root: Path, stage_dir: str, status: str, reason: str | None = None) -> list[str]:
    store = ManifestStore(root, stage_dir)
    uuids = []
    for path in store.part_files():
        table = pq.read_table(path, columns=["uuid", "status", "reason"])
        mask = pc.equal(table["status"], status)
        if reason is not None:
            mask = pc.and_(mask, pc.equal(table["reason"], reason))
        uuids.extend(table.filter(mask)["uuid"].to_pylist())
    return uuids


def _table_uuids(text: str) -> list[str]:
    """uuids of a table's body lines (header and footer left out)."""
    return [line.split()[0] for line in text.splitlines()[1:-1]]


# ---- show


def test_default_lists_the_dropped_and_failed_rows(ingest_root: Path):
    text = show_rows(ingest_root, "01_ingest")
    expected = _manifest_uuids(ingest_root, "01_ingest", "dropped")
    assert len(expected) == 5
    assert _table_uuids(text) == expected
    assert text.splitlines()[0].split() == ["uuid", "url", "status", "reason", "detail"]
    assert "http://host0.example.org/img/99.jpg" in text
    assert text.splitlines()[-1] == "5 dropped or failed rows"


def test_reason_filter_accepts_bare_qualified_and_comma_separated_codes(ingest_root: Path):
    expected = _manifest_uuids(ingest_root, "01_ingest", "dropped", "duplicate_url")
    for reasons in (["duplicate_url"], "dropped:duplicate_url", ["duplicate_url,"]):
        text = show_rows(ingest_root, "ingest", reasons=reasons, limit=0)
        assert _table_uuids(text) == expected, reasons
        assert all(" duplicate_url " in line for line in text.splitlines()[1:-1])


def test_status_filter(ingest_root: Path):
    text = show_rows(ingest_root, "01", status="ok", limit=4)
    assert _table_uuids(text) == _manifest_uuids(ingest_root, "01_ingest", "ok")[:4]
    assert "4 of 295 ok rows shown" in text.splitlines()[-1]
    assert "300 rows" in show_rows(ingest_root, "01_ingest", status="all", limit=0).splitlines()[-1]


def test_limit_crosses_partitions_and_stops_reading_early(ingest_root: Path, monkeypatch):
    expected = _manifest_uuids(ingest_root, "01_ingest", "dropped")
    reads: list[str] = []
    real_read = show.pq.read_table

    def counting_read(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(show.pq, "read_table", counting_read)
    text = show_rows(ingest_root, "01_ingest", limit=3)
    assert _table_uuids(text) == expected[:3]
    assert text.splitlines()[-1].startswith("3 of 5 dropped or failed rows shown; --limit")
    # Partitions 0 and 1 hold two dropped rows each: the third partition is never opened.
    assert reads == ["part-00000.parquet", "part-00001.parquet"]
    reads.clear()
    show_rows(ingest_root, "01_ingest", limit=2)
    assert reads == ["part-00000.parquet"]


def test_table_shortens_long_values_but_never_uuids(ingest_root: Path):
    long_url = "http://host0.example.org/" + "a" * 200 + "/end.jpg"
    lines = show.format_table(
        [{"uuid": "u" * 36, "url": long_url, "status": "failed", "reason": "x", "detail": "d\n" * 80}]
    )
    body = lines[1]
    assert "u" * 36 in body and "..." in body and "/end.jpg" in body and "\n" not in body
    assert len(body) < 36 + show.CELL_WIDTH["url"] + show.CELL_WIDTH["detail"] + 30


def test_csv_to_stream_round_trips(ingest_root: Path):
    stream = io.StringIO()
    assert show_rows(ingest_root, "01_ingest", reasons=["duplicate_url"], fmt="csv", stream=stream) is None
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [r["uuid"] for r in rows] == _manifest_uuids(ingest_root, "01_ingest", "dropped")
    assert list(rows[0]) == list(show.SHOW_COLUMNS)
    assert all(r["url"].startswith("http://host") and r["detail"].startswith("same URL") for r in rows)


def test_json_lines_to_file_round_trip(ingest_root: Path, tmp_path: Path):
    out = tmp_path / "sub" / "ok.jsonl"
    note = show_rows(ingest_root, "01_ingest", status="ok", fmt="json", output=out)
    assert note == f"wrote 295 ok rows of 01_ingest to {out} (json)"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["uuid"] for r in rows] == _manifest_uuids(ingest_root, "01_ingest", "ok")
    assert rows[0]["reason"] is None and rows[0]["status"] == "ok"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_parquet_export_has_every_column_of_the_stage(ingest_root: Path, tmp_path: Path):
    out = tmp_path / "dropped.parquet"
    note = show_rows(ingest_root, "01_ingest", reasons="duplicate_url", fmt="parquet", output=out)
    assert note.startswith("wrote 5 rows with reason duplicate_url of 01_ingest")
    exported = pq.read_table(out)
    manifest = pq.read_schema(ManifestStore(ingest_root, "01_ingest").part_path(0))
    assert exported.schema.names == manifest.names
    assert exported["uuid"].to_pylist() == _manifest_uuids(ingest_root, "01_ingest", "dropped")
    assert set(exported["reason"].to_pylist()) == {"duplicate_url"}


def test_limit_applies_to_exports(ingest_root: Path, tmp_path: Path):
    out = tmp_path / "two.csv"
    note = show_rows(ingest_root, "01_ingest", status="ok", limit=2, fmt="csv", output=out)
    assert note.startswith("wrote 2 of 295 ok rows")
    assert len(out.read_text().splitlines()) == 3  # header + 2


def test_stage_without_url_gets_it_from_ingest(taxonomy_root: Path, tmp_path: Path):
    expected = _manifest_uuids(taxonomy_root, "03_taxonomy", "failed", "resolver_error")
    ingest = {}
    for path in ManifestStore(taxonomy_root, "01_ingest").part_files():
        table = pq.read_table(path, columns=["uuid", "url"])
        ingest.update(zip(table["uuid"].to_pylist(), table["url"].to_pylist(), strict=True))

    stream = io.StringIO()
    show_rows(taxonomy_root, "taxonomy", reasons=["resolver_error"], fmt="json", stream=stream)
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["uuid"] for r in rows] == expected
    assert all(r["url"] == ingest[r["uuid"]] for r in rows)

    out = tmp_path / "failed.parquet"
    show_rows(taxonomy_root, "03_taxonomy", fmt="parquet", output=out)
    exported = pq.read_table(out)
    assert exported.schema.names == ["uuid", "status", "reason", "detail", "url", "kingdom"]
    assert exported["url"].to_pylist() == [ingest[u] for u in expected]


def test_unknown_reason_names_the_recorded_ones(ingest_root: Path):
    with pytest.raises(TolpipeError) as err:
        show_rows(ingest_root, "01_ingest", reasons=["timeout"])
    message = str(err.value)
    assert "01_ingest has no rows with reason timeout" in message
    assert "reasons recorded in 01_ingest: dropped:duplicate_url (5)" in message
    with pytest.raises(TolpipeError, match="has no failed rows with reason duplicate_url"):
        show_rows(ingest_root, "01_ingest", reasons=["duplicate_url"], status="failed")


def test_reason_error_when_nothing_was_dropped(taxonomy_root: Path):
    with pytest.raises(TolpipeError, match="reasons recorded in 03_taxonomy: failed:resolver_error"):
        show_rows(taxonomy_root, "03_taxonomy", reasons=["duplicate_url"])


def test_no_committed_partitions_is_a_clear_error(ingest_root: Path):
    with pytest.raises(TolpipeError, match=r"no committed partitions of 02_download .*tolpipe run download"):
        show_rows(ingest_root, "download")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fmt": "xml"}, "unknown format 'xml'"),
        ({"fmt": "parquet"}, "--format parquet needs --output"),
        ({"output": Path("x.csv")}, "--output needs --format csv, json or parquet"),
        ({"limit": -1}, "--limit must be 0"),
        ({"status": "kept"}, "unknown status 'kept'"),
    ],
)
def test_bad_arguments(ingest_root: Path, kwargs: dict, message: str):
    with pytest.raises(TolpipeError, match=message.replace("(", r"\(")):
        show_rows(ingest_root, "01_ingest", **kwargs)


# ---- summary


def test_run_summary_of_a_real_run(ingest_root: Path):
    data = read_runs(ingest_root, "01_ingest")[-1]
    text = format_run_summary("01_ingest", data)
    lines = text.splitlines()
    assert lines[0] == f"01_ingest: run finished in {format_elapsed(data['elapsed_s'])}"
    assert "rows        300: ok 295, dropped 5" in text
    assert "dropped:duplicate_url  5" in text
    assert "partitions  3 computed, 0 already done" in text
    assert "rows/s (300 rows written in 3 partitions)" in text
    assert lines[-1].strip() == "inspect     tolpipe show ingest --reason duplicate_url"
    assert len(lines) <= 7


def test_summary_ranks_reasons_and_reports_partial_work():
    data = {
        "partitions_planned": 10, "partitions_skipped": 6, "partitions_computed": 3,
        "partitions_failed": [7], "partitions_removed": [11, 12], "elapsed_s": 90.0,
        "outcome": "failed",
        "totals": {
            "by_status": {"dropped": 40, "failed": 12, "ok": 948},
            "by_reason": {"dropped:http_404": 40, "failed:http_429": 2, "failed:timeout": 10},
        },
    }  # fmt: skip
    text = format_run_summary("02_download", data)
    assert text.splitlines()[0] == "02_download: run failed in 1 min 30 s"
    reasons = [line.split()[-2] for line in text.splitlines() if ":http_" in line or ":timeout" in line]
    assert reasons == ["dropped:http_404", "failed:timeout", "failed:http_429"]
    assert "3 computed, 6 already done, 2 removed (no longer planned), 1 FAILED" in text
    assert "part-00007" in text
    # Totals also count the skipped partitions: no rows/s, the rate is of partitions.
    assert "rows/s" not in text
    assert "30.0 s per partition (3 computed by this run)" in text
    assert "tolpipe show download --reason http_404" in text


def test_summary_of_a_retry_and_of_a_clean_run():
    retry = {
        "partitions_retried": [0, 4], "partitions_failed": [], "elapsed_s": 3.25, "outcome": "ok",
        "totals": {"by_status": {"ok": 20, "dropped": 0, "failed": 0}, "by_reason": {}},
    }  # fmt: skip
    text = format_run_summary("02_download", retry)
    assert text.splitlines() == [
        "02_download: retry finished in 3.2 s",
        "  rows        20: ok 20",
        "  partitions  2 retried",
    ]
    clean = {
        "partitions_planned": 2, "partitions_skipped": 2, "partitions_computed": 0,
        "partitions_failed": [], "partitions_removed": [], "elapsed_s": 0.5,
        "totals": {"by_status": {"ok": 7}, "by_reason": {}},
    }  # fmt: skip
    assert "rate" not in format_run_summary("01_ingest", clean)


def test_format_elapsed():
    assert [format_elapsed(s) for s in (0.04, 59.94, 75, 3600 * 2 + 300)] == [
        "0.0 s", "59.9 s", "1 min 15 s", "2 h 05 min",
    ]  # fmt: skip


def test_retryable_help_lists_download_and_taxonomy():
    text = retryable_help()
    assert text.startswith("retryable reasons:\n")
    assert "03_taxonomy: resolver_error" in text
    download = text[text.index("02_download:") : text.index("03_taxonomy")]
    for reason in ("http_429", "http_5xx", "timeout", "connection", "host_circuit_open"):
        assert reason in download
    assert "01_ingest" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
