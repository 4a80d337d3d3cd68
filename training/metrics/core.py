"""Core metrics: zero-shot species top-1, SimpleShot few-shot, per-rank zero-shot top-1.

- Zero-shot: each class text is the mean of its caption templates' embeddings, L2-normalised
  (taxa.class_text_embeddings); an image's prediction is the class of highest cosine similarity.
  Classes are the taxa present in the evaluation set (closed set).
- SimpleShot (Wang et al. 2019, as in BioCLIP 2 section 4.1): per fold, draw `shots` support
  images of every species with at least shots + 1 images, the rest are queries; subtract the
  support mean, L2-normalise ("CL2N"), classify each query by its nearest class centroid
  (Euclidean). Mean and standard deviation (ddof 0) over the folds; fold f draws with seed + f.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.metrics.report import mean_std, skipped, table
from training.metrics.taxa import class_text_embeddings, normalise, taxa_at
from training.metrics.types import RANKS, EvalInputs


def zero_shot_predictions(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Index of the most similar class text per image."""
    return np.argmax(image_embeddings @ class_embeddings.T, axis=1)


def zero_shot_top1(image_embeddings: np.ndarray, labels: np.ndarray, class_embeddings: np.ndarray) -> float:
    """Top-1 accuracy of the images whose label is known (>= 0)."""
    known = labels >= 0
    predictions = zero_shot_predictions(image_embeddings[known], class_embeddings)
    return float(np.mean(predictions == labels[known]))


def simpleshot_fold(
    embeddings: np.ndarray, labels: np.ndarray, shots: int, rng: np.random.Generator
) -> tuple[float, int]:
    """(accuracy, classes used) of one SimpleShot fold; classes need shots + 1 images."""
    support, query = [], []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        if len(members) <= shots:
            continue
        chosen = rng.permutation(members)
        support.append(chosen[:shots])
        query.append(chosen[shots:])
    if len(support) < 2:
        return float("nan"), len(support)
    support_idx, query_idx = np.concatenate(support), np.concatenate(query)
    mean = embeddings[support_idx].mean(axis=0)
    features = normalise(embeddings - mean)
    classes = labels[[s[0] for s in support]]
    centroids = np.stack([features[s].mean(axis=0) for s in support])
    queries = features[query_idx]  # squared Euclidean distances without an (n, C, d) array
    distances = (queries**2).sum(1)[:, None] - 2 * queries @ centroids.T + (centroids**2).sum(1)[None, :]
    predictions = classes[np.argmin(distances, axis=1)]
    return float(np.mean(predictions == labels[query_idx])), len(support)


def simpleshot(
    embeddings: np.ndarray, labels: np.ndarray, shots: int, folds: int, seed: int
) -> dict[str, Any]:
    """SimpleShot accuracy over `folds` draws: mean, std, per-fold figures, classes used."""
    runs = [simpleshot_fold(embeddings, labels, shots, np.random.default_rng(seed + fold))
            for fold in range(folds)]  # fmt: skip
    classes = runs[0][1]
    if classes < 2:
        return skipped(f"{classes} species with more than {shots} images; {shots}-shot needs 2")
    known = labels >= 0
    total = int(len(np.unique(labels[known])))
    return {
        **mean_std([accuracy for accuracy, _ in runs]),
        "classes": classes,
        "classes_too_small": total - classes,
    }


