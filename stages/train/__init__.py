"""Stage 07 train: submit BioCLIP 2 training on stage 06's shards, then its evaluation.

The work is one partition: the run. `run_partition` resolves the profile and overrides
(training/profiles.py), submits the training job through submitit (Slurm, or a local process
with `train.executor = "local"`) and, with `train.eval_data`, the evaluation job with an afterok
dependency; each job gets a manifest row (job id, state, checkpoint, metrics and results paths)
and is recorded for `tolpipe status`'s live Slurm view. With `train.wait` (always locally) it
waits for both and records their final states. Rerunning is resuming: a committed run is not
submitted again; a new `train.run_name` starts a new run; a killed or preempted training job
requeues itself and continues from its latest checkpoint.

Columns and reasons: manifests/README.md (07 train). Design: docs/architecture.md.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.digest import digest_json, sha256_file
from pipeline.errors import ConfigError
from pipeline.ledger import stage_schema
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext

SCHEMA = stage_schema(
    pa.field("kind", pa.string(), nullable=False),
    pa.field("job_name", pa.string(), nullable=False),
    pa.field("job_id", pa.string(), nullable=False),
    pa.field("executor", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),
    pa.field("exit_code", pa.string()),
    pa.field("depends_on", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("run_dir", pa.string(), nullable=False),
    pa.field("script", pa.string()),
    pa.field("checkpoint", pa.string()),
    pa.field("metrics", pa.string()),
    pa.field("results", pa.string()),
    pa.field("profile", pa.string(), nullable=False),
)
# Settings that change how or where the jobs run, not what they compute.
VOLATILE = ("executor", "run_name", "wait", "poll_s", "partition", "account", "qos", "extra_sbatch",
            "setup", "signal_delay_s", "log_every")  # fmt: skip
RUNS_DIR = "train"
NAMESPACE = uuid.UUID("6f1d3c0e-6c55-5d0b-9a53-07a1b2c3d4e5")
# Slurm states -> (status, reason) of a job's row.
FAILED_STATES = {"FAILED": "job_failed", "TIMEOUT": "job_timeout", "OUT_OF_MEMORY": "job_out_of_memory",
                 "NODE_FAIL": "job_node_fail", "BOOT_FAIL": "job_failed", "DEADLINE": "job_timeout",
                 "CANCELLED": "job_cancelled", "PREEMPTED": "job_preempted",
                 "REVOKED": "job_cancelled"}  # fmt: skip
FINAL = frozenset({*FAILED_STATES, "COMPLETED"})
LOCAL_STATES = {"FINISHED": "COMPLETED", "DONE": "COMPLETED", "FAILED": "FAILED", "INTERRUPTED": "CANCELLED"}


def data_path(ctx: StageContext) -> str:
    return ctx.params["data"] or str(ctx.root / "shards")


class TrainStage(Stage):
    number = "07"
    name = "train"
    schema = SCHEMA
    upstream = None  # reads shards by path (train.data), checked in check()
    volatile_params = VOLATILE
    tuning_params = ("poll_s", "wait", "log_every")
    side_dirs = (RUNS_DIR,)

    def settings(self, ctx: StageContext) -> Any:
        from training.profiles import resolve

        return resolve(ctx.params, data_path(ctx))

    def run_id(self, ctx: StageContext) -> str:
        from training.submit import run_id_of

        settings = self.settings(ctx).to_dict()
        fallback = f"{settings['profile']}-{digest_json(self.output_params(ctx.params))[:10]}"
        return run_id_of(ctx.params["run_name"], fallback)

    def check(self, ctx: StageContext) -> None:
        from training.data import organism_shards, replay_shards
        from training.submit import check_path

        settings = self.settings(ctx)
        organism_shards(settings.data)
        if settings.replay_data:
            replay_shards(settings.replay_data)
        eval_data = ctx.params["eval_data"]
        if eval_data and not Path(eval_data).exists() and "{" not in eval_data:
            raise ConfigError(f"train.eval_data = {eval_data!r}: not found")
        if ctx.params["executor"] == "slurm":
            import shutil

            if shutil.which("sbatch") is None:
                raise ConfigError("train.executor = \"slurm\" but sbatch is not on PATH; "
                                  "use --set train.executor=local to run here")  # fmt: skip
        check_path(ctx.root / RUNS_DIR / self.run_id(ctx))

    def plan(self, ctx: StageContext) -> list[Partition]:
        sizes = Path(self.settings(ctx).data) / "sizes.json"
        inputs = {"run_id": self.run_id(ctx)}
        if sizes.is_file():
            inputs["sizes.json"] = sha256_file(sizes)
        return [Partition(0, inputs, {"run_id": inputs["run_id"]}, key=inputs["run_id"])]

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        from training.submit import submit_run

        settings = self.settings(ctx)
        run_id = part.payload["run_id"]
        run_dir = ctx.root / RUNS_DIR / run_id
        submitted = submit_run(ctx.root, run_dir, run_id, ctx.params, settings, ctx.params["eval_data"])
        states = self._states(ctx, submitted)
        rows = [self._row(s, states, ctx, run_id, run_dir, settings.profile) for s in submitted]
        if ctx.params["eval_data"] and len(submitted) == 1:  # local: training failed, no evaluation
            rows.append(_not_run_row(run_id, run_dir, settings.profile, ctx.params["executor"], submitted[0]))
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        return PartitionOutput(table, rows_in=len(rows))

    def _states(self, ctx: StageContext, submitted: list) -> dict[str, tuple[str, str | None, str | None]]:
        """job id -> (state, exit code, reason): final ones when waiting (always locally)."""
        if ctx.params["executor"] == "local":
            for s in submitted:
                while not s.job.done():
                    time.sleep(0.5)
            return {s.job_id: (LOCAL_STATES.get(s.job.state, s.job.state), None, None) for s in submitted}
        from pipeline.slurm_jobs import job_states

        ids = [s.job_id for s in submitted]
        last_print = time.monotonic()
        while True:
            found = job_states(ids)
            current = {j: (found[j].state, found[j].exit_code, found[j].reason) for j in ids}
            if not ctx.params["wait"] or all(v[0] in FINAL for v in current.values()):
                return current
            if time.monotonic() - last_print > 30:
                print("train: " + ", ".join(f"job {j} {v[0]}" for j, v in current.items()), flush=True)
                last_print = time.monotonic()
            time.sleep(ctx.params["poll_s"])

    def _row(self, s: Any, states: dict, ctx: StageContext, run_id: str, run_dir: Path, profile: str) -> dict:
        from training.checkpoint import latest
        from training.loop import METRICS_FILE

        state, exit_code, reason = states[s.job_id]
        status, code, detail = "ok", None, None
        if state in FAILED_STATES:
            status, code = "failed", FAILED_STATES[state]
            detail = f"{state} (exit {exit_code}, {reason})"
            train_state = states[s.depends_on[0]][0] if s.depends_on else None
            if s.kind == "eval" and state == "CANCELLED" and train_state != "COMPLETED":
                # afterok can no longer be met: Slurm cancelled the evaluation before it ran
                status, code, detail = (
                    "dropped",
                    "training_failed",
                    f"not run: training job {s.depends_on[0]} did not succeed",
                )
        elif state not in FINAL:
            detail = f"{state} at submission; `tolpipe status` shows the live state"
        checkpoint = latest(run_dir)
        return {
            "uuid": str(uuid.uuid5(NAMESPACE, f"{run_id}:{s.kind}")), "status": status, "reason": code,
            "detail": detail, "kind": s.kind, "job_name": s.name, "job_id": s.job_id,
            "executor": ctx.params["executor"], "state": state, "exit_code": exit_code,
            "depends_on": ",".join(s.depends_on) or None, "run_id": run_id, "run_dir": str(run_dir),
            "script": s.script, "checkpoint": str(checkpoint) if checkpoint and s.kind == "train" else None,
            "metrics": str(run_dir / METRICS_FILE) if s.kind == "train" else None,
            "results": str(run_dir / "eval" / "results.json") if s.kind == "eval" else None,
            "profile": profile,
        }  # fmt: skip

    def run_notes(self, ctx: StageContext) -> list[str]:
        return [f"run folder: {ctx.root / RUNS_DIR / self.run_id(ctx)}"]


def _not_run_row(run_id: str, run_dir: Path, profile: str, executor: str, train: Any) -> dict:
    from pipeline.sbatch import safe_job_name

    return {
        "uuid": str(uuid.uuid5(NAMESPACE, f"{run_id}:eval")), "status": "dropped",
        "reason": "training_failed",
        "detail": f"not run: training job {train.job_id} did not succeed", "kind": "eval",
        "job_name": safe_job_name(f"tolpipe-eval-{run_id}"), "job_id": "", "executor": executor,
        "state": "NOT_RUN",
        "exit_code": None, "depends_on": train.job_id, "run_id": run_id, "run_dir": str(run_dir),
        "script": None, "checkpoint": None, "metrics": None, "results": None, "profile": profile,
    }  # fmt: skip


STAGE = TrainStage()
