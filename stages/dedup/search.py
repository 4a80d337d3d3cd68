"""The radius search the stage uses (dedup.search_backend): multi-index hashing on numpy, or
faiss's multi-hash index ("faiss", or "auto": faiss when it is installed and answers exactly, else
numpy); and the nearest code of each query within the radius.

"Answers exactly" is checked, not assumed: when the faiss index is built, probe queries (codes of
the index itself, copies with `radius` and `radius + 1` bits flipped, random codes) are searched
and the pairs compared with brute force. A mismatch makes "auto" fall back to numpy (and say so)
and "faiss" an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.errors import TolpipeError
from stages.dedup import faiss_index
from stages.dedup.brute import Pairs, brute_pairs
from stages.dedup.codes import CODE_BITS
from stages.dedup.mih import MultiIndexHash

BACKENDS = ("numpy", "faiss", "auto")
PROBE_CODES = 256  # codes of the index used as probes (and as many flipped copies per distance)
PROBE_SEED = 20251202


class RadiusIndex(Protocol):
    radius: int

    def pairs(self, queries: np.ndarray) -> Pairs: ...

    def save(self, path: Path) -> None: ...


class SearchError(TolpipeError):
    """The requested backend cannot answer (not installed, or not exactly)."""


def flipped(codes: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Each code with `bits` distinct bits flipped (at random positions)."""
    unpacked = np.unpackbits(codes, axis=1)
    for row in unpacked:
        row[rng.choice(CODE_BITS, size=min(bits, CODE_BITS), replace=False)] ^= 1
    return np.packbits(unpacked, axis=1)


def probes(codes: np.ndarray, radius: int) -> np.ndarray:
    """Deterministic probe queries for a self-check against brute force."""
    rng = np.random.default_rng(PROBE_SEED)
    chosen = codes[np.linspace(0, len(codes) - 1, min(PROBE_CODES, len(codes))).astype(np.int64)]
    parts = [chosen] + [flipped(chosen, bits, rng) for bits in (radius, radius + 1)]
    parts.append(rng.integers(0, 256, size=(PROBE_CODES // 4, codes.shape[1]), dtype=np.uint8))
    return np.concatenate(parts)


def same_pairs(a: Pairs, b: Pairs) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def answers_exactly(index: RadiusIndex, codes: np.ndarray) -> bool:
    if not len(codes):
        return True
    queries = probes(codes, index.radius)
    return same_pairs(index.pairs(queries), brute_pairs(queries, codes, index.radius))


@dataclass(frozen=True)
class Built:
    index: RadiusIndex
    backend: str  # "faiss" or "numpy"
    note: str | None  # why "auto" did not take faiss


def build_index(codes: np.ndarray, radius: int, backend: str, threads: int = 1) -> Built:
    """The search structure over `codes` for the configured backend."""
    if backend not in BACKENDS:
        raise ValueError(f"search backend must be one of {BACKENDS}, got {backend!r}")
    note = None
    if backend in ("auto", "faiss"):
        if not faiss_index.available():
            if backend == "faiss":
                raise SearchError("dedup.search_backend = 'faiss' but faiss-cpu is not installed "
                                  "(pip install 'tolpipe[dedup]')")  # fmt: skip
            note = "faiss-cpu is not installed: multi-index hashing on numpy"
        else:
            faiss_index.set_threads(threads)
            index = faiss_index.FaissMultiHash.build(codes, radius)
            if answers_exactly(index, codes):
                return Built(index, "faiss", None)
            if backend == "faiss":
                raise SearchError("faiss's IndexBinaryMultiHash did not return the brute-force answer")
            note = "faiss's IndexBinaryMultiHash did not return the brute-force answer: numpy used"
    return Built(MultiIndexHash.build(codes, radius), "numpy", note)


def load_index(path: Path, backend: str, radius: int, threads: int = 1) -> RadiusIndex:
    if backend == "faiss":
        faiss_index.set_threads(threads)
        return faiss_index.FaissMultiHash.load(path, radius)
    return MultiIndexHash.load(path)


def nearest(pairs: Pairs, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the smallest distance found and its code row (the lowest row among equally
    near codes); -1 and -1 for a query with no code within the radius."""
    q, c, d = pairs
    best_d = np.full(queries, -1, np.int32)
    best_c = np.full(queries, -1, np.int64)
    if len(q):
        order = np.lexsort((c, d, q))
        first = order[np.r_[True, q[order][1:] != q[order][:-1]]]
        best_d[q[first]], best_c[q[first]] = d[first], c[first]
    return best_d, best_c
