"""Occurrence distinctness across partitions, decided in the driver before any partition runs.

An occurrence's images can sit in different partitions (01 partitions by URL host), so no
partition can decide alone. prepare() reads the occurrence columns of every partition, embeds the
images of multi-image occurrences (one dask task per partition, cached on disk per embedder and
upstream file), and writes one decisions file: per image its occurrence's size, mean pairwise
similarity, the image's rank in the occurrence's deterministic sample, and whether the images are
near-identical frames. Partition k's inputs carry the digest of its own rows' decisions, so a
partition is recomputed exactly when a decision about one of its rows changes.

Memory: the driver holds the embeddings of the images of multi-image occurrences in scope.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.digest import digest_json
from pipeline.joined import iter_images, joined_rows
from pipeline.stage import StageContext
from stages.filter.loader import decoded_batches
from stages.filter.occurrences import OccurrenceRule, occurrence_similarity, sample_key
from stages.filter.settings import Scope, scopes

ROW_COLUMNS = {"01_ingest": ["image_type", "provider", "occurrence_id", "collection_area"], "03_taxonomy": []}
DECISIONS = pa.schema([
    pa.field("uuid", pa.string(), nullable=False),
    pa.field("occurrence_key", pa.string()),
    pa.field("occurrence_images", pa.int32()),
    pa.field("occurrence_similarity", pa.float64()),
    pa.field("occurrence_rank", pa.int32()),
    pa.field("occurrence_camera_trap", pa.bool_()),
])  # fmt: skip


def occurrence_keys(rows: pa.Table, scope: Scope) -> list[str | None]:
    """Per row, its occurrence's key (provider and occurrence id) when the filter looks at it."""
    keys = []
    for image_type, provider, occurrence in zip(
        rows["image_type"].to_pylist(), rows["provider"].to_pylist(), rows["occurrence_id"].to_pylist(),
        strict=True,
    ):
        in_scope = occurrence is not None and scope.covers(image_type, provider)
        keys.append(f"{provider}\x1f{occurrence}" if in_scope else None)
    return keys


def members(root: Path, indices: list[int], scope: Scope) -> dict[str, list[tuple[int, str]]]:
    """occurrence key -> [(partition, uuid)] of the images in scope, every partition."""
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for index in indices:
        rows = joined_rows(root, index, ROW_COLUMNS)
        for key, uuid in zip(occurrence_keys(rows, scope), rows["uuid"].to_pylist(), strict=True):
            if key is not None:
                found[key].append((index, uuid))
    return found


def embed_partition(root: str, index: int, uuids: list[str], cache: str, params: dict[str, Any],
                    device: str) -> int:  # fmt: skip
    """Worker side: embed the given images of one partition into `cache` (.npz: uuids, vectors)."""
    from stages.filter.models import load_embedder
    from stages.filter.settings import resolve_device

    embedder = load_embedder(params, resolve_device(device))
    wanted = set(uuids)
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    for batch in decoded_batches(iter_images(root, index, wanted), int(params["batch_size"])):
        good = [(u, im) for u, im, _ in batch if im is not None]
        if good:
            vectors.append(embedder.embed([im for _, im in good]))
            ids += [u for u, _ in good]
    dest = Path(cache)
    temp = atomic.temp_name(dest)
    with open(temp, "wb") as handle:
        np.savez(handle, uuids=np.array(ids, dtype=object), vectors=np.concatenate(vectors) if vectors
                 else np.zeros((0, 0), np.float32))  # fmt: skip
    atomic.publish(temp, dest)
    return len(ids)


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=True) as data:
        return dict(zip(data["uuids"].tolist(), data["vectors"], strict=True))


