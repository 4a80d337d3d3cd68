from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.executors import open_client, slurm_cluster_kwargs, stage_cluster
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
    assert kwargs["job_script_prologue"][1:] == ["module load python"]
    assert kwargs["job_script_prologue"][0].startswith("export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=")
    assert kwargs["scheduler_options"] == {"host": "127.0.0.1", "dashboard_address": None}
    assert "interface" not in kwargs  # empty values are left to dask-jobqueue


def test_unknown_cluster_kind_is_an_error():
    cfg = load_config(Path("/nonexistent"))["cluster"] | {"kind": "kubernetes"}
    with pytest.raises(ConfigError, match="kind must be one of"), open_client(cfg):
        pass


def _worker_environ(_: object) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_local_workers_keep_glibcs_own_malloc_trim_threshold(tmp_path: Path):
    # dask's nanny would set MALLOC_TRIM_THRESHOLD_=65536 in every worker; model inference then
    # pays a fresh mmap per freed tensor (bench/bench_filter.py). Other nanny settings stay.
    cfg = load_config(tmp_path, None, ["cluster.workers=1"])["cluster"]
    with open_client(cfg) as client:
        seen = client.submit(_worker_environ, 0).result()
    assert seen["MALLOC_TRIM_THRESHOLD_"] is None
    assert seen["OMP_NUM_THREADS"] == "1"


def test_usable_cpus_follows_the_affinity_mask():
    from pipeline.executors import usable_cpus

    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert usable_cpus() <= len(before)


def test_threaded_stages_get_a_local_cluster_of_threads(tmp_path: Path):
    cluster = load_config(tmp_path)["cluster"]
    assert cluster["local_processes"] is True and cluster["threaded_stages"] == ["filter"]
    assert stage_cluster(cluster, "filter")["local_processes"] is False
    assert stage_cluster(cluster, "download") is cluster
    slurm = {**cluster, "kind": "slurm"}
    assert stage_cluster(slurm, "filter") is slurm  # only a local cluster has threads to offer
    none = load_config(tmp_path, overrides=["cluster.threaded_stages=[]"])["cluster"]
    assert stage_cluster(none, "filter")["local_processes"] is True
    with pytest.raises(ConfigError, match="threaded_stages"):
        load_config(tmp_path, overrides=['cluster.threaded_stages=["filters"]'])
