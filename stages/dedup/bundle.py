"""The test side of a run: every selected test set's hashes in one table and the radius-search
index over their PDQ hashes, built once per run in prepare() and read by every worker.

`work/05_dedup/tests-<digest>-<backend>/` holds `tests.parquet` (testset, test_id, md5, pdq,
pdq_quality, in (testset, test_id) order: a row's position is its test row), `matchable.npy` (the
test rows whose PDQ quality reaches the floor, in the index's order), `index.bin` (the search
structure) and `bundle.json` (written last). The digest covers the sets' digests, the search
radius and the quality floor, so the folder is reused by later runs while they stay the same.
A worker process loads a bundle once and keeps it (`load`).
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.digest import digest_json
from pipeline.ledger import write_parquet
from stages.dedup import codes as C
from stages.dedup.registry import TestSet
from stages.dedup.search import RadiusIndex, build_index, load_index, nearest

MARKER = "bundle.json"


@dataclass(frozen=True)
class BundleInfo:
    folder: Path
    backend: str
    note: str | None
    tests: int
    matchable: int


def _table(sets: list[TestSet]) -> pa.Table:
    parts = []
    for found in sorted(sets, key=lambda s: s.name):
        hashes = found.hashes().sort_by("test_id")
        parts.append(hashes.add_column(0, "testset", pa.array([found.name] * hashes.num_rows, pa.string())))
    return pa.concat_tables(parts).drop_columns(["error"])


def _matchable(table: pa.Table, min_quality: int) -> np.ndarray:
    quality = table["pdq_quality"].to_numpy(zero_copy_only=False)
    has = np.array([v is not None for v in table["pdq"].to_pylist()], dtype=bool)
    ok = has & (np.nan_to_num(quality.astype(np.float64), nan=-1) >= min_quality)
    return np.flatnonzero(ok).astype(np.int64)


def prepare(work: Path, sets: list[TestSet], params: dict[str, Any]) -> BundleInfo | None:
    """The bundle for these sets and settings, built unless already there; None without sets."""
    if not sets:
        return None
    radius, floor = int(params["pdq_search_radius"]), int(params["pdq_min_quality"])
    backend = params["search_backend"]
    key = digest_json({"sets": {s.name: s.digest for s in sets}, "radius": radius, "min_quality": floor})
    folder = work / f"tests-{key[:16]}-{backend}"
    if not (folder / MARKER).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        _build(folder, sets, radius, floor, backend, int(params["search_threads"]))
    for old in work.glob("tests-*"):
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    meta = json.loads((folder / MARKER).read_text())
    return BundleInfo(folder, meta["backend"], meta["note"], meta["tests"], meta["matchable"])


def _build(folder: Path, sets: list[TestSet], radius: int, floor: int, backend: str, threads: int) -> None:
    staged = folder.with_name(atomic.tagged(folder.name))  # a killed run's is removed as litter
    staged.mkdir(parents=True)
    table = _table(sets)
    rows = _matchable(table, floor)
    pdq = table["pdq"].to_pylist()
    built = build_index(C.from_hex([pdq[i] for i in rows]), radius, backend, threads)
    write_parquet(table, staged / "tests.parquet")
    np.save(staged / "matchable.npy", rows)
    built.index.save(staged / "index.bin")
    meta = {"backend": built.backend, "note": built.note, "radius": radius, "min_quality": floor,
            "tests": table.num_rows, "matchable": len(rows),
            "sets": {s.name: s.digest for s in sets}}  # fmt: skip
    atomic.write_text(staged / MARKER, json.dumps(meta, indent=1, sort_keys=True))
    staged.rename(folder)
    atomic.fsync_path(folder.parent)


@dataclass
class Bundle:
    testsets: list[str]
    test_ids: list[str]
    md5_sorted: np.ndarray  # the tests' MD5s (hex, as bytes), sorted
    md5_rows: np.ndarray  # test row of each sorted MD5 (the first row among equal MD5s)
    matchable: np.ndarray  # index position -> test row
    index: RadiusIndex

    def md5_matches(self, md5s: list[str | None]) -> list[int]:
        """Per MD5, the first test row with the same MD5, or -1."""
        if not len(self.md5_sorted):
            return [-1] * len(md5s)
        wanted = np.array([(m or "").encode() for m in md5s], dtype=self.md5_sorted.dtype)
        position = np.minimum(np.searchsorted(self.md5_sorted, wanted), len(self.md5_sorted) - 1)
        hit = self.md5_sorted[position] == wanted
        return [int(self.md5_rows[p]) if h and m else -1 for p, h, m in zip(position, hit, md5s, strict=True)]

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query code, the distance to the nearest matchable test hash within the radius and
        its test row (ties: the lowest test row), or -1, -1."""
        best_d, best_i = nearest(self.index.pairs(queries), len(queries))
        rows = np.where(best_i >= 0, self.matchable[np.maximum(best_i, 0)], -1)
        return best_d, rows


@functools.lru_cache(maxsize=2)
def load(folder: str, threads: int = 1) -> Bundle:
    """A bundle as a worker uses it, loaded once per process."""
    path = Path(folder)
    meta = json.loads((path / MARKER).read_text())
    table = pq.read_table(path / "tests.parquet", columns=["testset", "test_id", "md5"])
    md5 = np.array([m.encode() for m in table["md5"].to_pylist()], dtype="S32")
    order = np.argsort(md5, kind="stable")
    index = load_index(path / "index.bin", meta["backend"], meta["radius"], threads)
    return Bundle(table["testset"].to_pylist(), table["test_id"].to_pylist(), md5[order],
                  order.astype(np.int64), np.load(path / "matchable.npy"), index)  # fmt: skip
