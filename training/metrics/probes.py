"""Probes of frozen embeddings (BioCLIP 2 section 4.2): an SVM per binary task (NeWT style) and a
logistic-regression linear probe per trait column, each scored by stratified k-fold
cross-validation (shuffled with the set's seed): mean and standard deviation of the fold
accuracies. Rows whose label is missing are left out of that task; a task whose rarest class has
fewer images than the folds is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.metrics.report import mean_std, skipped, table
from training.metrics.types import EvalInputs


def task_columns(columns: pd.DataFrame, explicit: list[str], prefix: str) -> tuple[list[str], list[str]]:
    """(columns found, columns named explicitly but missing)."""
    if explicit:
        return [c for c in explicit if c in columns.columns], [
            c for c in explicit if c not in columns.columns
        ]
    return sorted(c for c in columns.columns if str(c).startswith(prefix)), []


def cross_validated(model: Any, x: np.ndarray, labels: pd.Series, folds: int, seed: int) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedKFold

    known = labels.notna().to_numpy()
    y = labels[known].astype(str).to_numpy()
    x = x[known]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return skipped(f"{len(classes)} label value(s) among {len(y)} labelled images; needs 2")
    if counts.min() < folds:
        return skipped(f"rarest label has {counts.min()} images, fewer than the {folds} folds")
    from sklearn.base import clone

    scores = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        fitted = clone(model).fit(x[train], y[train])
        scores.append(float(np.mean(fitted.predict(x[test]) == y[test])))
    return mean_std(scores) | {"images": int(len(y)), "classes": int(len(classes)),
                               "majority": float(counts.max() / counts.sum())}  # fmt: skip


def _binary_labels(column: pd.Series) -> pd.Series | str:
    values = column.dropna().astype(str).str.lower().unique()
    allowed = {"0", "1", "true", "false", "0.0", "1.0"}
    if not set(values) <= allowed:
        return f"not binary (values such as {', '.join(sorted(values)[:3])})"
    return column.map(lambda v: v if v is None or v != v else str(v).lower() in {"1", "true", "1.0"})


def run(inputs: EvalInputs, params: dict[str, Any]) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    x = np.asarray(inputs.image_embeddings, dtype=np.float64)
    folds, seed = params["folds"], inputs.seed
    results: dict[str, Any] = {"images": len(x), "folds": folds}
    binary, missing = task_columns(inputs.columns, list(params["binary_columns"]), params["binary_prefix"])
    svm = SVC(kernel=params["svm_kernel"], C=params["svm_c"], random_state=seed)
    tasks: dict[str, Any] = {name: skipped(f"no {name} column") for name in missing}
    for name in binary:
        labels = _binary_labels(inputs.columns[name])
        tasks[name] = (
            skipped(labels) if isinstance(labels, str) else cross_validated(svm, x, labels, folds, seed)
        )
    results["binary_svm"] = tasks or skipped(f"no binary task columns (binary_columns, or columns named "
                                             f"{params['binary_prefix']}*)")  # fmt: skip
    traits, missing = task_columns(inputs.columns, list(params["trait_columns"]), params["trait_prefix"])
    probe = LogisticRegression(
        C=params["logistic_c"], max_iter=params["logistic_max_iter"], random_state=seed
    )
    probes: dict[str, Any] = {name: skipped(f"no {name} column") for name in missing}
    for name in traits:
        probes[name] = cross_validated(probe, x, inputs.columns[name], folds, seed)
    results["linear_probe"] = probes or skipped(f"no trait columns (trait_columns, or columns named "
                                                f"{params['trait_prefix']}*)")  # fmt: skip
    return results


def format_table(results: dict[str, Any]) -> str:
    rows = []
    for kind in ("binary_svm", "linear_probe"):
        entries = results.get(kind, {})
        if "skipped" in entries:
            rows.append([kind, "-", entries, "", ""])
            continue
        for name, entry in entries.items():
            value = entry if "skipped" in entry else f"{entry['mean']:.4f} +- {entry['std']:.4f}"
            rows.append([kind, name, value, entry.get("majority", ""), entry.get("images", "")])
    title = f"probes: {results.get('images')} images, {results.get('folds')}-fold cross-validation"
    return table(["probe", "task", "accuracy", "majority class", "images"], rows, title)
