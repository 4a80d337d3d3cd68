"""`tolpipe slurm render`: sbatch scripts from the [slurm] config, quoted so that no value can
inject anything.

How sbatch (22.05) reads `#SBATCH` lines was found on the development Slurm: options split at
unquoted blanks, an unquoted `#` ends the line, double or single quotes group, a backslash inside
double quotes escapes the next character, `$(...)` is never expanded. A newline would end the
comment line and turn the rest into a command, so it is refused. The last test runs a script
rendered from hostile values on the real Slurm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.runrecord import read_runs
from pipeline.sbatch import JobContext, directive, extra_directive, render_stage, safe_job_name
from tests.conftest import REPO, write_url_table

if TYPE_CHECKING:
    from tests.support.slurm import SlurmCluster

pytest_plugins = ["tests.support.slurm"]

HOSTILE = """it's "quoted" $(touch x) `touch x` ; #comment \\ end"""
# A folder name as hostile, less the backslash (Slurm cannot write logs under one: refused) and
# with a `%` (Slurm's --output pattern character, escaped as %%).
HOSTILE_DIR = """it's "quoted" 50% $(touch x) `touch x` ; #comment end"""


def _job(root: Path) -> JobContext:
    return JobContext(root=root, log_dir=root / "logs", workdir=root)


def _config(tmp_path: Path, toml: str = "", overrides: list[str] | None = None) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(toml)
    return load_config(tmp_path / "root", path, overrides)


def test_directive_escapes_for_sbatch():
    assert directive("--job-name", "plain") == '#SBATCH --job-name="plain"'
    assert directive("--comment", HOSTILE) == (
        '#SBATCH --comment="it\'s \\"quoted\\" $(touch x) `touch x` ; #comment \\\\ end"'
    )
    assert extra_directive("--exclusive") == "#SBATCH --exclusive"
    assert extra_directive("--constraint=a b") == '#SBATCH --constraint="a b"'


@pytest.mark.parametrize("value", ["gpu\n#SBATCH --wrap=x", "a\rb", "a\x00b", "tab\there"])
def test_control_characters_are_refused(value: str):
    with pytest.raises(ConfigError, match="control character"):
        directive("--partition", value)


@pytest.mark.parametrize("text", ["-C x", "--bad option=1", "constraint=x", "--x;y=1"])
def test_malformed_extra_directives_are_refused(text: str):
    with pytest.raises(ConfigError, match="expected"):
        extra_directive(text)


def test_safe_job_name():
    assert safe_job_name("tolpipe-04_filter") == "tolpipe-04_filter"
    assert safe_job_name(HOSTILE) == "it_s_quoted_touch_x_touch_x_comment_end"
    assert safe_job_name("%$\n") == "tolpipe"  # nothing left: the default
    assert len(safe_job_name("a" * 500)) == 128


def test_newline_in_a_config_value_is_refused_with_its_name(tmp_path: Path):
    config = _config(tmp_path, '[slurm]\npartition = "cpu\\n#SBATCH --qos=high"\n')
    with pytest.raises(ConfigError, match=r"#SBATCH --partition: .*newline would end"):
        render_stage(config, "02_download", _job(tmp_path))


def test_gres_line_only_where_configured(tmp_path: Path):
    plain = render_stage(_config(tmp_path), "04_filter", _job(tmp_path))
    assert "--gres" not in plain and "--gpus" not in plain
    site = ('[slurm.stages.filter]\ngres = "gpu:a100:1"\ntime = "12:00:00"\n'
            'extra_directives = ["--exclusive"]\n')
    config = _config(tmp_path, site)
    gpu = render_stage(config, "04_filter", _job(tmp_path))
    assert '#SBATCH --gres="gpu:a100:1"' in gpu.splitlines()
    assert '#SBATCH --time="12:00:00"' in gpu.splitlines() and "#SBATCH --exclusive" in gpu.splitlines()
    cpu = render_stage(config, "02_download", _job(tmp_path))  # the override is the filter's only
    assert "--gres" not in cpu and '#SBATCH --time="04:00:00"' in cpu.splitlines()


