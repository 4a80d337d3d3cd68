"""Emergent-property metrics of frozen embeddings (BioCLIP 2 section 5, appendix H): how
intra-species variation (two variants A and B of each species: life stage, sex, synthetic
variant) sits relative to the species.

- rho (explained-variance ratio) = ||U^T D||_F^2 / ||D||_F^2: U an orthonormal basis (QR) of the
  species prototypes (columns), D the stacked intra-species difference vectors, one per species
  with both variants: mean embedding of A minus mean embedding of B. rho = 1 when the variation
  lies inside the span of the prototypes, 0 when orthogonal to it. For reference, a random
  direction gives about rank(U) / d (`rho_random_baseline`).
- FDR (Fisher discriminant ratio) per species = ||mu_A - mu_B||^2 / (sigma_A^2 + sigma_B^2) with
  sigma_X^2 the total variance of variant X's embeddings: the mean squared distance to mu_X
  (trace of the covariance, ddof 0). Averaged over the species with at least
  min_images_per_variant images of each variant (mean and median reported).
- alignment: an SVM trained to tell species apart on variant A's images, tested on variant B's
  (and B -> A; the mean of both is `accuracy`): whether species separate the same way across
  variants. Species need images of both variants.
- differentiation: a cross-validated SVM telling A from B (over all species): whether the
  variants stay distinguishable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.metrics.report import mean_std, skipped, table
from training.metrics.taxa import class_text_embeddings, normalise, taxa_at
from training.metrics.types import RANKS, EvalInputs


def explained_variance_ratio(prototypes: np.ndarray, differences: np.ndarray) -> float:
    """rho = ||U^T D||_F^2 / ||D||_F^2, U = Q of the QR decomposition of the prototypes (rows)."""
    basis, _ = np.linalg.qr(np.asarray(prototypes, dtype=np.float64).T, mode="reduced")
    d = np.asarray(differences, dtype=np.float64)
    return float(np.sum((d @ basis) ** 2) / np.sum(d**2))


def total_variance(embeddings: np.ndarray) -> float:
    """Mean squared distance to the mean (the trace of the covariance, ddof 0)."""
    x = np.asarray(embeddings, dtype=np.float64)
    return float(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1)))


def fisher_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_A - mu_B||^2 / (sigma_A^2 + sigma_B^2), sigma^2 = total_variance."""
    gap = np.asarray(a, dtype=np.float64).mean(axis=0) - np.asarray(b, dtype=np.float64).mean(axis=0)
    return float(np.sum(gap**2) / (total_variance(a) + total_variance(b)))


def _svm(params: dict[str, Any], seed: int) -> Any:
    from sklearn.svm import SVC

    return SVC(kernel=params["svm_kernel"], C=params["svm_c"], random_state=seed)


def alignment(x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray,
              params: dict[str, Any], seed: int) -> dict[str, Any]:  # fmt: skip
    """Species SVM trained on one variant, tested on the other, both ways."""
    a_to_b = float(np.mean(_svm(params, seed).fit(x_a, y_a).predict(x_b) == y_b))
    b_to_a = float(np.mean(_svm(params, seed).fit(x_b, y_b).predict(x_a) == y_a))
    return {"accuracy": (a_to_b + b_to_a) / 2, "a_to_b": a_to_b, "b_to_a": b_to_a,
            "chance": 1 / len(np.unique(y_a))}  # fmt: skip


