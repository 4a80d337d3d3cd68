"""Hierarchical metrics (BioCLIP-HC-Hyperbolic card): per-rank top-1, top-down constrained
prediction, depth of the first misclassification, normalised lowest-common-ancestor distance.

The tree is the evaluation set's own: its nodes at depth r are the lineage prefixes of r ranks
of its images (only images with all seven ranks known take part; the others are counted). Class
texts average the caption templates (taxa.class_text_embeddings).

- node scores ([hierarchical] node_scores): "text", the cosine similarity of the image with the
  node's own class text (the protocol of the card: one text per taxon of every rank), or
  "species_probability", the summed softmax probability of the species under the node
  (softmax over all species of logit_scale x similarity), as open-ended prediction at a rank
  does (`tolpipe predict --rank`); useful when training captions name species only.
- per-rank top-1: an independent prediction among all nodes of each rank.
- top-down: at the top rank the best node; at each lower rank the best among the children of
  the node predicted one rank up. Its accuracy at a rank is the share of images whose predicted
  path down to that rank is the true one.
- first error: the first rank at which a predicted path leaves the true one ("none" when the
  species is right), counted per rank, for the top-down path and for the lineage of the
  independently predicted ("flat") species.
- nLCA: with L ranks, LCA distance = L - (ranks the predicted and true paths share from the top),
  i.e. the height above the species of their lowest common ancestor: 0 for the right species, 1 for
  a sibling species of the same genus, L for a different top-rank taxon. nLCA = LCA distance / L,
  in [0, 1]. Reported as the mean over all images and over the mistakes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.metrics.report import skipped, table
from training.metrics.taxa import class_text_embeddings, taxa_at
from training.metrics.types import RANKS, EvalInputs

Path = tuple[str, ...]


def top_down_paths(scores: Sequence[np.ndarray], nodes: Sequence[Sequence[Path]]) -> list[Path]:
    """Top-down predictions. `nodes[r]` are the tree's paths of r + 1 ranks, `scores[r]` (n, len(nodes[r]))
    the images' scores for them. Returns each image's predicted full path."""
    children: list[dict[Path, np.ndarray]] = []
    for depth in range(1, len(nodes)):
        by_parent: dict[Path, list[int]] = {}
        for index, node in enumerate(nodes[depth]):
            by_parent.setdefault(node[:depth], []).append(index)
        children.append({parent: np.array(idx) for parent, idx in by_parent.items()})
    predicted = []
    for image in range(len(scores[0])):
        node = nodes[0][int(np.argmax(scores[0][image]))]
        for depth in range(1, len(nodes)):
            candidates = children[depth - 1][node]
            node = nodes[depth][int(candidates[np.argmax(scores[depth][image, candidates])])]
        predicted.append(node)
    return predicted


def shared_ranks(predicted: Path, truth: Path) -> int:
    """How many ranks, from the top, two paths share."""
    shared = 0
    for a, b in zip(predicted, truth, strict=True):
        if a != b:
            break
        shared += 1
    return shared


def first_error_counts(
    predicted: Sequence[Path], truth: Sequence[Path], ranks: Sequence[str]
) -> dict[str, int]:
    """Per rank, the images whose prediction first goes wrong there; "none": fully right."""
    counts = {rank: 0 for rank in ranks} | {"none": 0}
    for p, t in zip(predicted, truth, strict=True):
        shared = shared_ranks(p, t)
        counts["none" if shared == len(t) else ranks[shared]] += 1
    return counts


def lca_distances(predicted: Sequence[Path], truth: Sequence[Path]) -> np.ndarray:
    """Per image, L - shared ranks: the height of the lowest common ancestor above the leaves."""
    return np.array(
        [len(t) - shared_ranks(p, t) for p, t in zip(predicted, truth, strict=True)], dtype=np.float64
    )


def nlca_summary(predicted: Sequence[Path], truth: Sequence[Path]) -> dict[str, Any]:
    """Mean LCA distance and nLCA (divided by the number of ranks), over all images and mistakes."""
    distances = lca_distances(predicted, truth)
    depth = len(truth[0])
    mistakes = distances[distances > 0]
    return {
        "mean_lca_distance": float(distances.mean()),
        "nlca": float(distances.mean() / depth),
        "nlca_mistakes": float(mistakes.mean() / depth) if len(mistakes) else None,
        "mistakes": int(len(mistakes)),
    }


def path_accuracy(predicted: Sequence[Path], truth: Sequence[Path], depth: int) -> float:
    """Share of images whose predicted path down to `depth` ranks is the true one."""
    return float(np.mean([p[:depth] == t[:depth] for p, t in zip(predicted, truth, strict=True)]))


def evaluate(scores: Sequence[np.ndarray], nodes: Sequence[Sequence[Path]], truth: Sequence[Path],
             ranks: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """All hierarchical figures from the per-rank scores of a tree of len(ranks) levels."""
    flat = [nodes[-1][i] for i in np.argmax(scores[-1], axis=1)]
    independent = {rank: float(np.mean([nodes[d][i] == t[: d + 1] for i, t in
                                        zip(np.argmax(scores[d], axis=1), truth, strict=True)]))
                   for d, rank in enumerate(ranks)}  # fmt: skip
    top_down = top_down_paths(scores, nodes)
    return {
        "per_rank_top1": independent,
        "top_down_top1": {rank: path_accuracy(top_down, truth, d + 1) for d, rank in enumerate(ranks)},
        "first_error": {"top_down": first_error_counts(top_down, truth, ranks),
                        "flat": first_error_counts(flat, truth, ranks)},
        "nlca": {"top_down": nlca_summary(top_down, truth), "flat": nlca_summary(flat, truth)},
    }  # fmt: skip


def species_probability_scores(similarities: np.ndarray, nodes: Sequence[Sequence[Path]],
                               logit_scale: float) -> list[np.ndarray]:  # fmt: skip
    """Per rank, each node's score as the summed softmax probability of the species below it
    (softmax over all species of logit_scale x cosine similarity)."""
    logits = logit_scale * similarities.astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    scores = []
    for depth, taxa in enumerate(nodes, start=1):
        where = {taxon: i for i, taxon in enumerate(taxa)}
        group = np.array([where[leaf[:depth]] for leaf in nodes[-1]])
        scores.append(
            np.stack([np.bincount(group, weights=row, minlength=len(taxa)) for row in probabilities])
        )
    return scores


def run(inputs: EvalInputs, params: dict[str, Any]) -> dict[str, Any]:
    complete = [i for i, lineage in enumerate(inputs.lineages) if all(lineage)]
    results: dict[str, Any] = {
        "images": len(complete),
        "images_incomplete_lineage": len(inputs.lineages) - len(complete),
    }
    if inputs.encode_text is None:
        return results | skipped("no text encoder")
    if not complete:
        return results | skipped("no image with all seven ranks known")
    lineages = [tuple(inputs.lineages[i]) for i in complete]
    embeddings = np.asarray(inputs.image_embeddings, dtype=np.float32)[complete]
    nodes = [taxa_at(lineages, depth)[0] for depth in range(1, len(RANKS) + 1)]

    def texts(taxa: list[Path]) -> np.ndarray:
        return class_text_embeddings(inputs.encode_text, taxa, params["templates"], params["name_kind"],
                                     params["text_batch_size"])  # fmt: skip

    if params["node_scores"] == "text":
        scores = [embeddings @ texts(taxa).T for taxa in nodes]
    else:
        scores = species_probability_scores(embeddings @ texts(nodes[-1]).T, nodes, params["logit_scale"])
    results["node_scores"] = params["node_scores"]
    results["taxa_per_rank"] = {rank: len(n) for rank, n in zip(RANKS, nodes, strict=True)}
    return results | evaluate(scores, nodes, lineages, RANKS)


def format_table(results: dict[str, Any]) -> str:
    title = (f"hierarchical metrics: {results.get('images')} images with a full lineage "
             f"({results.get('images_incomplete_lineage')} without); "
             f"node scores: {results.get('node_scores')}")  # fmt: skip
    if "skipped" in results:
        return f"{title}\nskipped: {results['skipped']}"
    rows = []
    for rank in RANKS:
        rows.append([rank, results["taxa_per_rank"][rank], results["per_rank_top1"][rank],
                     results["top_down_top1"][rank], results["first_error"]["top_down"][rank],
                     results["first_error"]["flat"][rank]])  # fmt: skip
    rows.append(["none (right)", "", "", "", results["first_error"]["top_down"]["none"],
                 results["first_error"]["flat"]["none"]])  # fmt: skip
    text = table(["rank", "taxa", "per-rank top-1", "top-down top-1", "first error (top-down)",
                  "first error (flat)"], rows, title)  # fmt: skip
    nlca = [[kind, v["mean_lca_distance"], v["nlca"], v["nlca_mistakes"], v["mistakes"]]
            for kind, v in results["nlca"].items()]  # fmt: skip
    return (
        text
        + "\n\n"
        + table(["prediction", "mean LCA distance", "nLCA", "nLCA of mistakes", "mistakes"], nlca)
    )
