"""The demo (`python -m demo`) run once per test session on a temporary root, shared by the demo,
audit and report tests; and readers of its manifests."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
# Addresses the demo's loopback image server listens on (three hosts from 127.0.0.2).
DEMO_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DEMO_TIMEOUT_S = 600
TRAIN_STEPS = 2  # stage 07, when present: a few steps show the path, not a model


def free_port(addresses: tuple[str, ...] = DEMO_ADDRESSES, attempts: int = 20) -> int:
    """A port free on every address (the demo's server binds the same port on each)."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


@dataclass
class DemoRun:
    root: Path
    port: int
    stdout: str


def run_demo(root: Path, port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "demo", "--root", str(root), "--port", str(port),
           "--train-steps", str(TRAIN_STEPS)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


# The one demo run of the session. Each test module imports the fixture, which makes it a
# fixture of that module for pytest (run once per module); the run itself happens once.
_SESSION_RUN: list[DemoRun] = []


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    if not _SESSION_RUN:
        root, port = tmp_path_factory.mktemp("demo") / "root", free_port()
        _SESSION_RUN.append(DemoRun(root, port, run_demo(root, port).stdout))
    return _SESSION_RUN[0]


def stage_table(root: Path, stage_dir: str) -> pa.Table:
    """Every committed partition of a stage, concatenated in partition order."""
    parts = sorted((root / "manifests" / stage_dir).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")


def rows_by_uuid(root: Path, stage_dir: str) -> dict[str, dict]:
    return {row["uuid"]: row for row in stage_table(root, stage_dir).to_pylist()}


def uuids_of_file(root: Path, file_name: str) -> list[str]:
    """Ingest uuids of the rows whose URL serves this corpus file."""
    return [r["uuid"] for r in stage_table(root, "01_ingest").to_pylist()
            if (r["url"] or "").endswith(f"/files/{file_name}")]  # fmt: skip
