"""`tolpipe retry download --reason ...`: only the failed rows with those reasons are fetched
again, attempts accumulate, other rows and their stored images are kept, and the affected
partitions are recommitted (the others are left alone)."""

from __future__ import annotations

import pytest
import tomli_w

from pipeline.digest import sha256_file
from pipeline.ledger import ManifestStore
from stages.download import reasons as R
from stages.download.store import store_rel_path
from tests.conftest import cli
from tests.support.download_fixtures import (
    DOWNLOAD,
    FAST,
    all_rows,
    manifest,
    server_fixture,  # noqa: F401 - the `server` fixture
    store_table,
    write_ingest,
)


@pytest.mark.slow
def test_retry_by_reason_recommits_only_affected_rows(tmp_path, server):
    root = tmp_path / "root"
    flaky = [server.image_url(0, 300 + i, 800, 600, status=503, times=3) for i in range(3)]
    good = [server.image_url(0, 310 + i, 900, 700) for i in range(3)]
    missing = server.url(0, "/missing.jpg")
    part0 = [good[0], flaky[0], missing, good[1], flaky[1], flaky[2], good[2]]
    part1 = [server.image_url(1, 320 + i, 800, 600) for i in range(8)]  # host 1 is down
    part2 = [server.image_url(2, 330 + i, 800, 600) for i in range(3)]  # untouched by retry
    write_ingest(root, [part0, part1, part2])
    server.set_down(1)
    conf = tmp_path / "download.toml"
    conf.write_text(tomli_w.dumps({
        "download": {**FAST, "max_attempts": 2, "circuit_failures": 3, "concurrency": 2},
        "cluster": {"workers": 2},
        "run": {"progress": False},
    }))  # fmt: skip
    cli(root, "--config", str(conf), "run", "download")

    before = {r["url"]: r for r in all_rows(root)}
    assert [before[u]["reason"] for u in flaky] == [R.HTTP_5XX] * 3
    assert [before[u]["attempts"] for u in flaky] == [2, 2, 2]
    reasons1 = [before[u]["reason"] for u in part1]
    assert reasons1 == [R.HTTP_5XX] * 3 + [R.HOST_CIRCUIT_OPEN] * 5
    store = ManifestStore(root, DOWNLOAD)
    untouched_sha = store.read_record(2)["sha256"]
    kept_images = dict(zip(store_table(root, 0)["uuid"].to_pylist(),
                           store_table(root, 0)["jpeg"].to_pylist(), strict=True))  # fmt: skip

    server.set_down(1, False)
    result = cli(root, "--config", str(conf), "--set", "download.max_attempts=3",
                 "retry", "download", "--reason", "http_5xx,host_circuit_open")  # fmt: skip
    assert "2 retried" in result.stdout

    after = {r["url"]: r for r in all_rows(root)}
    assert set(after) == set(before)
    for url in flaky:  # one more 503 (the server's 3rd), then the image: 4 attempts in all
        assert (after[url]["status"], after[url]["attempts"]) == ("ok", 4)
        assert after[url]["attempt_log"] == "http_5xx http_5xx http_5xx ok"
    assert [after[u]["attempts"] for u in part1] == [3, 3, 3, 1, 1, 1, 1, 1]
    assert {after[u]["status"] for u in part1} == {"ok"}
    # Rows that were not retried are exactly as before (volatile columns included).
    for url in (*good, missing, *part2):
        assert after[url] == before[url]
    assert after[missing]["reason"] == "http_404"
    # The store follows the manifest order; kept images are byte-identical.
    table0 = manifest(root, 0)
    ok_uuids = [u for u, s in zip(table0["uuid"].to_pylist(), table0["status"].to_pylist(),
                                  strict=True) if s == "ok"]  # fmt: skip
    store0 = store_table(root, 0)
    assert store0["uuid"].to_pylist() == ok_uuids
    for uuid, jpeg in zip(store0["uuid"].to_pylist(), store0["jpeg"].to_pylist(), strict=True):
        if uuid in kept_images:
            assert jpeg == kept_images[uuid]
    assert store_table(root, 1).num_rows == 8
    # Recommitted partitions say so; the untouched one is the same file.
    assert store.read_record(0)["retries"] == 1 and store.read_record(1)["retries"] == 1
    assert store.read_record(2)["sha256"] == untouched_sha
    for index in range(3):
        record = store.read_record(index)
        side = record["side_files"][store_rel_path(index)]
        assert side["sha256"] == sha256_file(root / store_rel_path(index))


def test_retry_refuses_reasons_that_are_not_retryable(tmp_path):
    result = cli(tmp_path, "retry", "download", "--reason", "http_404", check=False)
    assert result.returncode != 0 and "not retryable" in result.stderr
