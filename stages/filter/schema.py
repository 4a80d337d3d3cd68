"""Stage 04's manifest: one row per 03-ok row, with every filter's state, scores and the
identity of the model that gave them, then the decision (status, reason) made from the scores."""

from __future__ import annotations

import pyarrow as pa

from pipeline.ledger import stage_schema

# Per-filter state column values.
APPLIED = "applied"  # the filter looked at the row; its scores are set
NOT_APPLICABLE = "not_applicable"  # the row is outside the filter's scope (image type, provider)
NOT_RUN = "not_run"  # the row is in scope but the filter has no model configured
STATES = (APPLIED, NOT_APPLICABLE, NOT_RUN)

FILTERS = ("face", "camera_trap", "museum", "occurrence")

# Reason codes of dropped rows, in the order a row's reason is chosen when several filters drop
# it (the others are listed in `detail`).
HUMAN_FACE = "human_face"
MUSEUM_NON_ORGANISM = "museum_non_organism"
EMPTY_FRAME = "empty_frame"
MIXED_OCCURRENCE = "mixed_occurrence"
OCCURRENCE_DOWNSAMPLED = "occurrence_downsampled"
REASONS = (HUMAN_FACE, MUSEUM_NON_ORGANISM, EMPTY_FRAME, MIXED_OCCURRENCE, OCCURRENCE_DOWNSAMPLED)
# A stored image that cannot be decoded any more (the store is written by 02 from decoded
# images, so this means a damaged store file).
IMAGE_UNREADABLE = "image_unreadable"

SCHEMA = stage_schema(
    pa.field("image_type", pa.string()),
    pa.field("provider", pa.string()),
    pa.field("face_filter", pa.string(), nullable=False),
    pa.field("face_count", pa.int32()),
    pa.field("face_prob_max", pa.float64()),
    pa.field("face_prob_mean", pa.float64()),
    pa.field("face_model", pa.string()),
    pa.field("camera_trap_filter", pa.string(), nullable=False),
    pa.field("md_animal_count", pa.int32()),
    pa.field("md_animal_conf_max", pa.float64()),
    pa.field("md_person_count", pa.int32()),
    pa.field("md_vehicle_count", pa.int32()),
    pa.field("camera_trap_model", pa.string()),
    pa.field("museum_filter", pa.string(), nullable=False),
    pa.field("museum_label", pa.string()),
    pa.field("museum_similarity", pa.float64()),
    pa.field("museum_model", pa.string()),
    pa.field("occurrence_filter", pa.string(), nullable=False),
    pa.field("occurrence_key", pa.string()),
    pa.field("occurrence_images", pa.int32()),
    pa.field("occurrence_similarity", pa.float64()),
    pa.field("occurrence_rank", pa.int32()),
    pa.field("occurrence_camera_trap", pa.bool_()),
    pa.field("occurrence_model", pa.string()),
)


def model_label(identity: dict[str, str] | None) -> str | None:
    """One short string naming a model exactly: name, version and the weights' sha256."""
    if not identity:
        return None
    sha = identity.get("weights_sha256", "")
    return f"{identity.get('name')} {identity.get('version')} sha256:{sha}"
