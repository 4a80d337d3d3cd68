"""Provenance: `tolpipe status` (per-stage progress and outcomes) and `tolpipe audit UUID` (the
whole life of one sample across the stages built so far)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import slurm_jobs
from pipeline.ledger import ManifestStore
from pipeline.lineage import stale_partitions, unreferenced_files
from pipeline.litter import find_litter
from pipeline.runlock import current_holder, describe
from pipeline.runrecord import RUNNING, planned_partitions, read_runs
from pipeline.slurm_jobs import JobState, describe_state, format_jobs


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
    if holder is not None and "shared_stages" in holder:
        return lines  # several live runs' temp files: the next exclusive run tidies
    litter = find_litter(root, keep_tag=(holder or {}).get("run_tag"))
    loose = [] if holder is not None else unreferenced_files(root)
    if litter.paths or loose:
        size = litter.bytes + sum(p.stat().st_size for p in loose)
        lines.append(f"leftovers of killed runs: {len(litter.paths)} temp file(s), {len(loose)} file(s) "
                     f"without a commit record, {size / 1e6:,.1f} MB; the next run removes them")  # fmt: skip
    return lines


def _job_suffix(stage_dir: str, jobs: dict[str, dict[str, Any]], states: dict[str, JobState]) -> str:
    """'; slurm job 123 running' for a stage with submitted jobs (its latest)."""
    job = jobs.get(stage_dir)
    if job is None:
        return ""
    return f"; slurm job {job['job_id']} {describe_state(states[job['job_id']])}"


def format_status(root: Path) -> str:
    dirs = stage_dirs(root)
    jobs = slurm_jobs.latest_by_stage(root)
    states = slurm_jobs.ledger_states(slurm_jobs.recorded_jobs(root)) if jobs else {}
    job_lines = format_jobs(Path(root), states)
    if not dirs:
        first = f"no manifests under {Path(root) / 'manifests'} yet"
        return "\n".join([first + ("" if jobs else ": run `tolpipe run ingest` first"), *job_lines])
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
            f"{s['rows']:,} rows ({statuses or 'none'}){when}{_job_suffix(stage_dir, jobs, states)}"
        )
        lines += _stale_lines(stage_dir, s["stale"])
        lines += [f"    {note}" for note in (last or {}).get("notes", [])]
        for reason, count in s["by_reason"].items():
            lines.append(f"    {reason}: {count:,}")
    return "\n".join(lines + _leftover_lines(Path(root), holder) + job_lines)


def find_row(root: Path, stage_dir: str, uuid: str) -> tuple[int, dict[str, Any]] | None:
    """(partition index, row) of uuid in a stage's committed partitions, or None."""
    store = ManifestStore(root, stage_dir)
    for index in sorted(store.committed_records()):
        table = pq.read_table(store.part_path(index), filters=[("uuid", "=", uuid)])
        if table.num_rows:
            return index, table.slice(0, 1).to_pylist()[0]
    return None


# Per stage, the columns of its row that the audit's overview line shows (the full row follows).
AUDIT_HIGHLIGHTS: dict[str, tuple[str, ...]] = {
    "01_ingest": ("provider", "source_id", "url", "image_type", "basis_of_record", "publisher"),
    "02_download": ("http_status", "bytes", "width", "height", "md5", "attempts"),
    "03_taxonomy": ("input_scientific_name", "scientific_name", "taxon_rank", "resolution_strategy",
                    "match_type", "data_source_id", "record_id"),
    "04_filter": ("face_filter", "face_count", "face_prob_max", "camera_trap_filter", "md_animal_conf_max",
                  "museum_filter", "museum_label", "occurrence_filter"),
    "05_dedup": ("md5_copies", "md5_kept", "md5_leak_test_id", "pdq_state", "pdq_min_distance",
                 "leak_testset", "leak_test_id"),
    "06_shard": ("split", "shard", "key", "position"),
}  # fmt: skip
FOUND, NOT_REACHED, ABSENT, NOT_RUN = "found", "not_reached", "absent", "not_run"
TRAINED_ON = "trained_on"  # a job stage whose jobs read the sample's shard
# Stages whose rows are jobs, not samples (07 train: one row per submitted job).
JOB_STAGES = ("07_train",)


def _run_of(root: Path, stage_dir: str, run_id: str | None) -> dict[str, Any]:
    return next((r for r in read_runs(root, stage_dir) if r["run_id"] == run_id), {})


