"""Provenance: `tolpipe status` (per-stage progress and outcomes) and `tolpipe audit UUID` (the
whole life of one sample across the stages built so far)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.ledger import ManifestStore
from pipeline.lineage import stale_partitions, unreferenced_files
from pipeline.litter import find_litter
from pipeline.runlock import current_holder, describe
from pipeline.runrecord import RUNNING, planned_partitions, read_runs


def stage_dirs(root: Path) -> list[str]:
    from stages import STAGE_MODULES

    return [d for d in STAGE_MODULES if (Path(root) / "manifests" / d).is_dir()]


def stage_status(root: Path, stage_dir: str, cache: dict | None = None) -> dict[str, Any]:
    store = ManifestStore(root, stage_dir)
    records = store.committed_records()
    runs = read_runs(root, stage_dir)
    planned = planned_partitions(root, stage_dir)
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for record in records.values():
        by_status.update(record["counts"]["by_status"])
        by_reason.update(record["counts"]["by_reason"])
    return {
        "stage": stage_dir,
        "partitions_done": len(records),
        "partitions_planned": planned,
        "rows": sum(by_status.values()),
        "by_status": dict(by_status),
        "by_reason": dict(by_reason.most_common()),
        "last_run": runs[-1] if runs else None,
        "stale": stale_partitions(root, stage_dir, cache),
    }


def _outcome(run: dict[str, Any], holder: dict[str, Any] | None) -> str:
    outcome = run.get("outcome", "unfinished")
    if outcome == RUNNING:
        return "running now" if holder is not None else "killed (did not finish)"
    return outcome


def _stale_lines(stage_dir: str, stale: list) -> list[str]:
    if not stale:
        return []
    sources = sorted({s.upstream.split("/")[0] for s in stale})
    parts = ", ".join(f"part-{s.index:05d}" for s in stale[:5]) + (" ..." if len(stale) > 5 else "")
    short = stage_dir.split("_", 1)[1]
    return [f"    stale: {len(stale)} partition(s) built from {', '.join(sources)} partitions that "
            f"changed since ({parts}): run `tolpipe run {short}`"]  # fmt: skip


def _leftover_lines(root: Path, holder: dict[str, Any] | None) -> list[str]:
    lines = []
    if holder is not None:
        lines.append(f"in use by {describe(holder)}")
    litter = find_litter(root, keep_tag=(holder or {}).get("run_tag"))
    loose = [] if holder is not None else unreferenced_files(root)
    if litter.paths or loose:
        size = litter.bytes + sum(p.stat().st_size for p in loose)
        lines.append(f"leftovers of killed runs: {len(litter.paths)} temp file(s), {len(loose)} file(s) "
                     f"without a commit record, {size / 1e6:,.1f} MB; the next run removes them")  # fmt: skip
    return lines


def format_status(root: Path) -> str:
    dirs = stage_dirs(root)
    if not dirs:
        return f"no manifests under {Path(root) / 'manifests'} yet: run `tolpipe run ingest` first"
    holder = current_holder(root)
    lines = []
    cache: dict = {}
    for stage_dir in dirs:
        s = stage_status(root, stage_dir, cache)
        total = "?" if s["partitions_planned"] is None else s["partitions_planned"]
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(s["by_status"].items()) if v)
        last = s["last_run"]
        when = f"; last run {last['run_id']} {_outcome(last, holder)}" if last else ""
        stale = f", {len(s['stale'])} stale" if s["stale"] else ""
        lines.append(
            f"{stage_dir}: {s['partitions_done']}/{total} partitions{stale}, "
            f"{s['rows']:,} rows ({statuses or 'none'}){when}"
        )
        lines += _stale_lines(stage_dir, s["stale"])
        lines += [f"    {note}" for note in (last or {}).get("notes", [])]
        for reason, count in s["by_reason"].items():
            lines.append(f"    {reason}: {count:,}")
    return "\n".join(lines + _leftover_lines(Path(root), holder))


def find_row(root: Path, stage_dir: str, uuid: str) -> tuple[int, dict[str, Any]] | None:
    """(partition index, row) of uuid in a stage's committed partitions, or None."""
    store = ManifestStore(root, stage_dir)
    for index in sorted(store.committed_records()):
        table = pq.read_table(store.part_path(index), filters=[("uuid", "=", uuid)])
        if table.num_rows:
            return index, table.slice(0, 1).to_pylist()[0]
    return None


def audit(root: Path, uuid: str) -> list[dict[str, Any]]:
    """One entry per stage that knows the sample: its row, partition and provenance."""
    entries = []
    for stage_dir in stage_dirs(root):
        found = find_row(root, stage_dir, uuid)
        if found is None:
            continue
        index, row = found
        record = ManifestStore(root, stage_dir).read_record(index) or {}
        run = next((r for r in read_runs(root, stage_dir) if r["run_id"] == record.get("run_id")), {})
        worker = record.get("computed_on") or {}
        entries.append(
            {
                "stage": stage_dir,
                "partition": index,
                "row": row,
                "committed_by_run": record.get("run_id"),
                "code_version": record.get("code_version"),
                "git_revision": run.get("git_revision"),
                "config_digest": run.get("config_digest"),
                "slurm_job_id": worker.get("slurm_job_id") or run.get("slurm_job_id"),
                "host": worker.get("host") or run.get("host"),
                "params_digest": record.get("params_digest"),
                "retries": record.get("retries", 0),
            }
        )
    return entries


def format_audit(uuid: str, entries: list[dict[str, Any]]) -> str:
    lines = [f"sample {uuid}"]
    for entry in entries:
        lines.append(f"\n== {entry['stage']} (part-{entry['partition']:05d})")
        for key, value in entry["row"].items():
            if key != "uuid" and value is not None:
                lines.append(f"  {key}: {value}")
        lines.append(
            "  -- provenance: run {committed_by_run}, tolpipe {code_version}, git {git_revision}, "
            "config {config_digest}, host {host}, slurm job {slurm_job_id}, retries {retries}".format(
                **{k: (str(v)[:16] if k == "config_digest" and v else v) for k, v in entry.items()}
            )
        )
    return "\n".join(lines)


