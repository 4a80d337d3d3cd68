"""The [dedup] section as typed settings: PDQ scope, hashing, matching and the run's tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.decisions import Scope
from pipeline.errors import ConfigError

# Thresholds that only turn stored distances into decisions: `tolpipe rethreshold dedup` may
# change them without hashing or searching again.
DECISION_PARAMS = ("pdq_max_distance",)
# Speed only: the search structure (same answers), threads, memory of the MD5 table, workers of
# `testsets add`.
TUNING_PARAMS = ("search_backend", "search_threads", "md5_table_mb", "testset_workers")
# Not output parameters either: the selected test sets are tracked by their digests in every
# partition's inputs (a change recomputes exactly what it changes), and requiring sets only
# refuses a run. Both are frozen with the config, unlike the tuning settings.
TRACKED_PARAMS = ("testsets", "testsets_required")


@dataclass(frozen=True)
class HashSettings:
    """How an image becomes a PDQ hash; a test set records these and must match the stage's."""

    canonical_px: int
    draft_factor: int

    def identity(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"pdqhash": version("pdqhash"), "canonical_px": self.canonical_px,
                "draft_factor": self.draft_factor}  # fmt: skip


def hash_settings(params: dict[str, Any]) -> HashSettings:
    return HashSettings(int(params["pdq_canonical_px"]), int(params["pdq_draft_factor"]))


def scope(params: dict[str, Any]) -> Scope:
    return Scope(frozenset(params["pdq_image_types"]), frozenset(params["pdq_providers"]))


def validate(params: dict[str, Any]) -> None:
    """The rules the settings add to their documented ranges, checked before any work."""
    if int(params["pdq_max_distance"]) > int(params["pdq_search_radius"]):
        raise ConfigError(
            f"dedup.pdq_max_distance ({params['pdq_max_distance']}) must be at most "
            f"dedup.pdq_search_radius ({params['pdq_search_radius']}): farther distances are not stored"
        )
