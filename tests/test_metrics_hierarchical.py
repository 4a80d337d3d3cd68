"""Top-down prediction, first-error depth and nLCA on a hand-built 3-level tree whose answers
are worked out by hand, and the hierarchical family on a known 7-rank set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.metrics import FAMILIES, EvalInputs
from training.metrics.hierarchical import (
    evaluate,
    first_error_counts,
    nlca_summary,
    species_probability_scores,
    top_down_paths,
)
from training.metrics.taxa import taxon_name

# Tree:        A                B
#            /   \              |
#          A1     A2            B1
#         /  \     |           /  \
#      A1a  A1b   A2a        B1a  B1b
LEVELS = ("top", "middle", "leaf")
NODES = [
    [("A",), ("B",)],
    [("A", "A1"), ("A", "A2"), ("B", "B1")],
    [("A", "A1", "A1a"), ("A", "A1", "A1b"), ("A", "A2", "A2a"), ("B", "B1", "B1a"), ("B", "B1", "B1b")],
]


def scores_for(top: list[float], middle: list[float], leaf: list[float]) -> list[np.ndarray]:
    return [np.array([top]), np.array([middle]), np.array([leaf])]


def test_top_down_follows_the_predicted_parent():
    # Top: B wins. Middle: A1 scores best overall but only B1 is a child of B. Leaf: A1a scores
    # best overall, but among B1's children B1b beats B1a.
    scores = scores_for([0.1, 0.9], [0.9, 0.5, 0.2], [0.99, 0.1, 0.1, 0.3, 0.4])
    assert top_down_paths(scores, NODES) == [("B", "B1", "B1b")]
    # Top: A; middle among A1, A2: A2; leaf among A2's only child: A2a whatever the scores.
    scores = scores_for([0.9, 0.1], [0.1, 0.5, 0.9], [0.9, 0.9, 0.0, 0.9, 0.9])
    assert top_down_paths(scores, NODES) == [("A", "A2", "A2a")]


def test_first_error_depth_and_nlca_by_hand():
    truth = [("A", "A1", "A1a")] * 4
    predicted = [
        ("A", "A1", "A1a"),  # right: LCA distance 0
        ("A", "A1", "A1b"),  # sibling leaf: first error at leaf, distance 1
        ("A", "A2", "A2a"),  # other middle: first error at middle, distance 2
        ("B", "B1", "B1a"),  # other top: first error at top, distance 3
    ]
    assert first_error_counts(predicted, truth, LEVELS) == {"top": 1, "middle": 1, "leaf": 1, "none": 1}
    summary = nlca_summary(predicted, truth)
    assert summary["mean_lca_distance"] == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert summary["nlca"] == pytest.approx(6 / 4 / 3)
    assert summary["nlca_mistakes"] == pytest.approx((1 + 2 + 3) / 3 / 3)
    assert summary["mistakes"] == 3


def test_evaluate_flat_versus_top_down():
    # Three images, true leaves A1a, A1b, B1a. Flat leaf prediction is the leaf argmax; top-down
    # walks from the top argmax.
    truth = [("A", "A1", "A1a"), ("A", "A1", "A1b"), ("B", "B1", "B1a")]
    top = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])  # A, B (wrong), B
    middle = np.array([[0.9, 0.1, 0.0], [0.9, 0.0, 0.1], [0.0, 0.9, 0.1]])  # A1, A1, A2 (wrong)
    leaf = np.array([
        [0.9, 0.0, 0.0, 0.0, 0.0],  # flat A1a (right); top-down A1a
        [0.0, 0.9, 0.0, 0.0, 0.1],  # flat A1b (right); top-down under B: B1 then B1b
        [0.0, 0.0, 0.9, 0.1, 0.0],  # flat A2a (wrong); top-down under B: B1 then B1a (right)
    ])  # fmt: skip
    result = evaluate([top, middle, leaf], NODES, truth, LEVELS)
    assert result["per_rank_top1"] == {"top": pytest.approx(2 / 3), "middle": pytest.approx(2 / 3),
                                       "leaf": pytest.approx(2 / 3)}  # fmt: skip
    assert result["top_down_top1"] == {"top": pytest.approx(2 / 3), "middle": pytest.approx(2 / 3),
                                       "leaf": pytest.approx(2 / 3)}  # fmt: skip
    assert result["first_error"]["top_down"] == {"top": 1, "middle": 0, "leaf": 0, "none": 2}
    assert result["first_error"]["flat"] == {"top": 1, "middle": 0, "leaf": 0, "none": 2}
    # Top-down image 2 predicted B1b for A1b: LCA at the root, distance 3; flat image 3 predicted
    # A2a for B1a: distance 3.
    assert result["nlca"]["top_down"]["nlca"] == pytest.approx(3 / 3 / 3)
    assert result["nlca"]["flat"]["mean_lca_distance"] == pytest.approx(1.0)


def test_species_probability_scores_sum_the_leaves():
    # Leaf similarities with logit scale ln(2), ln(3)...: probabilities proportional to 1, 2, 3, 4, 10.
    similarities = np.log(np.array([[1.0, 2.0, 3.0, 4.0, 10.0]]))
    scores = species_probability_scores(similarities, NODES, logit_scale=1.0)
    assert scores[2][0] == pytest.approx(np.array([1, 2, 3, 4, 10]) / 20)
    assert scores[1][0] == pytest.approx(np.array([3, 3, 14]) / 20)  # A1, A2, B1
    assert scores[0][0] == pytest.approx(np.array([6, 14]) / 20)  # A, B
    assert top_down_paths(scores, NODES) == [("B", "B1", "B1b")]


def test_family_on_seven_ranks_and_incomplete_lineages():
    lineages = [
        ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"),
        ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corone"),
        ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "Rosa canina"),
        ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", ""),  # left out
    ]
    embeddings = np.eye(4, 8, dtype=np.float32)
    species = [taxon_name(lineage, "taxonomic") for lineage in lineages[:3]]

    def encode(texts: list[str]) -> np.ndarray:
        # A taxon's text points at the mean direction of its species: a known, perfect encoder.
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for row, text in enumerate(texts):
            name = text.removeprefix("a photo of ").removesuffix(".")
            out[row, [i for i, s in enumerate(species) if s == name or s.startswith(name + " ")]] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    inputs = EvalInputs(embeddings, lineages, pd.DataFrame(), encode, seed=0)
    results = FAMILIES["hierarchical"].run(inputs)
    assert results["images"] == 3 and results["images_incomplete_lineage"] == 1
    assert results["top_down_top1"]["species"] == 1.0
    assert results["first_error"]["top_down"]["none"] == 3
    assert results["nlca"]["flat"]["nlca"] == 0.0 and results["nlca"]["flat"]["nlca_mistakes"] is None
    assert results["taxa_per_rank"]["kingdom"] == 2 and results["taxa_per_rank"]["species"] == 3
    assert "top-down top-1" in FAMILIES["hierarchical"].format_table(results)
    summed = FAMILIES["hierarchical"].run(inputs, {"node_scores": "species_probability"})
    assert summed["node_scores"] == "species_probability" and summed["top_down_top1"]["species"] == 1.0
    assert FAMILIES["hierarchical"].run(EvalInputs(embeddings, lineages, pd.DataFrame(), None))["skipped"]
