"""The Slurm jobs submitted for a work root: a small JSON ledger (`<root>/batch/jobs.json`,
written atomically, in submission order) and their live states from `sacct` (or `squeue` where
accounting is off), for `tolpipe status`.

Anything that submits jobs for a root records them here: `tolpipe slurm submit` (one job per
stage, a job array for GPU stages) and the training code (its submitit jobs).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import atomic

# Root-relative folder of the ledger and of each submission's scripts, logs and scheduler files.
BATCH_DIR = "batch"
LEDGER_NAME = "jobs.json"
LOCK_NAME = "jobs.lock"
# Seconds a sacct or squeue call may take before status reports the jobs as UNKNOWN.
QUERY_TIMEOUT_S = 30
UNKNOWN = "UNKNOWN"
# States after which a job never runs again (sacct's State, first word).
FINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "TIMEOUT",
})  # fmt: skip
# How an array's overall state follows from its tasks' states: the first that any task is in.
ARRAY_PRECEDENCE = (
    "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "CANCELLED",
    "PREEMPTED", "RUNNING", "REQUEUED", "PENDING", "COMPLETED",
)  # fmt: skip


@dataclass(frozen=True)
class JobState:
    state: str  # sacct State first word: PENDING, RUNNING, COMPLETED, FAILED, ... or UNKNOWN
    exit_code: str | None  # "0:0", "1:0", ...
    reason: str | None  # squeue/sacct reason, e.g. DependencyNeverSatisfied, NonZeroExitCode
    started: bool | None = None  # whether it ever ran (sacct's Start); None: not known

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def ledger_path(root: Path) -> Path:
    return Path(root) / BATCH_DIR / LEDGER_NAME


def recorded_jobs(root: Path) -> list[dict]:
    """The jobs submitted for this root, in submission order (empty before the first)."""
    path = ledger_path(root)
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("jobs", []))


def record_job(
    root: Path, *, stage: str, name: str, job_id: str, script: Path | None = None,
    depends_on: Sequence[str] = (), log: str | None = None,
) -> None:  # fmt: skip
    """Append one submitted job to the ledger (atomically: a killed writer leaves the old one;
    under a lock: a job array's launcher may record while another submission does)."""
    path = ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _append(root, stage, name, job_id, script, depends_on, log)
    finally:
        os.close(fd)


def _append(
    root: Path, stage: str, name: str, job_id: str, script: Path | None, depends_on: Sequence[str],
    log: str | None,
) -> None:  # fmt: skip
    jobs = recorded_jobs(root)
    jobs.append({
        "job_id": str(job_id), "stage": stage, "name": name,
        "script": str(script) if script is not None else None,
        "depends_on": [str(d) for d in depends_on], "log": log,
        "submitted_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    atomic.write_text(ledger_path(root), json.dumps({"jobs": jobs}, indent=1) + "\n")


def _none(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "None", "(null)") else value


def _first_word(state: str) -> str:
    return state.split()[0] if state.strip() else UNKNOWN  # "CANCELLED by 0" -> "CANCELLED"


def _array_id(job_id: str) -> str:
    return job_id.split("_", 1)[0]


def _overall(tasks: list[JobState]) -> JobState:
    """An array's state from its tasks': the most telling one (a failed task fails the array)."""
    states = {t.state for t in tasks}
    state = next((s for s in ARRAY_PRECEDENCE if s in states), tasks[0].state)
    first = next(t for t in tasks if t.state == state)
    return JobState(state, first.exit_code, first.reason)


def _run(args: list[str]) -> str | None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _final_reason(state: str, exit_code: str | None, reason: str | None, started: bool) -> str | None:
    """sacct keeps the reason a job last pended for ("Dependency"); once the job is over, say why
    it ended instead: a job cancelled before it started while waiting on a dependency was
    cancelled because that dependency failed (kill_invalid_depend, --kill-on-invalid-dep)."""
    if state == "CANCELLED" and not started and reason == "Dependency":
        return "DependencyNeverSatisfied"
    if state == "FAILED" and reason in (None, "Dependency", "None") and exit_code not in (None, "0:0"):
        return "NonZeroExitCode"
    return None if reason == "Dependency" and state in FINAL_STATES else reason


def _sacct(ids: list[str]) -> dict[str, JobState] | None:
    fields = "JobID,State,ExitCode,Reason,Start"
    out = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", fields])
    if out is None:
        return None
    found: dict[str, JobState] = {}
    for line in out.splitlines():
        values = line.split("|")
        if len(values) == 5:
            state, exit_code = _first_word(values[1]), _none(values[2])
            started = _none(values[4]) not in (None, "Unknown")
            reason = _final_reason(state, exit_code, _none(values[3]), started)
            found[values[0]] = JobState(state, exit_code, reason, started)
    return found


def _squeue(ids: list[str]) -> dict[str, JobState]:
    out = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"]) or ""
    found: dict[str, JobState] = {}
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) == 3:
            found[fields[0]] = JobState(_first_word(fields[1]), None, _none(fields[2]))
    return found


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Live state of each job, from one sacct call (squeue when accounting is off; jobs neither
    knows are UNKNOWN). An array job id maps to its overall state, and each of its tasks
    ("123_4") is reported too."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    found = _sacct(ids)
    known = {_array_id(k) for k in found or {}}
    missing = [k for k in ids if k not in known]
    if missing:  # accounting off, or not yet told of a new job: the queue knows queued and running ones
        found = {**_squeue(missing), **(found or {})}
    states: dict[str, JobState] = {}
    for job_id in ids:
        tasks = {k: v for k, v in found.items() if _array_id(k) == job_id and k != job_id}
        if job_id in found and not tasks:
            states[job_id] = found[job_id]
        elif tasks:
            states.update(tasks)
            states[job_id] = _overall(list(tasks.values()))
        else:
            states[job_id] = JobState(UNKNOWN, None, None)
    return states


def ledger_states(jobs: list[dict]) -> dict[str, JobState]:
    """job_states of the ledger's jobs, with explain_cancellations applied."""
    return explain_cancellations(jobs, job_states(j["job_id"] for j in jobs))


def explain_cancellations(jobs: list[dict], found: dict[str, JobState]) -> dict[str, JobState]:
    """Why a job was cancelled before it ran, where sacct does not say: slurmdbd keeps the
    reason it last pended for ("Dependency") only when that reached it before the cancel, and
    records None otherwise. A job whose dependency ended other than COMPLETED is given
    DependencyNeverSatisfied, down the chain (kill_invalid_depend, --kill-on-invalid-dep)."""
    states = dict(found)
    changed = True
    while changed:
        changed = False
        for job in jobs:
            state = states.get(job["job_id"])
            if state is None or state.state != "CANCELLED" or state.reason or state.started is not False:
                continue
            upstream = [states.get(str(d)) for d in job.get("depends_on") or ()]
            if any(u is not None and u.final and u.state != "COMPLETED" for u in upstream):
                states[job["job_id"]] = replace(state, reason="DependencyNeverSatisfied")
                changed = True
    return states


def describe_state(state: JobState) -> str:
    """'failed (exit 1:0, NonZeroExitCode)', 'cancelled (DependencyNeverSatisfied)', 'running'."""
    details = []
    if state.exit_code not in (None, "0:0") and state.state not in ("COMPLETED", "PENDING", "RUNNING"):
        details.append(f"exit {state.exit_code}")
    if state.reason and state.state != "COMPLETED":
        details.append(state.reason)
    return state.state.lower() + (f" ({', '.join(details)})" if details else "")


def log_file(job: dict, key: str) -> Path | None:
    """The log of a job (or of one array task, key "123_4"), from sbatch's --output pattern."""
    pattern = job.get("log")
    if not pattern:
        return None
    array, _, task = key.partition("_")
    for code, value in (("%x", job["name"]), ("%A", array), ("%a", task), ("%j", key)):
        pattern = pattern.replace(code, value)
    return Path(pattern)


def _why(job: dict, key: str, state: JobState) -> list[str]:
    """For a job that failed: the log's error line (tolpipe's one-line errors), and the log."""
    if state.state not in FINAL_STATES - {"COMPLETED", "CANCELLED"}:
        return []
    path = log_file(job, key)
    if path is None or not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tolpipe: ")] or lines[-1:]
    return [f"      {errors[-1]}" if errors else "      (empty log)", f"      log: {path}"]


def _task_lines(job: dict, states: dict[str, JobState]) -> list[str]:
    job_id = job["job_id"]
    tasks = sorted((k for k in states if _array_id(k) == job_id and k != job_id), key=_task_order)
    lines = []
    for key in tasks:
        lines.append(f"    task {key.split('_', 1)[1]}: {describe_state(states[key])}")
        lines += _why(job, key, states[key])
    return lines


def _task_order(key: str) -> tuple[int, str]:
    tail = key.split("_", 1)[1]
    return (int(tail), tail) if tail.isdigit() else (1 << 30, tail)


def format_jobs(root: Path, states: dict[str, JobState] | None = None) -> list[str]:
    """The lines `tolpipe status` prints for a root with submitted jobs: each job's live state,
    newest submission last; array tasks under their array."""
    jobs = recorded_jobs(root)
    if not jobs:
        return []
    if states is None:
        states = ledger_states(jobs)
    lines = ["slurm jobs (sacct; newest last):"]
    for job in jobs:
        state = states.get(job["job_id"], JobState(UNKNOWN, None, None))
        after = f", after {','.join(job['depends_on'])}" if job.get("depends_on") else ""
        lines.append(f"  {job['job_id']} {job['name']} [{job['stage']}{after}]: {describe_state(state)}")
        tasks = _task_lines(job, states)
        lines += tasks if tasks else _why(job, job["job_id"], state)
    return lines


def latest_by_stage(root: Path) -> dict[str, dict[str, Any]]:
    """The last job recorded for each stage."""
    return {job["stage"]: job for job in recorded_jobs(root)}


def reroute(root: Path, old: str, new: str) -> list[dict]:
    """In the ledger, jobs that waited on job `old` now wait on `new` (a job array's launcher
    hands its dependants to the array it submitted); returns those jobs."""
    path = ledger_path(root)
    fd = os.open(path.with_name(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        jobs = recorded_jobs(root)
        moved = [j for j in jobs if str(old) in j.get("depends_on", []) and j["job_id"] != str(new)]
        for job in moved:
            job["depends_on"] = [str(new) if d == str(old) else d for d in job["depends_on"]]
        atomic.write_text(path, json.dumps({"jobs": jobs}, indent=1) + "\n")
        return moved
    finally:
        os.close(fd)
