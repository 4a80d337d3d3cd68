"""Decisions from stored scores: the same code decides when a partition is computed and when
`tolpipe rethreshold filter` re-applies new thresholds (no model is loaded for that)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.decisions import apply_findings
from stages.filter import schema as S
from stages.filter.faces import FaceScores, FaceSettings, face_drop


def _face_settings(params: dict[str, Any]) -> FaceSettings:
    return FaceSettings(face_threshold=float(params["face_threshold"]), rule=params["face_rule"])


def _face(row: dict[str, Any], params: dict[str, Any], settings: FaceSettings) -> str | None:
    scores = FaceScores(row["face_count"] or 0, row["face_prob_max"], row["face_prob_mean"])
    if face_drop(scores, settings):
        return f"{S.HUMAN_FACE}: {scores.face_count} face(s), max probability {scores.face_prob_max:.4f}"
    return None


def _museum(row: dict[str, Any], params: dict[str, Any]) -> str | None:
    if row["museum_label"] in set(params["museum_non_organism_labels"]):
        return f"{S.MUSEUM_NON_ORGANISM}: nearest {row['museum_label']} ({row['museum_similarity']:.4f})"
    return None


def _camera_trap(row: dict[str, Any], params: dict[str, Any]) -> str | None:
    best = row["md_animal_conf_max"]
    if best is None or best < float(params["animal_threshold"]):
        seen = "no animal box" if best is None else f"best animal box {best:.3f}"
        return f"{S.EMPTY_FRAME}: {seen} (< {params['animal_threshold']})"
    return None


def _occurrence(row: dict[str, Any], params: dict[str, Any]) -> list[str]:
    found = []
    similarity = row["occurrence_similarity"]
    if similarity is not None and similarity < float(params["occurrence_low"]):
        found.append(f"{S.MIXED_OCCURRENCE}: mean similarity {similarity:.4f} of "
                     f"{row['occurrence_images']} images")  # fmt: skip
    rank = row["occurrence_rank"]
    if rank is not None and rank >= int(params["occurrence_max_images"]):
        found.append(f"{S.OCCURRENCE_DOWNSAMPLED}: image {rank + 1} of {row['occurrence_images']} "
                     f"(keeps {params['occurrence_max_images']})")  # fmt: skip
    return found


def row_findings(row: dict[str, Any], params: dict[str, Any], face: FaceSettings) -> list[str]:
    """'reason: evidence' of every filter that drops the row, in reason order."""
    found: list[str] = []
    if row["face_filter"] == S.APPLIED:
        found.append(_face(row, params, face))
    if row["museum_filter"] == S.APPLIED:
        found.append(_museum(row, params))
    if row["camera_trap_filter"] == S.APPLIED:
        found.append(_camera_trap(row, params))
    if row["occurrence_filter"] == S.APPLIED:
        found += _occurrence(row, params)
    return [f for f in found if f]


def decide(table: pa.Table, params: dict[str, Any]) -> pa.Table:
    """`table` with status, reason and detail set from its scores (failed rows stay failed)."""
    face = _face_settings(params)
    return apply_findings(table, lambda row: row_findings(row, params, face))
