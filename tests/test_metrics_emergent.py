"""rho, FDR, alignment and differentiation on embeddings whose answers are known analytically,
and the family's report when the variant column is missing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.metrics import FAMILIES, EvalInputs
from training.metrics.emergent import explained_variance_ratio, fisher_ratio, total_variance

DIM = 16
SPECIES = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", f"Corvus s{i}") for i in range(4)
]


def variant_set(shift_of, per_variant: int = 4) -> tuple[np.ndarray, list[tuple[str, ...]], pd.DataFrame]:
    """Species s at basis direction s; variant A at +shift_of(s), B at -shift_of(s), each with
    +-noise pairs along directions 12.. (so the variant means are exact)."""
    rows, lineages, variants = [], [], []
    for s, lineage in enumerate(SPECIES):
        base = np.eye(DIM)[s]
        for sign, name in ((1, "adult"), (-1, "juvenile")):
            for k in range(per_variant):
                noise = 0.05 * (1 if k % 2 else -1) * np.eye(DIM)[12 + (k // 2) % 4]
                rows.append(base + sign * shift_of(s) + noise)
                lineages.append(lineage)
                variants.append(name)
    return np.asarray(rows, dtype=np.float32), lineages, pd.DataFrame({"variant": variants})


def test_rho_orthogonal_inside_and_half():
    prototypes = np.eye(3, DIM)
    assert explained_variance_ratio(prototypes, np.eye(DIM)[[5, 7]]) == pytest.approx(0.0, abs=1e-12)
    inside = np.array([[0.3, -1.0, 2.0] + [0.0] * (DIM - 3)])
    assert explained_variance_ratio(prototypes, inside) == pytest.approx(1.0)
    # A difference at 45 degrees to the span: half its squared norm is inside.
    assert explained_variance_ratio(prototypes, (np.eye(DIM)[0] + np.eye(DIM)[9])[None]) == pytest.approx(0.5)
    # Non-orthogonal prototypes: QR still gives their span.
    skewed = np.array([[1.0, 1.0] + [0.0] * (DIM - 2), [1.0, 0.0] + [0.0] * (DIM - 2)])
    assert explained_variance_ratio(skewed, np.eye(DIM)[[1]]) == pytest.approx(1.0)


def test_fdr_exact_and_gaussian():
    a = np.array([[1.0, 0.0], [-1.0, 0.0]])  # mean (0, 0), total variance 1
    b = np.array([[4.0, 0.0], [2.0, 0.0]])  # mean (3, 0), total variance 1
    assert total_variance(a) == 1.0
    assert fisher_ratio(a, b) == pytest.approx(9 / 2)
    # Isotropic Gaussians in 2-D: sigma^2 = trace of the covariance = 2 * s^2.
    rng = np.random.default_rng(0)
    a = rng.normal([0.0, 0.0], 1.0, size=(40000, 2))
    b = rng.normal([3.0, 4.0], 2.0, size=(40000, 2))
    assert fisher_ratio(a, b) == pytest.approx(25 / (2 * 1 + 2 * 4), rel=0.02)


def test_family_variation_orthogonal_to_species():
    embeddings, lineages, columns = variant_set(lambda s: 0.4 * np.eye(DIM)[8])
    results = FAMILIES["emergent"].run(EvalInputs(embeddings, lineages, columns, None, seed=0))
    json.dumps(results)
    assert results["variants"] == ["adult", "juvenile"] and results["species_with_both"] == 4
    assert results["rho"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert results["rho"]["rho_random_baseline"] == pytest.approx(4 / DIM)
    # ||mu_A - mu_B||^2 = 0.8^2; each variant's total variance = 0.05^2.
    assert results["fdr"]["mean"] == pytest.approx(0.64 / (2 * 0.0025), rel=1e-4)
    assert results["alignment"]["accuracy"] == 1.0 and results["alignment"]["chance"] == 0.25
    assert results["differentiation"]["mean"] == 1.0
    assert "rho (explained variance)" in FAMILIES["emergent"].format_table(results)


def test_family_variation_inside_species_span():
    embeddings, lineages, columns = variant_set(lambda s: 0.2 * np.eye(DIM)[(s + 1) % 4])
    params = {"differentiation_split": "species", "differentiation_folds": 2}
    results = FAMILIES["emergent"].run(EvalInputs(embeddings, lineages, columns, None, seed=0), params)
    assert results["rho"]["value"] == pytest.approx(1.0)
    assert results["differentiation"]["split"] == "species"


def test_family_reports_missing_or_single_variants():
    embeddings, lineages, columns = variant_set(lambda s: 0.4 * np.eye(DIM)[8])
    inputs = EvalInputs(embeddings, lineages, pd.DataFrame(index=range(len(lineages))), None)
    assert FAMILIES["emergent"].run(inputs) == {"skipped": "no variant column", "variant_column": "variant"}
    renamed = EvalInputs(embeddings, lineages, columns.rename(columns={"variant": "sex"}), None)
    assert FAMILIES["emergent"].run(renamed, {"variant_column": "sex"})["rho"]["value"] == pytest.approx(0)
    single = EvalInputs(embeddings, lineages, pd.DataFrame({"variant": ["adult"] * len(lineages)}), None)
    assert "needs 2" in FAMILIES["emergent"].run(single)["skipped"]
    unknown = FAMILIES["emergent"].run(
        EvalInputs(embeddings, lineages, columns, None), {"variants": ["adult", "egg"]}
    )
    assert unknown["skipped"] == "variant(s) egg not in the column"
    assert "skipped: no variant column" in FAMILIES["emergent"].format_table(FAMILIES["emergent"].run(inputs))
