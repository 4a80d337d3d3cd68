"""The runner: plan a stage's partitions, skip the committed ones, compute the rest on a dask
cluster (each worker commits its partition as it finishes), and write a run record.

Resume is the same command again. A partition is done only when its commit record matches its
file, its inputs and the stage's parameters; parameters that changed since partitions were
committed make the runner refuse (naming them) unless rebuild=True.
"""

from __future__ import annotations

import functools
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.config import freeze
from pipeline.digest import changed_keys, digest_json
from pipeline.errors import ConfigError, ParameterChangeError, StageFailure, TolpipeError, UpstreamError
from pipeline.executors import Mapper, open_client, stage_cluster
from pipeline.housekeeping import check_upstream, preflight_writable, tidy_root, tuning_keys
from pipeline.ledger import ManifestStore
from pipeline.lineage import JOURNAL, remove_partitions, stale_partitions
from pipeline.progress import Progress
from pipeline.runlock import hold_root
from pipeline.runrecord import RUNNING, RunRecord
from pipeline.stage import Partition, Stage, StageContext


def section_name(stage_dir: str) -> str:
    return stage_dir.split("_", 1)[1]


def stage_context(
    root: Path, stage_dir: str, config: dict[str, Any], options: dict[str, Any] | None = None
) -> StageContext:
    section = section_name(stage_dir)
    if section not in config:
        raise ConfigError(f"no [{section}] section in the config")
    return StageContext(Path(root).resolve(), stage_dir, dict(config[section]), config, dict(options or {}))


def _with_run_tag(tag: str, fn: Any, *args: Any) -> Any:
    """Worker side: name this run's temp files with its tag, then run the task."""
    atomic.set_run_tag(tag)
    return fn(*args)


class LazyMapper(Mapper):
    """Opens the configured cluster only when there is work to map (or uses a given client).
    Every task it maps runs under the run's tag (see pipeline.atomic)."""

    def __init__(self, cluster_cfg: dict[str, Any], stack: ExitStack, client: Any = None):
        self.cluster_cfg, self.stack, self._client = cluster_cfg, stack, client

    @property
    def client(self) -> Any:  # type: ignore[override]
        if self._client is None:
            self._client = self.stack.enter_context(open_client(self.cluster_cfg))
        return self._client

    def map_unordered(self, fn: Any, items: Any, *args: Any) -> Any:
        tagged = functools.partial(_with_run_tag, atomic.run_tag(), fn)
        functools.update_wrapper(tagged, fn)  # task names in dask stay the function's
        return super().map_unordered(tagged, items, *args)


def stage_mapper(stage: Stage, config: dict[str, Any], stack: ExitStack, client: Any) -> LazyMapper:
    """The mapper of a run of `stage`, on the cluster that stage runs with (threaded_stages)."""
    return LazyMapper(stage_cluster(config["cluster"], section_name(stage.dir)), stack, client)


def check_parameters(store: ManifestStore, params: dict[str, Any], rebuild: bool) -> None:
    """Refuse when committed partitions were built with other parameters (unless rebuilding)."""
    if rebuild:
        return
    digest = digest_json(params)
    stale = {i: r for i, r in store.committed_records().items() if r["params_digest"] != digest}
    if not stale:
        return
    names: set[str] = set()
    for record in stale.values():
        names.update(changed_keys(record["params"], params))
    section = section_name(store.stage_dir)
    listed = ", ".join(f"{section}.{n}" for n in sorted(names))
    raise ParameterChangeError(
        f"{store.stage_dir}: {len(stale)} committed partition(s) were built with other parameters "
        f"(changed: {listed}); rerun with --rebuild to recompute them, or restore the old values"
    )


def _commit(
    stage: Stage, store: ManifestStore, part: Partition, output: Any, params: dict[str, Any], run_id: str,
    retries: int = 0,
) -> dict[str, Any]:
    """Worker side: commit a partition's output; what the driver's progress needs comes back."""
    record = store.commit(
        part.index, output.table, stage.schema, output.rows_in, part.inputs, params,
        output.side_files, retries=retries, run_id=run_id, key=part.key,
    )  # fmt: skip
    return {"index": part.index, "rows": record.rows, "counts": record.counts}


def _execute_partition(
    part: Partition, stage_dir: str, ctx: StageContext, params: dict[str, Any], run_id: str
) -> dict[str, Any]:
    """Worker side: compute one partition and commit it. Module-level so dask can pickle it."""
    from stages import load_stage

    stage = load_stage(stage_dir)
    output = stage.run_partition(part, ctx)
    return _commit(stage, ManifestStore(ctx.root, stage_dir), part, output, params, run_id)


