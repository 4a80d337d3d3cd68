"""A tiny work root for the batch-job tests (`tolpipe slurm submit`), and the helpers that submit
to the real Slurm and wait for the chain.

The source: three generated images on each of three loopback hosts, one of them served again
under a second URL (05 drops the copy by MD5), and the two shipped portraits (04's face filter
drops them); batch_size 2 gives six partitions (indices 0-5).
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.digest import sha256_file
from pipeline.slurm_jobs import job_states, recorded_jobs
from tests.conftest import cli
from tests.support.loopback_server import LoopbackServer
from tests.support.photo_corpus import faces_dir
from tests.support.pipeline_root import NAMES, settings

HOSTS = 3
BATCH_SIZE = 2
STAGES = ("01_ingest", "02_download", "03_taxonomy", "04_filter", "05_dedup", "06_shard")
# Seconds for a whole chain on the development Slurm (about 40 s here); the margin is for CI.
CHAIN_TIMEOUT_S = 240
# Small allocations, so that the three array tasks and a chain fit the development node; the
# array's tasks take three partitions each (two tasks); local dask workers are threads (fast start).
JOB_SETTINGS = {
    "slurm.cpus_per_task": 1, "slurm.mem": '"1G"', "slurm.time": '"00:10:00"',
    "slurm.partitions_per_task": 3, "cluster.local_processes": "false", "cluster.workers": 1,
}  # fmt: skip


def write_chain_source(path: Path, server: LoopbackServer, folder: Path) -> Path:
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(faces_dir() / name, folder / name)
    rows = []
    for host in range(HOSTS):
        for i in range(3):
            rows.append((server.image_url(host, 100 * host + i, 320 + 16 * i, 240), f"h{host}-{i}", NAMES[i]))
    rows.append((server.image_url(2, 0, 320, 240, k=1), "copy-of-h0-0", NAMES[0]))  # same bytes as h0-0
    rows.append((server.url(0, "/files/astronaut.jpg"), "face-0", NAMES[1]))
    rows.append((server.url(1, "/files/grace_hopper.jpg"), "face-1", NAMES[2]))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "source_id", "provider", "scientific_name", "kingdom", "license"])
        for url, source_id, name in rows:
            writer.writerow([url, source_id, "loopback", name, "Animalia", "CC0-1.0"])
    return path


def chain_args(backbone: Path, source: Path) -> list[str]:
    """--set options of every run and submission on these roots."""
    extra = [arg for key, value in JOB_SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    return [*settings(backbone, batch_size=BATCH_SIZE), "--set", f'ingest.sources=["table:{source}"]', *extra]


def run_locally(root: Path, args: list[str], stages: tuple[str, ...] = STAGES) -> None:
    """The stages on a LocalCluster of threads, through the CLI's entry point in this process
    (one interpreter start and one model load for all of them)."""
    from pipeline.cli import main

    for stage in stages:
        argv = ["--root", str(root), *args, "--set", "cluster.local_processes=false", "run", stage]
        assert main(argv) == 0, f"tolpipe run {stage} failed on {root}"


def submit(root: Path, args: list[str], *stages: str) -> list[str]:
    """`tolpipe slurm submit STAGES`; the job ids it printed."""
    out = cli(root, *args, "slurm", "submit", *stages).stdout
    return [line.split("job ", 1)[1].split()[0] for line in out.splitlines() if ": job " in line]


def wait_for_chain(root: Path, timeout_s: float = CHAIN_TIMEOUT_S) -> dict[str, str]:
    """Poll until every job of the root's ledger is final (a launcher records its array before
    it ends, so the ledger is complete then); job id -> state."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids = [job["job_id"] for job in recorded_jobs(root)]
        states = job_states(ids)
        if all(states[i].final for i in ids):
            return {i: states[i].state for i in ids}
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not final after {timeout_s} s: {states}")
        time.sleep(0.5)


def manifest_digests(root: Path, stage_dir: str) -> dict[str, str]:
    folder = root / "manifests" / stage_dir
    return {p.name: sha256_file(p) for p in sorted(folder.glob("part-*.parquet"))}


def download_rows(root: Path) -> dict[str, list]:
    """02's rows without the volatile columns (fetch times), per partition."""
    from stages.download.manifest import VOLATILE_COLUMNS

    folder = root / "manifests" / "02_download"
    return {p.name: pq.read_table(p).drop_columns(list(VOLATILE_COLUMNS)).to_pylist()
            for p in sorted(folder.glob("part-*.parquet"))}  # fmt: skip


def tree_digests(root: Path, folder: str) -> dict[str, str]:
    base = root / folder
    return {str(p.relative_to(base)): sha256_file(p) for p in sorted(base.rglob("*")) if p.is_file()}


def assert_same_outputs(root: Path, reference: Path) -> None:
    """Byte-identical manifests (02: apart from its volatile columns), image store and shards."""
    for stage_dir in STAGES:
        if stage_dir == "02_download":
            assert download_rows(root) == download_rows(reference)
        else:
            assert manifest_digests(root, stage_dir) == manifest_digests(reference, stage_dir), stage_dir
    assert tree_digests(root, "store") == tree_digests(reference, "store")
    assert tree_digests(root, "shards") == tree_digests(reference, "shards")
