"""Submitting training and evaluation: submitit jobs on Slurm (or local processes).

- `TrainJob` is the training job's callable. Under Slurm, submitit sends it USR2 before a
  time-out or on preemption (and `scancel --signal=USR2`, or `job._interrupt()`, does the same):
  its `checkpoint()` writes a checkpoint of the step in progress' predecessor (the loop defers
  the signal while an update is applied) and hands submitit the same call again, which requeues
  the job; the requeued job resumes from the latest checkpoint.
- `EvalJob` evaluates the run's latest checkpoint (training/evaluate.py).
- `submit_run` submits both, the evaluation with `--dependency=afterok:<training>`, keeps the
  rendered sbatch scripts in the run folder, and records both jobs for `tolpipe status`.

Names placed in the scripts are made safe before: the run id keeps only A-Z a-z 0-9 . _ -, job
names go through pipeline.sbatch.safe_job_name, submitit quotes every #SBATCH value (shlex) and
the srun command's paths; folders with control characters are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

SUBMITIT_DIR = "submitit"
SAFE = re.compile(r"[^A-Za-z0-9._-]")
# Characters that would end an #SBATCH line or a shell word in submitit's script.
UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]")


def run_id_of(name: str, fallback: str) -> str:
    """A folder- and script-safe run id: `name` with unsafe characters replaced (plus a digest of
    the name when any was, so two names never share a folder), or `fallback` when empty."""
    if not name:
        return fallback
    safe = SAFE.sub("_", name).strip("._") or "run"
    if safe != name:
        safe = f"{safe[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


def check_path(path: Path) -> None:
    if UNSAFE_PATH.search(str(path)):
        raise ConfigError(f"{str(path)!r}: a folder with control characters cannot go into a Slurm script; "
                          "use another work root")  # fmt: skip


class TrainJob:
    """The training job (a submitit checkpointable callable)."""

    def __init__(self, settings: dict[str, Any], run_dir: str):
        self.settings, self.run_dir = settings, run_dir

    def __call__(self) -> dict[str, Any]:
        from training.loop import train
        from training.profiles import TrainSettings

        _export_distributed_env()
        return train(TrainSettings.from_dict(self.settings), Path(self.run_dir))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        from training import loop

        trainer = loop.ACTIVE
        if trainer is not None:
            path = trainer.save()
            trainer.log(
                f"interrupted at step {trainer.step}: checkpoint {path or 'already written'}; requeued"
            )
        return submitit.helpers.DelayedSubmission(TrainJob(self.settings, self.run_dir))


def _export_distributed_env() -> None:
    """Several Slurm tasks (one per GPU): set torch.distributed's variables from Slurm's."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "WORLD_SIZE" not in os.environ:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


class EvalJob:
    def __init__(self, run_dir: str, data: str, metrics: list[str], device: str, batch_size: int, seed: int):
        self.run_dir, self.data, self.metrics = run_dir, data, metrics
        self.device, self.batch_size, self.seed = device, batch_size, seed

    def __call__(self) -> dict[str, Any]:
        from training.evaluate import evaluate

        out = Path(self.run_dir) / "eval"
        results = evaluate(
            Path(self.run_dir), self.data, self.metrics, out, self.device, self.batch_size, self.seed
        )
        return {"results": str(out / "results.json"), "step": results["step"]}


@dataclass
class Submitted:
    kind: str  # "train" or "eval"
    job_id: str
    name: str
    script: str | None
    depends_on: list[str] = field(default_factory=list)
    job: Any = None  # the submitit Job


