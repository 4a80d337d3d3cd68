"""Against a real Slurm (slurm/dev/up.sh in development and CI): batch jobs and accounting,
dask-jobqueue workers running as Slurm jobs, and stage 01 executed through [cluster] kind slurm."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.slurm import SlurmCluster

# The `slurm_cluster` fixture (skips without Slurm unless TOLPIPE_REQUIRE_SLURM is set).
pytest_plugins = ["tests.support.slurm"]
pytestmark = pytest.mark.slurm

# A dask worker job on the development Slurm connects in about 2 s; the margin is for CI.
WORKERS_TIMEOUT_S = 120
# Seconds for the accounting database to receive job records (well under 1 s here).
JOB_RECORDS_TIMEOUT_S = 30


def test_batch_job_completes_and_is_accounted(slurm_cluster: SlurmCluster, tmp_path: Path):
    out = tmp_path / "job.out"
    job_id = slurm_cluster.sbatch("--wrap", 'echo "hello from $SLURM_JOB_ID"', output=out)
    assert slurm_cluster.wait_until_final(job_id) == "COMPLETED"
    assert out.read_text().strip() == f"hello from {job_id}"
    assert slurm_cluster.sacct(job_id, "ExitCode") == "0:0"


def test_failed_job_cancels_its_afterok_dependant(slurm_cluster: SlurmCluster, tmp_path: Path):
    # Training then evaluation (stage 07) relies on this; without kill_invalid_depend the
    # dependant pends forever.
    if "kill_invalid_depend" not in slurm_cluster.config.get("DependencyParameters", ""):
        pytest.skip("this Slurm does not set DependencyParameters=kill_invalid_depend")
    failing = slurm_cluster.sbatch("--wrap", "exit 3", output=tmp_path / "failing.out")
    dependant = slurm_cluster.sbatch(
        f"--dependency=afterok:{failing}", "--wrap", "true", output=tmp_path / "dependant.out"
    )
    assert slurm_cluster.wait_until_final(failing) == "FAILED"
    assert slurm_cluster.sacct(failing, "ExitCode") == "3:0"
    assert slurm_cluster.wait_until_final(dependant) == "CANCELLED"


def test_dask_jobqueue_runs_work_in_slurm_jobs(slurm_cluster: SlurmCluster, tmp_path: Path):
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    def square_where(x: int) -> tuple[int, str]:
        import os

        return x * x, os.environ["SLURM_JOB_ID"]

    def worker_job_id() -> str:
        import os

        return os.environ["SLURM_JOB_ID"]

    cluster = SLURMCluster(
        cores=1, processes=1, memory="1GB", walltime="00:10:00",
        scheduler_options={"host": "127.0.0.1"}, log_directory=str(tmp_path / "logs"),
        local_directory=str(tmp_path / "spill"),
    )  # fmt: skip
    with cluster, Client(cluster) as client:
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=WORKERS_TIMEOUT_S)
        job_ids = {job.job_id for job in cluster.workers.values()}
        assert len(job_ids) == 2 and all(j.isdigit() for j in job_ids)
        assert set(client.run(worker_job_id).values()) == job_ids
        for job_id in job_ids:
            assert slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").strip() == "RUNNING"
        results = client.gather(client.map(square_where, range(8)))
        assert [r[0] for r in results] == [x * x for x in range(8)]
        assert {r[1] for r in results} <= job_ids
    # Closing the cluster ends its jobs: nothing is left running on Slurm.
    for job_id in job_ids:
        assert slurm_cluster.wait_until_final(job_id) in {"CANCELLED", "COMPLETED"}


def _jobs_named(slurm_cluster: SlurmCluster, name: str, count: int) -> list[dict[str, str]]:
    """The accounting lines of the jobs called NAME, once there are COUNT of them (slurmdbd
    receives job records a moment after the controller)."""
    fields = ["JobID", "State", "Start"]
    deadline = time.monotonic() + JOB_RECORDS_TIMEOUT_S
    while True:
        out = slurm_cluster.run(
            "sacct", "-n", "-X", "-P", "--name", name, "-S", "now-1days", "-o", ",".join(fields)
        )
        jobs = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]
        if len(jobs) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.1)


def test_ingest_on_slurm_equals_local_run(slurm_cluster: SlurmCluster, tmp_path: Path):
    from pipeline.config import load_config
    from pipeline.runner import run_stage
    from tests.conftest import partition_digests, write_url_table

    source = write_url_table(tmp_path / "urls.csv", rows=300, hosts=3, duplicates_every=50)
    overrides = [f'ingest.sources=["table:{source}"]', "ingest.batch_size=40"]
    job_name = f"tolpipe-test-{uuid.uuid4().hex[:12]}"
    slurm = {
        "kind": "slurm", "cores": 1, "processes": 1, "memory": "1GB", "walltime": "00:10:00",
        "jobs": 2, "scheduler_host": "127.0.0.1", "log_directory": str(tmp_path / "logs"),
        # A unique job name (after dask-jobqueue's own -J) to find these jobs in sacct.
        "job_extra_directives": [f"--job-name={job_name}"],
    }  # fmt: skip

    digests = {}
    for kind in ("local", "slurm"):
        root = tmp_path / kind
        config = load_config(root, overrides=overrides)
        if kind == "slurm":
            config["cluster"].update(slurm)
        summary = run_stage(root, "01_ingest", config)
        assert summary["partitions_computed"] == summary["partitions_planned"] >= 3
        digests[kind] = partition_digests(root, "01_ingest")
    assert digests["slurm"] == digests["local"]

    jobs = _jobs_named(slurm_cluster, job_name, 2)
    assert len(jobs) == 2, jobs
    assert all(job["Start"] not in ("", "Unknown", "None") for job in jobs), jobs
    for job in jobs:
        assert slurm_cluster.wait_until_final(job["JobID"]) in {"CANCELLED", "COMPLETED"}
