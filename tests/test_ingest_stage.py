"""Stage 01 through the real CLI and a real dask LocalCluster (2 worker processes)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ledger import ManifestStore
from tests.conftest import cli, partition_digests, write_url_table


def read_all(root: Path) -> pa.Table:
    store = ManifestStore(root, "01_ingest")
    return pa.concat_tables([pq.read_table(p) for p in store.part_files()])


def test_ingest_partitions_by_host_and_accounts_for_every_row(tmp_path: Path, small_table: Path):
    root = tmp_path / "root"
    result = cli(root, "--set", "ingest.batch_size=40", "run", "ingest", "--source", f"table:{small_table}")
    assert "01_ingest" in result.stdout
    table = read_all(root)
    assert table.num_rows == 300  # every input row, dropped ones included
    store = ManifestStore(root, "01_ingest")
    for path in store.part_files():
        part = pq.read_table(path)
        assert len(set(part["host"].to_pylist())) == 1, "a partition holds one host"
        assert part.num_rows <= 40
    dropped = table.filter(pa.compute.equal(table["reason"], "duplicate_url"))
    assert dropped.num_rows == 5  # rows 50, 100, ... repeat the URL of the row before
    kept = {r["url"]: r["uuid"] for r in table.to_pylist() if r["status"] == "ok"}
    for row in dropped.to_pylist():
        assert row["detail"] == f"same URL as sample {kept[row['url']]}"


def test_same_input_and_config_give_byte_identical_manifests(tmp_path: Path, small_table: Path):
    digests = []
    for name in ("a", "b"):
        root = tmp_path / name
        cli(root, "--set", "ingest.batch_size=37", "run", "ingest", "--source", f"table:{small_table}")
        digests.append(partition_digests(root, "01_ingest"))
    assert digests[0] == digests[1]
    assert len(digests[0]) >= 3


def test_rerun_skips_done_partitions(tmp_path: Path, small_table: Path):
    root = tmp_path / "root"
    cli(root, "run", "ingest", "--source", f"table:{small_table}")
    again = cli(root, "run", "ingest")  # sources come from the frozen config
    assert "already done" in again.stdout
    runs = sorted((root / "manifests/01_ingest/_runs").glob("*.json"))
    import json

    last = json.loads(runs[-1].read_text())
    assert last["partitions_computed"] == 0
    assert last["partitions_skipped"] == last["partitions_planned"] > 0
    assert last["config_digest"] and last["python"] and "pyarrow" in last["packages"]


def test_parameter_change_is_refused_by_name_then_rebuilt(tmp_path: Path, small_table: Path):
    root = tmp_path / "root"
    cli(root, "--set", "ingest.batch_size=50", "run", "ingest", "--source", f"table:{small_table}")
    before = partition_digests(root, "01_ingest")
    refused = cli(root, "--set", "ingest.batch_size=20", "run", "ingest", check=False)
    assert refused.returncode != 0
    assert "ingest.batch_size" in refused.stderr and "--rebuild" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert partition_digests(root, "01_ingest") == before
    cli(root, "--set", "ingest.batch_size=20", "run", "ingest", "--rebuild")
    after = read_all(root)
    assert after.num_rows == 300
    assert max(pq.read_table(p).num_rows for p in ManifestStore(root, "01_ingest").part_files()) <= 20


def test_smaller_input_removes_orphan_partitions(tmp_path: Path):
    big = write_url_table(tmp_path / "big.csv", rows=200, hosts=4)
    small = write_url_table(tmp_path / "small.csv", rows=50, hosts=1)
    root = tmp_path / "root"
    cli(root, "--set", "ingest.batch_size=25", "run", "ingest", "--source", f"table:{big}")
    assert len(partition_digests(root, "01_ingest")) == 8
    refused = cli(root, "--set", "ingest.batch_size=25", "run", "ingest", "--source", f"table:{small}",
                  check=False)  # fmt: skip
    assert refused.returncode == 3 and "other sources" in refused.stderr
    cli(root, "--set", "ingest.batch_size=25", "run", "ingest", "--rebuild", "--source", f"table:{small}")
    assert len(partition_digests(root, "01_ingest")) == 2
    assert read_all(root).num_rows == 50


def test_status_and_audit(tmp_path: Path, small_table: Path):
    root = tmp_path / "root"
    cli(root, "run", "ingest", "--source", f"table:{small_table}")
    status = cli(root, "status").stdout
    assert "01_ingest:" in status and "dropped:duplicate_url: 5" in status
    uuid = read_all(root)["uuid"][0].as_py()
    audit = cli(root, "audit", uuid).stdout
    assert uuid in audit and "== 01_ingest" in audit and "url: http://" in audit
    assert "provenance: run" in audit
    missing = cli(root, "audit", "00000000-0000-0000-0000-000000000000", check=False)
    assert missing.returncode != 0 and "no stage" in missing.stderr
