"""Run records: what ran, where, with which config and code, and what it produced."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline import __version__, atomic
from pipeline.config import config_digest

# Outcome of a run record while the run is in progress (or forever, if the run was killed).
RUNNING = "running"

KEY_PACKAGES = (
    "dask", "distributed", "dask-jobqueue", "pyarrow", "pandas", "numpy", "requests", "pillow",
    "torch", "torchvision", "open_clip_torch", "facenet-pytorch", "PytorchWildlife", "pdqhash",
    "webdataset", "submitit",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The checkout's revision (with '-dirty' when modified), or None outside a git checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def new_run_id() -> str:
    """UTC timestamp with microseconds and pid: sortable and unique per invocation. In a Slurm
    job also its job id (each task of an array has its own): tasks of one array run at once on
    several nodes, whose pids may coincide."""
    job = os.environ.get("SLURM_JOB_ID", "")
    suffix = f"-j{job}" if job.isdigit() else ""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + f"-{os.getpid()}{suffix}"


class RunRecord:
    def __init__(self, root: Path, stage_dir: str, command: str, config: dict[str, Any]):
        self.run_id = new_run_id()
        self.path = Path(root) / "manifests" / stage_dir / "_runs" / f"{self.run_id}.json"
        self.started = time.time()
        self.data: dict[str, Any] = {
            "run_id": self.run_id,
            "stage": stage_dir,
            "command": command,
            "tolpipe_version": __version__,
            "git_revision": git_revision(),
            "python": platform.python_version(),
            "packages": package_versions(),
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "config_digest": config_digest(config),
            "config": config,
            "started_utc": datetime.now(UTC).isoformat(),
        }

    def start(self, **fields: Any) -> None:
        """Written before any work, outcome "running": a run killed before finish() stays so, and
        later runs see that the stage did not finish."""
        self.data.update(fields)
        self.data["outcome"] = RUNNING
        self._write()

    def finish(self, outcome: str, **fields: Any) -> dict[str, Any]:
        self.data.update(fields)
        self.data["outcome"] = outcome
        self.data["ended_utc"] = datetime.now(UTC).isoformat()
        self.data["elapsed_s"] = round(time.time() - self.started, 3)
        self._write()
        return self.data

    def _write(self) -> None:
        atomic.write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str))


def read_runs(root: Path, stage_dir: str) -> list[dict[str, Any]]:
    runs_dir = Path(root) / "manifests" / stage_dir / "_runs"
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]


def last_build(root: Path, stage_dir: str) -> dict[str, Any] | None:
    """The latest run or rebuild of a stage (retries only rewrite rows of committed partitions)."""
    builds = [r for r in read_runs(root, stage_dir) if not str(r.get("command", "")).startswith("retry")]
    return builds[-1] if builds else None


def _removed_since(root: Path, stage_dir: str, since: str) -> int:
    """Partitions of a stage that runs of other stages removed (as built from orphans) after
    `since`: they no longer count as planned."""
    removed = 0
    for runs_dir in sorted((Path(root) / "manifests").glob("*/_runs")):
        if runs_dir.parent.name == stage_dir:
            continue
        for run in read_runs(root, runs_dir.parent.name):
            if run.get("started_utc", "") > since:
                removed += len(run.get("downstream_removed", {}).get(stage_dir, []))
    return removed


def planned_partitions(root: Path, stage_dir: str) -> int | None:
    """How many partitions the stage's latest plan has (None before its first finished run)."""
    last = next((r for r in reversed(read_runs(root, stage_dir)) if "partitions_planned" in r), None)
    if last is None:
        return None
    return last["partitions_planned"] - _removed_since(root, stage_dir, last["started_utc"])
