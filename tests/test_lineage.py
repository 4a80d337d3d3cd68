"""Lineage between stages as inputs change: a changed source list is refused by name, a rebuild
removes what was built from removed partitions (store files too) and marks exactly what was
built from changed ones stale; later stages refuse stale input; the next runs recompute only the
stale partitions; a kill in the middle of a removal is finished by the next run."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.runrecord import read_runs
from tests.conftest import cli
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import (
    STAGES,
    assert_no_orphans,
    digests,
    run_downstream,
    settings,
    store_files,
    write_source,
)


@pytest.fixture(name="server")
def server_fixture() -> Iterator[LoopbackServer]:
    with LoopbackServer(hosts=4) as srv:
        yield srv


def build(tmp_path: Path, server: LoopbackServer, backbone: Path) -> tuple[Path, Path, Path, list[str]]:
    """A root built 01 -> 03 from two sources: a.csv on hosts 2 and 3, b.csv on hosts 0 and 1;
    6 rows per host, 4 per partition: 8 partitions, a's are 4..7 (hosts sort by address)."""
    a = write_source(tmp_path / "a.csv", server, [2, 3], 6)
    b = write_source(tmp_path / "b.csv", server, [0, 1], 6, tag="b")
    root = tmp_path / "root"
    args = settings(backbone)
    cli(root, *args, "run", "ingest", "--source", f"table:{a}", "--source", f"table:{b}")
    run_downstream(root, args)
    assert all(len(digests(root, s)) == 8 for s in STAGES)
    return root, a, b, args


def snapshot(root: Path) -> dict[str, dict[int, str]]:
    return {stage: digests(root, stage) for stage in STAGES}


def last_run(root: Path, stage_dir: str) -> dict:
    return read_runs(root, stage_dir)[-1]


def test_changed_sources_are_refused_then_rebuild_removes_what_was_built_from_them(
    tmp_path: Path, server: LoopbackServer, gbif_dump: Path  # noqa: F811
):
    root, a, b, args = build(tmp_path, server, gbif_dump)
    before = snapshot(root)
    refused = cli(root, *args, "run", "ingest", "--source", f"table:{a}", check=False)
    assert refused.returncode == 3, refused.stderr
    assert f"removed: table:{b}" in refused.stderr and "--rebuild" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(root) == before  # nothing touched

    cli(root, *args, "run", "ingest", "--rebuild", "--source", f"table:{a}")
    after = snapshot(root)
    # a's partitions keep their index and bytes, and so does everything built from them.
    assert sorted(after["01_ingest"]) == [4, 5, 6, 7]
    for stage in STAGES:
        assert after[stage] == {i: before[stage][i] for i in (4, 5, 6, 7)}, stage
    assert last_run(root, "01_ingest")["downstream_removed"] == {
        "02_download": [0, 1, 2, 3], "03_taxonomy": [0, 1, 2, 3]}  # fmt: skip
    assert_no_orphans(root)
    assert len(store_files(root)) == 4
    status = cli(root, "status").stdout
    assert "02_download: 4/4 partitions" in status and "03_taxonomy: 4/4 partitions" in status
    assert "stale" not in status and "leftovers" not in status
    # Nothing is stale, so the next stages have nothing to do.
    run_downstream(root, args)
    assert last_run(root, "02_download")["partitions_computed"] == 0


