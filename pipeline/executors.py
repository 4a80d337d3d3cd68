"""Dask clusters: a LocalCluster by default, dask-jobqueue's SLURMCluster on HPC, or an existing
cluster joined through its scheduler file. The same stage code runs on all three."""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

CLUSTER_KINDS = ("local", "slurm", "scheduler_file")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (what Slurm, taskset or a container's
    cpuset grant), capped by a cgroup v2 CPU quota; os.cpu_count() counts the whole machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _cgroup_cpu_quota() or cpus))


def _cgroup_cpu_quota() -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (cpu.max "quota period"), or None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) // int(period)))


def local_workers(cfg: dict[str, Any]) -> int:
    """cluster.workers of a LocalCluster; "auto" = one worker per usable CPU."""
    workers = cfg["workers"]
    return usable_cpus() if workers == "auto" else int(workers)


# dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536, so glibc hands freed memory
# back to the kernel at once. Model inference frees and re-allocates large tensors per image:
# under that setting each one is a fresh mmap with page faults, measured at +55% CPU per image
# for MTCNN (bench/bench_filter.py). Workers keep glibc's own adaptive threshold instead.
_WORKER_ENV_UNSET = ("MALLOC_TRIM_THRESHOLD_",)
PRE_SPAWN_KEY = "distributed.nanny.pre-spawn-environ"


def nanny_environ() -> dict[str, Any]:
    """dask's pre-spawn environment for workers with _WORKER_ENV_UNSET set to None, which the
    nanny reads as "leave unset"."""
    import dask
    import distributed  # noqa: F401  (registers distributed's defaults in dask.config)

    return {**dask.config.get(PRE_SPAWN_KEY), **dict.fromkeys(_WORKER_ENV_UNSET)}


def nanny_environ_export() -> str:
    """A shell line giving workers started by a batch job (dask-jobqueue, `dask worker` under
    srun) the same setting: dask merges a dict from this variable into its config."""
    variable = "DASK_" + PRE_SPAWN_KEY.upper().replace(".", "__").replace("-", "_")
    return f"export {variable}={shlex.quote(repr(dict.fromkeys(_WORKER_ENV_UNSET)))}"


def stage_cluster(cfg: dict[str, Any], section: str) -> dict[str, Any]:
    """The [cluster] settings one stage runs with: a stage listed in threaded_stages gets a local
    cluster of threads (see pipeline/defaults.toml)."""
    if cfg["kind"] == "local" and section in cfg.get("threaded_stages", ()):
        return {**cfg, "local_processes": False}
    return cfg


def _local_cluster(cfg: dict[str, Any]):
    import dask
    from dask.distributed import LocalCluster

    dask.config.set({PRE_SPAWN_KEY: nanny_environ()})
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
        "job_script_prologue": [nanny_environ_export(), *cfg["job_script_prologue"]],
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
