"""`tolpipe audit UUID` on the demo's root: a kept sample and a dropped one show a line for every
stage, their rows and the run records behind each line; `--json` gives the same for machines."""

from __future__ import annotations

import json

from demo.run import train_stage_present
from stages import STAGE_MODULES
from tests.conftest import cli
from tests.support.demo import DemoRun, demo_run, rows_by_uuid, uuids_of_file  # noqa: F401

# A photo and its planted exact copy: MD5 dedup keeps one of the two.
KEPT_FILES = ("bison_bison.jpg", "copy_exact_bison_bison.jpg")
DROPPED_FILE = "astronaut.jpg"  # a face: dropped by 04


def the_uuid(run: DemoRun, file_name: str) -> str:
    (uuid,) = uuids_of_file(run.root, file_name)
    return uuid


def overview(text: str) -> dict[str, str]:
    """Stage -> its overview line (the lines before the first `==` block)."""
    head = text.split("\n== ", 1)[0].splitlines()[1:]
    return {line.split()[0]: line for line in head}


def test_audit_of_a_kept_sample_shows_every_stage(demo_run: DemoRun):  # noqa: F811
    sharded = rows_by_uuid(demo_run.root, "06_shard")
    (uuid,) = [u for name in KEPT_FILES for u in uuids_of_file(demo_run.root, name) if u in sharded]
    text = cli(demo_run.root, "audit", uuid).stdout
    lines = overview(text)
    assert set(lines) == set(STAGE_MODULES)
    for stage in ("01_ingest", "02_download", "03_taxonomy", "04_filter", "05_dedup", "06_shard"):
        assert lines[stage].split()[1] == "ok", lines[stage]
        assert f"\n== {stage} (part-" in text
    assert "url=http://127.0.0." in lines["01_ingest"] and "http_status=200" in lines["02_download"]
    assert (
        "resolution_strategy=exact_accepted" in lines["03_taxonomy"]
        and "match_type=Exact" in lines["03_taxonomy"]
    )
    assert "face_filter=applied face_count=0" in lines["04_filter"]
    assert "pdq_state=applied" in lines["05_dedup"] and "shard=shard-00000.tar" in lines["06_shard"]
    assert f"key={uuid}" in lines["06_shard"]
    assert text.count("-- provenance: run ") == 6 and "config " in text and "slurm job " in text
    if train_stage_present():  # 07's rows are jobs: the line names those that read the shard
        assert "read with shard-00000.tar by train job " in lines["07_train"]
        assert "COMPLETED" in lines["07_train"]


def test_audit_of_a_dropped_sample_says_where_it_stopped(demo_run: DemoRun):  # noqa: F811
    uuid = the_uuid(demo_run, DROPPED_FILE)
    lines = overview(cli(demo_run.root, "audit", uuid).stdout)
    assert set(lines) == set(STAGE_MODULES)
    assert "dropped human_face" in lines["04_filter"] and "face_count=1" in lines["04_filter"]
    for stage in ("05_dedup", "06_shard"):
        assert "not reached: dropped at 04_filter (human_face)" in lines[stage]


def test_audit_json(demo_run: DemoRun):  # noqa: F811
    uuid = the_uuid(demo_run, "leak_reencode_strix_aluco.jpg")
    data = json.loads(cli(demo_run.root, "audit", uuid, "--json").stdout)
    assert data["uuid"] == uuid and [e["stage"] for e in data["stages"]] == list(STAGE_MODULES)
    dedup = next(e for e in data["stages"] if e["stage"] == "05_dedup")
    assert dedup["state"] == "found" and dedup["row"]["reason"] == "test_leak_pdq"
    assert dedup["row"]["leak_testset"] == "heldout" and dedup["config_digest"] and dedup["code_version"]
    shard = next(e for e in data["stages"] if e["stage"] == "06_shard")
    assert shard["state"] == "not_reached" and shard["stopped_at"] == "05_dedup"
