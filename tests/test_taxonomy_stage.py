"""Stage 03 through the runner: upstream 01/02 manifests -> resolved partitions, resume, failed
batches and `retry`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.ledger import ManifestStore, stage_schema
from pipeline.runner import retry_stage, run_stage
from stages.taxonomy.names import INPUT_FIELDS
from tests.conftest import partition_digests
from tests.support.backbone_fixture import gbif_dump, gbif_index  # noqa: F401
from tests.support.gnverifier_server import GNVerifierServer

INGEST_SCHEMA = stage_schema(*[pa.field(f, pa.string()) for f in INPUT_FIELDS])
DOWNLOAD_SCHEMA = stage_schema(pa.field("http_status", pa.int32()))

# Name tuples of the test rows (real GBIF names plus typos, unknowns and empties).
TUPLES: list[dict[str, str | None]] = [
    {"kingdom": "Animalia", "genus": "Ursus", "species": "Ursus arctos"},
    {"kingdom": "Plantae", "species": "Spruceanthus marianus",
     "scientific_name": "Spruceanthus marianus (Gottsche) Mizut."},
    {"kingdom": "Plantae", "family": "Fagaceae", "species": "Quercus duglasii"},
    {"kingdom": "Animalia", "species": "Ursus unknownus"},
    {"kingdom": "Metazoa", "genus": "Dugesia"},
    {"kingdom": "Bogus", "species": "Zzyzxia qwertyi"},
    {"kingdom": "unknown", "species": "N/A"},
    {"kingdom": "Animalia", "genus": "Apis", "species": "mellifera"},
    {"kingdom": "Plantae", "species": "Poa annua", "scientific_name": "Poa annua var. annua"},
    {"family": "Ursidae"},
]  # fmt: skip


def upstream_rows(partitions: int = 2, per_partition: int = 15) -> list[list[dict]]:
    """Rows cycling through TUPLES (so tuples repeat within and across partitions); every 7th
    row failed its download (02 status failed) and must not reach 03."""
    out, n = [], 0
    for _ in range(partitions):
        rows = []
        for _ in range(per_partition):
            values = TUPLES[n % len(TUPLES)]
            row = {f: values.get(f) for f in INPUT_FIELDS}
            row["uuid"] = hashlib.sha256(f"row-{n}".encode()).hexdigest()[:32]
            row["download_ok"] = n % 7 != 3
            rows.append(row)
            n += 1
        out.append(rows)
    return out


def write_upstream(root: Path, partitions: list[list[dict]]) -> None:
    """Commit 01 (verbatim taxonomy) and 02 (uuid/status) manifests, partition by partition."""
    ingest, download = ManifestStore(root, "01_ingest"), ManifestStore(root, "02_download")
    for index, rows in enumerate(partitions):
        columns = {"uuid": [r["uuid"] for r in rows], "status": ["ok"] * len(rows),
                   "reason": [None] * len(rows), "detail": [None] * len(rows)}  # fmt: skip
        columns.update({f: [r[f] for r in rows] for f in INPUT_FIELDS})
        table = pa.table(columns, schema=INGEST_SCHEMA)
        ingest.commit(index, table, INGEST_SCHEMA, len(rows), {"source": "test"}, {})
        ok = [r["download_ok"] for r in rows]
        dl = pa.table({
            "uuid": [r["uuid"] for r in rows], "status": ["ok" if o else "failed" for o in ok],
            "reason": [None if o else "http_404" for o in ok],
            "detail": [None if o else "404 Not Found" for o in ok],
            "http_status": [200 if o else 404 for o in ok],
        }, schema=DOWNLOAD_SCHEMA)  # fmt: skip
        download.commit(index, dl, DOWNLOAD_SCHEMA, len(rows), {"01_ingest": "x"}, {})


def config_for(root: Path, dump: Path, *extra: str) -> dict:
    overrides = [f"taxonomy.backbone_path='{dump}'", "run.progress=false", *extra]
    return load_config(root, None, overrides)


def gnverifier_settings(url: str) -> list[str]:
    return ["taxonomy.resolver='gnverifier'", f"taxonomy.gnverifier_url='{url}'",
            "taxonomy.batch_size=2", "taxonomy.max_attempts=2", "taxonomy.backoff_s=0.01",
            "taxonomy.backoff_max_s=0.05", "taxonomy.concurrency=1"]  # fmt: skip


def read_all(root: Path) -> pa.Table:
    store = ManifestStore(root, "03_taxonomy")
    return pa.concat_tables([pq.read_table(p) for p in store.part_files()])


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:  # fmt: skip
        yield c


def test_backbone_run_resolves_every_ok_row_and_resumes(tmp_path: Path, gbif_dump: Path,  # noqa: F811
                                                        client: object):  # fmt: skip
    partitions = upstream_rows()
    digests = []
    for name in ("a", "b"):
        root = tmp_path / name
        write_upstream(root, partitions)
        summary = run_stage(root, "03_taxonomy", config_for(root, gbif_dump), client=client)
        assert summary["partitions_computed"] == 2
        digests.append(partition_digests(root, "03_taxonomy"))
    assert digests[0] == digests[1], "same inputs and config give byte-identical manifests"

    table = read_all(root)
    ok_rows = [r for p in partitions for r in p if r["download_ok"]]
    assert table["uuid"].to_pylist() == [r["uuid"] for r in ok_rows]  # 02 ok rows, in order
    rows = {r["uuid"]: r for r in table.to_pylist()}
    assert all(r["status"] == "ok" for r in rows.values())
    by_input = {}
    for src in ok_rows:
        row = rows[src["uuid"]]
        assert all(row[f"input_{f}"] == src[f] for f in INPUT_FIELDS)  # inputs kept verbatim
        by_input[(src["species"], src["genus"], src["family"])] = row
    bear = by_input[("Ursus arctos", "Ursus", None)]
    assert (bear["family"], bear["species"], bear["record_id"]) == ("Ursidae", "Ursus arctos", "2433433")
    assert bear["resolution_strategy"] == "exact_accepted" and bear["data_source_id"] == 11
    syn = by_input[("Spruceanthus marianus", None, None)]
    assert syn["species"] == "Cheilolejeunea mariana" and syn["match_type"] == "Exact"
    bee = by_input[("mellifera", "Apis", None)]
    assert bee["species"] == "Apis mellifera" and bee["common_name"] == "western honey bee"
    assert bee["query_term"] == "Apis mellifera"
    assert by_input[("N/A", None, None)]["resolution_status"] == "empty_input"
    forced = by_input[("Zzyzxia qwertyi", None, None)]
    assert forced["resolution_status"] == "forced_input" and forced["kingdom"] == "Bogus"
    assert by_input[(None, "Dugesia", None)]["kingdom"] == "Animalia"  # Metazoa normalised

    record = ManifestStore(root, "03_taxonomy").read_record(0)
    assert set(record["inputs"]) == {"01_ingest/part-00000", "02_download/part-00000",
                                     "resolver", "common_names"}  # fmt: skip
    again = run_stage(root, "03_taxonomy", config_for(root, gbif_dump), client=client)
    assert again["partitions_skipped"] == 2 and again["partitions_computed"] == 0


def test_failed_batch_fails_only_its_names_then_retry_resolves_them(
    tmp_path: Path, gbif_dump: Path, gbif_index: Path, client: object  # noqa: F811
):
    root = tmp_path / "root"
    partitions = upstream_rows()
    write_upstream(root, partitions)
    with GNVerifierServer({11: gbif_index}) as server:
        server.fail_when = lambda names, sources: "Quercus duglasii" in names
        config = config_for(root, gbif_dump, *gnverifier_settings(server.url))
        run_stage(root, "03_taxonomy", config, client=client)
        failed_requests = [r for r in server.verification_requests() if r.status == 500]
        assert len(failed_requests) == 2  # max_attempts, then the batch gives up
        failed_names = set(failed_requests[0].names)
        assert "Quercus duglasii" in failed_names and len(failed_names) == 2

        table = read_all(root)
        failed = table.filter(pa.compute.equal(table["status"], "failed")).to_pylist()
        assert failed and all(r["reason"] == "resolver_error" for r in failed)
        assert all("HTTP 500" in r["detail"] and r["query_term"] in failed_names for r in failed)
        assert all(r["species"] is None for r in failed)
        ok = table.filter(pa.compute.equal(table["status"], "ok")).to_pylist()
        assert all(r["query_term"] not in failed_names or r["query_rank"] != "species" for r in ok)
        assert len(ok) + len(failed) == table.num_rows

        server.fail_when = None
        server.reset_log()
        summary = retry_stage(root, "03_taxonomy", config, ["resolver_error"], client=client)
        assert summary["partitions_retried"]
        asked = set(server.names_requested())
        assert "Quercus duglasii" in asked and asked <= failed_names | {"Plantae", "Fagaceae"}
    retried = read_all(root)
    assert set(retried["status"].to_pylist()) == {"ok"}
    rows = {r["uuid"]: r for r in retried.to_pylist()}
    for row in failed:
        now = rows[row["uuid"]]
        assert now["resolution_status"] in ("resolved", "forced_input")
    oak = [r for r in rows.values() if r["input_species"] == "Quercus duglasii"]
    assert oak and all(r["species"] == "Quercus douglasii" for r in oak)
    assert ManifestStore(root, "03_taxonomy").read_record(0)["retries"] in (0, 1)
