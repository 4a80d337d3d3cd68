"""Zero-shot and SimpleShot accuracy on embeddings whose answer is known, and the family's
contract (params checked, skipped parts reported)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError
from training.metrics import FAMILIES, EvalInputs
from training.metrics.core import simpleshot, simpleshot_fold, zero_shot_top1
from training.metrics.taxa import taxon_name

LINEAGES = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corone"),
    ("Animalia", "Chordata", "Mammalia", "Artiodactyla", "Bovidae", "Bison", "Bison bison"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "Rosa canina"),
]
DIM = 16


def orthogonal_set(per_class: int, noise: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Images of species i near basis direction i."""
    rng = np.random.default_rng(seed)
    rows, lineages = [], []
    for index, lineage in enumerate(LINEAGES):
        for _ in range(per_class):
            vector = np.zeros(DIM)
            vector[index] = 1.0
            vector += noise * rng.standard_normal(DIM)
            rows.append(vector / np.linalg.norm(vector))
            lineages.append(lineage)
    return np.asarray(rows, dtype=np.float32), lineages


def test_taxon_names_follow_the_caption_rules():
    assert (
        taxon_name(LINEAGES[2], "taxonomic") == "Animalia Chordata Mammalia Artiodactyla Bovidae Bison bison"
    )
    assert taxon_name(LINEAGES[2], "scientific") == "Bison bison"
    assert taxon_name(LINEAGES[2][:5], "scientific") == "Bovidae"
    assert taxon_name(LINEAGES[0][:2], "tagged") == "kingdom Animalia phylum Chordata"
    assert taxon_name(("Animalia", "", "Aves"), "taxonomic") == "Animalia Aves"


def test_zero_shot_on_orthogonal_class_directions():
    classes = np.eye(4, DIM, dtype=np.float32)
    images = np.repeat(classes, 3, axis=0)
    labels = np.repeat(np.arange(4), 3)
    assert zero_shot_top1(images, labels, classes) == 1.0
    # Swap the texts of classes 0 and 1: their 6 images become wrong, the other 6 stay right.
    swapped = classes[[1, 0, 2, 3]]
    assert zero_shot_top1(images, labels, swapped) == 0.5
    # Unknown labels (-1) are not counted.
    assert zero_shot_top1(images, np.where(labels == 3, -1, labels), swapped) == pytest.approx(3 / 9)


def test_simpleshot_separable_and_excluded_classes():
    embeddings, lineages = orthogonal_set(per_class=6, noise=0.05)
    labels = np.repeat(np.arange(4), 6)
    for shots in (1, 5):
        result = simpleshot(embeddings, labels, shots, folds=5, seed=0)
        assert result["mean"] == 1.0 and result["std"] == 0.0 and len(result["folds"]) == 5
        assert result["classes"] == 4
    # A class with only 5 images cannot give 5 support images and a query: left out, counted.
    short = labels.copy()
    short[np.flatnonzero(labels == 3)[0]] = -1
    result = simpleshot(embeddings, short, 5, folds=2, seed=0)
    assert result["classes"] == 3 and result["classes_too_small"] == 1


def test_simpleshot_nearest_centroid_after_centering():
    # Two classes whose raw vectors share a large common offset: without subtracting the support
    # mean every point would normalise to nearly the same direction; CL2N separates them.
    offset = np.full(4, 10.0)
    class_a = offset + np.array([[1, 0, 0, 0], [1.2, 0, 0, 0]], dtype=float)
    class_b = offset + np.array([[-1, 0, 0, 0], [-1.2, 0, 0, 0]], dtype=float)
    embeddings = np.vstack([class_a, class_b])
    labels = np.array([0, 0, 1, 1])
    accuracy, classes = simpleshot_fold(embeddings, labels, 1, np.random.default_rng(0))
    assert (accuracy, classes) == (1.0, 2)


def test_simpleshot_folds_are_seeded():
    embeddings, _ = orthogonal_set(per_class=8, noise=1.0, seed=3)
    labels = np.repeat(np.arange(4), 8)
    first = simpleshot(embeddings, labels, 1, folds=5, seed=7)
    again = simpleshot(embeddings, labels, 1, folds=5, seed=7)
    other = simpleshot(embeddings, labels, 1, folds=5, seed=8)
    assert first == again and first["folds"] != other["folds"]
    assert 0 < first["mean"] < 1  # noisy: neither perfect nor hopeless


def test_core_family_end_to_end_on_known_embeddings():
    embeddings, lineages = orthogonal_set(per_class=6, noise=0.05)
    names = {taxon_name(lineage, "taxonomic"): i for i, lineage in enumerate(LINEAGES)}
    # Rank texts: each taxon at a higher rank points at the mean direction of its species.
    for depth in range(1, 7):
        for lineage in LINEAGES:
            names.setdefault(taxon_name(lineage[:depth], "taxonomic"), -1)
    directions = {}
    for name in names:
        members = [
            i for i, lineage in enumerate(LINEAGES) if taxon_name(lineage, "taxonomic").startswith(name)
        ]
        vector = np.zeros(DIM, dtype=np.float32)
        vector[members] = 1.0
        directions[name] = vector / np.linalg.norm(vector)

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([directions[text.removeprefix("a photo of ").removesuffix(".")] for text in texts])

    inputs = EvalInputs(embeddings, lineages, pd.DataFrame(index=range(len(lineages))), encode, seed=0)
    results = FAMILIES["core"].run(inputs, {"folds": 2})
    json.dumps(results)
    assert results["zero_shot"]["top1"] == 1.0 and results["zero_shot"]["classes"] == 4
    assert results["few_shot"]["1-shot"]["mean"] == 1.0
    assert results["few_shot"]["5-shot"]["classes"] == 4
    assert results["rank_zero_shot"]["kingdom"]["top1"] == 1.0
    assert results["rank_zero_shot"]["kingdom"]["classes"] == 2
    assert results["rank_zero_shot"]["genus"]["classes"] == 3
    table = FAMILIES["core"].format_table(results)
    assert "zero-shot species top-1" in table and "5-shot SimpleShot" in table


def test_core_params_are_checked():
    embeddings, lineages = orthogonal_set(per_class=2, noise=0.0)
    inputs = EvalInputs(embeddings, lineages, pd.DataFrame(), None, seed=0)
    with pytest.raises(ConfigError, match="folds must be >= 1"):
        FAMILIES["core"].run(inputs, {"folds": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        FAMILIES["core"].run(inputs, {"fold": 3})
    results = FAMILIES["core"].run(inputs, {"shots": [5], "rank_zero_shot": False})
    assert results["zero_shot"] == {"skipped": "no text encoder"}
    assert "skipped" in results["few_shot"]["5-shot"]


def test_rank_top1_from_species_sums_the_probabilities_under_each_taxon():
    from training.metrics.core import top1_from_species

    species = [("A", "a1"), ("A", "a2"), ("B", "b1")]
    taxa = [("A",), ("B",)]
    # Image 0: b1 is the single most likely species (0.4) but kingdom A holds 0.6 in all.
    # Image 1: b1 holds 0.8. Truth: image 0 in A, image 1 in A (so one of two is right).
    probs = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]], dtype=np.float32)
    assert top1_from_species(probs, species, taxa, np.array([0, 0])) == 0.5
    assert top1_from_species(probs, species, taxa, np.array([-1, -1])) is None
