"""Crash-exact resume: kill -9 the whole run (driver and dask workers) at random moments, rerun,
and every partition equals an uninterrupted run's."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from tests.conftest import cli, kill_group, partition_digests, start_cli, write_url_table
from tests.support.pipeline_root import tree_files

TRIALS = 5
SETTINGS = ["--set", "ingest.batch_size=100", "--set", "run.verify_sha256=true"]


def start_run(root: Path, source: Path) -> subprocess.Popen:
    return start_cli(root, *SETTINGS, "run", "ingest", "--source", f"table:{source}")


def wait_for_commits(root: Path, proc: subprocess.Popen, count: int, deadline: float) -> None:
    commits = root / "manifests/01_ingest/_commits"
    end = time.monotonic() + deadline
    while count and time.monotonic() < end and proc.poll() is None:
        if commits.exists() and len(list(commits.glob("*.json"))) >= count:
            return
        time.sleep(0.005)


def committed_records_match_files(root: Path) -> int:
    """Every commit record left by the killed run vouches for exactly its file."""
    store = ManifestStore(root, "01_ingest")
    records = store.committed_records()
    for index, record in records.items():
        assert sha256_file(store.part_path(index)) == record["sha256"]
    return len(records)


def test_kill_9_at_random_points_then_resume_equals_uninterrupted(tmp_path: Path):
    source = write_url_table(tmp_path / "urls.csv", rows=4_000, hosts=8, duplicates_every=97)
    reference_root = tmp_path / "reference"
    started = time.monotonic()
    cli(reference_root, *SETTINGS, "run", "ingest", "--source", f"table:{source}", processes=True)
    duration = time.monotonic() - started
    reference = partition_digests(reference_root, "01_ingest")
    assert len(reference) >= 20

    rng = random.Random(20251122)
    partial_kills = 0
    for trial in range(TRIALS):
        root = tmp_path / f"trial-{trial}"
        # Some trials crash twice before the final run. A kill lands either at a random moment
        # before the first commit (staging, cluster start) or once a random number of partitions
        # are committed, plus jitter: both phases are hit whatever this machine's speed.
        for _ in range(1 + trial % 2):
            proc = start_run(root, source)
            target = rng.choice([0, rng.randrange(1, len(reference))])
            wait_for_commits(root, proc, target, deadline=duration * 3)
            time.sleep(rng.uniform(0, 0.05) if target else rng.uniform(0.2, duration * 0.6))
            kill_group(proc)
            done = committed_records_match_files(root)
            partial_kills += 0 < done < len(reference)
        cli(root, *SETTINGS, "run", "ingest", "--source", f"table:{source}", processes=True)
        assert partition_digests(root, "01_ingest") == reference, f"trial {trial}"
        # No litter: exactly the files an uninterrupted run leaves.
        assert tree_files(root) == tree_files(reference_root), f"trial {trial}"
        runs = sorted((root / "manifests/01_ingest/_runs").glob("*.json"))
        assert json.loads(runs[-1].read_text())["outcome"] == "ok"
    # The random kills must really have landed mid-run at least once.
    assert partial_kills >= 1


def test_partition_file_without_record_is_not_taken_for_done(tmp_path: Path):
    source = write_url_table(tmp_path / "urls.csv", rows=500, hosts=2)
    root = tmp_path / "root"
    cli(root, *SETTINGS, "run", "ingest", "--source", f"table:{source}")
    reference = partition_digests(root, "01_ingest")
    store = ManifestStore(root, "01_ingest")
    # Simulate a kill between the file's rename and its record: garbage file, no record.
    store.record_path(2).unlink()
    store.part_path(2).write_bytes(b"torn")
    cli(root, *SETTINGS, "run", "ingest")
    assert partition_digests(root, "01_ingest") == reference
