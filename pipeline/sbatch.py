"""sbatch scripts for the stages, rendered from the [slurm] config section, and their quoting.

Two kinds of script (see slurm/README.md):

- a CPU stage: one allocation that starts a dask scheduler in the batch step and the workers
  with `srun` (one per task), then runs `tolpipe run STAGE` against them through the scheduler
  file (`cluster.kind = "scheduler_file"`), in `<root>/batch/jobs/<job id>/`;
- an array stage (`slurm.array_stages`, the GPU filter): a job array whose task i runs
  `tolpipe run STAGE --partitions LO-HI` for indices i*N .. i*N+N-1 (N =
  `slurm.partitions_per_task`). The array's size is known once the upstream stage has run, so
  `tolpipe slurm submit` submits a small launcher job in the chain that sizes and submits the
  array when it starts (`launcher_script`); `render` writes `#SBATCH --array` when the upstream
  stage is already complete.

Quoting. The body is bash: every value is shlex-quoted. `#SBATCH` lines are read by sbatch, not
bash; sbatch (22.05, tested) splits a line's options at unquoted blanks, ends it at an unquoted
`#`, groups double- or single-quoted text, and inside double quotes takes a backslash as escaping
the next character; it never expands `$(...)` or variables. So every value is written in double
quotes with `\\` and `"` escaped; a newline would end the comment and make the rest of the value a
shell command, so values with a newline or any other control character are refused.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

# Settings of [slurm] that [slurm.stages.<name>] may override, with their kinds.
STAGE_KEYS: dict[str, type] = {
    "partition": str, "account": str, "qos": str, "time": str, "nodes": int, "ntasks_per_node": int,
    "cpus_per_task": int, "mem": str, "gres": str, "gpus": str, "extra_directives": list, "setup": list,
}  # fmt: skip
_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters Slurm job names keep here: anything else could be read as a pattern (%j) by
# --output, split a squeue/sacct column, or confuse a shell that prints it.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
JOB_NAME_MAX = 128
# Seconds the batch step waits for the dask scheduler to write its scheduler file.
SCHEDULER_START_S = 120


def safe_job_name(name: str) -> str:
    """What a Slurm job name may safely be: letters, digits and `. _ + -` (runs of anything
    else become one `_`), at most 128 characters, never empty."""
    cleaned = _NAME_UNSAFE.sub("_", name).strip("_")[:JOB_NAME_MAX]
    return cleaned or "tolpipe"


def _refuse_control(what: str, value: str) -> None:
    found = _CONTROL.search(value)
    if found:
        raise ConfigError(
            f"{what}: {value!r} holds a control character ({found.group()!r}); a newline would end "
            "the #SBATCH line and run the rest as a command: remove it"
        )


def directive(option: str, value: str) -> str:
    """One `#SBATCH --option="value"` line, the value escaped for sbatch's parser; ConfigError
    for an option that is not `--long-name` or a value holding a newline or control character."""
    if not _OPTION.fullmatch(option):
        raise ConfigError(f"#SBATCH option {option!r}: expected --long-name (e.g. --constraint)")
    _refuse_control(f"#SBATCH {option}", str(value))
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'#SBATCH {option}="{escaped}"'


def extra_directive(text: str) -> str:
    """An `extra_directives` entry, "--option=value" or "--flag", as an #SBATCH line."""
    option, sep, value = text.partition("=")
    if not sep:
        if not _OPTION.fullmatch(option):
            raise ConfigError(f"slurm.extra_directives: {text!r}: expected --option=value or --flag")
        return f"#SBATCH {option}"
    return directive(option, value)


