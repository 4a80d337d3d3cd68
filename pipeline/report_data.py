"""What `tolpipe report` and the demo's summary show, read from a work root: rows per stage by
status and reason, the accounting of every input row, images per provider and image type, taxa
per rank, image sizes, filters that did not run, shards, and the train stage's files when there
are any. Works on a partial root: each function returns what the stages that ran wrote."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.ledger import ManifestStore
from pipeline.provenance import JOB_STAGES  # rows are jobs: not in the funnel or the accounting
from pipeline.runrecord import read_runs

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def flatten_figures(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested result tables as one level, keys joined with dots ("zero_shot.species.top1")."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten_figures(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def all_stage_dirs() -> list[str]:
    from stages import STAGE_MODULES

    return list(STAGE_MODULES)


def present_stage_dirs(root: Path) -> list[str]:
    """Stages with at least one committed partition, in stage order."""
    return [d for d in all_stage_dirs() if ManifestStore(root, d).committed_records()]


def missing_stage_dirs(root: Path) -> list[str]:
    present = set(present_stage_dirs(root))
    return [d for d in all_stage_dirs() if d not in present]


def stage_counts(root: Path, samples_only: bool = True) -> list[dict[str, Any]]:
    """Per present stage (sample stages only, unless asked): rows, by status, by `status:reason`,
    from the commit records."""
    out = []
    for stage_dir in present_stage_dirs(root):
        if samples_only and stage_dir in JOB_STAGES:
            continue
        by_status: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        for record in ManifestStore(root, stage_dir).committed_records().values():
            by_status.update(record["counts"]["by_status"])
            by_reason.update(record["counts"]["by_reason"])
        out.append(
            {
                "stage": stage_dir,
                "rows": sum(by_status.values()),
                "by_status": dict(by_status),
                "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
            }
        )
    return out


def accounting(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """Input rows = rows each stage removed (dropped + failed) + the last stage's ok rows.

    Holds when every stage read exactly its predecessor's ok rows; `balanced` says whether it
    does, `gaps` names the stages whose rows differ from the previous stage's ok rows."""
    if not counts:
        return {"input_rows": 0, "removed": {}, "kept": 0, "balanced": True, "gaps": []}
    removed = {c["stage"]: c["rows"] - c["by_status"].get("ok", 0) for c in counts}
    gaps = [
        f"{cur['stage']}: {cur['rows']} rows, {prev['stage']} ok {prev['by_status'].get('ok', 0)}"
        for prev, cur in zip(counts, counts[1:], strict=False)
        if cur["rows"] != prev["by_status"].get("ok", 0)
    ]
    kept = counts[-1]["by_status"].get("ok", 0)
    total = counts[0]["rows"]
    return {
        "input_rows": total,
        "removed": removed,
        "kept": kept,
        "balanced": not gaps and total == kept + sum(removed.values()),
        "gaps": gaps,
    }


def read_columns(root: Path, stage_dir: str, columns: list[str]) -> pa.Table | None:
    """The named columns of every committed partition of a stage (those it has), or None."""
    store = ManifestStore(root, stage_dir)
    tables = []
    for index in sorted(store.committed_records()):
        path = store.part_path(index)
        names = set(pq.read_schema(path).names)
        tables.append(pq.read_table(path, columns=[c for c in columns if c in names]))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def provider_image_types(root: Path) -> dict[str, dict[str, int]]:
    """01 rows by provider, then image type (all statuses)."""
    table = read_columns(root, "01_ingest", ["provider", "image_type"])
    out: dict[str, dict[str, int]] = {}
    if table is None:
        return out
    for provider, image_type in zip(
        table["provider"].to_pylist(), table["image_type"].to_pylist(), strict=True
    ):
        row = out.setdefault(provider or "(none)", {})
        row[image_type or "(none)"] = row.get(image_type or "(none)", 0) + 1
    return out


def taxa_per_rank(root: Path) -> dict[str, int]:
    """Distinct resolved names per rank among the rows the last present stage kept (03's lineage)."""
    table = read_columns(root, "03_taxonomy", ["uuid", "status", *RANKS])
    if table is None:
        return {}
    kept = _kept_uuids(root)
    ok = table.filter(pc.equal(table["status"], "ok"))
    if kept is not None:
        ok = ok.filter(pc.is_in(ok["uuid"], value_set=kept))
    return {rank: len({v for v in ok[rank].to_pylist() if v}) for rank in RANKS if rank in ok.column_names}


def _kept_uuids(root: Path) -> pa.Array | None:
    present = [d for d in present_stage_dirs(root) if d not in JOB_STAGES]
    if not present:
        return None
    table = read_columns(root, present[-1], ["uuid", "status"])
    return table.filter(pc.equal(table["status"], "ok"))["uuid"].combine_chunks()


def image_sizes(root: Path) -> dict[str, list[int]]:
    """Original width and height of every image 02 kept."""
    table = read_columns(root, "02_download", ["status", "width", "height"])
    if table is None:
        return {"width": [], "height": []}
    ok = table.filter(pc.equal(table["status"], "ok"))
    return {"width": ok["width"].to_pylist(), "height": ok["height"].to_pylist()}


def last_run(root: Path, stage_dir: str) -> dict[str, Any] | None:
    runs = read_runs(root, stage_dir)
    return runs[-1] if runs else None


def filter_notes(root: Path) -> list[str]:
    """The filter stage's notes on its last run (filters that did not run, and why)."""
    run = last_run(root, "04_filter")
    return list((run or {}).get("notes", []))


def filter_states(root: Path) -> dict[str, dict[str, int]]:
    """Per filter: rows by state (applied, not_applicable, not_run)."""
    filters = ["face_filter", "camera_trap_filter", "museum_filter", "occurrence_filter"]
    table = read_columns(root, "04_filter", filters)
    if table is None:
        return {}
    return {f: dict(Counter(table[f].to_pylist())) for f in filters if f in table.column_names}


def shards(root: Path) -> dict[str, Any]:
    """Shard files and the exact sample counts of sizes.json."""
    folder = Path(root) / "shards"
    files = sorted(folder.glob("*.tar"))
    sizes_path = folder / "sizes.json"
    sizes = json.loads(sizes_path.read_text()) if sizes_path.exists() else {}
    return {
        "folder": str(folder),
        "files": [f.name for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "samples": sizes,
    }


def run_environment(root: Path) -> dict[str, Any]:
    """Config digest, versions and host of each present stage's last run."""
    out = {}
    for stage_dir in present_stage_dirs(root):
        run = last_run(root, stage_dir) or {}
        out[stage_dir] = {
            k: run.get(k)
            for k in (
                "run_id",
                "outcome",
                "tolpipe_version",
                "git_revision",
                "config_digest",
                "host",
                "slurm_job_id",
                "python",
                "packages",
            )
        }
    return out


def train_jobs(root: Path) -> list[dict[str, Any]]:
    """The train stage's rows: one per submitted job (training, evaluation)."""
    table = read_columns(
        root,
        "07_train",
        [
            "kind",
            "job_name",
            "job_id",
            "executor",
            "state",
            "status",
            "reason",
            "run_dir",
            "metrics",
            "results",
        ],
    )
    return [] if table is None else table.to_pylist()


def frozen_config(root: Path) -> str:
    path = Path(root) / "tolpipe.toml"
    return path.read_text() if path.exists() else ""
