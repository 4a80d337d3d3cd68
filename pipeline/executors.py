"""Dask clusters: a LocalCluster by default, dask-jobqueue's SLURMCluster on HPC, or an existing
cluster joined through its scheduler file. The same stage code runs on all three."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.errors import ConfigError

CLUSTER_KINDS = ("local", "slurm", "scheduler_file")


def local_workers(cfg: dict[str, Any]) -> int:
    """cluster.workers of a LocalCluster; "auto" = one worker per CPU of this machine."""
    workers = cfg["workers"]
    return (os.cpu_count() or 1) if workers == "auto" else int(workers)


def _local_cluster(cfg: dict[str, Any]):
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=local_workers(cfg),
        threads_per_worker=int(cfg["threads_per_worker"]),
        processes=bool(cfg["local_processes"]),
        memory_limit=cfg["memory_limit"] if cfg["memory_limit"] != "0" else 0,
        dashboard_address=":0",  # a free port: never collide with another user's dashboard
        silence_logs=logging.CRITICAL,  # task errors are reported by the runner, once
    )


def slurm_cluster_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """SLURMCluster keyword arguments from the [cluster] section (empty values left out)."""
    kwargs: dict[str, Any] = {
        "cores": int(cfg["cores"]),
        "processes": int(cfg["processes"]),
        "memory": cfg["memory"],
        "walltime": cfg["walltime"],
        "job_extra_directives": list(cfg["job_extra_directives"]),
        "job_script_prologue": list(cfg["job_script_prologue"]),
    }
    optional = {
        "queue": cfg["partition"],
        "account": cfg["account"],
        "interface": cfg["interface"],
        "local_directory": cfg["local_directory"],
        "log_directory": cfg["log_directory"],
    }
    kwargs.update({k: v for k, v in optional.items() if v})
    if cfg["qos"]:
        kwargs["job_extra_directives"].append(f"--qos={cfg['qos']}")
    # No dashboard port to collide with other users' schedulers on shared login nodes.
    kwargs["scheduler_options"] = {"dashboard_address": None}
    if cfg["scheduler_host"]:
        kwargs["scheduler_options"]["host"] = cfg["scheduler_host"]
    return kwargs


def _slurm_cluster(cfg: dict[str, Any]):
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError(
            "[cluster] kind = 'slurm' needs dask-jobqueue: pip install 'tolpipe[slurm]'"
        ) from None
    cluster = SLURMCluster(**slurm_cluster_kwargs(cfg))
    cluster.scale(jobs=int(cfg["jobs"]))
    return cluster


@contextmanager
def open_client(cfg: dict[str, Any]) -> Iterator[Any]:
    """A dask.distributed Client for the [cluster] config; closes what it started."""
    from dask.distributed import Client

    kind = cfg["kind"]
    if kind not in CLUSTER_KINDS:
        raise ConfigError(f"[cluster] kind must be one of {CLUSTER_KINDS}, got {kind!r}")
    if kind == "scheduler_file":
        if not cfg["scheduler_file"]:
            raise ConfigError("[cluster] kind = 'scheduler_file' needs cluster.scheduler_file")
        with Client(scheduler_file=cfg["scheduler_file"]) as client:
            yield client
        return
    cluster = _local_cluster(cfg) if kind == "local" else _slurm_cluster(cfg)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


class Mapper:
    """Maps a function over items on a dask client, yielding (item, result or exception) as each
    finishes. Exceptions are returned, not raised, so one bad item never hides the others."""

    def __init__(self, client: Any):
        self.client = client

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], *args: Any
    ) -> Iterator[tuple[Any, Any, BaseException | None]]:
        from dask.distributed import as_completed

        items = list(items)
        if not items:
            return
        futures = self.client.map(fn, items, *[[a] * len(items) for a in args], pure=False)
        item_of = {f.key: item for f, item in zip(futures, items, strict=True)}
        for future in as_completed(futures):
            item = item_of[future.key]
            error = future.exception()
            if error is not None:
                yield item, None, error
            else:
                yield item, future.result(), None
            future.release()
