"""Embedding plots of an evaluation set: species prototypes in 2-D, coloured by the taxa of a
chosen rank, with each species' intra-species variation drawn as an arrow.

    from training.plots import plot_embeddings
    summary = plot_embeddings(inputs, out_dir / "embeddings.png")   # inputs: metrics.EvalInputs

A species prototype is the mean image embedding of the species; a variant mean the mean of one
variant's images (variants A and B as the emergent metrics choose them: the two most frequent
values of the variant column). Prototypes and variant means are projected together, so arrows
(from A's mean to B's) live in the same 2-D space as the prototypes. One panel per method
([plots] methods in training/metrics/defaults.toml): PCA (scikit-learn), t-SNE (scikit-learn),
UMAP (umap-learn). Matplotlib draws with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import atomic
from training.metrics.emergent import choose_variants
from training.metrics.params import merged_params
from training.metrics.report import skipped
from training.metrics.taxa import taxa_at, taxon_name
from training.metrics.types import RANKS, EvalInputs

LEGEND_MAX = 20  # taxa named in the legend at most; more are drawn without names
PANEL_INCHES = 6.0


def project(points: np.ndarray, method: str, params: dict[str, Any], seed: int) -> np.ndarray:
    """(n, 2) coordinates of `points` by PCA, t-SNE or UMAP."""
    n = len(points)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(points)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(params["tsne_perplexity"], max((n - 1) / 3, 1.0))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            points
        )
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            from pipeline.errors import ConfigError

            raise ConfigError(
                "plots: method umap needs the umap-learn package (pip install umap-learn)"
            ) from exc
        neighbours = min(params["umap_neighbors"], n - 1)
        return umap.UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1).fit_transform(points)
    raise ValueError(f"unknown projection {method!r}")


def _variant_means(inputs: EvalInputs, labels: np.ndarray, species: int, column: str
                   ) -> tuple[list[int], np.ndarray, np.ndarray, list[str]] | str:  # fmt: skip
    """(species with both variants, A means, B means, [A, B]) or why there are no arrows."""
    if column not in inputs.columns.columns:
        return f"no {column} column"
    values = np.array([str(v) for v in inputs.columns[column].to_numpy(dtype=object)], dtype=object)
    chosen = choose_variants(inputs.columns[column].to_numpy(dtype=object), [])
    if isinstance(chosen, str):
        return chosen
    embeddings = np.asarray(inputs.image_embeddings, dtype=np.float64)
    both, a_means, b_means = [], [], []
    for s in range(species):
        in_a, in_b = (labels == s) & (values == chosen[0]), (labels == s) & (values == chosen[1])
        if in_a.any() and in_b.any():
            both.append(s)
            a_means.append(embeddings[in_a].mean(axis=0))
            b_means.append(embeddings[in_b].mean(axis=0))
    if not both:
        return "no species has images of both variants"
    return both, np.stack(a_means), np.stack(b_means), list(chosen)


def _colours(names: list[Any], plt: Any) -> dict[Any, Any]:
    """Distinct colours: tab20 for up to 20 taxa, evenly spaced along turbo beyond."""
    if len(names) <= 20:
        return {name: plt.get_cmap("tab20")(i) for i, name in enumerate(names)}
    turbo = plt.get_cmap("turbo")
    return {name: turbo(i / (len(names) - 1)) for i, name in enumerate(names)}


def _draw_panel(ax: Any, xy: np.ndarray, colours: list[Any], arrows: int, title: str) -> None:
    """Prototypes as dots (the first len(colours) rows of xy); arrows from the next `arrows` rows
    (variant A means) to the `arrows` after them (variant B means)."""
    s = len(colours)
    style = {"arrowstyle": "->", "color": "0.45", "lw": 0.8}
    for i in range(arrows):
        ax.annotate("", xy=xy[s + arrows + i], xytext=xy[s + i], arrowprops=style)
    ax.scatter(xy[:s, 0], xy[:s, 1], c=colours, s=36, edgecolors="black", linewidths=0.4, zorder=3)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_embeddings(
    inputs: EvalInputs, out_path: Path, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Draw the panels into `out_path` (PNG); returns what was drawn (JSON-able), or a skipped
    entry when the set has fewer than 3 species."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = merged_params("plots", params or {})
    species, labels = taxa_at(inputs.lineages, len(RANKS))
    if len(species) < 3:
        return skipped(f"{len(species)} species with a name; a 2-D map needs 3")
    embeddings = np.asarray(inputs.image_embeddings, dtype=np.float64)
    prototypes = np.stack([embeddings[labels == s].mean(axis=0) for s in range(len(species))])
    variants = _variant_means(inputs, labels, len(species), settings["variant_column"])
    if isinstance(variants, str):
        points, arrows, arrow_note = prototypes, 0, f"no arrows ({variants})"
        arrow_entry: dict[str, Any] = skipped(variants)
    else:
        points, arrows = np.vstack([prototypes, variants[1], variants[2]]), len(variants[0])
        arrow_note = f"arrows: {variants[3][0]} -> {variants[3][1]} mean per species"
        arrow_entry = {"variants": variants[3], "species": arrows}
    rank = settings["color_rank"]
    groups = [taxon[: RANKS.index(rank) + 1] for taxon in species]
    names = sorted(set(groups))
    colour_of = _colours(names, plt)
    methods = list(dict.fromkeys(settings["methods"]))
    size = (PANEL_INCHES * len(methods) + (2 if len(names) <= LEGEND_MAX else 0), PANEL_INCHES)
    figure, axes = plt.subplots(1, len(methods), figsize=size, squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        xy = project(points, method, settings, inputs.seed)
        _draw_panel(
            ax, xy, [colour_of[g] for g in groups], arrows, f"{method.upper()}: {len(species)} species"
        )
    legend = len(names) <= LEGEND_MAX
    if legend:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour_of[g],
                              label=taxon_name(g, "scientific")) for g in names]  # fmt: skip
        figure.legend(handles=handles, title=rank, loc="center right", fontsize="small")
        figure.subplots_adjust(right=1 - 2 / size[0])
    taxa_note = f"{len(names)} taxa" + ("" if legend else f", more than {LEGEND_MAX}: no legend")
    figure.suptitle(f"species prototypes, colour: {rank} ({taxa_note}); {arrow_note}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = atomic.temp_name(out_path)
    figure.savefig(temp, format="png", dpi=settings["dpi"])
    plt.close(figure)
    atomic.publish(temp, out_path)
    return {"path": str(out_path), "species": len(species), "methods": methods, "color_rank": rank,
            "color_taxa": len(names), "arrows": arrow_entry}  # fmt: skip
