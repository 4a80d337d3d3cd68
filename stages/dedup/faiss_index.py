"""faiss-cpu's binary multi-hash index (IndexBinaryMultiHash) as an exact radius search.

The same pigeonhole layout as stages/dedup/mih.py: radius + 1 hash tables over disjoint
substrings, no bit flips, so a code within the radius always shares a bucket with the query and
faiss compares every candidate in full. faiss's range search keeps distances strictly below its
radius argument, hence radius + 1. faiss is imported only here, and only when the backend is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.dedup.brute import Pairs
from stages.dedup.codes import CODE_BITS, as_codes
from stages.dedup.mih import layout


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def set_threads(threads: int) -> None:
    import faiss

    faiss.omp_set_num_threads(threads)


@dataclass
class FaissMultiHash:
    radius: int
    index: Any  # faiss.IndexBinaryMultiHash

    @classmethod
    def build(cls, codes: np.ndarray, radius: int) -> FaissMultiHash:
        import faiss

        substrings, bits = layout(radius)
        index = faiss.IndexBinaryMultiHash(CODE_BITS, substrings, bits)
        index.nflip = 0
        if len(codes):
            index.add(as_codes(codes))
        return cls(radius, index)

    def pairs(self, queries: np.ndarray) -> Pairs:
        """Every (query, code) pair within the radius, sorted by query then code."""
        queries = as_codes(queries)
        if not len(queries) or not self.index.ntotal:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
        limits, found_d, found_c = self.index.range_search(queries, self.radius + 1)
        found_q = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(limits).astype(np.int64))
        order = np.lexsort((found_c, found_q))
        return found_q[order], found_c[order].astype(np.int64), found_d[order].astype(np.int32)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index_binary(self.index, str(path))

    @classmethod
    def load(cls, path: Path, radius: int) -> FaissMultiHash:
        import faiss

        return cls(radius, faiss.read_index_binary(str(path)))