def stage_settings(config: dict[str, Any], stage_dir: str) -> dict[str, Any]:
    """[slurm] with the stage's [slurm.stages.<name>] overrides applied (checked here: TOML
    tables below a section are not checked by the config loader)."""
    from stages import resolve_stage_dir

    slurm = dict(config["slurm"])
    overrides = slurm.pop("stages")
    for name, table in overrides.items():
        resolve_stage_dir(name)  # an unknown stage is an error, never ignored
        if not isinstance(table, dict):
            raise ConfigError(f"slurm.stages.{name} must be a table ([slurm.stages.{name}])")
        for key, value in table.items():
            if key not in STAGE_KEYS:
                raise ConfigError(f"slurm.stages.{name}: unknown key {key} (known: {', '.join(STAGE_KEYS)})")
            kind = STAGE_KEYS[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"slurm.stages.{name}.{key} must be {kind.__name__}, got {value!r}")
            if kind is int and value < 1:
                raise ConfigError(f"slurm.stages.{name}.{key} must be >= 1, got {value!r}")
    for name, table in overrides.items():
        if resolve_stage_dir(name) == stage_dir:
            slurm.update(table)
    return slurm


def is_array_stage(config: dict[str, Any], stage_dir: str) -> bool:
    return stage_dir.split("_", 1)[1] in config["slurm"]["array_stages"]


@dataclass(frozen=True)
class JobContext:
    """Where a rendered script runs: the work root, the folder for its logs, the folder sbatch
    starts it in (relative --set paths resolve there), the tolpipe options every command in it
    gets (--config, --set) and the Python that runs tolpipe."""

    root: Path
    log_dir: Path
    workdir: Path
    options: tuple[str, ...] = ()
    python: str = ""

    def interpreter(self, config: dict[str, Any]) -> str:
        return self.python or config["slurm"]["python"] or sys.executable

    def tolpipe(self, config: dict[str, Any], *args: str) -> str:
        """The shell words of `python -m pipeline.cli --root ROOT OPTIONS ARGS`, each quoted (a
        newline inside single quotes is data to bash)."""
        words = [self.interpreter(config), "-m", "pipeline.cli", "--root", str(self.root), *self.options,
                 *args]  # fmt: skip
        return " ".join(shlex.quote(w) for w in words)


def job_name(config: dict[str, Any], stage_dir: str, suffix: str = "") -> str:
    return safe_job_name(f"{config['slurm']['job_name']}-{stage_dir}{suffix}")


def _resource_lines(settings: dict[str, Any]) -> list[str]:
    lines = []
    for key, option in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos"),
                        ("time", "--time"), ("mem", "--mem")):  # fmt: skip
        if settings[key]:
            lines.append(directive(option, settings[key]))
    for key in ("gres", "gpus"):  # only where configured: a site without GRES refuses --gres
        if settings[key]:
            lines.append(directive(f"--{key}", settings[key]))
    lines += [extra_directive(str(text)) for text in settings["extra_directives"]]
    return lines


def log_pattern(folder: Path, name_pattern: str) -> str:
    """sbatch --output for a file in `folder`: Slurm expands `%` codes in the whole path (so a
    literal `%` is written `%%`), and a backslash anywhere turns expansion off and is dropped, so
    such a folder cannot hold the logs."""
    if "\\" in str(folder):
        raise ConfigError(f"{folder}: Slurm cannot write job logs under a path with a backslash "
                          "(it drops it); use a work root without one")  # fmt: skip
    return str(folder).replace("%", "%%") + "/" + name_pattern


def _header(title: list[str], name: str, log: str, workdir: Path, lines: list[str]) -> list[str]:
    return [
        "#!/bin/bash",
        *(f"# {t}" for t in title),
        directive("--job-name", name),
        directive("--output", log),
        directive("--chdir", str(workdir)),
        *lines,
        "set -euo pipefail",
    ]


def _setup_lines(settings: dict[str, Any]) -> list[str]:
    setup = [str(line) for line in settings["setup"]]
    for line in setup:
        _refuse_control("slurm.setup", line)  # one command per entry
    return ["# environment (slurm.setup)", *setup] if setup else []


