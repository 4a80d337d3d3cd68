"""`tolpipe show STAGE`: list or export the rows of a stage's committed partitions, by reason or
status (by default the dropped and failed ones).

Partitions are read one at a time with Parquet filters, and only those whose commit record counts
a matching row, so memory stays at one partition whatever the stage's size, and a table with a
limit stops reading as soon as it has its rows. Stages without a `url` column (03 taxonomy) get it
from 01 ingest's partition of the same index, since every stage keeps 01's partition indices.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.errors import TolpipeError
from pipeline.ledger import STATUSES, ManifestStore

FORMATS = ("table", "csv", "json", "parquet")
STATUS_CHOICES = (*STATUSES, "all")
SHOW_COLUMNS = ("uuid", "url", "status", "reason", "detail")
DEFAULT_TABLE_LIMIT = 20
INGEST_DIR = "01_ingest"
# Widest a table cell gets; longer values are shortened with "...". uuids are never shortened:
# they are what `tolpipe audit` takes.
CELL_WIDTH = {"url": 60, "reason": 28, "detail": 64}


@dataclass(frozen=True)
class Selection:
    """Which rows to show: exact (status, reason) pairs when reasons were asked for, else
    statuses (None: every row)."""

    pairs: tuple[tuple[str, str], ...] | None
    statuses: tuple[str, ...] | None
    label: str

    def count(self, counts: dict[str, Any]) -> int:
        """Matching rows of one commit record's counts (or of summed counts)."""
        if self.pairs is not None:
            return sum(counts["by_reason"].get(f"{s}:{r}", 0) for s, r in self.pairs)
        if self.statuses is None:
            return sum(counts["by_status"].values())
        return sum(counts["by_status"].get(s, 0) for s in self.statuses)

    def filters(self) -> list[list[tuple[str, str, Any]]] | None:
        """The selection as Parquet filters (disjunctive normal form)."""
        if self.pairs is not None:
            return [[("status", "=", s), ("reason", "=", r)] for s, r in self.pairs]
        if self.statuses is None:
            return None
        return [[("status", "in", list(self.statuses))]]


def split_reasons(values: list[str] | str | None) -> list[str]:
    """`--reason a,b --reason c` (or "a,b") -> [a, b, c]; blanks dropped."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else values
    return [r.strip() for item in items for r in item.split(",") if r.strip()]


def _summed_counts(records: dict[int, dict[str, Any]]) -> dict[str, Counter[str]]:
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for record in records.values():
        by_status.update(record["counts"]["by_status"])
        by_reason.update(record["counts"]["by_reason"])
    return {"by_status": by_status, "by_reason": +by_reason}


def _recorded_text(stage_dir: str, by_reason: Counter[str]) -> str:
    if not by_reason:
        return f"no row of {stage_dir} is dropped or failed"
    listed = ", ".join(f"{key} ({n:,})" for key, n in by_reason.most_common())
    return f"reasons recorded in {stage_dir}: {listed}"


def select(
    stage_dir: str, reasons: list[str], status: str | None, counts: dict[str, Counter[str]]
) -> Selection:
    """Turn --reason/--status into a Selection, checked against what the commit records hold:
    a reason the stage never recorded is an error that lists the ones it did."""
    if status is not None and status not in STATUS_CHOICES:
        raise TolpipeError(f"unknown status {status!r} (choose from {', '.join(STATUS_CHOICES)})")
    wanted_status = None if status in (None, "all") else status
    if not reasons:
        if status == "all":
            return Selection(None, None, "rows")
        statuses = (wanted_status,) if wanted_status else ("dropped", "failed")
        return Selection(None, statuses, " or ".join(statuses) + " rows")
    pairs: list[tuple[str, str]] = []
    unknown: list[str] = []
    for asked in reasons:
        # "dropped:duplicate_url" (as the summary and status print it) pins the status too.
        asked_status, _, reason = asked.rpartition(":")
        found = [
            (s, r)
            for s, r in (key.split(":", 1) for key in sorted(counts["by_reason"]))
            if r == reason and (not asked_status or s == asked_status)
            and (wanted_status is None or s == wanted_status)
        ]  # fmt: skip
        if found:
            pairs.extend(p for p in found if p not in pairs)
        else:
            unknown.append(asked)
    if unknown:
        scope = f" {wanted_status}" if wanted_status else ""
        raise TolpipeError(
            f"{stage_dir} has no{scope} rows with reason {', '.join(unknown)}; "
            f"{_recorded_text(stage_dir, counts['by_reason'])}"
        )
    prefix = f"{wanted_status} rows" if wanted_status else "rows"
    plural = "s" if len(reasons) > 1 else ""
    return Selection(tuple(pairs), None, f"{prefix} with reason{plural} {', '.join(reasons)}")


def _with_url(table: pa.Table, root: Path, index: int) -> pa.Table:
    """Add 01 ingest's url (by uuid, from the partition of the same index) after `detail`."""
    ingest_part = ManifestStore(root, INGEST_DIR).part_path(index)
    if ingest_part.exists():
        ingest = pq.read_table(ingest_part, columns=["uuid", "url"])
        positions = pc.index_in(table.column("uuid"), value_set=ingest.column("uuid"))
        url = pc.take(ingest.column("url"), positions)
    else:  # 01 was rebuilt or removed since: say nothing rather than guess
        url = pa.nulls(table.num_rows, pa.string())
    at = table.schema.get_field_index("detail") + 1
    return table.add_column(at, pa.field("url", pa.string()), url)


