"""Helpers for stage 02 tests: a loopback server fixture, 01 manifests made from URL lists, and a
sequential in-process run of stage 02 (plan, run_partition, commit: the runner's steps without a
dask cluster, for fast tests; integration tests use the real CLI)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_defaults
from pipeline.ledger import ManifestStore
from pipeline.runner import stage_context
from stages.download import STAGE
from stages.download.manifest import VOLATILE_COLUMNS
from stages.download.politeness import BUCKETS
from stages.download.robots import ROBOTS
from stages.download.store import store_rel_path
from tests.support.loopback_server import LoopbackServer

INGEST = "01_ingest"
DOWNLOAD = "02_download"
# Fast settings for tests: short deadlines and backoff, rates high enough not to bind.
FAST = {
    "deadline_s": 3.0,
    "read_timeout_s": 2.0,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.2,
    "rate_per_host": 1000.0,
    "burst": 1000.0,
    "rate_ceiling": 1000.0,
    "watchdog_grace_s": 2.0,
    "concurrency": 8,
}


@pytest.fixture(name="server")
def server_fixture() -> Iterator[LoopbackServer]:
    """A 3-host loopback server (import `server_fixture`; tests take `server`)."""
    with LoopbackServer(hosts=3) as srv:
        yield srv
    # Process-wide caches outlive a partition by design; tests start from scratch.
    ROBOTS.clear()
    BUCKETS.clear()


def config(**download: Any) -> dict[str, Any]:
    cfg = load_defaults()
    cfg["download"].update(FAST)
    cfg["download"].update(download)
    cfg["run"]["progress"] = False
    return cfg


def ingest_schema() -> pa.Schema:
    """01's schema, read from the stage itself so the fixture follows it."""
    from stages.ingest import SCHEMA

    return SCHEMA


def write_ingest(root: Path, partitions: list[list[str]]) -> None:
    """Commit 01 partitions holding these URLs (all ok), as ingest would for host batches."""
    schema = ingest_schema()
    store = ManifestStore(root, INGEST)
    for index, urls in enumerate(partitions):
        columns: dict[str, list] = {name: [None] * len(urls) for name in schema.names}
        columns["uuid"] = [str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, u)) for u in urls]
        columns["status"] = ["ok"] * len(urls)
        columns["url"] = list(urls)
        columns["host"] = [u.split("/")[2].lower() if "//" in u else "" for u in urls]
        columns["provider"] = ["loopback"] * len(urls)
        table = pa.table([pa.array(columns[f.name], f.type) for f in schema], schema=schema)
        store.commit(index, table, schema, len(urls), {"source": "test"}, {})


def run_download(root: Path, cfg: dict[str, Any]) -> dict[int, dict]:
    """Plan, run and commit every partition of 02 in this process; return the commit records."""
    ctx = stage_context(root, DOWNLOAD, cfg)
    params = STAGE.output_params(ctx.params)
    store = ManifestStore(ctx.root, DOWNLOAD)
    for part in STAGE.plan(ctx):
        out = STAGE.run_partition(part, ctx)
        store.commit(part.index, out.table, STAGE.schema, out.rows_in, part.inputs, params,
                     out.side_files)  # fmt: skip
    return store.committed_records()


def manifest(root: Path, index: int = 0) -> pa.Table:
    return pq.read_table(Path(root) / "manifests" / DOWNLOAD / f"part-{index:05d}.parquet")


def all_rows(root: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted((Path(root) / "manifests" / DOWNLOAD).glob("part-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def stable(table: pa.Table) -> pa.Table:
    """The manifest without its documented volatile columns."""
    return table.drop_columns(list(VOLATILE_COLUMNS))


def store_table(root: Path, index: int = 0) -> pa.Table:
    return pq.read_table(Path(root) / store_rel_path(index))