def _words(*parts: str) -> str:
    """Shell text from already quoted parts, empty ones left out."""
    return " ".join(part for part in parts if part)


def render_cpu_stage(config: dict[str, Any], stage_dir: str, job: JobContext) -> str:
    """One allocation: dask scheduler in the batch step, workers with srun, then the stage."""
    settings = stage_settings(config, stage_dir)
    short = stage_dir.split("_", 1)[1]
    threads = int(config["cluster"]["threads_per_worker"])
    interface = ["--interface", settings["interface"]] if settings["interface"] else []
    python = shlex.quote(job.interpreter(config))
    jobs_dir = shlex.quote(str(job.root / "batch" / "jobs"))
    iface = " ".join(shlex.quote(w) for w in interface)
    header = _header(
        [f"tolpipe stage {stage_dir}: a dask scheduler and {settings['nodes']} x "
         f"{settings['ntasks_per_node']} worker(s) in this allocation, then `tolpipe run {short}`.",
         "Rendered by `tolpipe slurm render` from the [slurm] config section."],  # fmt: skip
        job_name(config, stage_dir), log_pattern(job.log_dir, "%x-%j.out"), job.workdir,
        [directive("--nodes", str(settings["nodes"])),
         directive("--ntasks-per-node", str(settings["ntasks_per_node"])),
         directive("--cpus-per-task", str(settings["cpus_per_task"])),
         *_resource_lines(settings)],  # fmt: skip
    )
    body = [
        *_setup_lines(settings),
        f"job_dir={jobs_dir}/\"$SLURM_JOB_ID\"",
        'scheduler_file="$job_dir/scheduler.json"',
        'mkdir -p "$job_dir"',
        'rm -f "$scheduler_file"  # a requeued job starts a new scheduler',
        _words(python, "-m distributed.cli.dask_scheduler", '--scheduler-file "$scheduler_file"',
               "--port 0 --no-dashboard", iface, "&"),
        "scheduler=$!",
        "workers=",
        "stop() { kill $workers $scheduler 2>/dev/null || true; wait 2>/dev/null || true; }",
        "trap stop EXIT",
        f"for _ in $(seq {SCHEDULER_START_S * 10}); do",
        '    [ -s "$scheduler_file" ] && break',
        '    kill -0 "$scheduler" 2>/dev/null || { echo "dask scheduler exited" >&2; exit 1; }',
        "    sleep 0.1",
        "done",
        f'[ -s "$scheduler_file" ] || {{ echo "no dask scheduler in {SCHEDULER_START_S} s" >&2; exit 1; }}',
        _words('srun --ntasks="$SLURM_NTASKS"', python, "-m distributed.cli.dask_worker",
               '--scheduler-file "$scheduler_file"', f"--nworkers 1 --nthreads {threads} --memory-limit 0",
               '--no-dashboard --local-directory "$job_dir/worker"', iface, "&"),
        "workers=$!",
        job.tolpipe(config, "run", short, "--set", "cluster.kind=scheduler_file",
                    *_slots(config, short, settings))
        + ' --set "cluster.scheduler_file=$scheduler_file"',
    ]
    return "\n".join(header + body) + "\n"


def _slots(config: dict[str, Any], section: str, settings: dict[str, Any]) -> list[str]:
    """A stage that splits per-host rates between the partitions running at once (download's
    `rate_split_slots`) cannot read that number from a scheduler file: pass this allocation's."""
    if config[section].get("rate_split_slots") != 0:
        return []
    slots = settings["nodes"] * settings["ntasks_per_node"] * int(config["cluster"]["threads_per_worker"])
    return ["--set", f"{section}.rate_split_slots={slots}"]


