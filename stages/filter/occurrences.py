"""Citizen-science occurrence distinctness (constants.md, "Filters", last row).

An occurrence (one observation) with several images is judged by the mean pairwise cosine
similarity of their embeddings:

- below `low`: the images probably show different organisms (a mixed occurrence), so every image
  of it is dropped (`mixed_occurrence`);
- at or above `high`: the images are near-identical frames of a fixed camera, so the camera-trap
  filter applies to them;
- in any case at most `max_images` images are kept; the others are `downsampled_out`.

Only the similarity is a model output. The two threshold flags are re-derived from it with
`apply_thresholds`, and the sample is a pure function of the uuids and the seed, so a stored
similarity is enough to re-apply other thresholds without embedding anything again. Which flag
wins when several apply (mixed before downsampled, say) is the stage's choice, not this module's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Defaults for CLIP-like image embeddings (ViT-L/14 class). Such embeddings fill a narrow cone, so
# even unrelated photos score well above 0: roughly 0.3-0.5 for different organisms, 0.6-0.9 for
# photos of one organism from other angles or distances, 0.95 and more for consecutive frames of
# a fixed camera. `low` = 0.5 drops occurrences whose images mostly disagree; `high` = 0.95 marks
# only burst-like series as camera-trap frames. These are typical figures, not measured in this
# project (no pretrained weights are available offline): calibrate them on a labelled sample.
DEFAULT_LOW = 0.5
DEFAULT_HIGH = 0.95
DEFAULT_MAX_IMAGES = 5
DEFAULT_SEED = "tolpipe"


@dataclass(frozen=True)
class OccurrenceRule:
    """Thresholds on the mean pairwise similarity, and the sample size per occurrence."""

    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    max_images: int = DEFAULT_MAX_IMAGES
    seed: str = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not -1.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"thresholds need -1 <= low <= high <= 1, got {self.low}, {self.high}")
        if self.max_images < 1:
            raise ValueError(f"occurrence max_images must be >= 1, got {self.max_images}")


class Thresholded(NamedTuple):
    mixed: bool
    camera_trap_like: bool


@dataclass(frozen=True)
class OccurrenceDecision:
    """The decision for one image of a multi-image occurrence."""

    occurrence_similarity: float  # of the whole occurrence, stored so thresholds can be re-applied
    mixed: bool
    downsampled_out: bool
    camera_trap_like: bool


def occurrence_similarity(embeddings: np.ndarray) -> float:
    """Mean cosine similarity over the distinct pairs of rows (rows already L2-normalised).

    Computed in float64 over the upper triangle, so the value depends only on the rows and their
    order; `decide` sorts rows by uuid first, which makes it independent of input order."""
    rows = np.asarray(embeddings, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise ValueError(f"occurrence similarity needs at least two embeddings, got shape {rows.shape}")
    gram = rows @ rows.T
    upper = gram[np.triu_indices(rows.shape[0], k=1)]
    return float(upper.mean())


def apply_thresholds(similarity: float, rule: OccurrenceRule) -> Thresholded:
    """The threshold flags for a stored similarity (NaN: neither)."""
    return Thresholded(mixed=bool(similarity < rule.low), camera_trap_like=bool(similarity >= rule.high))


def sample_key(uuid: str, seed: str) -> str:
    """Sort key of an image within its occurrence: a hash, so the sample is random-like but depends
    only on (seed, uuid), not on input order or on how rows were partitioned."""
    return hashlib.sha256(f"{seed}{uuid}".encode()).hexdigest()


def kept_uuids(uuids: Iterable[str], rule: OccurrenceRule) -> set[str]:
    """The at most `max_images` uuids an occurrence keeps: the first ones by sample_key."""
    ranked = sorted(uuids, key=lambda u: (sample_key(u, rule.seed), u))
    return set(ranked[: rule.max_images])


def decide(
    groups: dict[str, list[tuple[str, np.ndarray]]], rule: OccurrenceRule
) -> dict[str, OccurrenceDecision]:
    """Decisions per uuid for occurrence id -> [(uuid, embedding), ...].

    Occurrences with fewer than two images get no decision (nothing to compare). A uuid listed
    twice in one occurrence is an error: it would count as a pair of identical images."""
    decisions: dict[str, OccurrenceDecision] = {}
    for occurrence_id, members in groups.items():
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda m: m[0])
        uuids = [uuid for uuid, _ in ordered]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"occurrence {occurrence_id!r} lists a uuid more than once")
        similarity = occurrence_similarity(np.stack([np.asarray(e) for _, e in ordered]))
        flags = apply_thresholds(similarity, rule)
        kept = kept_uuids(uuids, rule)
        for uuid in uuids:
            decisions[uuid] = OccurrenceDecision(
                occurrence_similarity=similarity,
                mixed=flags.mixed,
                downsampled_out=uuid not in kept,
                camera_trap_like=flags.camera_trap_like,
            )
    return decisions
