"""Exact duplicates by MD5 across every partition, in bounded memory.

Rule: rows with the same MD5 form a group; the row with the smallest uuid (string order) is kept,
the others are duplicates of it. The rule reads only the (uuid, md5) pairs, so the decisions do
not depend on how the rows are partitioned or in which order partitions are read.

Memory: the table holds one 8-byte key per row, the first 64 bits of the MD5, in one numpy
array sorted in place; keys that occur more than once are the candidates. A second read collects
the full MD5 and uuid of the candidate rows only (the duplicates, and the very rare rows whose
first 64 bits collide: their full MD5s differ and they stay unique) and decides the groups. When
`rows * 10` bytes (keys, the comparison mask, headroom) exceed the budget, the key space is
split by key modulo `passes` and each pass reads the MD5 columns twice for its share; memory is
then about budget + the candidates of one pass. 200M rows need 2 GB in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BYTES_PER_ROW = 10  # key (8), comparison mask (1), headroom for growth (1)
HEX_DIGITS = 32
_NIBBLE = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i

# A partition's rows as the table reads them: uuid and md5 (hex) columns of equal length.
Reader = Callable[[int], tuple[pa.Array, pa.Array]]
DECISIONS = pa.schema([
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("uuid", pa.string(), nullable=False),
    pa.field("md5", pa.string(), nullable=False),
    pa.field("copies", pa.int32(), nullable=False),
    pa.field("kept", pa.string(), nullable=False),
])  # fmt: skip


def _hex_chars(md5: pa.Array) -> np.ndarray:
    """(n, 32) uint8 ASCII of a string array of 32-character hex MD5s without nulls."""
    array = md5.cast(pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not len(array):
        return np.zeros((0, HEX_DIGITS), np.uint8)
    offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset : array.offset + len(array) + 1]
    if np.any(np.diff(offsets) != HEX_DIGITS):
        raise ValueError("md5 values must be 32 hex digits")
    data = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(-1, HEX_DIGITS)


def _words(chars: np.ndarray) -> np.ndarray:
    """(n, 16 * w) hex characters -> (n, w) uint64, most significant digit first."""
    nibbles = _NIBBLE[chars]
    if np.any(nibbles == 255):
        raise ValueError("md5 values must be hex digits")
    out = np.zeros((len(chars), chars.shape[1] // 16), np.uint64)
    for i in range(16):
        out = (out << np.uint64(4)) | nibbles[:, i::16].astype(np.uint64)
    return out


def md5_keys(md5: pa.Array) -> np.ndarray:
    """The first 64 bits of each MD5 (hex strings) as uint64, vectorised."""
    return _words(_hex_chars(md5)[:, :16])[:, 0]


def md5_words(md5: pa.Array) -> np.ndarray:
    """Each whole MD5 as two uint64 (n, 2)."""
    return _words(_hex_chars(md5))


def passes_needed(rows: int, budget_bytes: int) -> int:
    return max(1, math.ceil(rows * BYTES_PER_ROW / max(1, budget_bytes)))


def _valid(uuids: pa.Array, md5: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Rows with an MD5 (a row without one has nothing to be a duplicate of)."""
    if md5.null_count:
        keep = pc.is_valid(md5)
        return uuids.filter(keep), md5.filter(keep)
    return uuids, md5


class _Keys:
    """A growable uint64 array (amortised doubling by half)."""

    def __init__(self, capacity: int):
        self.data = np.empty(max(1, capacity), np.uint64)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        if self.size + len(values) > len(self.data):
            grown = np.empty(max(self.size + len(values), len(self.data) * 3 // 2), np.uint64)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : self.size + len(values)] = values
        self.size += len(values)


def _candidates(indices: Iterable[int], read: Reader, share: int, passes: int, capacity: int) -> np.ndarray:
    """Sorted keys of this pass's share that occur more than once."""
    table = _Keys(capacity)
    for index in indices:
        keys = md5_keys(_valid(*read(index))[1])
        table.extend(keys[keys % np.uint64(passes) == np.uint64(share)] if passes > 1 else keys)
    keys = table.data[: table.size]
    keys.sort()
    repeated = keys[1:][keys[1:] == keys[:-1]]
    return np.unique(repeated)


def _candidate_rows(indices: Iterable[int], read: Reader, candidates: np.ndarray) -> pa.Table:
    """partition, uuid, md5 of the rows whose key is a candidate."""
    parts = []
    for index in indices:
        uuids, md5 = _valid(*read(index))
        keys = md5_keys(md5)
        position = np.minimum(np.searchsorted(candidates, keys), len(candidates) - 1)
        hit = candidates[position] == keys
        if hit.any():
            mask = pa.array(hit)
            found = pa.table({"uuid": uuids.filter(mask), "md5": md5.filter(mask).cast(pa.string())})
            found = found.add_column(0, "partition", pa.array(np.full(found.num_rows, index, np.int32)))
            parts.append(found)
    return pa.concat_tables(parts) if parts else DECISIONS.empty_table().drop_columns(["copies", "kept"])


def decide_groups(rows: pa.Table) -> pa.Table:
    """DECISIONS rows of every MD5 group of two or more rows, sorted by partition and uuid."""
    if not rows.num_rows:
        return DECISIONS.empty_table()
    words = md5_words(rows["md5"])  # sorted as numbers: upper- and lower-case hex are one MD5
    keyed = rows.append_column("hi", pa.array(words[:, 0])).append_column("lo", pa.array(words[:, 1]))
    order = pc.sort_indices(keyed, [("hi", "ascending"), ("lo", "ascending"), ("uuid", "ascending")])
    rows, md5 = rows.take(order), words[order.to_numpy()]
    starts = np.flatnonzero(np.r_[True, np.any(md5[1:] != md5[:-1], axis=1)])
    sizes = np.diff(np.r_[starts, len(md5)])
    copies = np.repeat(sizes, sizes).astype(np.int32)
    kept = rows["uuid"].take(pa.array(np.repeat(starts, sizes)))
    decided = pa.table({"partition": rows["partition"], "uuid": rows["uuid"], "md5": rows["md5"],
                        "copies": copies, "kept": kept}, schema=DECISIONS)  # fmt: skip
    decided = decided.filter(pa.array(copies > 1))
    return decided.take(pc.sort_indices(decided, [("partition", "ascending"), ("uuid", "ascending")]))


def find_duplicates(
    indices: list[int], read: Reader, rows: int, budget_bytes: int
) -> Iterator[pa.Table]:
    """One DECISIONS table per pass (sorted by partition and uuid); `rows` is the expected row
    count (it sizes the key array and the number of passes; a wrong value only costs memory)."""
    passes = passes_needed(rows, budget_bytes)
    capacity = math.ceil(rows / passes * 1.05) + 1024
    for share in range(passes):
        candidates = _candidates(indices, read, share, passes, capacity)
        if not len(candidates):
            yield DECISIONS.empty_table()
            continue
        yield decide_groups(_candidate_rows(indices, read, candidates))