def array_tasks(root: Path, stage_dir: str, per_task: int) -> int | None:
    """Tasks of a stage's job array: its partitions keep 01's indices, which are those of the
    upstream stage's committed partitions; task i takes i*N .. i*N+N-1. None before the upstream
    stage has committed any."""
    from pipeline.ledger import ManifestStore
    from stages import load_stage

    upstream = load_stage(stage_dir).upstream
    if upstream is None:
        raise ConfigError(f"{stage_dir} reads no upstream stage; it cannot be a job array")
    indices = ManifestStore(root, upstream).committed_records()
    return math.ceil((max(indices) + 1) / per_task) if indices else None


def array_spec(tasks: int, parallel: int) -> str:
    return f"0-{tasks - 1}" + (f"%{parallel}" if parallel else "")


def render_array_stage(config: dict[str, Any], stage_dir: str, job: JobContext, tasks: int | None) -> str:
    """A job array: task i runs `tolpipe run STAGE --partitions` on its range, one node each."""
    settings = stage_settings(config, stage_dir)
    short = stage_dir.split("_", 1)[1]
    per_task = int(config["slurm"]["partitions_per_task"])
    sizing = (
        [directive("--array", array_spec(tasks, int(config["slurm"]["array_parallel"])))]
        if tasks else []
    )  # fmt: skip
    how = ("the upstream stage's partitions fix the array's size, written below" if tasks else
           "submit with sbatch --array=0-<tasks - 1>, or through `tolpipe slurm submit`")  # fmt: skip
    header = _header(
        [f"tolpipe stage {stage_dir} as a job array: task i runs partitions i*{per_task} .. "
         f"i*{per_task}+{per_task - 1} ({how}).",
         "Rendered by `tolpipe slurm render` from the [slurm] config section."],  # fmt: skip
        job_name(config, stage_dir), log_pattern(job.log_dir, "%x-%A_%a.out"), job.workdir,
        [*sizing, directive("--nodes", "1"),
         directive("--ntasks", str(settings["ntasks_per_node"])),
         directive("--cpus-per-task", str(settings["cpus_per_task"])),
         *_resource_lines(settings)],  # fmt: skip
    )
    body = [
        *_setup_lines(settings),
        ': "${SLURM_ARRAY_TASK_ID:?submit this script as a job array (sbatch --array=0-N)}"',
        f"per_task={per_task}",
        "low=$((SLURM_ARRAY_TASK_ID * per_task))",
        "high=$((low + per_task - 1))",
        job.tolpipe(config, "run", short, "--set", "cluster.kind=local") + ' --partitions "$low-$high"',
    ]
    return "\n".join(header + body) + "\n"


def render_launcher(config: dict[str, Any], stage_dir: str, job: JobContext, array_script: Path) -> str:
    """The chain's job for an array stage: when it starts (upstream done), it sizes the array,
    submits it and makes the jobs that waited on this one wait on the array instead."""
    settings = stage_settings(config, stage_dir)
    short = stage_dir.split("_", 1)[1]
    lines = [directive("--ntasks", "1"), directive("--cpus-per-task", "1"),
             directive("--time", config["slurm"]["launcher_time"])]  # fmt: skip
    for key, option in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos")):
        if settings[key]:
            lines.append(directive(option, settings[key]))
    header = _header(
        [f"tolpipe stage {stage_dir}: sizes its job array from the upstream stage and submits it.",
         "Rendered by `tolpipe slurm submit`."],  # fmt: skip
        job_name(config, stage_dir, "-launch"), log_pattern(job.log_dir, "%x-%j.out"), job.workdir,
        lines,
    )
    launch = job.tolpipe(config, "slurm", "launch-array", short, "--script", str(array_script))
    body = [*_setup_lines(settings), launch]
    return "\n".join(header + body) + "\n"


def render_stage(config: dict[str, Any], stage_dir: str, job: JobContext) -> str:
    """The script `tolpipe slurm render STAGE` writes."""
    if is_array_stage(config, stage_dir):
        tasks = array_tasks(job.root, stage_dir, int(config["slurm"]["partitions_per_task"]))
        return render_array_stage(config, stage_dir, job, tasks)
    return render_cpu_stage(config, stage_dir, job)