def differentiation(x: np.ndarray, is_b: np.ndarray, species: np.ndarray, params: dict[str, Any],
                    seed: int) -> dict[str, Any]:  # fmt: skip
    """Cross-validated accuracy of an SVM telling variant A from B."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if params["differentiation_split"] == "species":
        folds = min(params["differentiation_folds"], len(np.unique(species)))
        splits = GroupKFold(n_splits=folds).split(x, is_b, groups=species)
    else:
        folds = min(params["differentiation_folds"], int(np.bincount(is_b).min()))
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, is_b)
    if folds < 2:
        return skipped("too few images or species for 2 cross-validation folds")
    scores = []
    for train, test in splits:
        if len(np.unique(is_b[train])) < 2:
            continue
        scores.append(
            float(np.mean(_svm(params, seed).fit(x[train], is_b[train]).predict(x[test]) == is_b[test]))
        )
    if not scores:
        return skipped("no fold trains on both variants")
    return mean_std(scores) | {
        "split": params["differentiation_split"],
        "chance": float(max(is_b.mean(), 1 - is_b.mean())),
    }


def choose_variants(values: np.ndarray, wanted: list[str]) -> tuple[str, str] | str:
    """The two variants compared, or why there are not two."""
    present = [str(v) for v in values if v is not None and v == v and str(v) != ""]
    if wanted:
        if len(wanted) != 2:
            return f"variants must name two values, got {wanted!r}"
        missing = [w for w in wanted if w not in present]
        return f"variant(s) {', '.join(missing)} not in the column" if missing else (wanted[0], wanted[1])
    counts: dict[str, int] = {}
    for v in present:
        counts[v] = counts.get(v, 0) + 1
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    if len(ranked) < 2:
        return f"{len(ranked)} distinct variant value(s); needs 2"
    return ranked[0], ranked[1]


def run(inputs: EvalInputs, params: dict[str, Any]) -> dict[str, Any]:
    column = params["variant_column"]
    if column not in inputs.columns.columns:
        return skipped(f"no {column} column") | {"variant_column": column}
    values = inputs.columns[column].to_numpy(dtype=object)
    chosen = choose_variants(values, list(params["variants"]))
    if isinstance(chosen, str):
        return skipped(chosen) | {"variant_column": column}
    a_name, b_name = chosen
    embeddings = np.asarray(inputs.image_embeddings, dtype=np.float64)
    species, labels = taxa_at(inputs.lineages, len(RANKS))
    as_text = np.array([str(v) for v in values], dtype=object)
    in_a, in_b = (labels >= 0) & (as_text == a_name), (labels >= 0) & (as_text == b_name)
    minimum = params["min_images_per_variant"]
    count_a, count_b = (np.bincount(labels[m], minlength=len(species)) for m in (in_a, in_b))
    paired = [s for s in range(len(species)) if count_a[s] >= minimum and count_b[s] >= minimum]
    results: dict[str, Any] = {"variant_column": column, "variants": [a_name, b_name],
                               "species": len(species), "species_with_both": len(paired)}  # fmt: skip
    if len(paired) < 2:
        return results | skipped(f"{len(paired)} species with >= {minimum} images of both variants; needs 2")
    a_means = np.stack([embeddings[in_a & (labels == s)].mean(axis=0) for s in paired])
    b_means = np.stack([embeddings[in_b & (labels == s)].mean(axis=0) for s in paired])
    if params["prototypes"] == "text":
        prototypes = class_text_embeddings(inputs.encode_text, [species[s] for s in paired],
                                           params["templates"], params["name_kind"], 256)  # fmt: skip
    else:
        prototypes = normalise(
            np.stack([embeddings[(in_a | in_b) & (labels == s)].mean(axis=0) for s in paired])
        )
    fdrs = [fisher_ratio(embeddings[in_a & (labels == s)], embeddings[in_b & (labels == s)]) for s in paired]
    rank = int(np.linalg.matrix_rank(prototypes))
    rho = explained_variance_ratio(prototypes, a_means - b_means)
    dimension = int(embeddings.shape[1])
    results["rho"] = {"value": rho, "prototypes": params["prototypes"], "prototype_rank": rank,
                      "dimension": dimension, "difference_vectors": len(paired),
                      "rho_random_baseline": rank / dimension}  # fmt: skip
    results["fdr"] = {"mean": float(np.mean(fdrs)), "median": float(np.median(fdrs)), "species": len(fdrs)}
    use = np.isin(labels, paired)
    results["alignment"] = alignment(embeddings[use & in_a], labels[use & in_a], embeddings[use & in_b],
                                     labels[use & in_b], params, inputs.seed)  # fmt: skip
    both = use & (in_a | in_b)
    results["differentiation"] = differentiation(embeddings[both], in_b[both].astype(np.int64), labels[both],
                                                 params, inputs.seed)  # fmt: skip
    return results


def format_table(results: dict[str, Any]) -> str:
    title = f"emergent properties ({results.get('variant_column')}: {results.get('variants', '-')})"
    if "skipped" in results:
        return f"{title}\nskipped: {results['skipped']}"
    rho, fdr, align, diff = results["rho"], results["fdr"], results["alignment"], results["differentiation"]
    diff_value = diff if "skipped" in diff else f"{diff['mean']:.4f} +- {diff['std']:.4f}"
    rows = [
        ["rho (explained variance)", rho["value"], f"random direction ~{rho['rho_random_baseline']:.4f}"],
        ["FDR (mean over species)", fdr["mean"], f"median {fdr['median']:.4f}, {fdr['species']} species"],
        ["alignment accuracy", align["accuracy"], f"A->B {align['a_to_b']:.4f}, B->A {align['b_to_a']:.4f}, "
                                                  f"chance {align['chance']:.4f}"],
        ["differentiation accuracy", diff_value, "" if "skipped" in diff else f"chance {diff['chance']:.4f}"],
    ]  # fmt: skip
    return table(["metric", "value", "notes"], rows, title)