def _found_entry(root: Path, stage_dir: str, index: int, row: dict[str, Any]) -> dict[str, Any]:
    record = ManifestStore(root, stage_dir).read_record(index) or {}
    run = _run_of(root, stage_dir, record.get("run_id"))
    worker = record.get("computed_on") or {}
    return {
        "stage": stage_dir, "state": FOUND, "partition": index, "row": row,
        "committed_by_run": record.get("run_id"), "code_version": record.get("code_version"),
        "git_revision": run.get("git_revision"), "config_digest": run.get("config_digest"),
        "slurm_job_id": worker.get("slurm_job_id") or run.get("slurm_job_id"),
        "host": worker.get("host") or run.get("host"), "params_digest": record.get("params_digest"),
        "retries": record.get("retries", 0),
    }  # fmt: skip


def _jobs_entry(root: Path, stage_dir: str, earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """A job stage (07 train reads whole shards): the jobs that read the sample's shard."""
    from pipeline.report_data import read_columns

    shard = next(
        (e["row"].get("shard") for e in earlier if e["state"] == FOUND and e["row"].get("shard")), None
    )
    if shard is None:
        return {"stage": stage_dir, "state": ABSENT}
    table = read_columns(
        root, stage_dir, ["kind", "job_id", "executor", "state", "status", "run_dir", "results"]
    )
    jobs = [] if table is None else table.to_pylist()
    return {"stage": stage_dir, "state": TRAINED_ON, "shard": shard, "jobs": jobs}


def audit(root: Path, uuid: str) -> list[dict[str, Any]]:
    """One entry per stage of this version, in order: the stage's row, partition and provenance
    where it knows the sample (state `found`); else why not: `not_reached` (an earlier stage
    dropped or failed it, or it is in no stage at all), `absent` (the stage ran but does not hold
    the sample), `not_run` (no committed partition). Empty when no stage knows the sample."""
    from stages import STAGE_MODULES

    entries: list[dict[str, Any]] = []
    stopped: dict[str, Any] | None = None  # the entry of the stage that dropped or failed it
    for stage_dir in STAGE_MODULES:
        store = ManifestStore(root, stage_dir)
        if not (Path(root) / "manifests" / stage_dir).is_dir() or not store.committed_records():
            entries.append({"stage": stage_dir, "state": NOT_RUN})
            continue
        if stage_dir in JOB_STAGES and stopped is None:
            entries.append(_jobs_entry(root, stage_dir, entries))
            continue
        found = find_row(root, stage_dir, uuid) if stopped is None else None
        if found is None:
            state = NOT_REACHED if stopped is not None else ABSENT
            entries.append({"stage": stage_dir, "state": state,
                            "stopped_at": stopped and stopped["stage"],
                            "stopped_reason": stopped and stopped["row"].get("reason")})  # fmt: skip
            continue
        entry = _found_entry(root, stage_dir, *found)
        entries.append(entry)
        if entry["row"].get("status") != "ok":
            stopped = entry
    if not any(e["state"] == FOUND for e in entries):
        return []
    return entries


def _overview(entry: dict[str, Any]) -> str:
    stage, state = entry["stage"], entry["state"]
    if state == NOT_RUN:
        return f"{stage:<12} stage not run under this root"
    if state == NOT_REACHED:
        return f"{stage:<12} not reached: dropped at {entry['stopped_at']} ({entry['stopped_reason']})"
    if state == ABSENT:
        return f"{stage:<12} not in this stage's manifests"
    if state == TRAINED_ON:
        jobs = ", ".join(
            f"{j['kind']} job {j['job_id']} ({j['executor']}) {j['state']}" for j in entry["jobs"]
        )
        return f"{stage:<12} read with {entry['shard']} by {jobs or 'no job'}"
    row = entry["row"]
    verdict = row["status"] + (f" {row['reason']}" if row.get("reason") else "")
    shown = [f"{k}={row[k]}" for k in AUDIT_HIGHLIGHTS.get(stage, ()) if row.get(k) is not None]
    return f"{stage:<12} {verdict:<24} {' '.join(shown)}"


def format_audit(uuid: str, entries: list[dict[str, Any]]) -> str:
    lines = [f"sample {uuid}", *(f"  {_overview(e)}" for e in entries)]
    for entry in entries:
        if entry["state"] != FOUND:
            continue
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


def audit_json(uuid: str, entries: list[dict[str, Any]]) -> str:
    """The audit as one JSON object: {"uuid": ..., "stages": [entry, ...]} (values as stored;
    timestamps and other non-JSON types as strings)."""
    return json.dumps({"uuid": uuid, "stages": entries}, indent=1, default=str)
