"""Occurrence distinctness: mean pairwise similarity, thresholds, deterministic downsampling."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest

from stages.filter.occurrences import (
    OccurrenceDecision,
    OccurrenceRule,
    apply_thresholds,
    decide,
    kept_uuids,
    occurrence_similarity,
)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def equal_angle_vectors(n: int, c: float) -> np.ndarray:
    """n unit vectors whose pairwise dot products are all c: sqrt(c) e0 + sqrt(1 - c) e_i."""
    rows = np.zeros((n, n + 1))
    rows[:, 0] = math.sqrt(c)
    rows[np.arange(n), np.arange(1, n + 1)] = math.sqrt(1 - c)
    return rows


def test_mean_similarity_over_distinct_pairs_exact():
    # pairs: (a, b) 0, (a, c) 1, (b, c) 0 -> 1/3; the diagonal (self-similarity 1) is not counted
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert occurrence_similarity(rows) == pytest.approx(1 / 3, abs=1e-15)
    assert occurrence_similarity(np.array([[1.0, 0.0], [0.75, math.sqrt(0.4375)]])) == 0.75


@pytest.mark.parametrize("c", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_mean_similarity_of_constructed_vectors(c):
    rows = equal_angle_vectors(6, c)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-15)
    assert occurrence_similarity(rows) == pytest.approx(c, abs=1e-12)


def test_mean_similarity_of_mixed_pairs():
    # two clusters of two: within pairs 1 (x2), across pairs 0 (x4) -> 2/6
    rows = np.array([unit(1, 0), unit(1, 0), unit(0, 1), unit(0, 1)])
    assert occurrence_similarity(rows) == pytest.approx(1 / 3, abs=1e-15)


def test_similarity_needs_two_rows():
    with pytest.raises(ValueError, match="at least two"):
        occurrence_similarity(np.array([[1.0, 0.0]]))


def test_thresholds_at_the_edges():
    rule = OccurrenceRule(low=0.5, high=0.95)
    assert apply_thresholds(0.5, rule) == (False, False)  # at low: not mixed
    assert apply_thresholds(math.nextafter(0.5, 0.0), rule) == (True, False)
    assert apply_thresholds(0.95, rule) == (False, True)  # at high: camera-trap-like
    assert apply_thresholds(math.nextafter(0.95, 0.0), rule) == (False, False)
    assert apply_thresholds(float("nan"), rule) == (False, False)


def test_decide_applies_the_edges_to_computed_similarity():
    pair = [("u1", unit(1, 0)), ("u2", np.array([0.75, math.sqrt(0.4375)]))]  # similarity exactly 0.75
    at_both = decide({"occ": pair}, OccurrenceRule(low=0.75, high=0.75))
    expected = OccurrenceDecision(0.75, mixed=False, downsampled_out=False, camera_trap_like=True)
    assert at_both["u1"] == expected
    above = decide({"occ": pair}, OccurrenceRule(low=math.nextafter(0.75, 1.0), high=1.0))
    assert above["u2"].mixed and not above["u2"].camera_trap_like


def test_default_rule():
    rule = OccurrenceRule()
    assert (rule.low, rule.high, rule.max_images, rule.seed) == (0.5, 0.95, 5, "tolpipe")


@pytest.mark.parametrize(
    "kwargs", [{"low": 0.9, "high": 0.5}, {"low": -2.0}, {"high": 1.5}, {"max_images": 0}]
)
def test_rule_validation(kwargs):
    with pytest.raises(ValueError):
        OccurrenceRule(**kwargs)


def test_mixed_and_camera_trap_like_occurrences():
    groups = {
        "mixed": [("m1", unit(1, 0, 0)), ("m2", unit(0, 1, 0)), ("m3", unit(0, 0, 1))],
        "burst": [(f"b{i}", row) for i, row in enumerate(equal_angle_vectors(3, 0.98))],
        "normal": [(f"n{i}", row) for i, row in enumerate(equal_angle_vectors(3, 0.7))],
        "single": [("s1", unit(1, 0, 0))],
    }
    decisions = decide(groups, OccurrenceRule())
    assert "s1" not in decisions  # nothing to compare
    assert all(decisions[u].mixed and not decisions[u].camera_trap_like for u in ("m1", "m2", "m3"))
    assert decisions["m1"].occurrence_similarity == 0.0
    assert all(decisions[f"b{i}"].camera_trap_like and not decisions[f"b{i}"].mixed for i in range(3))
    assert decisions["b0"].occurrence_similarity == pytest.approx(0.98, abs=1e-12)
    assert not any(decisions[f"n{i}"].mixed or decisions[f"n{i}"].camera_trap_like for i in range(3))
    assert not any(d.downsampled_out for d in decisions.values())  # 3 <= 5


def test_duplicate_uuid_in_an_occurrence_is_an_error():
    with pytest.raises(ValueError, match="more than once"):
        decide({"occ": [("u", unit(1, 0)), ("u", unit(0, 1))]}, OccurrenceRule())


def test_downsampling_keeps_the_first_five_by_hash():
    uuids = [f"uuid-{i:02d}" for i in range(12)]
    rows = equal_angle_vectors(12, 0.8)
    decisions = decide({"occ": list(zip(uuids, rows, strict=True))}, OccurrenceRule())
    kept = {u for u in uuids if not decisions[u].downsampled_out}
    expected = sorted(uuids, key=lambda u: hashlib.sha256(f"tolpipe{u}".encode()).hexdigest())[:5]
    assert kept == set(expected) == kept_uuids(uuids, OccurrenceRule())
    assert len(kept) == 5
    assert kept != kept_uuids(uuids, OccurrenceRule(seed="another seed"))


def _merge(*partitions: list[tuple[str, str, np.ndarray]]) -> dict[str, list[tuple[str, np.ndarray]]]:
    groups: dict[str, list[tuple[str, np.ndarray]]] = {}
    for rows in partitions:
        for occurrence, uuid, embedding in rows:
            groups.setdefault(occurrence, []).append((uuid, embedding))
    return groups


def test_decisions_do_not_depend_on_order_or_partitioning():
    rng = np.random.default_rng(7)
    rows = []
    for occurrence, n in (("occ-a", 9), ("occ-b", 7), ("occ-c", 2)):
        for i in range(n):
            vector = rng.normal(size=16).astype(np.float32)
            rows.append((occurrence, f"{occurrence}-{i}", vector / np.linalg.norm(vector)))
    reference = decide(_merge(rows), OccurrenceRule())
    shuffler = random.Random(3)
    for split in (3, 8, 12):
        first, second = rows[:split], rows[split:]
        shuffler.shuffle(first)
        shuffler.shuffle(second)
        for merged in (_merge(first, second), _merge(second[::-1], first)):
            decisions = decide(merged, OccurrenceRule())
            assert decisions == reference  # bit-identical similarities, same samples
    kept_a = [u for u, d in reference.items() if u.startswith("occ-a") and not d.downsampled_out]
    kept_b = [u for u, d in reference.items() if u.startswith("occ-b") and not d.downsampled_out]
    assert len(kept_a) == len(kept_b) == 5
    assert all(not d.downsampled_out for u, d in reference.items() if u.startswith("occ-c"))


def test_stored_similarity_rederives_the_flags():
    rows = equal_angle_vectors(4, 0.6)
    decisions = decide({"occ": [(f"u{i}", r) for i, r in enumerate(rows)]}, OccurrenceRule())
    stricter = OccurrenceRule(low=0.65, high=0.95)
    stored = decisions["u0"].occurrence_similarity
    assert apply_thresholds(stored, stricter) == (True, False)
    assert decide({"occ": [(f"u{i}", r) for i, r in enumerate(rows)]}, stricter)["u0"].mixed