def test_filter_renders_a_job_array_over_partition_ranges(tmp_path: Path):
    config = _config(tmp_path, overrides=["slurm.partitions_per_task=8"])
    script = render_stage(config, "04_filter", _job(tmp_path))
    assert "per_task=8" in script and "low=$((SLURM_ARRAY_TASK_ID * per_task))" in script
    assert script.rstrip().endswith('run filter --set cluster.kind=local --partitions "$low-$high"')
    assert "#SBATCH --array" not in script  # no upstream partitions yet: sized at submission
    download = render_stage(config, "02_download", _job(tmp_path))
    assert "distributed.cli.dask_scheduler --scheduler-file" in download
    assert 'srun --ntasks="$SLURM_NTASKS"' in download
    assert "--set cluster.kind=scheduler_file --set download.rate_split_slots=1" in download


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[slurm.stages.filtr]\ngres = "gpu:1"\n', "unknown stage 'filtr'"),
        ('[slurm.stages.filter]\ngress = "gpu:1"\n', "slurm.stages.filter: unknown key gress"),
        ("[slurm.stages.filter]\nnodes = 0\n", "slurm.stages.filter.nodes must be >= 1"),
        ('[slurm.stages.filter]\nnodes = "2"\n', "slurm.stages.filter.nodes must be int"),
    ],
)
def test_bad_stage_overrides_are_refused(tmp_path: Path, toml: str, message: str):
    with pytest.raises(ConfigError, match=message):
        render_stage(_config(tmp_path, toml), "04_filter", _job(tmp_path))


def test_log_folder_with_a_backslash_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="backslash"):
        render_stage(_config(tmp_path), "02_download", _job(tmp_path / "a\\b"))


def test_render_command_writes_the_script(tmp_path: Path):
    out = tmp_path / "filter.sbatch"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--root", str(tmp_path / "root"), "slurm", "render", "filter",
         "--output", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("#!/bin/bash\n") and os.access(out, os.X_OK)
    assert (tmp_path / "root" / "batch" / "logs").is_dir()  # sbatch does not create --output folders


@pytest.mark.slurm
def test_hostile_values_run_safely_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path):
    """A root, a source path and a setting full of quotes, `$(touch x)` and a newline: the rendered
    script runs stage 01 on Slurm, nothing is executed from them, and each value arrives intact."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    hostile_dir = tmp_path / HOSTILE_DIR
    hostile_dir.mkdir()
    source = write_url_table(hostile_dir / "urls.csv", rows=30, hosts=2)
    root = hostile_dir / "root"
    name = HOSTILE + "\nsecond line"  # a newline, in the shell body only (job names are cleaned)
    script = tmp_path / "ingest.sbatch"
    command = [
        sys.executable, "-m", "pipeline.cli", "--root", str(root),
        "--set", "ingest.sources=" + json.dumps([f"table:{source}"]), "--set", "ingest.batch_size=10",
        "--set", f"slurm.job_name={name}", "--set", "slurm.cpus_per_task=1", "--set", "slurm.mem=1G",
        "slurm", "render", "ingest", "--output", str(script),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the job imports this checkout from its folder
    rendered = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=120, env=env)
    assert rendered.returncode == 0, rendered.stderr

    job_id = slurm_cluster.run("sbatch", "--parsable", str(script)).strip()  # the script's --output
    assert slurm_cluster.wait_until_final(job_id) == "COMPLETED"
    log = root / "batch" / "logs" / f"{safe_job_name(name)}-01_ingest-{job_id}.out"
    assert "01_ingest: run finished" in log.read_text()  # the #SBATCH --output path arrived intact
    for folder in (workdir, tmp_path, hostile_dir, root, REPO):
        assert not (folder / "x").exists(), folder
    run = read_runs(root, "01_ingest")[-1]
    assert run["outcome"] == "ok" and run["partitions_planned"] >= 2
    assert run["config"]["slurm"]["job_name"] == name
    assert run["config"]["ingest"]["sources"] == [f"table:{source}"]
    # slurmdbd names a job "allocation" when its steps arrive before its own record (a loaded
    # machine): the real name follows within seconds.
    deadline = time.monotonic() + 30
    job_name = slurm_cluster.sacct(job_id, "JobName")
    while job_name == "allocation" and time.monotonic() < deadline:
        time.sleep(0.5)
        job_name = slurm_cluster.sacct(job_id, "JobName")
    assert job_name == safe_job_name(name) + "-01_ingest"


def test_checked_in_examples_are_what_render_writes():
    """slurm/examples/*.sbatch come from slurm/examples/render.sh; rendered again here from
    site.toml they must be the same (regenerate them after changing the rendering)."""
    examples = REPO / "slurm" / "examples"
    root = Path("/scratch/bio123/tol")
    config = load_config(root, examples / "site.toml")
    job = JobContext(root=root, log_dir=root / "batch" / "logs", workdir=root,
                     options=("--config", str(root / "site.toml")))  # fmt: skip
    scripts = sorted(examples.glob("*.sbatch"))
    assert [p.stem for p in scripts] == ["01_ingest", "02_download", "03_taxonomy", "04_filter", "05_dedup",
                                         "06_shard", "07_train"]  # fmt: skip
    for path in scripts:
        assert render_stage(config, path.stem, job) == path.read_text(), f"{path}: rerun render.sh"