def run(inputs: EvalInputs, params: dict[str, Any]) -> dict[str, Any]:
    embeddings = np.asarray(inputs.image_embeddings, dtype=np.float32)
    species, labels = taxa_at(inputs.lineages, len(RANKS))
    results: dict[str, Any] = {"images": len(embeddings), "species": len(species),
                               "images_without_species": int(np.sum(labels < 0))}  # fmt: skip

    encoded: dict[tuple[tuple[str, ...], ...], np.ndarray] = {}  # species texts serve two metrics

    def texts(taxa: list[tuple[str, ...]]) -> np.ndarray:
        key = tuple(taxa)
        if key not in encoded:
            encoded[key] = class_text_embeddings(inputs.encode_text, taxa, params["templates"],
                                                 params["name_kind"], params["text_batch_size"])  # fmt: skip
        return encoded[key]

    if inputs.encode_text is None:
        results["zero_shot"] = skipped("no text encoder")
    elif len(species) < 2:
        results["zero_shot"] = skipped(f"{len(species)} species with a name; zero-shot needs 2")
    else:
        results["zero_shot"] = {"top1": zero_shot_top1(embeddings, labels, texts(species)),
                                "classes": len(species), "images": int(np.sum(labels >= 0))}  # fmt: skip
    folds = params["folds"]
    results["few_shot"] = {f"{shots}-shot": simpleshot(embeddings, labels, shots, folds, inputs.seed)
                           for shots in params["shots"]}  # fmt: skip
    if params["rank_zero_shot"]:
        results["rank_zero_shot"] = per_rank_zero_shot(inputs, texts, species, params["species_logit_scale"])
    return results


def per_rank_zero_shot(inputs: EvalInputs, texts: Any, species: list[tuple[str, ...]],
                       logit_scale: float) -> dict[str, Any]:  # fmt: skip
    """Zero-shot top-1 at each rank among that rank's taxa in the set (a rank with one taxon is
    trivially right and reported as skipped), two ways: `top1` asks the rank's own class texts;
    `top1_from_species` sums the species' softmax probabilities under each taxon of the rank
    (as `tolpipe predict --rank` does), so it needs only the species texts."""
    embeddings = np.asarray(inputs.image_embeddings, dtype=np.float32)
    species_probs = None
    if inputs.encode_text is not None and len(species) >= 2:
        species_probs = softmax(logit_scale * (embeddings @ texts(species).T))
    out: dict[str, Any] = {}
    for depth, rank in enumerate(RANKS, start=1):
        taxa, labels = taxa_at(inputs.lineages, depth)
        if inputs.encode_text is None:
            out[rank] = skipped("no text encoder")
        elif len(taxa) < 2:
            out[rank] = skipped(f"{len(taxa)} taxon at this rank; needs 2")
        else:
            out[rank] = {"top1": zero_shot_top1(embeddings, labels, texts(taxa)), "classes": len(taxa),
                         "images": int(np.sum(labels >= 0))}  # fmt: skip
            if species_probs is not None:
                out[rank]["top1_from_species"] = top1_from_species(species_probs, species, taxa, labels)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top1_from_species(species_probs: np.ndarray, species: list[tuple[str, ...]],
                      taxa: list[tuple[str, ...]], labels: np.ndarray) -> float | None:  # fmt: skip
    """Top-1 at a rank when each taxon scores the summed probability of its species (species
    whose lineage lacks the rank count for no taxon)."""
    depth = len(taxa[0])
    where = {taxon: i for i, taxon in enumerate(taxa)}
    membership = np.zeros((len(species), len(taxa)), dtype=np.float32)
    for j, lineage in enumerate(species):
        if lineage[:depth] in where:
            membership[j, where[lineage[:depth]]] = 1.0
    known = labels >= 0
    if not known.any():
        return None
    predicted = (species_probs[known] @ membership).argmax(axis=1)
    return float(np.mean(predicted == labels[known]))


def format_table(results: dict[str, Any]) -> str:
    rows: list[list[Any]] = []
    zero = results.get("zero_shot", {})
    rows.append(["zero-shot species top-1", zero.get("top1", zero), zero.get("classes"), ""])
    for name, shot in results.get("few_shot", {}).items():
        value = shot if "skipped" in shot else f"{shot['mean']:.4f} +- {shot['std']:.4f}"
        rows.append([f"{name} SimpleShot", value, shot.get("classes"), shot.get("classes_too_small", "")])
    for rank, entry in results.get("rank_zero_shot", {}).items():
        rows.append([f"zero-shot {rank} top-1", entry.get("top1", entry), entry.get("classes"), ""])
        if "top1_from_species" in entry:
            rows.append([f"  {rank} top-1 from species", entry["top1_from_species"], entry["classes"], ""])
    title = f"core metrics: {results.get('images')} images, {results.get('species')} species"
    return table(["metric", "value", "classes", "classes too small"], rows, title)
