"""The contract between the runner and a stage.

A stage is a module `stages/<name>/__init__.py` exposing `STAGE`, an instance of a `Stage`
subclass. The runner calls `plan()` once in the driver, then maps `run_partition()` over the
cluster. A partition's output is a pyarrow Table with exactly `schema` (the common ledger columns
first) plus optional side files (e.g. the image store) that are committed with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Partition:
    """One unit of work: becomes manifests/<stage.dir>/part-{index:05d}.parquet."""

    index: int
    # Input name -> digest (e.g. "01_ingest/part-00003" -> sha256 of that file); recorded in the
    # commit record. A committed partition whose recorded inputs differ is recomputed.
    inputs: dict[str, str]
    # Picklable, JSON-able description of the work; passed back to run_partition.
    payload: dict[str, Any] = field(default_factory=dict)
    # What the partition holds, stable across runs (e.g. ingest's host and sub-bucket), kept in
    # its commit record so a later plan can give the same work the same index.
    key: str | None = None


@dataclass
class PartitionOutput:
    table: pa.Table
    # Number of input rows this partition consumed: the runner checks
    # rows_in == ok + dropped + failed (== len(table)).
    rows_in: int
    # Root-relative destination -> a temporary file the stage wrote on the same filesystem
    # (use ctx.temp_path()). Renamed into place before the manifest, sha256 in the commit record.
    side_files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class StageContext:
    """What a stage may see. Picklable: it travels to the workers."""

    root: Path
    stage_dir: str
    params: dict[str, Any]  # this stage's config section (effective)
    config: dict[str, Any]  # the whole effective config, read-only
    # How the run was asked for: {"rebuild": bool, "added_sources": [...]} (see pipeline.runner).
    options: dict[str, Any] = field(default_factory=dict)

    def manifest_path(self, stage_dir: str, index: int) -> Path:
        return self.root / "manifests" / stage_dir / f"part-{index:05d}.parquet"

    def read_manifest(self, stage_dir: str, index: int, columns: list[str] | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        return pq.read_table(self.manifest_path(stage_dir, index), columns=columns)

    def committed(self, stage_dir: str) -> dict[int, dict[str, Any]]:
        """Committed partitions of a stage: index -> commit record (only those whose file exists)."""
        from pipeline.ledger import ManifestStore

        return ManifestStore(self.root, stage_dir).committed_records()

    def work_dir(self, name: str = "") -> Path:
        """A scratch folder for this stage on the work root's filesystem (root/work/<stage>/...)."""
        path = self.root / "work" / self.stage_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def temp_path(self, suffix: str = "") -> Path:
        """A unique temporary file name on the work root's filesystem, for side files. Its name
        carries the run's tag, so a killed run's leftovers are found and removed later."""
        from pipeline import atomic

        tmp = self.root / "work" / self.stage_dir / "_tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / atomic.tagged(f"file{suffix}")

    @contextmanager
    def scratch_dir(self, name: str) -> Iterator[Path]:
        """A folder for scratch files, removed on exit (or by a later run if this one is killed)."""
        from pipeline import atomic

        path = self.root / "work" / self.stage_dir / "_tmp" / atomic.tagged(name)
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


class Stage:
    """Base class for stages. Subclasses set the attributes and implement plan/run_partition."""

    number: str = "00"
    name: str = "stage"
    schema: pa.Schema
    # Keys of this stage's config section that do not change its output (concurrency, progress,
    # timeouts of politeness that only change speed...). Every other key is an output parameter:
    # changing it after partitions were committed makes the runner refuse unless --rebuild.
    volatile_params: tuple[str, ...] = ()
    # The stage whose ok rows this stage reads, or None (ingest).
    upstream: str | None = None
    # Reason codes `tolpipe retry <stage>` accepts (empty: the stage does not support retry).
    retryable_reasons: tuple[str, ...] = ()
    # Volatile keys that only tune one run (speed, concurrency, politeness): a value given with
    # --config or --set applies to that run alone unless --save; every other key is frozen into
    # the root's tolpipe.toml (output parameters, and locations such as sources and dumps).
    tuning_params: tuple[str, ...] = ()
    # Root-relative folders the stage writes side files to (checked writable before a run).
    side_dirs: tuple[str, ...] = ()
    # Output parameters that only turn stored scores into decisions (thresholds): `tolpipe
    # rethreshold` may change these without recomputing any score (see rethreshold_partition).
    decision_params: tuple[str, ...] = ()

    @property
    def dir(self) -> str:
        return f"{self.number}_{self.name}"

    def output_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters whose digest goes into every commit record."""
        return {k: v for k, v in sorted(params.items()) if k not in self.volatile_params}

    def check(self, ctx: StageContext) -> None:
        """Optional driver-side checks before the run writes anything (frozen config, run
        record): raise a TolpipeError to refuse (e.g. ingest's changed sources)."""

    def prepare(self, ctx: StageContext, mapper: Any) -> None:
        """Optional driver-side step before plan() (e.g. ingest's shuffle by host). `mapper` is a
        pipeline.executors.Mapper on the run's dask cluster, for parallel preparation work."""

    def plan(self, ctx: StageContext) -> list[Partition]:
        raise NotImplementedError

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        raise NotImplementedError

    def run_notes(self, ctx: StageContext) -> list[str]:
        """Lines the run record keeps and `tolpipe status` shows (e.g. filters that did not run)."""
        return []

    def rethreshold_partition(
        self, part: Partition, ctx: StageContext, previous: pa.Table
    ) -> PartitionOutput:
        """Re-derive a committed partition's decisions from its stored scores (no model)."""
        raise NotImplementedError(f"stage {self.dir} has no thresholds to re-apply")

    def retry_partition(
        self, part: Partition, ctx: StageContext, previous: pa.Table, reasons: set[str]
    ) -> PartitionOutput:
        """Re-attempt only the rows of `previous` whose status is failed and reason in `reasons`."""
        raise NotImplementedError(f"stage {self.dir} does not support retry")
