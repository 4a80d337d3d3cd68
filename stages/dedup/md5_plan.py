"""MD5 dedup decided across every partition in prepare(), cached by the upstream files it read.

The driver runs the bounded-memory table of stages/dedup/md5_table.py over 04's ok rows of every
partition (02's `md5`: MD5 of the original downloaded bytes) and writes one decisions file per
pass under work/05_dedup/md5-<digest of the upstream files>/, then `digests.json` (written last:
the folder is complete only with it). Each partition's inputs carry the digest of the decisions
about its own rows, an order-independent sum of per-row hashes, so it is recomputed exactly when
one of them changes, whatever the number of passes was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.digest import digest_json
from pipeline.joined import joined_rows
from pipeline.ledger import write_parquet
from pipeline.stage import StageContext
from stages.dedup.md5_table import find_duplicates, passes_needed

UPSTREAMS = ("01_ingest", "02_download", "03_taxonomy", "04_filter")
MD5_COLUMNS = {"02_download": ["md5"], "04_filter": []}
RULE = "smallest uuid kept"  # part of the cache key: a new rule must not reuse old decisions
DIGESTS = "digests.json"
NONE = "none"
BATCH_ROWS = 65536  # decision rows turned into Python objects at once (digests)


@dataclass(frozen=True)
class Md5Plan:
    folder: Path
    digests: dict[int, str]  # partition -> digest of the decisions about its rows
    stats: dict[str, int]


def read_md5(root: Path, index: int) -> tuple[pa.Array, pa.Array]:
    """uuid and 02's md5 of partition `index`'s rows that 04 kept."""
    rows = joined_rows(root, index, MD5_COLUMNS)
    return rows["uuid"].combine_chunks(), rows["md5"].combine_chunks()


def _row_hash(row: dict[str, Any]) -> int:
    text = f"{row['uuid']}\x1f{row['md5']}\x1f{row['copies']}\x1f{row['kept']}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


def _accumulate(sums: dict[int, int], table: pa.Table) -> None:
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        for row in batch.to_pylist():
            sums[row["partition"]] = (sums.get(row["partition"], 0) + _row_hash(row)) % (1 << 256)


def _upstream_key(ctx: StageContext) -> tuple[str, list[int], int]:
    records = {stage: ctx.committed(stage) for stage in UPSTREAMS}
    indices = sorted(records["04_filter"])
    shas = {i: [records[s][i]["sha256"] if i in records[s] else None for s in UPSTREAMS] for i in indices}
    rows = sum(int(records["04_filter"][i]["counts"]["by_status"].get("ok", 0)) for i in indices)
    return digest_json({"rule": RULE, "upstream": {str(i): shas[i] for i in indices}}), indices, rows


def _load(folder: Path) -> Md5Plan:
    data = json.loads((folder / DIGESTS).read_text())
    return Md5Plan(folder, {int(k): v for k, v in data["digests"].items()}, data["stats"])


def _build(ctx: StageContext, folder: Path, indices: list[int], rows: int) -> Md5Plan:
    """Decide, write the pass files and digests into a temp folder, then rename it into place."""
    budget = int(ctx.params["md5_table_mb"]) * 1024 * 1024
    sums: dict[int, int] = {}
    groups = duplicates = 0
    staged = folder.with_name(atomic.tagged(folder.name))  # a killed run's is removed as litter
    staged.mkdir(parents=True)
    for share, table in enumerate(find_duplicates(indices, lambda i: read_md5(ctx.root, i), rows, budget)):
        write_parquet(table, staged / f"pass-{share:05d}.parquet")
        _accumulate(sums, table)
        kept = int(pc.sum(pc.equal(table["uuid"], table["kept"])).as_py() or 0)
        groups, duplicates = groups + kept, duplicates + table.num_rows - kept
    stats = {"rows": rows, "passes": passes_needed(rows, budget), "duplicate_groups": groups,
             "duplicate_rows": duplicates}  # fmt: skip
    digests = {str(i): f"{sums[i]:064x}" for i in sorted(sums)}
    atomic.write_text(staged / DIGESTS, json.dumps({"digests": digests, "stats": stats}, indent=1))
    staged.rename(folder)
    atomic.fsync_path(folder.parent)
    return _load(folder)


def prepare(ctx: StageContext) -> Md5Plan:
    """The decisions for the current upstream partitions, computed or found in the cache."""
    key, indices, rows = _upstream_key(ctx)
    folder = ctx.work_dir() / f"md5-{key[:16]}"
    if not (folder / DIGESTS).is_file():
        shutil.rmtree(folder, ignore_errors=True)  # never left incomplete by _build; tidy anyway
    plan = _load(folder) if folder.is_dir() else _build(ctx, folder, indices, rows)
    for old in ctx.work_dir().glob("md5-*"):
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return plan


def partition_digest(plan: Md5Plan, index: int) -> str:
    return plan.digests.get(index, NONE)


def read_partition(folder: Path, index: int) -> dict[str, tuple[int, str]]:
    """uuid -> (copies, kept uuid) for the rows of partition `index` that have copies."""
    found: dict[str, tuple[int, str]] = {}
    for path in sorted(folder.glob("pass-*.parquet")):
        table = pq.read_table(path, columns=["uuid", "copies", "kept"], filters=[("partition", "=", index)])
        for uuid, copies, kept in zip(table["uuid"].to_pylist(), table["copies"].to_pylist(),
                                      table["kept"].to_pylist(), strict=True):  # fmt: skip
            found[uuid] = (copies, kept)
    return found
