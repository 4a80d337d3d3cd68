"""Binary-task SVMs and trait probes on labels that are (or are not) linear in the embeddings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from training.metrics import FAMILIES, EvalInputs

LINEAGE = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax")


def test_probes_learn_linear_labels_and_report_the_rest():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    columns = pd.DataFrame({
        "binary_bright": (x[:, 0] > 0).astype(int),  # linear in the embedding
        "binary_flag": np.where(x[:, 1] > 0, "true", "false"),
        "binary_bad": ["a", "b", "c"] * 20,  # not binary
        "trait_colour": np.where(x[:, 2] > 0.3, "red", np.where(x[:, 2] < -0.3, "blue", "grey")),
        "trait_sparse": [None] * 58 + ["x", "y"],  # too few labelled
    })  # fmt: skip
    inputs = EvalInputs(x, [LINEAGE] * 60, columns, None, seed=1)
    results = FAMILIES["probes"].run(inputs, {"svm_c": 10.0, "logistic_c": 100.0})
    json.dumps(results)
    assert set(results["binary_svm"]) == {"binary_bright", "binary_flag", "binary_bad"}
    assert results["binary_svm"]["binary_bright"]["mean"] >= 0.9
    assert results["binary_svm"]["binary_flag"]["mean"] >= 0.9
    assert results["binary_svm"]["binary_bad"]["skipped"].startswith("not binary")
    assert results["linear_probe"]["trait_colour"]["mean"] >= 0.8
    assert results["linear_probe"]["trait_colour"]["classes"] == 3
    assert "skipped" in results["linear_probe"]["trait_sparse"]
    again = FAMILIES["probes"].run(inputs, {"svm_c": 10.0, "logistic_c": 100.0})
    assert again == results  # seeded folds
    assert "trait_colour" in FAMILIES["probes"].format_table(results)


def test_probes_without_task_columns_say_so():
    x = np.eye(10, 4, dtype=np.float32)
    results = FAMILIES["probes"].run(EvalInputs(x, [LINEAGE] * 10, pd.DataFrame(index=range(10)), None))
    assert results["binary_svm"]["skipped"].startswith("no binary task columns")
    assert results["linear_probe"]["skipped"].startswith("no trait columns")
    named = FAMILIES["probes"].run(EvalInputs(x, [LINEAGE] * 10, pd.DataFrame(index=range(10)), None),
                                   {"trait_columns": ["habitat"]})  # fmt: skip
    assert named["linear_probe"] == {"habitat": {"skipped": "no habitat column"}}
