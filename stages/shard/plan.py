"""Deciding the shards (driver side, before any shard is written).

1. Keys pass (metadata only, cached per upstream partition; see keys.py): per row its order key,
   split, taxon, row digest. Then the layout: ceil(samples / samples_per_shard) shards per split.
2. Each shard's inputs: `rows` = rows:samples:digest of exactly the rows its hash range takes
   (keys.ShardSums) and `shard` = its file name. Upstream partitions are not listed: a shard
   draws from nearly every upstream partition (thousands of names per commit record at scale),
   and the rows digest already changes exactly when one of the shard's rows does (its
   provenance, taxonomy, stored image MD5, split), so exactly those shards are rebuilt.
3. Staging (only when some shard is not done; see staging.py): the rows and images of the
   shards to build, grouped so each shard task reads just its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.digest import digest_json
from pipeline.ledger import ManifestStore
from pipeline.lineage import upstream_inputs
from pipeline.progress import Progress
from pipeline.stage import Partition, StageContext
from stages.shard import staging as st
from stages.shard.assign import Layout
from stages.shard.keys import add_up, keys_path, read_counts, write_keys
from stages.shard.settings import shard_settings


@dataclass(frozen=True)
class ShardPlan:
    layout: Layout
    partitions: list[Partition]
    todo: list[int]  # partitions not done when the plan was made
    staging: Path | None


def upstream_stages(upstream: str) -> list[str]:
    """The stages whose partition k a shard's rows are read from: 01 up to the upstream stage."""
    from stages import STAGE_MODULES

    order = list(STAGE_MODULES)
    return order[: order.index(upstream) + 1]


def _raise_first(results: Any) -> None:
    for _, _, error in results:
        if error is not None:
            raise error


def _progress(ctx: StageContext, label: str, total: int, unit: str) -> Progress:
    run = ctx.config["run"]
    return Progress(f"{ctx.stage_dir} {label}", total, unit, enabled=run["progress"],
                    interval_s=run["progress_interval_s"])  # fmt: skip


def _keys_task(item: tuple[int, str], root: str, upstream: str, params: dict[str, Any]) -> int:
    index, dest = item
    return write_keys(root, index, upstream, params, dest)["rows"]


def keys_files(ctx: StageContext, mapper: Any, upstream: str, params: dict[str, Any]) -> dict[int, Path]:
    """The keys file of every committed upstream partition, computing the missing ones."""
    stages = upstream_stages(upstream)
    records = {stage: ctx.committed(stage) for stage in stages}
    folder = ctx.work_dir("keys")
    paths = {}
    for index in sorted(records[upstream]):
        sources = upstream_inputs(records, index)
        paths[index] = keys_path(folder, index, sources, params)
    missing = [i for i in paths if not paths[i].exists()]
    if missing:
        progress = _progress(ctx, "keys", len(missing), "partitions")
        items = [(i, str(paths[i])) for i in missing]
        for item in mapper.map_unordered(_keys_task, items, str(ctx.root), upstream, ctx.params):
            _raise_first([item])
            progress.advance(1, rows=item[1])
    for stale in set(folder.glob("part-*.parquet")) - set(paths.values()):
        stale.unlink()
    return paths


def _group_task(item: tuple[int, list[int]], root: str, folder: str, upstream: str, params: dict[str, Any],
                layout: tuple[int, int]) -> int:  # fmt: skip
    group, partitions = item
    return st.stage_group(root, folder, group, partitions, upstream, params, layout)


def build_staging(ctx: StageContext, mapper: Any, upstream: str, layout: Layout, covered: np.ndarray,
                  groups: list[list[int]], description: dict[str, Any]) -> Path:  # fmt: skip
    folder = ctx.work_dir() / f"staging-{digest_json(description)[:16]}"
    st.remove_other_stagings(ctx.work_dir(), folder)
    if st.prepare_folder(folder, covered, description):
        return folder
    layout_args = (layout.train, layout.val)
    todo = [(g, parts) for g, parts in enumerate(groups) if not st.StagingLayout(folder).marker(g).exists()]
    progress = _progress(ctx, "staging", len(todo), "groups")
    for item in mapper.map_unordered(_group_task, todo, str(ctx.root), str(folder), upstream, ctx.params,
                                     layout_args):  # fmt: skip
        _raise_first([item])
        progress.advance(1, rows=item[1])
    st.mark_complete(folder)
    return folder


def make_plan(ctx: StageContext, mapper: Any, upstream: str, params: dict[str, Any]) -> ShardPlan:
    """`params`: the stage's output parameters (what commit records carry)."""
    settings = shard_settings(ctx.params)
    paths = keys_files(ctx, mapper, upstream, params)
    counts = [read_counts(paths[i]) for i in sorted(paths)]
    layout = Layout.for_counts(sum(c["train"] for c in counts), sum(c["val"] for c in counts),
                               settings.samples_per_shard, sum(c["rows"] for c in counts))  # fmt: skip
    sums = add_up([paths[i] for i in sorted(paths)], layout)
    inputs = [{"rows": sums.inputs(i), "shard": layout.name(i)} for i in range(layout.total)]
    store = ManifestStore(ctx.root, ctx.stage_dir)
    digest, verify = digest_json(params), ctx.config["run"]["verify_sha256"]
    todo = [i for i in range(layout.total) if not store.is_done(i, inputs[i], digest, verify)]
    groups = st.groups_of({i: c["rows"] for i, c in zip(sorted(paths), counts, strict=True)},
                          settings.staging_rows)  # fmt: skip
    folder = None
    if todo:
        covered = np.zeros(layout.total, dtype=bool)
        covered[todo] = True
        description = {"version": st.STAGING_VERSION, "params": params, "layout": [layout.train, layout.val],
                       "groups": groups, "keys": sorted(p.name for p in paths.values())}  # fmt: skip
        folder = build_staging(ctx, mapper, upstream, layout, covered, groups, description)
    parts = [
        Partition(index=i, inputs=inputs[i], key=layout.name(i),
                  payload={"staging": str(folder) if folder else None, "groups": len(groups),
                           "name": layout.name(i)})  # fmt: skip
        for i in range(layout.total)
    ]
    return ShardPlan(layout, parts, todo, folder)
