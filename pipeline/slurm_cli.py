"""`tolpipe slurm`: render sbatch scripts for the stages and submit them as a chain of jobs.

    tolpipe --root R slurm render STAGE [--output FILE]   one stage's script (stdout or FILE)
    tolpipe --root R slurm submit [STAGES|all]            a chain: each job afterok the previous
    tolpipe --root R slurm launch-array STAGE --script F  inside the chain: size and submit an array

Every job runs tolpipe with the --config and --set options given here, so the jobs see the
config this command saw. Submitted jobs go into the root's ledger (pipeline/slurm_jobs.py);
`tolpipe status` shows their live states.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import atomic, sbatch, slurm_jobs
from pipeline.errors import ConfigError, TolpipeError

DESCRIPTION = """\
Run the stages as Slurm batch jobs. `render` writes one stage's sbatch script from the [slurm]
config section (see `tolpipe config --defaults`): a CPU stage is one allocation running a dask
scheduler and workers (srun) and the stage against them; a stage in slurm.array_stages (the
GPU filter) is a job array, each task running `tolpipe run STAGE --partitions LO-HI`.
`submit` submits the stages as a chain (--dependency=afterok), records the job ids under
<root>/batch/jobs.json and prints them; a failed job cancels the jobs after it. Submitting again
resumes: complete stages finish at once, the others go on from their committed partitions."""
SUBMIT_TIMEOUT_S = 60


def add_parser(
    subparsers: Any, global_options: Callable[[argparse.ArgumentParser, bool], None]
) -> argparse.ArgumentParser:
    top = subparsers.add_parser("slurm", help="render sbatch scripts for the stages and submit them as a "
                                "chain of Slurm jobs", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    global_options(top, True)
    actions = top.add_subparsers(dest="slurm_action", metavar="ACTION", required=True)
    render = actions.add_parser("render", help="write one stage's sbatch script",
                                description="Write the sbatch script of one stage, from the config's "
                                "[slurm] section (with its [slurm.stages.NAME] overrides).")  # fmt: skip
    global_options(render, True)
    render.add_argument("stage", help="01..07 or a name (ingest, download, ...)")
    render.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    submit = actions.add_parser("submit", help="submit stages as a chain of jobs (afterok)",
                                description="Submit the stages (default: all implemented ones) as a "
                                "chain of jobs, each --dependency=afterok on the one before; print "
                                "and record their ids. Submitting again resumes.")  # fmt: skip
    global_options(submit, True)
    submit.add_argument("stages", nargs="*", default=["all"],
                        help="stages in order (names or numbers), or 'all' (default)")  # fmt: skip
    launch = actions.add_parser("launch-array", help="(run by the chain) size and submit a stage's "
                                "job array, and hand the jobs after this one to it")  # fmt: skip
    global_options(launch, True)
    launch.add_argument("stage")
    launch.add_argument("--script", type=Path, required=True, help="the job array's script")
    return top


def run_command(args: argparse.Namespace, config: dict[str, Any]) -> int:
    actions = {"render": _render, "submit": _submit, "launch-array": _launch_array}
    return actions[args.slurm_action](args, config)


def _job_options(args: argparse.Namespace) -> tuple[str, ...]:
    """The --config and --set options of this command, for every tolpipe run in the jobs."""
    options: list[str] = []
    if args.config is not None:
        options += ["--config", str(Path(args.config).resolve())]
    for text in args.overrides:
        options += ["--set", text]
    return tuple(options)


def _job_context(args: argparse.Namespace, log_dir: Path) -> sbatch.JobContext:
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch does not create the --output folder
    return sbatch.JobContext(Path(args.root).resolve(), log_dir, Path.cwd(), _job_options(args))


def _render(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from stages import resolve_stage_dir

    stage_dir = resolve_stage_dir(args.stage)
    job = _job_context(args, Path(args.root).resolve() / slurm_jobs.BATCH_DIR / "logs")
    text = sbatch.render_stage(config, stage_dir, job)
    if args.output is None:
        print(text, end="")
    else:
        atomic.write_text(args.output, text)
        args.output.chmod(0o755)
        print(f"{stage_dir}: sbatch script written to {args.output}")
    return 0


def _stage_list(names: list[str]) -> list[str]:
    from stages import available_stages, resolve_stage_dir

    if names in ([], ["all"]):
        return available_stages()
    if "all" in names:
        raise ConfigError("give either 'all' or a list of stages, not both")
    dirs = [resolve_stage_dir(n) for part in names for n in part.split(",") if n.strip()]
    if dirs != sorted(set(dirs)):
        raise ConfigError(f"stages must be given once each, in order: {' '.join(dirs)}")
    return dirs


def sbatch_submit(script: Path, *options: str) -> str:
    """`sbatch --parsable OPTIONS SCRIPT`: the job id, or TolpipeError with sbatch's message."""
    command = ["sbatch", "--parsable", *options, str(script)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S)
    except FileNotFoundError:
        raise TolpipeError("sbatch is not on PATH: submit from a Slurm login node") from None
    except subprocess.TimeoutExpired:
        raise TolpipeError(f"sbatch gave no answer in {SUBMIT_TIMEOUT_S} s: {' '.join(command)}") from None
    job_id = result.stdout.strip().split(";", 1)[0]  # "<id>;<cluster>" on multi-cluster sites
    if result.returncode != 0 or not job_id.isdigit():
        raise TolpipeError(f"sbatch refused {script}: {(result.stderr or result.stdout).strip()}")
    return job_id