def _slurm_parameters(train: dict[str, Any], name: str, nodes: int, gpus: int, cpus: int, mem_gb: int,
                      time_min: int, dependency: str | None) -> dict[str, Any]:  # fmt: skip
    extra: dict[str, Any] = {}
    for option in train["extra_sbatch"]:
        key, sep, value = option.lstrip("-").partition("=")
        if not key or SAFE.sub("", key.replace("-", "_")) != key.replace("-", "_"):
            raise ConfigError(f"train.extra_sbatch: {option!r} is not an --option[=value]")
        extra[key.replace("-", "_")] = value if sep else True
    if dependency:
        extra["dependency"] = dependency
        extra["kill_on_invalid_dep"] = "yes"
    params: dict[str, Any] = {
        "slurm_job_name": name, "nodes": nodes, "tasks_per_node": max(1, gpus), "cpus_per_task": cpus,
        "mem_gb": mem_gb, "timeout_min": time_min, "slurm_signal_delay_s": train["signal_delay_s"],
        "slurm_setup": list(train["setup"]), "slurm_additional_parameters": extra,
    }  # fmt: skip
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos"):
        if train[key]:
            params[f"slurm_{key}"] = train[key]
    return params


def _executor(folder: Path, kind: str) -> Any:
    import submitit

    if kind == "local":
        return submitit.LocalExecutor(folder=folder)
    return submitit.AutoExecutor(folder=folder, cluster="slurm")


def _keep_script(job: Any, run_dir: Path, kind: str) -> str | None:
    """Copy submitit's rendered sbatch script into the run folder as <kind>.sbatch."""
    source = Path(job.paths.submission_file)
    if not source.exists():
        return None
    dest = run_dir / f"{kind}.sbatch"
    shutil.copyfile(source, dest)
    return str(dest)


def submit_run(root: Path, run_dir: Path, run_id: str, train: dict[str, Any], settings: Any,
               eval_data: str) -> list[Submitted]:  # fmt: skip
    """Submit the training job, then (with eval data) the evaluation job after it."""
    from pipeline.sbatch import safe_job_name
    from pipeline.slurm_jobs import record_job

    check_path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(settings.to_dict(), indent=1) + "\n")
    kind = train["executor"]
    executor = _executor(run_dir / SUBMITIT_DIR, kind)
    name = safe_job_name(f"tolpipe-train-{run_id}")
    if kind == "slurm":
        executor.update_parameters(**_slurm_parameters(
            train, name, settings.nodes, settings.gpus_per_node, settings.cpus_per_task, settings.mem_gb,
            settings.time_min, None))  # fmt: skip
    job = executor.submit(TrainJob(settings.to_dict(), str(run_dir)))
    submitted = [Submitted("train", str(job.job_id), name, _keep_script(job, run_dir, "train"), job=job)]
    if kind == "slurm":
        record_job(
            root, stage="07_train", name=name, job_id=str(job.job_id), script=_path(submitted[0].script)
        )
    if not eval_data:
        return submitted
    if kind == "local":  # no scheduler to hold it: the evaluation runs after a successful training
        _wait_local(job)
        if job.state != "FINISHED" and job.state != "DONE":
            return submitted
    eval_name = safe_job_name(f"tolpipe-eval-{run_id}")
    eval_exec = _executor(run_dir / SUBMITIT_DIR, kind)
    if kind == "slurm":
        eval_exec.update_parameters(**_slurm_parameters(
            train, eval_name, 1, settings.eval_gpus, settings.eval_cpus, settings.eval_mem_gb,
            settings.eval_time_min, f"afterok:{job.job_id}"))  # fmt: skip
    device = "cuda" if settings.eval_gpus else "cpu"
    metrics = list(train["eval_metrics"])
    ejob = eval_exec.submit(
        EvalJob(str(run_dir), eval_data, metrics, device, settings.eval_batch_size, settings.seed)
    )
    submitted.append(Submitted("eval", str(ejob.job_id), eval_name, _keep_script(ejob, run_dir, "eval"),
                               [str(job.job_id)], ejob))  # fmt: skip
    if kind == "slurm":
        record_job(root, stage="07_train", name=eval_name, job_id=str(ejob.job_id),
                   script=_path(submitted[1].script), depends_on=[str(job.job_id)])  # fmt: skip
    return submitted


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _wait_local(job: Any) -> None:
    while not job.done():
        time.sleep(0.5)
