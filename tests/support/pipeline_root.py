"""A small work root built through the real CLI, stages 01 -> 03: table sources whose URLs point
at a loopback image server (one source per group of hosts), the mini GBIF backbone for 03.

Used by the lineage, lock and litter tests: they change sources, kill runs and compare roots."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline.ledger import ManifestStore
from tests.support.loopback_server import LoopbackServer

NAMES = ["Ursus arctos", "Apis mellifera", "Bubo bubo"]
STAGES = ("01_ingest", "02_download", "03_taxonomy")


def write_source(path: Path, server: LoopbackServer, hosts: list[int], rows_per_host: int,
                 license_text: str = "CC0-1.0", tag: str = "") -> Path:  # fmt: skip
    """A `table` source: `rows_per_host` generated images on each of `hosts`."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "source_id", "provider", "scientific_name", "kingdom", "license"])
        for host in hosts:
            for i in range(rows_per_host):
                url = server.image_url(host, 1000 * host + i, 320 + 8 * i, 240)
                name = NAMES[i % len(NAMES)]
                writer.writerow([url, f"{tag}h{host}-{i}", "loopback", name, "Animalia", license_text])
    return path


def settings(backbone: Path, batch_size: int = 4) -> list[str]:
    """--set arguments for a fast, polite-enough run on the loopback server."""
    values = {
        "ingest.batch_size": batch_size,
        "taxonomy.backbone_path": f'"{backbone}"',
        "download.rate_per_host": 200.0, "download.rate_ceiling": 400.0, "download.burst": 20.0,
        "download.deadline_s": 20.0, "download.read_timeout_s": 10.0, "download.concurrency": 4,
        "run.progress": "false",
    }  # fmt: skip
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def run_downstream(root: Path, args: list[str]) -> None:
    """02 and 03 on a root whose 01 is built (the stages these roots are made for)."""
    from tests.conftest import cli

    for stage in STAGES[1:]:
        cli(root, *args, "run", stage.split("_", 1)[1])


def tree_files(root: Path) -> set[str]:
    """Every file under a root, root-relative, except the run history (its names are per run)
    and the lock file."""
    files = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = str((Path(dirpath) / name).relative_to(root))
            if "/_runs/" not in rel and rel != "tolpipe.lock":
                files.add(rel)
    return files


def store_files(root: Path) -> set[str]:
    folder = root / "store" / "images"
    return {str(p.relative_to(root)) for p in folder.glob("*")} if folder.is_dir() else set()


def side_files_recorded(root: Path) -> set[str]:
    records = ManifestStore(root, "02_download").committed_records()
    return {rel for r in records.values() for rel in r["side_files"]}


def digests(root: Path, stage_dir: str) -> dict[int, str]:
    return {i: r["sha256"] for i, r in ManifestStore(root, stage_dir).committed_records().items()}


def assert_no_orphans(root: Path) -> None:
    """Every store file belongs to a committed 02 partition; every 02/03 partition's upstream
    partitions exist."""
    assert store_files(root) == side_files_recorded(root)
    for downstream, upstream in (("02_download", "01_ingest"), ("03_taxonomy", "02_download")):
        assert set(digests(root, downstream)) <= set(digests(root, upstream)), downstream