def _execute_retry(
    part: Partition,
    stage_dir: str,
    ctx: StageContext,
    params: dict[str, Any],
    run_id: str,
    reasons: list[str],
) -> dict[str, Any]:
    from stages import load_stage

    stage = load_stage(stage_dir)
    store = ManifestStore(ctx.root, stage_dir)
    previous = ctx.read_manifest(stage_dir, part.index)
    retries = (store.read_record(part.index) or {}).get("retries", 0) + 1
    output = stage.retry_partition(part, ctx, previous, set(reasons))
    return _commit(stage, store, part, output, params, run_id, retries)


def _totals(store: ManifestStore, indices: list[int]) -> dict[str, Any]:
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for index in indices:
        record = store.read_record(index)
        if record:
            by_status.update(record["counts"]["by_status"])
            by_reason.update(record["counts"]["by_reason"])
    return {"by_status": dict(sorted(by_status.items())), "by_reason": dict(sorted(by_reason.items()))}


def _remove_orphans(store: ManifestStore, planned: set[int]) -> dict[str, list[int]]:
    """Committed partitions that the current plan no longer has (inputs shrank): remove them
    with their side files and every downstream partition built from them."""
    orphans = sorted(set(store.committed_records()) - planned)
    return remove_partitions(store.root, {store.stage_dir: orphans}) if orphans else {}


def _map_partitions(
    mapper: Mapper, fn: Any, parts: list[Partition], progress: Progress, *args: Any
) -> list[tuple[int, BaseException]]:
    failures: list[tuple[int, BaseException]] = []
    for part, result, error in mapper.map_unordered(fn, parts, *args):
        if error is not None:
            failures.append((part.index, error))
            progress.message(f"part-{part.index:05d} failed: {type(error).__name__}: {error}")
            progress.advance(1)
        else:
            progress.advance(1, rows=result["rows"])
    return sorted(failures, key=lambda f: f[0])


def _raise_failures(stage_dir: str, failures: list[tuple[int, BaseException]], total: int) -> None:
    if not failures:
        return
    index, first = failures[0]
    if isinstance(first, TolpipeError):
        raise first
    raise StageFailure(
        f"{stage_dir}: {len(failures)} of {total} partition(s) failed; committed ones are kept; "
        f"first: part-{index:05d}: {type(first).__name__}: {first}"
    )


def _progress(stage_dir: str, total: int, config: dict[str, Any]) -> Progress:
    run_cfg = config["run"]
    return Progress(
        stage_dir, total, enabled=run_cfg["progress"], interval_s=run_cfg["progress_interval_s"]
    )


def _shared_tidy(root: Path, stage_dir: str) -> dict[str, Any]:
    """What a partition run sharing the root does instead of tidying: nothing, unless a killed
    run left a removal half done, which only an exclusive run may finish."""
    if (root / "manifests" / JOURNAL).exists():
        raise UpstreamError(
            f"{root}: a killed run left a removal of partitions unfinished; run `tolpipe run "
            f"{section_name(stage_dir)}` once without --partitions to finish it"
        )
    return {"skipped": "root shared by partition runs"}


