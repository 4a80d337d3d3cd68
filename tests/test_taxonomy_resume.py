"""Kill -9 the taxonomy stage while it is resolving names through GNVerifier, rerun it, and the
rerun asks the server for no name whose answer the killed run had already cached; the final
manifests equal an uninterrupted run's."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import time
from pathlib import Path

from stages.taxonomy.names import INPUT_FIELDS
from tests.conftest import cli, kill_group, partition_digests, start_cli
from tests.support.backbone_fixture import gbif_dump, gbif_index, taxon_rows  # noqa: F401
from tests.support.gnverifier_server import GNVerifierServer
from tests.support.pipeline_root import tree_files
from tests.test_taxonomy_stage import write_upstream

# Requests the killed run must have had answered before the kill.
ANSWERED_BEFORE_KILL = 6


def many_rows(count: int = 60) -> list[list[dict]]:
    """`count` distinct real species (kingdom + binomial) over 3 partitions."""
    species = sorted({(r["kingdom"], r["canonicalName"]) for r in taxon_rows()
                      if r["taxonRank"] == "species" and r["canonicalName"]})[:count]  # fmt: skip
    partitions: list[list[dict]] = [[], [], []]
    for n, (kingdom, name) in enumerate(species):
        row = {f: None for f in INPUT_FIELDS}
        row.update(kingdom=kingdom, species=name, download_ok=True,
                   uuid=hashlib.sha256(name.encode()).hexdigest()[:32])  # fmt: skip
        partitions[n % 3].append(row)
    return partitions


def settings(url: str, dump: Path) -> list[str]:
    values = [f"taxonomy.backbone_path='{dump}'", "taxonomy.resolver='gnverifier'",
              f"taxonomy.gnverifier_url='{url}'", "taxonomy.batch_size=2",
              "taxonomy.concurrency=1", "cluster.workers=1", "run.progress=false"]  # fmt: skip
    return [arg for value in values for arg in ("--set", value)]


def cached_terms(root: Path) -> set[str]:
    conn = sqlite3.connect(root / "work" / "03_taxonomy" / "cache.sqlite")
    try:
        return {row[0] for row in conn.execute("SELECT term FROM answers")}
    finally:
        conn.close()


def test_kill_9_mid_resolution_then_rerun_asks_only_unanswered_names(
    tmp_path: Path, gbif_dump: Path, gbif_index: Path  # noqa: F811
):
    partitions = many_rows()
    reference_root, root = tmp_path / "reference", tmp_path / "killed"
    for r in (reference_root, root):
        write_upstream(r, partitions)
    with GNVerifierServer({11: gbif_index}) as server:
        args = settings(server.url, gbif_dump)
        cli(reference_root, *args, "run", "taxonomy")
        server.reset_log()

        server.delay_s = 0.2
        proc = start_cli(root, *args, "run", "taxonomy")
        deadline = time.monotonic() + 120
        while len(server.names_requested(200)) < 2 * ANSWERED_BEFORE_KILL:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        kill_group(proc)
        assert proc.returncode == -signal.SIGKILL
        answered = cached_terms(root)
        assert len(answered) >= 2 * (ANSWERED_BEFORE_KILL - 1)  # at most the batch in flight lost
        assert not list((root / "manifests" / "03_taxonomy" / "_commits").glob("part-*.json"))

        server.delay_s = 0.0
        server.reset_log()
        cli(root, *args, "run", "taxonomy")
        asked_again = set(server.names_requested())
    assert asked_again, "the rerun had names left to resolve"
    assert not (asked_again & answered), "the rerun re-asked names the killed run had cached"
    assert partition_digests(root, "03_taxonomy") == partition_digests(reference_root, "03_taxonomy")
    assert tree_files(root) == tree_files(reference_root)  # no litter of the killed run
