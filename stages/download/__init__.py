"""Stage 02 download: fetch every ok URL of 01 politely, verify and shrink the image, store JPEG
bytes in the image store and one manifest row per URL.

Partition N is built from 01 partition N (one host's batch): one 02 row per 01 ok row, same
order; the ok rows' images go to store/images/part-NNNNN.parquet in the same order. See
manifests/README.md (02 download) for the columns and reason codes.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.executors import local_workers
from pipeline.lineage import upstream_inputs
from pipeline.local_images import root_identity
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.download import reasons as R
from stages.download.fetch import host_name
from stages.download.manifest import SCHEMA
from stages.download.partition import download_rows, retry_rows
from stages.download.settings import TUNING_PARAMS, VOLATILE_PARAMS, load_settings, unmatched_overrides
from stages.download.store import STORE_DIR

UPSTREAM = "01_ingest"


def concurrent_slots(ctx: StageContext) -> int:
    """How many partitions may run at once on the configured cluster (for the rate split)."""
    configured = int(ctx.params.get("rate_split_slots", 0))
    if configured > 0:
        return configured
    cluster = ctx.config.get("cluster", {})
    kind = cluster.get("kind", "local")
    if kind == "local":
        return local_workers(cluster) * int(cluster["threads_per_worker"])
    if kind == "slurm":
        return int(cluster["jobs"]) * int(cluster["cores"])
    raise ConfigError(
        f"[cluster] kind = {kind!r}: set download.rate_split_slots to the number of partitions "
        "that may run at once, so that per-host rates can be split between workers"
    )


def _local_roots(path: Path) -> list[str]:
    """Image roots (archives, folders) of a 01 partition's ok local rows."""
    if "local_root" not in pq.read_schema(path).names:
        return []
    table = pq.read_table(path, columns=["status", "local_root"])
    ok = table.filter(pc.equal(table["status"], "ok"))
    return sorted(r for r in pc.unique(ok["local_root"]).to_pylist() if r)


def _root_inputs(roots: list[str], known: dict[str, str]) -> dict[str, str]:
    """Partition inputs naming the local image roots it reads, with their identity: images
    that change under the same 01 rows recompute the partition."""
    out = {}
    for root in roots:
        if root not in known:
            known[root] = root_identity(Path(root)) if Path(root).exists() else "missing"
        out[f"local:{root}"] = known[root]
    return out


def _ok_hosts(path: Path) -> list[str]:
    """Host names (politeness keys: no port) of a 01 partition's ok rows."""
    table = pq.read_table(path, columns=["status", "host"])
    ok = table.filter(pc.equal(table["status"], "ok"))
    return sorted({host_name(h) for h in pc.unique(ok["host"]).to_pylist() if h})


class DownloadStage(Stage):
    number = "02"
    name = "download"
    upstream = UPSTREAM
    volatile_params = VOLATILE_PARAMS
    tuning_params = TUNING_PARAMS
    side_dirs = (STORE_DIR,)
    retryable_reasons = R.RETRYABLE
    schema = SCHEMA

    def plan(self, ctx: StageContext) -> list[Partition]:
        committed = ctx.committed(UPSTREAM)
        hosts = {i: _ok_hosts(ctx.manifest_path(UPSTREAM, i)) for i in sorted(committed)}
        partitions_of_host = Counter(h for names in hosts.values() for h in names)
        load_settings(ctx.params)  # bad settings fail the run here, not every partition
        # An override for a host no row has is likely a typo; only this driver step sees all hosts.
        warning = unmatched_overrides(ctx.params.get("host_overrides", {}), set(partitions_of_host))
        if warning:
            print(f"[02_download] warning: {warning}", file=sys.stderr, flush=True)
        slots = concurrent_slots(ctx)
        identities: dict[str, str] = {}
        return [
            Partition(
                index=i,
                inputs={**upstream_inputs({UPSTREAM: committed}, i),
                        **_root_inputs(_local_roots(ctx.manifest_path(UPSTREAM, i)), identities)},
                payload={
                    "upstream": i,
                    "slots": slots,
                    "host_shares": {h: min(partitions_of_host[h], slots) for h in hosts[i]},
                },
            )
            for i in sorted(committed)
        ]

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        return download_rows(part, ctx, UPSTREAM)

    def retry_partition(
        self, part: Partition, ctx: StageContext, previous: pa.Table, reasons: set[str]
    ) -> PartitionOutput:
        return retry_rows(part, ctx, previous, reasons)


STAGE = DownloadStage()