def _output_schema(store: ManifestStore, index: int) -> pa.Schema:
    schema = pq.read_schema(store.part_path(index)).remove_metadata()
    if "url" not in schema.names:
        schema = schema.insert(schema.get_field_index("detail") + 1, pa.field("url", pa.string()))
    return schema


def iter_selected(
    root: Path,
    store: ManifestStore,
    records: dict[int, dict[str, Any]],
    selection: Selection,
    limit: int | None,
    columns: list[str] | None,
) -> Iterator[pa.Table]:
    """Matching rows, one table per partition in partition order, at most `limit` rows in all;
    `columns` None keeps every column of the stage (plus url)."""
    remaining = limit
    for index in sorted(records):
        if remaining is not None and remaining <= 0:
            return
        if not selection.count(records[index]["counts"]):
            continue  # the commit record says no row matches: skip the read
        path = store.part_path(index)
        has_url = "url" in pq.read_schema(path).names
        wanted = None if columns is None else [c for c in columns if c != "url" or has_url]
        table = pq.read_table(path, columns=wanted, filters=selection.filters())
        if remaining is not None:
            table = table.slice(0, remaining)
            remaining -= table.num_rows
        if not has_url:
            table = _with_url(table, root, index)
        yield table.replace_schema_metadata(None) if columns is None else table.select(columns)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return " ".join(str(value).split())  # details may hold newlines or tabs


def _shorten(text: str, width: int, middle: bool) -> str:
    """URLs lose their middle (host and file name stay), other values their end."""
    if len(text) <= width:
        return text
    if middle:
        head = (width - 3) // 2
        return text[:head] + "..." + text[len(text) - (width - 3 - head) :]
    return text[: width - 3] + "..."


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [
        [_shorten(_cell(row[c]), CELL_WIDTH.get(c, 1 << 30), middle=c == "url") for c in SHOW_COLUMNS]
        for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(SHOW_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(SHOW_COLUMNS, widths, strict=True)).rstrip()]
    for row_cells in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)).rstrip())
    return lines


def _table_text(stage_dir: str, tables: Iterator[pa.Table], selection: Selection, total: int) -> str:
    rows = [row for table in tables for row in table.to_pylist()]
    if not total:
        return f"no {selection.label} in {stage_dir}"
    if len(rows) < total:
        footer = (
            f"{len(rows):,} of {total:,} {selection.label} shown; --limit N to see more (0: all), "
            f"--format csv|json|parquet --output FILE to export"
        )
    else:
        footer = f"{total:,} {selection.label}"
    return "\n".join([*format_table(rows), footer])


