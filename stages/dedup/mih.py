"""Multi-index hashing on numpy: exact Hamming radius search, sub-linear in the number of codes.

Pigeonhole: split the 256 bits into m >= radius + 1 disjoint substrings; two codes within
distance `radius` differ in fewer bits than there are substrings, so at least one substring is
identical in both. Each substring has a table (the codes bucketed by their key); a query looks
up its own key in every table (two array reads, no search), and only the codes with the same key
are compared in full. With m = radius + 1 substrings of b = 256 // m bits each, a random code shares
a given key with probability 2^-b, so a query costs m lookups and about m * n / 2^b full
comparisons instead of n (radius 10: 11 substrings of 23 bits). Bits past m * b are not in any
substring; that keeps the search exact, since the covered bits alone differ in at most `radius`
places.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.dedup.brute import Pairs
from stages.dedup.codes import CODE_BITS, distances, substring, words

MIN_SUBSTRINGS = 4  # keys of at most 64 bits
MAX_BUCKET_BITS = 22  # bucket tables of at most 4M entries per substring
# Queries looked up at once (bounds the candidate arrays).
CHUNK = 65536


def layout(radius: int) -> tuple[int, int]:
    """(substrings, bits per substring) for an exact search at `radius`."""
    if not 0 <= radius < CODE_BITS:
        raise ValueError(f"radius must be in 0..{CODE_BITS - 1}, got {radius}")
    substrings = max(radius + 1, MIN_SUBSTRINGS)
    return substrings, CODE_BITS // substrings


def bucket_bits(bits: int, codes: int) -> int:
    """Bits of a key that address its bucket: about two buckets per code, at most all of them."""
    return max(1, min(bits, MAX_BUCKET_BITS, int(np.ceil(np.log2(max(codes, 1)))) + 1))


def _ranges(lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of range(lo[i], lo[i] + counts[i]) over i."""
    total = int(counts.sum())
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    return starts + np.arange(total, dtype=np.int64)


@dataclass
class MultiIndexHash:
    """Each substring's table is a bucket array (CSR): the codes sorted by the top `bucket_bits`
    of their key, `offsets[j][b]` where bucket b starts; a lookup reads two offsets (no search)
    and keeps the bucket's codes whose whole key matches."""

    radius: int
    bits: int  # per substring
    shift: int  # key >> shift = bucket
    words: np.ndarray  # (n, 4) uint64 codes
    offsets: np.ndarray  # (m, 2^bucket_bits + 1): where each bucket starts (int32 below 2^31 codes)
    keys: np.ndarray  # (m, n): each table's keys in bucket order (uint32 for keys of <= 32 bits)
    rows: np.ndarray  # (m, n): the code row of each key

    @classmethod
    def build(cls, codes: np.ndarray, radius: int) -> MultiIndexHash:
        substrings, bits = layout(radius)
        code_words = words(codes)
        n = len(code_words)
        shift = bits - bucket_bits(bits, n)
        buckets = 1 << (bits - shift)
        position = np.int32 if n < 2**31 else np.int64
        keys = np.empty((substrings, n), np.uint32 if bits <= 32 else np.uint64)
        rows = np.empty((substrings, n), position)
        offsets = np.empty((substrings, buckets + 1), position)
        for j in range(substrings):
            table = substring(code_words, j * bits, bits)
            order = np.argsort(table, kind="stable")
            keys[j], rows[j] = table[order], order
            counts = np.bincount((table[order] >> np.uint64(shift)).astype(np.int64), minlength=buckets)
            offsets[j, 0], offsets[j, 1:] = 0, np.cumsum(counts)
        return cls(radius, bits, shift, code_words, offsets, keys, rows)

    def _candidates(self, query_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, code row) pairs sharing at least one substring, each pair once."""
        n = len(self.words)
        found = []
        for j in range(len(self.keys)):
            wanted = substring(query_words, j * self.bits, self.bits)
            bucket = (wanted >> np.uint64(self.shift)).astype(np.int64)
            lo = self.offsets[j][bucket].astype(np.int64)
            counts = self.offsets[j][bucket + 1] - lo
            if not counts.any():
                continue
            positions = _ranges(lo, counts)
            queries = np.repeat(np.arange(len(wanted), dtype=np.int64), counts)
            same = self.keys[j][positions] == wanted[queries]
            found.append(queries[same] * n + self.rows[j][positions[same]].astype(np.int64))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pairs = np.unique(np.concatenate(found))
        return pairs // n, pairs % n

    def pairs(self, queries: np.ndarray) -> Pairs:
        """Every (query, code) pair within the radius, sorted by query then code."""
        query_words = words(queries)
        out_q, out_c, out_d = [], [], []
        for start in range(0, len(query_words), CHUNK):
            block = query_words[start : start + CHUNK]
            q, c = self._candidates(block)
            d = distances(block[q], self.words[c])
            keep = d <= self.radius
            out_q.append(q[keep] + start)
            out_c.append(c[keep])
            out_d.append(d[keep])
        if not out_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
        return np.concatenate(out_q), np.concatenate(out_c), np.concatenate(out_d)

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, radius=self.radius, bits=self.bits, shift=self.shift, words=self.words,
                     offsets=self.offsets, keys=self.keys, rows=self.rows)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> MultiIndexHash:
        with np.load(path) as data:
            return cls(int(data["radius"]), int(data["bits"]), int(data["shift"]), data["words"],
                       data["offsets"], data["keys"], data["rows"])  # fmt: skip