def rewrite_license(source: Path, host_url: str, license_text: str) -> None:
    rows = list(csv.reader(source.open()))
    for row in rows[1:]:
        if row[0].startswith(host_url):
            row[5] = license_text
    with open(source, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_changed_source_content_marks_exactly_the_partitions_built_from_it_stale(
    tmp_path: Path, server: LoopbackServer, gbif_dump: Path  # noqa: F811
):
    from pipeline.lineage import stale_partitions

    root, a, _, args = build(tmp_path, server, gbif_dump)
    before = snapshot(root)
    rewrite_license(a, server.base_url(3), "CC-BY-4.0")  # host 3's rows: partitions 6 and 7

    refused = cli(root, *args, "run", "ingest", check=False)
    assert refused.returncode == 3 and f"content changed: table:{a}" in refused.stderr
    cli(root, *args, "run", "ingest", "--rebuild")
    changed = {i for i, sha in digests(root, "01_ingest").items() if before["01_ingest"][i] != sha}
    assert changed == {6, 7}
    for stage in ("02_download", "03_taxonomy"):
        assert {s.index for s in stale_partitions(root, stage)} == changed, stage
    status = cli(root, "status").stdout
    assert "02_download: 8/8 partitions, 2 stale" in status
    assert "run `tolpipe run download`" in status

    refused = cli(root, *args, "run", "taxonomy", check=False)
    assert refused.returncode == 3
    assert "02_download" in refused.stderr and "stale" in refused.stderr
    assert "run `tolpipe run download` first" in refused.stderr

    cli(root, *args, "run", "download")
    assert last_run(root, "02_download")["partitions_computed"] == 2
    cli(root, *args, "run", "taxonomy")
    assert last_run(root, "03_taxonomy")["partitions_computed"] == 2
    after = snapshot(root)
    for stage in STAGES:
        kept = {i for i in after[stage] if i not in changed}
        assert {i: after[stage][i] for i in kept} == {i: before[stage][i] for i in kept}, stage
    assert "stale" not in cli(root, "status").stdout
    assert_no_orphans(root)


def test_kill_9_during_orphan_removal_is_finished_by_the_next_run(
    tmp_path: Path, server: LoopbackServer, gbif_dump: Path  # noqa: F811
):
    from pipeline.atomic import KILL_BEFORE_PUBLISH_ENV
    from pipeline.lineage import JOURNAL

    root, a, _, args = build(tmp_path, server, gbif_dump)
    before = snapshot(root)
    # Killed right after the first 02 partition's record is removed: its file and store file
    # are still there, the other orphans not yet touched.
    killed = cli(root, *args, "run", "ingest", "--rebuild", "--source", f"table:{a}", check=False,
                 env={KILL_BEFORE_PUBLISH_ENV: "remove 02_download"})  # fmt: skip
    assert killed.returncode == -9
    journal = root / "manifests" / JOURNAL
    assert journal.exists() and len(json.loads(journal.read_text())) == 12
    assert "leftovers of killed runs" in cli(root, "status").stdout

    rerun = cli(root, *args, "run", "ingest")
    assert "finished removing 12 orphan partition(s)" in rerun.stderr
    assert not journal.exists()
    assert_no_orphans(root)
    after = snapshot(root)
    for stage in STAGES:  # nothing lost
        assert after[stage] == {i: before[stage][i] for i in (4, 5, 6, 7)}, stage
    status = cli(root, "status").stdout
    assert "leftovers" not in status and "stale" not in status


@pytest.mark.parametrize("stage, upstream", [("download", "ingest"), ("taxonomy", "download")])
def test_every_stage_refuses_an_empty_upstream_the_same_way(tmp_path: Path, stage: str, upstream: str):
    root = tmp_path / "root"
    result = cli(root, "run", stage, check=False)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "no committed partitions" in result.stderr
    assert f"run `tolpipe run {upstream}` first" in result.stderr
    # The refused run leaves no trace that status could take for a finished run.
    assert "run `tolpipe run ingest` first" in cli(root, "status").stdout


def test_add_source_recomputes_only_what_the_added_rows_touch(
    tmp_path: Path, server: LoopbackServer, gbif_dump: Path  # noqa: F811
):
    a = write_source(tmp_path / "a.csv", server, [2, 3], 6)
    root, args = tmp_path / "root", settings(gbif_dump)
    cli(root, *args, "run", "ingest", "--source", f"table:{a}")
    run_downstream(root, args)
    before = snapshot(root)
    assert sorted(before["01_ingest"]) == [0, 1, 2, 3]

    # A host that sorts before a's hosts: its partitions must not shift a's indices.
    c = write_source(tmp_path / "c.csv", server, [0], 6, tag="c")
    refused = cli(root, *args, "run", "ingest", "--source", f"table:{a}", "--source", f"table:{c}",
                  check=False)  # fmt: skip
    assert refused.returncode == 3 and f"added: table:{c}" in refused.stderr
    cli(root, *args, "run", "ingest", "--add-source", f"table:{c}")
    after = digests(root, "01_ingest")
    assert {i: after[i] for i in range(4)} == before["01_ingest"] and sorted(after) == [0, 1, 2, 3, 4, 5]
    run_downstream(root, args)
    for stage in ("02_download", "03_taxonomy"):
        assert last_run(root, stage)["partitions_computed"] == 2, stage
        assert {i: digests(root, stage)[i] for i in range(4)} == before[stage]
    assert_no_orphans(root)