def run_stage(
    root: str | Path,
    stage_dir: str,
    config: dict[str, Any],
    *,
    rebuild: bool = False,
    client: Any = None,
    options: dict[str, Any] | None = None,
    save: bool = False,
    partitions: set[int] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one stage; returns the run record's data. `partitions`: compute only
    these indices (the others are left as they are), e.g. one task of a Slurm job array."""
    from stages import load_stage

    stage: Stage = load_stage(stage_dir)
    # Partition runs of one stage (a job array's tasks) share the root; any other run holds it alone.
    shared = stage_dir if partitions is not None else None
    with hold_root(root, f"run {stage_dir}", shared_stage=shared) as lock:
        ctx = stage_context(Path(root), stage_dir, config, {"rebuild": rebuild, **(options or {})})
        preflight_writable(ctx.root, stage)
        # Sharing runs leave tidying to the next exclusive run: the others' temp files are live.
        tidy = _shared_tidy(ctx.root, stage_dir) if lock.shared else tidy_root(ctx.root, lock)
        check_upstream(ctx.root, stage)
        params = stage.output_params(ctx.params)
        store = ManifestStore(ctx.root, stage_dir)
        check_parameters(store, params, rebuild)
        stage.check(ctx)
        freeze(ctx.root, config, tuning_keys(), save=save)
        command = ("rebuild" if rebuild else "run") + (" --partitions" if partitions is not None else "")
        selected = sorted(partitions) if partitions is not None else None
        record = RunRecord(ctx.root, stage_dir, command, config)
        record.start(run_tag=lock.tag, housekeeping=tidy, partitions_selected=selected)
        try:
            return _run_partitions(stage, ctx, store, params, record, client, partitions, lock.shared)
        except Exception as exc:  # an error in prepare or plan: the run failed, it was not killed
            if record.data.get("outcome") == RUNNING:
                record.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise


def _run_partitions(
    stage: Stage, ctx: StageContext, store: ManifestStore, params: dict[str, Any], record: RunRecord,
    client: Any, selected: set[int] | None, shared: bool = False,
) -> dict[str, Any]:
    config = ctx.config
    with ExitStack() as stack:
        mapper = stage_mapper(stage, config, stack, client)
        stage.prepare(ctx, mapper)
        parts = stage.plan(ctx)
        digest = digest_json(params)
        verify = config["run"]["verify_sha256"]
        chosen = [p for p in parts if selected is None or p.index in selected]
        todo = [p for p in chosen if not store.is_done(p.index, p.inputs, digest, verify)]
        progress = _progress(stage.dir, len(todo), config)
        left = f", {len(parts) - len(chosen)} not selected" if selected is not None else ""
        progress.message(f"{len(parts)} partitions planned, {len(chosen) - len(todo)} already done{left}")
        failures = _map_partitions(
            mapper, _execute_partition, todo, progress, stage.dir, ctx, params, record.run_id
        )
    indices = [p.index for p in parts]
    # Orphans are removed by exclusive runs only (a sharing run's removal could race another's
    # commit); the next plain `tolpipe run` of the stage removes them.
    removed = {} if failures or shared else _remove_orphans(store, set(indices))
    data = record.finish(
        "failed" if failures else "ok",
        partitions_planned=len(parts),
        partitions_not_selected=len(parts) - len(chosen),
        partitions_skipped=len(chosen) - len(todo),
        notes=stage.run_notes(ctx),
        partitions_computed=len(todo) - len(failures),
        partitions_failed=[i for i, _ in failures],
        partitions_removed=removed.pop(stage.dir, []),
        downstream_removed=removed,
        rows_computed=progress.rows,
        totals=_totals(store, indices),
    )
    _raise_failures(stage.dir, failures, len(todo))
    return data


def retry_stage(
    root: str | Path,
    stage_dir: str,
    config: dict[str, Any],
    reasons: list[str],
    *,
    client: Any = None,
) -> dict[str, Any]:
    """Re-attempt the failed rows whose reason is in `reasons`, recommitting their partitions."""
    from stages import load_stage

    stage: Stage = load_stage(stage_dir)
    if not stage.retryable_reasons:
        raise ConfigError(f"stage {stage_dir} has nothing to retry")
    unknown = sorted(set(reasons) - set(stage.retryable_reasons))
    if unknown:
        allowed = ", ".join(stage.retryable_reasons)
        raise ConfigError(f"not retryable in {stage_dir}: {', '.join(unknown)} (allowed: {allowed})")
    with hold_root(root, f"retry {stage_dir}") as lock:
        ctx = stage_context(Path(root), stage_dir, config)
        preflight_writable(ctx.root, stage)
        tidy = tidy_root(ctx.root, lock)
        check_upstream(ctx.root, stage)
        params = stage.output_params(ctx.params)
        store = ManifestStore(ctx.root, stage_dir)
        check_parameters(store, params, rebuild=False)
        stage.check(ctx)
        record = RunRecord(ctx.root, stage_dir, f"retry {','.join(reasons)}", config)
        record.start(run_tag=lock.tag, housekeeping=tidy)
        return _retry_partitions(stage, ctx, store, params, record, reasons, client)


def _retry_partitions(
    stage: Stage, ctx: StageContext, store: ManifestStore, params: dict[str, Any], record: RunRecord,
    reasons: list[str], client: Any,
) -> dict[str, Any]:
    config, stage_dir = ctx.config, stage.dir
    wanted = {f"failed:{r}" for r in reasons}
    with ExitStack() as stack:
        mapper = stage_mapper(stage, config, stack, client)
        stage.prepare(ctx, mapper)
        parts = stage.plan(ctx)
        committed = store.committed_records()
        todo = [
            p
            for p in parts
            if p.index in committed
            and committed[p.index]["inputs"] == p.inputs
            and wanted & set(committed[p.index]["counts"]["by_reason"])
        ]
        progress = _progress(stage_dir, len(todo), config)
        progress.message(f"{len(todo)} partitions have rows failed with {', '.join(reasons)}")
        failures = _map_partitions(
            mapper, _execute_retry, todo, progress, stage_dir, ctx, params, record.run_id,
            sorted(reasons),
        )  # fmt: skip
    data = record.finish(
        "failed" if failures else "ok",
        partitions_retried=[p.index for p in todo],
        partitions_failed=[i for i, _ in failures],
        totals=_totals(store, [p.index for p in parts]),
    )
    _raise_failures(stage_dir, failures, len(todo))
    return data


def rethreshold_stage(
    root: str | Path, stage_dir: str, config: dict[str, Any], *, client: Any = None
) -> dict[str, Any]:
    """Re-derive a stage's decisions from its stored scores with the configured thresholds,
    recommitting every partition whose thresholds changed; no score is recomputed."""
    from stages import load_stage

    stage: Stage = load_stage(stage_dir)
    if not stage.decision_params:
        raise ConfigError(f"stage {stage_dir} has no thresholds to re-apply")
    with hold_root(root, f"rethreshold {stage_dir}") as lock:
        ctx = stage_context(Path(root), stage_dir, config)
        preflight_writable(ctx.root, stage)
        tidy = tidy_root(ctx.root, lock)
        store = ManifestStore(ctx.root, stage_dir)
        params = stage.output_params(ctx.params)
        committed = store.committed_records()
        if not committed:
            raise ConfigError(f"{stage_dir} has no committed partitions to re-threshold")
        _check_only_decisions_changed(stage, committed, params)
        stale = stale_partitions(ctx.root, stage_dir)
        if stale:
            raise ParameterChangeError(
                f"{stage_dir}: {len(stale)} partition(s) are stale (built from upstream partitions "
                f"that changed): run `tolpipe run {section_name(stage_dir)}` first"
            )
        freeze(ctx.root, config, tuning_keys())
        record = RunRecord(ctx.root, stage_dir, "rethreshold", config)
        record.start(run_tag=lock.tag, housekeeping=tidy)
        digest = digest_json(params)
        todo = [
            Partition(index=i, inputs=r["inputs"], key=r.get("key"))
            for i, r in sorted(committed.items())
            if r["params_digest"] != digest
        ]
        with ExitStack() as stack:
            mapper = stage_mapper(stage, config, stack, client)
            progress = _progress(stage_dir, len(todo), config)
            progress.message(f"{len(todo)} of {len(committed)} partitions have other thresholds")
            failures = _map_partitions(
                mapper, _execute_rethreshold, todo, progress, stage_dir, ctx, params, record.run_id
            )
        data = record.finish(
            "failed" if failures else "ok",
            partitions_rethresholded=[p.index for p in todo],
            partitions_failed=[i for i, _ in failures],
            totals=_totals(store, sorted(committed)),
        )
    _raise_failures(stage_dir, failures, len(todo))
    return data


def _check_only_decisions_changed(
    stage: Stage, committed: dict[int, dict[str, Any]], params: dict[str, Any]
) -> None:
    changed: set[str] = set()
    for record in committed.values():
        changed.update(changed_keys(record["params"], params))
    others = sorted(changed - set(stage.decision_params))
    if others:
        section = section_name(stage.dir)
        raise ParameterChangeError(
            f"{stage.dir}: rethreshold re-applies thresholds only "
            f"({', '.join(f'{section}.{k}' for k in stage.decision_params)}); also changed: "
            f"{', '.join(f'{section}.{k}' for k in others)}: use `tolpipe run {section} --rebuild`"
        )


def _execute_rethreshold(
    part: Partition, stage_dir: str, ctx: StageContext, params: dict[str, Any], run_id: str
) -> dict[str, Any]:
    from stages import load_stage

    stage = load_stage(stage_dir)
    store = ManifestStore(ctx.root, stage_dir)
    previous = ctx.read_manifest(stage_dir, part.index)
    old = store.read_record(part.index) or {}
    output = stage.rethreshold_partition(part, ctx, previous)
    return _commit(stage, store, part, output, params, run_id, old.get("retries", 0))
