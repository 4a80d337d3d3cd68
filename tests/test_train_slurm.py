"""Stage 07 on the real Slurm: the training job and its afterok evaluation job, failures and
cancellations as states in the 07 manifest, and a training job interrupted by Slurm's warning
signal that requeues itself and resumes from its checkpoint at the same data position.

These need the development Slurm (bash slurm/dev/up.sh); with TOLPIPE_REQUIRE_SLURM set they
fail instead of skipping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, cli

if TYPE_CHECKING:
    from tests.support.slurm import SlurmCluster

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.support.slurm", "tests.support.train_fixtures"]
# One tiny training + evaluation takes well under a minute on an idle development Slurm; the
# margins are for a loaded 2-core machine.
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]
WAIT_S = 600


def _options(data: Path, *extra: str, steps: int = 12, eval_data: bool = True) -> list[str]:
    sets = [
        f"train.data={data / 'shards'}", f"train.replay_data={data / 'replay'}",
        f"train.max_steps={steps}", "train.batch_size=16", "train.replay_batch_size=4",
        "train.checkpoint_every=4", "train.wait=true", "train.poll_s=0.5", "train.executor=slurm",
        *([f"train.eval_data={data / 'eval' / 'eval.parquet'}"] if eval_data else []), *extra,
    ]  # fmt: skip
    return [arg for s in sets for arg in ("--set", s)]


def _rows(root: Path) -> dict[str, dict]:
    table = pq.read_table(root / "manifests" / "07_train" / "part-00000.parquet").to_pylist()
    return {row["kind"]: row for row in table}


def _start(root: Path, options: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root),
           "--set", "cluster.local_processes=false",
           "run", "train", *options]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _train_job_id(root: Path, timeout_s: float = 60) -> str:
    ledger = root / "batch" / "jobs.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ledger.exists():
            jobs = [
                j for j in json.loads(ledger.read_text())["jobs"] if j["name"].startswith("tolpipe-train-")
            ]
            if jobs:
                return jobs[0]["job_id"]
        time.sleep(0.2)
    raise AssertionError(f"no training job recorded in {ledger} after {timeout_s} s")


def test_training_then_evaluation_jobs_finish(slurm_cluster: SlurmCluster, synth_data: Path, tmp_path: Path):
    root = tmp_path / "root"
    result = cli(root, "run", "train", *_options(synth_data, "train.run_name=it's a $(run)"), timeout=WAIT_S)
    rows = _rows(root)
    train, evaluation = rows["train"], rows["eval"]
    assert (train["status"], train["state"], evaluation["status"], evaluation["state"]) == (
        "ok",
        "COMPLETED",
        "ok",
        "COMPLETED",
    )
    assert evaluation["depends_on"] == train["job_id"]
    assert train["checkpoint"].endswith("step-00000012.pt") and Path(train["checkpoint"]).exists()
    results = json.loads(Path(evaluation["results"]).read_text())
    assert results["step"] == 12 and "core" in results["families"]
    # The evaluation started only after the training ended (afterok).
    assert slurm_cluster.sacct(evaluation["job_id"], "Start") >= slurm_cluster.sacct(train["job_id"], "End")
    run_dir = Path(train["run_dir"])
    assert run_dir.name.startswith("it_s_a___run-")  # the name cannot reach a shell
    scripts = (run_dir / "train.sbatch").read_text(), (run_dir / "eval.sbatch").read_text()
    assert f"#SBATCH --job-name=tolpipe-train-{run_dir.name}" in scripts[0]
    assert f"#SBATCH --dependency=afterok:{train['job_id']}" in scripts[1]
    assert "$(run)" not in "".join(scripts) and train["script"] == str(run_dir / "train.sbatch")
    status = cli(root, "status").stdout
    assert train["job_id"] in status and evaluation["job_id"] in status, result.stdout


def test_failed_training_is_reported_and_evaluation_never_runs(
    slurm_cluster: SlurmCluster, synth_data: Path, tmp_path: Path
):
    root = tmp_path / "root"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a weights file")  # passes the submit-time check, fails in the job
    cli(root, "run", "train", *_options(synth_data, f"train.pretrained={broken}"), timeout=WAIT_S)
    rows = _rows(root)
    assert (rows["train"]["status"], rows["train"]["reason"], rows["train"]["state"]) == (
        "failed",
        "job_failed",
        "FAILED",
    )
    assert (rows["eval"]["status"], rows["eval"]["reason"], rows["eval"]["state"]) == (
        "dropped",
        "training_failed",
        "CANCELLED",
    )
    assert slurm_cluster.sacct(rows["eval"]["job_id"], "Start") in ("None", "Unknown", "")  # never started
    assert not (Path(rows["eval"]["run_dir"]) / "eval" / "results.json").exists()


def test_cancelled_training_is_reported(slurm_cluster: SlurmCluster, synth_data: Path, tmp_path: Path):
    root = tmp_path / "root"
    run = _start(root, _options(synth_data, steps=2000))
    job_id = _train_job_id(root)
    slurm_cluster.run("scancel", job_id)
    output, _ = run.communicate(timeout=WAIT_S)
    assert run.returncode == 0, output
    rows = _rows(root)
    assert (rows["train"]["status"], rows["train"]["reason"], rows["train"]["state"]) == (
        "failed",
        "job_cancelled",
        "CANCELLED",
    )
    assert rows["eval"]["status"] == "dropped" and rows["eval"]["state"] == "CANCELLED"


def _expected_first_keys(data: Path, steps: int) -> list[str]:
    """The first sample key of each organism batch, straight from the data pipeline."""
    from training.data import organism_batches, organism_shards

    batches = organism_batches(organism_shards(str(data / "shards")), lambda image: 0, 16, 0, 0, 0, 0, 1, 0)
    return [next(batches)[0][0] for _ in range(steps)]


def test_interrupted_training_requeues_and_resumes(
    slurm_cluster: SlurmCluster, synth_data: Path, tmp_path: Path
):
    root = tmp_path / "root"
    steps = 16
    run = _start(root, _options(synth_data, steps=steps, eval_data=False))
    job_id = _train_job_id(root)
    metrics = None
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # interrupt once a few steps are done
        metrics = next((root / "train").glob("*/metrics.jsonl"), None) if (root / "train").exists() else None
        if metrics and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=USR2", job_id)  # what Slurm sends before a time-out
    output, _ = run.communicate(timeout=WAIT_S)
    assert run.returncode == 0, output
    rows = _rows(root)
    assert (rows["train"]["status"], rows["train"]["state"]) == ("ok", "COMPLETED")
    history = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State"],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert "REQUEUED" in history and history[-1] == "COMPLETED"
    log = "".join(p.read_text() for p in (Path(rows["train"]["run_dir"]) / "submitit").glob("*_log.out"))
    assert "interrupted at step" in log and "resumed from" in log
    recorded = [json.loads(line) for line in metrics.read_text().splitlines()]
    # The step count continues where the checkpoint was, and each step read the batch an
    # uninterrupted run reads at that step.
    assert [r["step"] for r in recorded] == list(range(1, steps + 1))
    assert [r["first_key"] for r in recorded] == _expected_first_keys(synth_data, steps)
