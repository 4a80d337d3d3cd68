"""Exact dedup by MD5 across partitions: one row per group kept (the smallest uuid), decisions
independent of partitioning, reading order and the number of passes the memory budget forces;
colliding 64-bit keys with different MD5s stay unique; the hex parsing is exact."""

from __future__ import annotations

import hashlib
import random
import uuid as uuidlib

import numpy as np
import pyarrow as pa
import pytest

from stages.dedup.md5_table import BYTES_PER_ROW, decide_groups, find_duplicates, md5_keys, passes_needed


def generated(rows: int, groups: int, seed: int) -> list[tuple[str, str]]:
    """(uuid, md5) pairs: `groups` MD5s repeated 2-4 times, the rest unique."""
    rng = random.Random(seed)
    pairs = []
    for g in range(groups):
        digest = hashlib.md5(f"group-{seed}-{g}".encode()).hexdigest()
        pairs += [(str(uuidlib.UUID(int=rng.getrandbits(128))), digest) for _ in range(rng.randint(2, 4))]
    while len(pairs) < rows:
        unique = hashlib.md5(f"unique-{seed}-{len(pairs)}".encode()).hexdigest()
        pairs.append((str(uuidlib.UUID(int=rng.getrandbits(128))), unique))
    rng.shuffle(pairs)
    return pairs


def split(pairs: list[tuple[str, str]], parts: int) -> dict[int, list[tuple[str, str]]]:
    """Consecutive slices: partition k holds the k-th slice."""
    size = -(-len(pairs) // parts)
    return {k: pairs[k * size : (k + 1) * size] for k in range(parts)}


def decisions(partitions: dict[int, list[tuple[str, str]]], budget: int = 1 << 30,
              order: list[int] | None = None) -> dict[str, tuple[int, str]]:  # fmt: skip
    """uuid -> (copies, kept) over every pass."""
    def read(index: int) -> tuple[pa.Array, pa.Array]:
        rows = partitions[index]
        return pa.array([u for u, _ in rows], pa.string()), pa.array([m for _, m in rows], pa.string())

    indices = order if order is not None else sorted(partitions)
    total = sum(len(r) for r in partitions.values())
    out: dict[str, tuple[int, str]] = {}
    for table in find_duplicates(indices, read, total, budget):
        for row in table.to_pylist():
            out[row["uuid"]] = (row["copies"], row["kept"])
    return out


def expected(pairs: list[tuple[str, str]]) -> dict[str, tuple[int, str]]:
    groups: dict[str, list[str]] = {}
    for u, m in pairs:
        groups.setdefault(m, []).append(u)
    return {u: (len(g), min(g)) for g in groups.values() if len(g) > 1 for u in g}


def test_one_kept_per_group_the_smallest_uuid():
    pairs = generated(500, 40, seed=1)
    found = decisions(split(pairs, 5))
    assert found == expected(pairs)
    kept = {k for _, k in found.values()}
    assert len(kept) == 40
    assert sum(1 for u, (_, k) in found.items() if u != k) == len(found) - 40


@pytest.mark.parametrize("seed", range(5))
def test_same_decisions_in_1_or_7_partitions_any_order(seed: int):
    pairs = generated(700, 60, seed)
    one = decisions(split(pairs, 1))
    seven = split(pairs, 7)
    order = list(range(7))
    random.Random(seed).shuffle(order)
    assert decisions(seven, order=order) == one == expected(pairs)


@pytest.mark.parametrize("passes", [2, 3, 7])
def test_same_decisions_when_the_budget_forces_several_passes(passes: int):
    pairs = generated(2000, 150, seed=11)
    budget = -(-len(pairs) * BYTES_PER_ROW // passes)
    assert passes_needed(len(pairs), budget) == passes
    assert decisions(split(pairs, 4), budget=budget) == decisions(split(pairs, 4)) == expected(pairs)


def test_colliding_keys_with_different_md5s_stay_unique():
    shared = "0123456789abcdef"
    pairs = [("b", shared + "0" * 16), ("a", shared + "1" * 16), ("c", shared + "0" * 16)]
    found = decisions({0: pairs[:2], 1: pairs[2:]})
    assert found == {"b": (2, "b"), "c": (2, "b")}


def test_rows_without_an_md5_are_never_duplicates():
    def read(index: int) -> tuple[pa.Array, pa.Array]:
        return pa.array(["x", "y", "z"]), pa.array([None, None, "ab" * 16])

    tables = list(find_duplicates([0], read, 3, 1 << 20))
    assert sum(t.num_rows for t in tables) == 0


def test_md5_keys_parse_hex_exactly():
    values = [hashlib.md5(str(i).encode()).hexdigest() for i in range(100)] + ["FFFFFFFFFFFFFFFF" + "0" * 16]
    keys = md5_keys(pa.array(values))
    assert keys.dtype == np.uint64
    assert [int(k) for k in keys] == [int(v[:16], 16) for v in values]
    assert md5_keys(pa.chunked_array([pa.array(values[:3]), pa.array(values[3:5])])).tolist() == [
        int(v[:16], 16) for v in values[:5]
    ]
    with pytest.raises(ValueError):
        md5_keys(pa.array(["xyz"]))
    with pytest.raises(ValueError):
        md5_keys(pa.array(["g" * 32]))


def test_decided_groups_are_sorted_by_partition_and_uuid():
    m1, m2 = hashlib.md5(b"1").hexdigest(), hashlib.md5(b"2").hexdigest()
    rows = pa.table({"partition": pa.array([3, 1, 1, 0, 2], pa.int32()), "uuid": ["d", "c", "a", "b", "e"],
                     "md5": [m1, m1, m2, m1, m2.upper()]})  # fmt: skip
    table = decide_groups(rows)
    assert table.to_pylist() == [
        {"partition": 0, "uuid": "b", "md5": m1, "copies": 3, "kept": "b"},
        {"partition": 1, "uuid": "a", "md5": m2, "copies": 2, "kept": "a"},
        {"partition": 1, "uuid": "c", "md5": m1, "copies": 3, "kept": "b"},
        {"partition": 2, "uuid": "e", "md5": m2.upper(), "copies": 2, "kept": "a"},
        {"partition": 3, "uuid": "d", "md5": m1, "copies": 3, "kept": "b"},
    ]
