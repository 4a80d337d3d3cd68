"""`tolpipe slurm submit` against the real Slurm (slurm/dev/up.sh): the stages as a chain of jobs
(afterok), the filter as a job array whose tasks share the root, live states in `tolpipe status`.

- A chain whose 03 meets a broken input fails there, cancels the jobs after it, and `status`
  names the failed job and its error; after the fix, submitting again resumes (01 and 02 compute
  nothing) and gives manifests, image store and shards byte-identical to a local run.
- A job stopped mid-stage the way Slurm stops a job at its time limit (SIGTERM to every step,
  then SIGKILL) keeps the partitions it committed; submitting again finishes the rest.
- Partition runs of one stage share the root's lock; nothing else shares it with them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.ledger import ManifestStore
from pipeline.litter import find_litter
from pipeline.runlock import current_holder, hold_root
from pipeline.runrecord import read_runs
from pipeline.slurm_jobs import job_states, ledger_path, recorded_jobs
from tests.conftest import REPO, cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.loopback_server import LoopbackServer
from tests.support.slurm_chain import (
    STAGES,
    assert_same_outputs,
    chain_args,
    download_rows,
    run_locally,
    submit,
    tree_digests,
    wait_for_chain,
    write_chain_source,
)  # fmt: skip

if TYPE_CHECKING:
    from tests.support.slurm import SlurmCluster

pytest_plugins = ["tests.support.slurm"]

# Seconds to wait for the slowed download job to commit its first partition.
FIRST_COMMIT_TIMEOUT_S = 60
# Seconds to wait for sacct to tell every end of the chain (see wait_for_status).
STATUS_SETTLE_S = 30


@pytest.fixture(name="server", scope="module")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    folder = tmp_path_factory.mktemp("served")
    with LoopbackServer(hosts=3, folder=folder) as srv:
        yield srv


@pytest.fixture(name="source", scope="module")
def source_fixture(server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("source")
    return write_chain_source(base / "urls.csv", server, Path(server.folder))


@pytest.fixture(name="reference", scope="module")
def reference_fixture(source: Path, gbif_dump: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """01 -> 06 run locally (the same settings), the outputs the jobs must reproduce."""
    root = tmp_path_factory.mktemp("reference") / "root"
    run_locally(root, chain_args(gbif_dump, source))
    return root


@pytest.mark.slurm
def test_failed_chain_stops_and_resubmission_equals_local_run(
    slurm_cluster: SlurmCluster, tmp_path: Path, source: Path, gbif_dump: Path, reference: Path  # noqa: F811
):
    backbone = tmp_path / "backbone.zip"
    backbone.write_bytes(b"not a zip: a broken input planted for 03")
    root = tmp_path / "root"
    args = chain_args(backbone, source)

    first = submit(root, args, *STAGES)
    assert len(first) == len(STAGES)
    states = wait_for_chain(root)
    by_stage = {job["stage"]: job for job in recorded_jobs(root)}
    assert [states[by_stage[s]["job_id"]] for s in STAGES[:2]] == ["COMPLETED", "COMPLETED"]
    assert states[by_stage["03_taxonomy"]["job_id"]] == "FAILED"
    # Its dependants never ran: the filter's launcher (so no array), dedup and shard.
    assert [states[by_stage[s]["job_id"]] for s in STAGES[3:]] == ["CANCELLED"] * 3
    assert by_stage["04_filter"]["name"].endswith("-launch")
    failed_id = by_stage["03_taxonomy"]["job_id"]
    status = wait_for_status(root, args, lambda s: "DependencyNeverSatisfied" in s and "tolpipe: " in s)
    failed = next(line for line in status.splitlines() if f"{failed_id} " in line)
    assert "failed (exit" in failed, status
    taxonomy = next(line for line in status.splitlines() if line.startswith("03_taxonomy"))
    assert " failed; slurm job " in taxonomy and "killed" not in taxonomy, taxonomy  # the run, the job
    assert "tolpipe: " in status and "backbone" in status, status  # the job's one-line error
    assert "cancelled" in status and "DependencyNeverSatisfied" in status, status

    shutil.copy(gbif_dump, backbone)  # the fix
    second = submit(root, args, *STAGES)
    states = wait_for_chain(root)
    assert all(states[j] == "COMPLETED" for j in second), states
    # Resumed: 01 and 02 were done and computed nothing the second time.
    for stage_dir in STAGES[:2]:
        last = read_runs(root, stage_dir)[-1]
        assert last["partitions_computed"] == 0 and last["outcome"] == "ok", last
    # The filter ran as a job array whose tasks shared the root, each with its own run record.
    jobs = recorded_jobs(root)
    arrays = [j for j in jobs if j["stage"] == "04_filter" and not j["name"].endswith("-launch")]
    assert len(arrays) == 1
    tasks = {k: v.state for k, v in job_states([arrays[0]["job_id"]]).items() if "_" in k}
    assert len(tasks) == 2 and set(tasks.values()) == {"COMPLETED"}, tasks
    filter_runs = [r for r in read_runs(root, "04_filter") if r["command"] == "run --partitions"]
    assert len({r["run_id"] for r in filter_runs}) == 2
    assert sorted(i for r in filter_runs for i in r["partitions_selected"] if i < 6) == list(range(6))
    assert len({r["slurm_job_id"] for r in filter_runs}) == 2  # each task is a job of its own
    first_task, second_task = sorted(filter_runs, key=lambda r: r["started_utc"])
    assert second_task["started_utc"] < first_task["ended_utc"]  # they held the root at once
    # Rendered now, the filter's array has its size: 6 partitions, 3 per task.
    rendered = cli(root, *args, "slurm", "render", "filter").stdout
    assert '#SBATCH --array="0-1"' in rendered.splitlines()

    assert_same_outputs(root, reference)
    status = cli(root, *args, "status").stdout
    for stage_dir in STAGES:
        line = next(x for x in status.splitlines() if x.startswith(stage_dir))
        assert "6/6 partitions" in line or stage_dir == "06_shard", line
        assert "completed" in line, line
    # The ledger is never taken for a leftover of a killed run.
    assert ledger_path(root).exists()
    assert not [p for p in find_litter(root).paths if "batch" in p.parts]


def wait_for_status(root: Path, args: list[str], settled: Callable[[str], bool]) -> str:
    """`tolpipe status` once `settled` holds for it, or after STATUS_SETTLE_S: slurmctld hands
    a job's end (state, reason, times) to the accounting database asynchronously, so sacct can
    lag the queue by a moment on a loaded machine."""
    deadline = time.monotonic() + STATUS_SETTLE_S
    while True:
        status = cli(root, *args, "status").stdout
        if settled(status) or time.monotonic() > deadline:
            return status
        time.sleep(1.0)


def _slow_download(server: LoopbackServer, seconds: float) -> None:
    server.latency_s = seconds


@pytest.mark.slurm
def test_stopped_job_keeps_committed_partitions_and_resubmission_finishes(
    slurm_cluster: SlurmCluster, tmp_path: Path, source: Path, gbif_dump: Path, reference: Path,  # noqa: F811
    server: LoopbackServer,
):  # fmt: skip
    root = tmp_path / "root"
    args = chain_args(gbif_dump, source)
    run_locally(root, args, STAGES[:1])
    store = ManifestStore(root, "02_download")
    slow = [*args, "--set", "download.concurrency=1"]  # one row at a time: about 1 s a partition
    _slow_download(server, 0.5)
    try:
        (job_id,) = submit(root, slow, "download")
        deadline = time.monotonic() + FIRST_COMMIT_TIMEOUT_S
        while not store.committed_records():
            assert time.monotonic() < deadline, "no partition committed"
            time.sleep(0.1)
        # What Slurm does at the time limit: SIGTERM to every step, SIGKILL after KillWait.
        slurm_cluster.run("scancel", "--signal=TERM", "--full", job_id)
        final = slurm_cluster.wait_until_final(job_id)
    finally:
        _slow_download(server, 0.0)
    assert final in {"FAILED", "CANCELLED", "TIMEOUT"}, final
    kept = store.committed_records()
    assert 1 <= len(kept) < 6, kept
    kept_files = {i: store.part_path(i).read_bytes() for i in kept}

    (again,) = submit(root, args, "download")
    assert slurm_cluster.wait_until_final(again) == "COMPLETED"
    records = store.committed_records()
    assert len(records) == 6
    for index, data in kept_files.items():
        assert store.part_path(index).read_bytes() == data  # committed before the stop: untouched
        assert records[index]["run_id"] == kept[index]["run_id"]
    last = read_runs(root, "02_download")[-1]
    assert last["partitions_skipped"] == len(kept) and last["partitions_computed"] == 6 - len(kept)
    assert download_rows(root) == download_rows(reference)
    assert tree_digests(root, "store") == tree_digests(reference, "store")
    status = cli(root, *args, "status").stdout
    assert f"{job_id} " in status and "slurm job " + again + " completed" in status, status


HOLD = """
import sys
from pipeline.runlock import hold_root
try:
    with hold_root(sys.argv[1], "probe", shared_stage=sys.argv[2] or None):
        print("held")
except Exception as exc:
    print(f"refused: {exc}")
"""


def _try_hold(root: Path, shared_stage: str = "") -> str:
    result = subprocess.run([sys.executable, "-c", HOLD, str(root), shared_stage], capture_output=True,
                            text=True, cwd=REPO, timeout=60, check=True)  # fmt: skip
    return result.stdout.strip()


def test_partition_runs_of_one_stage_share_the_root_and_nothing_else_does(tmp_path: Path):
    with hold_root(tmp_path, "run 04_filter --partitions 0-3", shared_stage="04_filter") as lock:
        assert lock.shared
        assert _try_hold(tmp_path, "04_filter") == "held"  # another task of the same array
        exclusive = _try_hold(tmp_path)
        assert exclusive.startswith("refused") and "partition runs of 04_filter" in exclusive
        other = _try_hold(tmp_path, "05_dedup")
        assert other.startswith("refused") and "partition runs of 04_filter" in other
        assert current_holder(tmp_path)["shared_stages"] == ["04_filter"]
    assert current_holder(tmp_path) is None
    with hold_root(tmp_path, "run all"):
        shared = _try_hold(tmp_path, "04_filter")
        assert shared.startswith("refused") and "run all" in shared
    assert _try_hold(tmp_path) == "held"
