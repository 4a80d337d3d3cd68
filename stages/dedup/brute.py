"""Brute-force radius search: every query against every code. The reference the indexes are
checked against (tests, the faiss self-check, the benchmark)."""

from __future__ import annotations

import numpy as np

from stages.dedup.codes import words

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # query row, code row (int64), distance (int32)
# Query rows compared at once: the distance block is CHUNK x len(codes) (small: it stays in cache).
CHUNK = 8


def brute_pairs(queries: np.ndarray, codes: np.ndarray, radius: int, chunk: int = CHUNK) -> Pairs:
    """Every (query, code) pair at Hamming distance <= radius, sorted by query then code."""
    q = words(queries)
    columns = np.ascontiguousarray(words(codes).T)  # (4, n): one word of every code per row
    found_q, found_c, found_d = [], [], []
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk]
        dist = np.bitwise_count(block[:, 0, None] ^ columns[0])
        for w in range(1, columns.shape[0]):
            dist += np.bitwise_count(block[:, w, None] ^ columns[w])
        rows, cols = np.nonzero(dist <= radius)
        found_q.append(rows.astype(np.int64) + start)
        found_c.append(cols.astype(np.int64))
        found_d.append(dist[rows, cols].astype(np.int32))
    if not found_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate(found_q), np.concatenate(found_c), np.concatenate(found_d)
