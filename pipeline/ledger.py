"""The manifest ledger: per-stage Parquet partitions with commit records.

Every manifest row carries uuid, status (ok | dropped | failed), reason and detail. A partition
is written to a temp name, fsynced and renamed; then its commit record is written the same way.
A partition counts as done only when its record exists and matches the file, the inputs and the
parameters (see ManifestStore.is_done).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import __version__, atomic
from pipeline.digest import digest_json, sha256_file

STATUSES = ("ok", "dropped", "failed")

COMMON_FIELDS: list[pa.Field] = [
    pa.field("uuid", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
]

# Parquet writer settings fixed here so that the same table always gives the same bytes.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "row_group_size": 64 * 1024,
    "data_page_version": "2.0",
}


def stage_schema(*fields: pa.Field) -> pa.Schema:
    """A stage's manifest schema: the common ledger columns, then the stage's own."""
    return pa.schema(COMMON_FIELDS + list(fields))


def _worker_identity() -> dict[str, Any]:
    import os
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


class LedgerError(ValueError):
    """A partition table breaks the ledger's rules (schema, statuses, row accounting)."""


def validate_table(table: pa.Table, schema: pa.Schema, rows_in: int) -> dict[str, Any]:
    """Check schema and invariants; return counts by status and by status/reason."""
    if not table.schema.equals(schema, check_metadata=False):
        raise LedgerError(f"schema mismatch:\n got {table.schema}\n want {schema}")
    statuses = table.column("status").to_pylist()
    reasons = table.column("reason").to_pylist()
    by_status = Counter(statuses)
    unknown = set(by_status) - set(STATUSES)
    if unknown:
        raise LedgerError(f"unknown status values {sorted(unknown)}")
    for status, reason in zip(statuses, reasons, strict=True):
        if (status == "ok") != (reason is None):
            raise LedgerError(f"status {status!r} with reason {reason!r}: ok rows have no reason")
    total = sum(by_status.values())
    if total != rows_in:
        raise LedgerError(f"rows in ({rows_in}) != ok + dropped + failed ({total})")
    uuids = table.column("uuid")
    if uuids.null_count or len(pa.compute.unique(uuids)) != len(uuids):
        raise LedgerError("uuid column has nulls or duplicates")
    by_reason = Counter(f"{s}:{r}" for s, r in zip(statuses, reasons, strict=True) if r is not None)
    return {
        "rows": total,
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "by_reason": dict(sorted(by_reason.items())),
    }


def write_parquet(table: pa.Table, dest: Path) -> None:
    """Deterministic, crash-safe Parquet write (no pandas metadata, fixed writer options)."""
    table = table.replace_schema_metadata(None)
    temp = atomic.temp_name(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, temp, **PARQUET_OPTIONS)
    atomic.publish(temp, dest)


@dataclass(frozen=True)
class CommitRecord:
    stage: str
    partition: int
    rows: int
    sha256: str
    bytes: int
    inputs: dict[str, str]
    params: dict[str, Any]
    params_digest: str
    code_version: str
    counts: dict[str, Any]
    side_files: dict[str, dict[str, Any]]
    retries: int = 0
    run_id: str | None = None
    # Where the partition was computed: the worker's host, pid and Slurm job id (if any).
    computed_on: dict[str, Any] | None = None
    # The partition's stable key (pipeline.stage.Partition.key), if the stage gives one.
    key: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, indent=1)


class ManifestStore:
    """The files of one stage under a work root."""

    def __init__(self, root: str | Path, stage_dir: str):
        self.root = Path(root)
        self.stage_dir = stage_dir
        self.dir = self.root / "manifests" / stage_dir
        self.commits_dir = self.dir / "_commits"
        self.runs_dir = self.dir / "_runs"

    def part_path(self, index: int) -> Path:
        return self.dir / f"part-{index:05d}.parquet"

    def record_path(self, index: int) -> Path:
        return self.commits_dir / f"part-{index:05d}.json"

    def read_record(self, index: int) -> dict[str, Any] | None:
        path = self.record_path(index)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def committed_records(self) -> dict[int, dict[str, Any]]:
        """index -> record, for every record whose partition file exists."""
        records: dict[int, dict[str, Any]] = {}
        if not self.commits_dir.exists():
            return records
        for path in sorted(self.commits_dir.glob("part-*.json")):
            index = int(path.stem.split("-")[1])
            record = json.loads(path.read_text())
            if self.part_path(index).exists():
                records[index] = record
        return records

    def part_files(self) -> list[Path]:
        """Partition files that have a commit record (what downstream may read)."""
        return [self.part_path(i) for i in sorted(self.committed_records())]

    def is_done(
        self, index: int, inputs: dict[str, str], params_digest: str, verify_file: bool = True
    ) -> bool:
        """True when the record exists and matches the file, the inputs and the parameters."""
        record = self.read_record(index)
        if record is None or record["inputs"] != inputs or record["params_digest"] != params_digest:
            return False
        path = self.part_path(index)
        if not path.exists() or path.stat().st_size != record["bytes"]:
            return False
        if verify_file and sha256_file(path) != record["sha256"]:
            return False
        for rel, meta in record["side_files"].items():
            side = self.root / rel
            if not side.exists() or side.stat().st_size != meta["bytes"]:
                return False
        return True

    def commit(
        self,
        index: int,
        table: pa.Table,
        schema: pa.Schema,
        rows_in: int,
        inputs: dict[str, str],
        params: dict[str, Any],
        side_files: dict[str, Path] | None = None,
        retries: int = 0,
        run_id: str | None = None,
        key: str | None = None,
    ) -> CommitRecord:
        """Validate, publish side files, publish the partition, then write its commit record."""
        counts = validate_table(table, schema, rows_in)
        # A stale record must never vouch for the new file: remove it first.
        self.record_path(index).unlink(missing_ok=True)
        side_meta: dict[str, dict[str, Any]] = {}
        for rel, temp in sorted((side_files or {}).items()):
            dest = self.root / rel
            side_meta[rel] = {"sha256": sha256_file(temp), "bytes": Path(temp).stat().st_size}
            atomic.publish(Path(temp), dest)
        path = self.part_path(index)
        write_parquet(table, path)
        record = CommitRecord(
            stage=self.stage_dir,
            partition=index,
            rows=table.num_rows,
            sha256=sha256_file(path),
            bytes=path.stat().st_size,
            inputs=dict(sorted(inputs.items())),
            params=params,
            params_digest=digest_json(params),
            code_version=__version__,
            counts=counts,
            side_files=side_meta,
            retries=retries,
            run_id=run_id,
            computed_on=_worker_identity(),
            key=key,
        )
        atomic.write_text(self.record_path(index), record.to_json())
        return record