def _write_text_rows(tables: Iterator[pa.Table], fmt: str, stream: TextIO) -> int:
    written = 0
    writer = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writerow(SHOW_COLUMNS)
    for table in tables:
        for row in table.to_pylist():
            if writer:
                writer.writerow(["" if row[c] is None else row[c] for c in SHOW_COLUMNS])
            else:
                stream.write(json.dumps({c: row[c] for c in SHOW_COLUMNS}, ensure_ascii=False) + "\n")
            written += 1
    return written


def _write_parquet(tables: Iterator[pa.Table], schema: pa.Schema, dest: Path) -> int:
    written = 0
    with pq.ParquetWriter(dest, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table.select(schema.names).cast(schema))
            written += table.num_rows
    return written


def _export(tables: Iterator[pa.Table], fmt: str, output: Path, schema: pa.Schema) -> int:
    """Write to a temporary sibling and rename: an interrupted export leaves no partial file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = atomic.temp_name(output)
    try:
        if fmt == "parquet":
            written = _write_parquet(tables, schema, temp)
        else:
            with open(temp, "w", newline="", encoding="utf-8") as handle:
                written = _write_text_rows(tables, fmt, handle)
        atomic.publish(temp, output)
    finally:
        temp.unlink(missing_ok=True)
    return written


def show_rows(
    root: Path,
    stage_dir: str,
    reasons: list[str] | str | None = None,
    status: str | None = None,
    limit: int | None = None,
    fmt: str = "table",
    output: Path | None = None,
    stream: TextIO | None = None,
) -> str | None:
    """List or export the selected rows of a stage (see the module doc).

    reasons: codes (`duplicate_url`, or `dropped:duplicate_url`), comma-separated items allowed;
    status: ok | dropped | failed | all (default: dropped and failed, or any with `reasons`);
    limit: None for the format's default (20 for table, all for exports), 0 for all.
    Returns the text to print: the table, or a one-line note after writing `output`; csv and
    json without `output` stream to `stream` (default stdout) and return None."""
    from stages import resolve_stage_dir

    stage_dir = resolve_stage_dir(stage_dir)
    _check_arguments(fmt, limit, output)
    if limit is None:
        limit = DEFAULT_TABLE_LIMIT if fmt == "table" else 0
    store = ManifestStore(root, stage_dir)
    records = store.committed_records()
    if not records:
        raise TolpipeError(
            f"no committed partitions of {stage_dir} under {store.dir}: "
            f"run `tolpipe run {stage_dir.split('_', 1)[1]}` first"
        )
    counts = _summed_counts(records)
    selection = select(stage_dir, split_reasons(reasons), status, counts)
    total = selection.count(counts)
    columns = None if fmt == "parquet" else list(SHOW_COLUMNS)
    tables = iter_selected(root, store, records, selection, limit or None, columns)
    if fmt == "table":
        return _table_text(stage_dir, tables, selection, total)
    if output is None:
        _write_text_rows(tables, fmt, stream or sys.stdout)
        return None
    written = _export(tables, fmt, Path(output), _output_schema(store, min(records)))
    how_many = f"{written:,}" if written == total else f"{written:,} of {total:,}"
    return f"wrote {how_many} {selection.label} of {stage_dir} to {output} ({fmt})"


def _check_arguments(fmt: str, limit: int | None, output: Path | None) -> None:
    if fmt not in FORMATS:
        raise TolpipeError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if limit is not None and limit < 0:
        raise TolpipeError(f"--limit must be 0 (all) or more, not {limit}")
    if fmt == "parquet" and output is None:
        raise TolpipeError("--format parquet needs --output FILE")
    if fmt == "table" and output is not None:
        raise TolpipeError("--output needs --format csv, json or parquet (table is for the terminal)")
