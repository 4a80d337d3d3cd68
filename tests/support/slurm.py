"""Tests against a real Slurm: the session fixture `slurm_cluster` and small sbatch/sacct helpers.

Without Slurm (no `sbatch` on PATH, or a controller that does not answer) the tests skip with a
hint; with TOLPIPE_REQUIRE_SLURM set (CI, after `bash slurm/dev/up.sh`) they fail instead, so a
broken Slurm never passes as skipped tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "TOLPIPE_REQUIRE_SLURM"
START_HINT = "start a development Slurm with: bash slurm/dev/up.sh (as root)"
# Job states after which a job never runs again (sacct's State, first word).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
        "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT",
    }
)  # fmt: skip
# Seconds to wait for a trivial job to reach a final state: it takes about 1 s on the
# development Slurm; the margin is for loaded CI machines.
JOB_TIMEOUT_S = 60.0
POLL_S = 0.1
COMMAND_TIMEOUT_S = 30.0


def slurm_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")


def _unavailable(reason: str) -> None:
    if slurm_required():
        pytest.fail(f"{reason}, and {REQUIRE_ENV} is set", pytrace=False)
    pytest.skip(f"{reason}; {START_HINT}")


def run_command(*args: str) -> str:
    """Run a Slurm command; its stdout, or AssertionError with its stderr."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class SlurmCluster:
    """The Slurm the tests submit to: its controller's configuration (`scontrol show config`)."""

    config: dict[str, str]

    def sbatch(self, *args: str, output: Path) -> str:
        """Submit with `sbatch --parsable --output=OUTPUT ARGS`; the job id. The output file is
        required: sbatch's default writes slurm-<id>.out into the current folder."""
        out = run_command("sbatch", "--parsable", f"--output={output}", *args).strip()
        job_id = out.split(";", 1)[0]  # "<id>;<cluster>" on multi-cluster sites
        assert job_id.isdigit(), f"sbatch printed {out!r}"
        return job_id

    # The helpers below, as methods: test modules then need no import of this plugin module
    # (an import before pytest registers it would keep pytest from rewriting its asserts).
    run = staticmethod(run_command)

    def sacct(self, job_id: str, field: str) -> str:
        """One accounting field of a job (its allocation line)."""
        return run_command("sacct", "-n", "-X", "-P", "-j", job_id, "-o", field).strip()

    def wait_until_final(self, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
        return wait_until_final(job_id, timeout_s)


def sacct_state(job_id: str) -> str | None:
    """The job's accounting state (first word: "CANCELLED by 0" -> "CANCELLED"), None if unknown."""
    out = run_command("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").strip()
    return out.split()[0] if out else None


def wait_until_final(job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
    """Poll sacct until the job reaches a final state; that state."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = sacct_state(job_id)
        if state in TERMINAL_STATES:
            return state
        time.sleep(POLL_S)
    queue = run_command("squeue", "-h", "-j", job_id, "-o", "%i %T %r")
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s: sacct {state}, {queue}")


def scontrol_config() -> dict[str, str]:
    config = {}
    for line in run_command("scontrol", "show", "config").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    if shutil.which("sbatch") is None:
        _unavailable("no Slurm on this machine (sbatch is not on PATH)")
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
        lines = (ping.stdout + ping.stderr).strip().splitlines()
        answer = lines[0] if lines else f"exit status {ping.returncode}"  # not its banner
        up = ping.returncode == 0 and "is UP" in ping.stdout
    except subprocess.TimeoutExpired:
        answer, up = f"no answer in {COMMAND_TIMEOUT_S} s", False
    if not up:
        _unavailable(f"the Slurm controller is not up (scontrol ping: {answer})")
    yield SlurmCluster(config=scontrol_config())
