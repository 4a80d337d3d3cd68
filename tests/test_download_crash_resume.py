"""Crash-exact resume and determinism of stage 02: `kill -9` of the whole run (CLI driver and dask
workers) at random moments, rerun, and the manifests (minus the documented volatile columns) and
the image store equal those of an uninterrupted run, byte for byte for the store."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import tomli_w

from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from stages.download.store import store_rel_path
from tests.conftest import cli, kill_group, start_cli
from tests.support.download_fixtures import DOWNLOAD, FAST, stable
from tests.support.loopback_server import LoopbackServer, mixed_image_urls, write_url_csv
from tests.support.pipeline_root import tree_files

TRIALS = 5


def download_config(path: Path) -> Path:
    path.write_text(tomli_w.dumps({
        # Generous timeouts: a timeout is the one outcome that depends on the machine's load.
        "download": {**FAST, "rate_per_host": 30.0, "rate_ceiling": 30.0, "burst": 2.0,
                     "max_attempts": 2, "concurrency": 4, "deadline_s": 20.0,
                     "read_timeout_s": 10.0},
        "cluster": {"workers": 2},
        "run": {"progress": False},
    }))  # fmt: skip
    return path


def start_download(root: Path, conf: Path) -> subprocess.Popen:
    return start_cli(root, "--config", str(conf), "run", "download")


def snapshot(root: Path) -> dict[int, tuple]:
    """Per partition: the manifest without volatile columns, and the store file's sha256."""
    store = ManifestStore(root, DOWNLOAD)
    out = {}
    for index in sorted(store.committed_records()):
        table = stable(pq.read_table(store.part_path(index)))
        out[index] = (table, sha256_file(root / store_rel_path(index)))
    return out


def assert_same(got: dict[int, tuple], want: dict[int, tuple], label: str) -> None:
    assert sorted(got) == sorted(want), label
    for index, (table, store_sha) in want.items():
        assert got[index][0].equals(table), f"{label}: manifest part {index} differs"
        assert got[index][1] == store_sha, f"{label}: image store part {index} differs"


def stateless_urls(server: LoopbackServer) -> list[str]:
    """Images plus faults whose answer never changes (so every run sees the same server)."""
    urls = mixed_image_urls(server, 96, seed=7)
    for host in range(len(server.hosts)):
        urls += [
            server.url(host, f"/missing/{host}.jpg"),
            server.image_url(host, 900 + host, 800, 600, fault="html"),
            server.image_url(host, 910 + host, 800, 600, status=503),
            server.image_url(host, 920 + host, 640, 480, fault="truncate"),
        ]
    return urls


@pytest.mark.slow
def test_kill_9_during_download_then_resume_equals_uninterrupted(tmp_path: Path):
    with LoopbackServer(hosts=3, latency_s=0.02) as server:
        urls = stateless_urls(server)
        server.warm(urls)
        source = write_url_csv(tmp_path / "urls.csv", urls)
        template = tmp_path / "template"
        cli(template, "--set", "ingest.batch_size=18", "run", "ingest", "--source",
            f"table:{source}")  # fmt: skip
        conf = download_config(tmp_path / "download.toml")

        reference_root = tmp_path / "reference"
        shutil.copytree(template, reference_root)
        started = time.monotonic()
        cli(reference_root, "--config", str(conf), "run", "download")
        duration = time.monotonic() - started
        reference = snapshot(reference_root)
        assert len(reference) >= 6
        statuses = {s for table, _ in reference.values() for s in table["status"].to_pylist()}
        assert statuses == {"ok", "dropped", "failed"}

        # A second uninterrupted run gives the same manifests and a byte-identical store.
        again = tmp_path / "again"
        shutil.copytree(template, again)
        cli(again, "--config", str(conf), "run", "download")
        assert_same(snapshot(again), reference, "rerun")

        rng = random.Random(20251122)
        partial = 0
        for trial in range(TRIALS):
            root = tmp_path / f"trial-{trial}"
            shutil.copytree(template, root)
            proc = start_download(root, conf)
            time.sleep(rng.uniform(0.3 * duration, 0.95 * duration))
            kill_group(proc)
            done = len(ManifestStore(root, DOWNLOAD).committed_records())
            partial += 0 < done < len(reference)
            cli(root, "--config", str(conf), "run", "download")
            assert_same(snapshot(root), reference, f"trial {trial} (killed after {done} parts)")
            # No litter (spools, store temp files): exactly the files an uninterrupted run leaves.
            assert tree_files(root) == tree_files(reference_root), f"trial {trial}"
        assert partial >= 1, "no kill landed mid-run"