def decide_all(
    groups: dict[str, list[str]], vectors: dict[str, np.ndarray], rule: OccurrenceRule
) -> pa.Table:
    """One decisions row per image of a multi-image occurrence (images that could not be embedded
    are left out of the comparison and of the table)."""
    rows: list[dict[str, Any]] = []
    for key in sorted(groups):
        uuids = sorted(u for u in groups[key] if u in vectors)
        if len(uuids) < 2:
            continue
        similarity = occurrence_similarity(np.stack([vectors[u] for u in uuids]))
        ranked = sorted(uuids, key=lambda u: (sample_key(u, rule.seed), u))
        for rank, uuid in enumerate(ranked):
            rows.append({"uuid": uuid, "occurrence_key": key, "occurrence_images": len(uuids),
                         "occurrence_similarity": similarity, "occurrence_rank": rank,
                         "occurrence_camera_trap": similarity >= rule.high})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=DECISIONS)


def partition_digest(decisions: pa.Table, uuids: set[str]) -> str:
    """Digest of the decisions about one partition's rows."""
    mine = decisions.filter(pc.is_in(decisions["uuid"], pa.array(sorted(uuids), pa.string())))
    return digest_json(sorted(mine.to_pylist(), key=lambda r: r["uuid"]))


def write_decisions(table: pa.Table, dest: Path) -> None:
    temp = atomic.temp_name(dest)
    pq.write_table(table, temp, compression="zstd")
    atomic.publish(temp, dest)


def read_decisions(path: Path, uuids: list[str]) -> dict[str, dict[str, Any]]:
    table = pq.read_table(path, filters=[("uuid", "in", uuids)]) if uuids else pq.read_table(path).slice(0, 0)
    return {row["uuid"]: row for row in table.to_pylist()}


def _embed_task(index: int, root: str, wanted: dict[int, list[str]], caches: dict[int, Path],
                params: dict[str, Any]) -> int:  # fmt: skip
    return embed_partition(root, index, wanted[index], str(caches[index]), params, params["device"])


def _embeddings(
    ctx: StageContext, mapper: Any, wanted: dict[int, list[str]], committed: dict[int, dict[str, Any]],
    embedder: dict[str, str],
) -> dict[str, np.ndarray]:
    """Embeddings of the wanted images, each partition's cached per embedder and upstream file."""
    folder = ctx.work_dir(f"embeddings/{digest_json(embedder)[:16]}")
    caches = {i: folder / f"part-{i:05d}-{committed[i]['sha256'][:16]}.npz" for i in wanted}
    todo = [i for i in sorted(wanted) if not caches[i].exists()]
    for _, _, error in mapper.map_unordered(_embed_task, todo, str(ctx.root), wanted, caches, ctx.params):
        if error is not None:
            raise error
    for stale in set(folder.glob("part-*.npz")) - set(caches.values()):
        stale.unlink()
    vectors: dict[str, np.ndarray] = {}
    for path in caches.values():
        vectors.update(_load_cache(path))
    return vectors


def prepare(
    ctx: StageContext, mapper: Any, upstream: str, embedder: dict[str, str]
) -> tuple[Path, dict[int, str]]:
    """Decide every multi-image occurrence; returns the decisions file and, per partition, the
    digest of the decisions about its rows."""
    params = ctx.params
    committed = ctx.committed(upstream)
    groups = members(ctx.root, sorted(committed), scopes(params)["occurrence"])
    multi = {key: rows for key, rows in groups.items() if len(rows) > 1}
    wanted: dict[int, list[str]] = defaultdict(list)
    for rows in multi.values():
        for index, uuid in rows:
            wanted[index].append(uuid)
    vectors = _embeddings(ctx, mapper, dict(wanted), committed, embedder)
    rule = OccurrenceRule(low=float(params["occurrence_low"]), high=float(params["occurrence_high"]),
                          max_images=int(params["occurrence_max_images"]))  # fmt: skip
    decisions = decide_all({k: [u for _, u in rows] for k, rows in multi.items()}, vectors, rule)
    path = ctx.work_dir() / f"occurrences-{digest_json(decisions.to_pylist())[:16]}.parquet"
    if not path.exists():
        write_decisions(decisions, path)
    for old in set(ctx.work_dir().glob("occurrences-*.parquet")) - {path}:
        old.unlink()
    return path, {index: partition_digest(decisions, set(uuids)) for index, uuids in wanted.items()}