def _write_script(path: Path, text: str) -> Path:
    atomic.write_text(path, text)
    path.chmod(0o755)
    return path


def _submit(args: argparse.Namespace, config: dict[str, Any]) -> int:
    root = Path(args.root).resolve()
    stage_dirs = _stage_list(args.stages)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(2).hex()
    folder = root / slurm_jobs.BATCH_DIR / "submissions" / stamp
    job = _job_context(args, folder / "logs")
    previous: str | None = None
    print(f"submitting {len(stage_dirs)} stage(s) for {root} (scripts and logs in {folder})")
    for stage_dir in stage_dirs:
        previous = _submit_stage(root, config, stage_dir, job, folder, previous)
    print("watch with: tolpipe --root " + str(root) + " status")
    return 0


def _submit_stage(
    root: Path, config: dict[str, Any], stage_dir: str, job: sbatch.JobContext, folder: Path,
    after: str | None,
) -> str:  # fmt: skip
    if sbatch.is_array_stage(config, stage_dir):
        array_text = sbatch.render_array_stage(config, stage_dir, job, None)
        array = _write_script(folder / f"{stage_dir}.array.sh", array_text)
        launcher = sbatch.render_launcher(config, stage_dir, job, array)
        script = _write_script(folder / f"{stage_dir}.sh", launcher)
        name = sbatch.job_name(config, stage_dir, "-launch")
    else:
        script = _write_script(folder / f"{stage_dir}.sh", sbatch.render_cpu_stage(config, stage_dir, job))
        name = sbatch.job_name(config, stage_dir)
    depends = [after] if after else []
    # --kill-on-invalid-dep: a failed job cancels this one even where the site does not set
    # kill_invalid_depend (otherwise it would pend forever).
    options = [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"] if after else []
    job_id = sbatch_submit(script, *options)
    slurm_jobs.record_job(root, stage=stage_dir, name=name, job_id=job_id, script=script,
                          depends_on=depends, log=str(job.log_dir / "%x-%j.out"))  # fmt: skip
    print(f"  {stage_dir}: job {job_id} ({name})" + (f", after {after}" if after else ""), flush=True)
    return job_id


def _launch_array(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from stages import resolve_stage_dir

    root = Path(args.root).resolve()
    stage_dir = resolve_stage_dir(args.stage)
    per_task = int(config["slurm"]["partitions_per_task"])
    tasks = sbatch.array_tasks(root, stage_dir, per_task)
    if tasks is None:
        raise TolpipeError(f"{stage_dir}: its upstream stage has no committed partitions; run it first")
    spec = sbatch.array_spec(tasks, int(config["slurm"]["array_parallel"]))
    array_id = sbatch_submit(args.script, f"--array={spec}")
    own = os.environ.get("SLURM_JOB_ID", "")
    name = sbatch.job_name(config, stage_dir)
    log = str(args.script.parent / "logs" / "%x-%A_%a.out")
    slurm_jobs.record_job(root, stage=stage_dir, name=name, job_id=array_id, script=args.script,
                          depends_on=[own] if own else [], log=log)  # fmt: skip
    print(f"{stage_dir}: job array {array_id} ({spec}: {per_task} partition(s) per task)", flush=True)
    if own:
        for dependant in slurm_jobs.reroute(root, own, array_id):
            _wait_on(dependant["job_id"], array_id)
            print(f"  job {dependant['job_id']} ({dependant['name']}) now waits on {array_id}")
    return 0


def _wait_on(job_id: str, array_id: str) -> None:
    command = ["scontrol", "update", f"JobId={job_id}", f"Dependency=afterok:{array_id}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S)
    if result.returncode != 0:
        raise TolpipeError(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()}")
