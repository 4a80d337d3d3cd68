from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.executors import open_client, slurm_cluster_kwargs
from pipeline.runner import run_stage
from tests.conftest import partition_digests, write_url_table


def test_stage_runs_on_a_local_cluster_with_two_worker_processes(tmp_path: Path):
    source = write_url_table(tmp_path / "urls.csv", rows=600, hosts=3)
    config = load_config(
        tmp_path / "root",
        overrides=[f'ingest.sources=["table:{source}"]', "ingest.batch_size=50", "run.progress=false"],
    )
    with open_client(config["cluster"]) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()
        data = run_stage(tmp_path / "root", "01_ingest", config, client=client)
    assert data["outcome"] == "ok"
    assert data["partitions_computed"] == data["partitions_planned"] == 12
    assert len(partition_digests(tmp_path / "root", "01_ingest")) == 12


def test_slurm_settings_map_onto_slurmcluster_arguments():
    cfg = load_config(Path("/nonexistent")).get("cluster") | {
        "partition": "gpu", "account": "bio", "qos": "high", "cores": 8, "memory": "32GB",
        "job_script_prologue": ["module load python"], "scheduler_host": "127.0.0.1",
    }  # fmt: skip
    kwargs = slurm_cluster_kwargs(cfg)
    assert kwargs["queue"] == "gpu" and kwargs["account"] == "bio" and kwargs["cores"] == 8
    assert "--qos=high" in kwargs["job_extra_directives"]
    assert kwargs["job_script_prologue"] == ["module load python"]
    assert kwargs["scheduler_options"] == {"host": "127.0.0.1", "dashboard_address": None}
    assert "interface" not in kwargs  # empty values are left to dask-jobqueue


def test_unknown_cluster_kind_is_an_error():
    cfg = load_config(Path("/nonexistent"))["cluster"] | {"kind": "kubernetes"}
    with pytest.raises(ConfigError, match="kind must be one of"), open_client(cfg):
        pass
