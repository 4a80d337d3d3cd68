"""The radius search over PDQ codes returns exactly the brute-force answer: random codes with
planted neighbours at every distance from 0 to 12 (and just past the radius), many seeds, both
backends; the nearest code and its tie-break; the pigeonhole layout; faiss's self-check."""

from __future__ import annotations

import numpy as np
import pytest

from stages.dedup import faiss_index
from stages.dedup.brute import brute_pairs
from stages.dedup.codes import distances, from_hex, substring, to_hex, words
from stages.dedup.mih import MultiIndexHash, layout
from stages.dedup.search import answers_exactly, build_index, flipped, nearest, same_pairs

BACKENDS = [MultiIndexHash] + ([faiss_index.FaissMultiHash] if faiss_index.available() else [])


def planted(seed: int, codes: int = 3000, per_distance: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Random codes, and queries: copies of some of them with 0..12 bits flipped, plus random."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(codes, 32), dtype=np.uint8)
    parts = [flipped(base[rng.integers(0, codes, per_distance)], bits, rng) for bits in range(13)]
    parts.append(rng.integers(0, 256, size=(100, 32), dtype=np.uint8))
    return base, np.concatenate(parts)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_radius_search_equals_brute_force_with_planted_neighbours(seed: int, backend):
    codes, queries = planted(seed)
    radius = [10, 0, 3, 12, 16, 7][seed % 6]
    expected = brute_pairs(queries, codes, radius)
    found = backend.build(codes, radius).pairs(queries)
    assert same_pairs(found, expected)
    planted_within = 20 * min(radius + 1, 13)
    assert len(expected[0]) >= planted_within  # the planted pairs at least: the test has teeth
    assert set(np.unique(expected[2]).tolist()) >= set(range(min(radius, 12) + 1))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_clustered_codes_and_duplicates_equal_brute_force(backend):
    """Codes that share long substrings (near-duplicates of a few originals, exact repeats)
    fill some buckets heavily; the answer must still be exact."""
    rng = np.random.default_rng(7)
    originals = rng.integers(0, 256, size=(30, 32), dtype=np.uint8)
    near = [flipped(originals[rng.integers(0, 30, 100)], bits, rng) for bits in range(20)]
    codes = np.concatenate([*near, originals, originals])
    queries = np.concatenate([flipped(originals, bits, rng) for bits in (0, 5, 10, 11, 15)])
    for radius in (5, 10, 15):
        assert same_pairs(backend.build(codes, radius).pairs(queries), brute_pairs(queries, codes, radius))


def test_layout_covers_radius_plus_one_disjoint_substrings():
    for radius in range(0, 65):
        substrings, bits = layout(radius)
        assert substrings >= radius + 1 and substrings * bits <= 256 and 1 <= bits <= 64
    assert layout(10) == (11, 23)
    with pytest.raises(ValueError):
        layout(256)


def test_substrings_read_the_bits_most_significant_first():
    code = from_hex(["0123456789abcdef" * 4])
    w = words(code)
    assert int(substring(w, 0, 8)[0]) == 0x01
    assert int(substring(w, 60, 8)[0]) == 0xF0  # across the word boundary: f | 0
    assert int(substring(w, 0, 64)[0]) == 0x0123456789ABCDEF
    assert int(substring(w, 252, 4)[0]) == 0xF
    assert to_hex(code) == ["0123456789abcdef" * 4]


def test_distances_count_differing_bits():
    a = from_hex(["00" * 32, "ff" * 32])
    b = from_hex(["00" * 31 + "07", "00" * 32])
    assert distances(words(a), words(b)).tolist() == [3, 256]


def test_nearest_takes_the_smallest_distance_then_the_lowest_row():
    q = np.array([0, 0, 0, 2, 2], np.int64)
    c = np.array([9, 4, 7, 1, 3], np.int64)
    d = np.array([5, 3, 3, 0, 0], np.int32)
    best_d, best_c = nearest((q, c, d), 4)
    assert best_d.tolist() == [3, -1, 0, -1]
    assert best_c.tolist() == [4, -1, 1, -1]


def test_empty_index_and_no_queries():
    codes = np.zeros((0, 32), np.uint8)
    queries = np.random.default_rng(1).integers(0, 256, size=(5, 32), dtype=np.uint8)
    for backend in BACKENDS:
        assert all(len(x) == 0 for x in backend.build(codes, 10).pairs(queries))
        assert all(len(x) == 0 for x in backend.build(queries, 10).pairs(codes))


@pytest.mark.skipif(not faiss_index.available(), reason="faiss-cpu not installed")
def test_auto_takes_faiss_after_checking_it_against_brute_force():
    codes, queries = planted(3)
    built = build_index(codes, 10, "auto")
    assert built.backend == "faiss" and built.note is None
    assert answers_exactly(built.index, codes)
    assert same_pairs(built.index.pairs(queries), brute_pairs(queries, codes, 10))


def test_self_check_catches_an_index_that_misses_pairs():
    codes, _ = planted(4)

    class Lossy(MultiIndexHash):
        def pairs(self, queries):  # drops the farthest pairs, as a radius off by one would
            q, c, d = super().pairs(queries)
            keep = d < self.radius
            return q[keep], c[keep], d[keep]

    index = MultiIndexHash.build(codes, 10)
    assert answers_exactly(index, codes)
    lossy = Lossy(index.radius, index.bits, index.shift, index.words, index.offsets, index.keys, index.rows)
    assert not answers_exactly(lossy, codes)


def test_numpy_backend_on_request_and_saved_index_answers_the_same(tmp_path):
    codes, queries = planted(5)
    built = build_index(codes, 10, "numpy")
    assert built.backend == "numpy"
    built.index.save(tmp_path / "index.bin")
    loaded = MultiIndexHash.load(tmp_path / "index.bin")
    assert same_pairs(loaded.pairs(queries), built.index.pairs(queries))
    if faiss_index.available():
        fast = faiss_index.FaissMultiHash.build(codes, 10)
        fast.save(tmp_path / "faiss.bin")
        again = faiss_index.FaissMultiHash.load(tmp_path / "faiss.bin", 10)
        assert same_pairs(again.pairs(queries), loaded.pairs(queries))
