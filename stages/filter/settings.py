"""The [filter] section as typed settings: each filter's scope, model settings and thresholds."""

from __future__ import annotations

from typing import Any

from pipeline.decisions import Scope
from pipeline.errors import ConfigError
from stages.filter.schema import FILTERS

# Thresholds that only turn stored scores into decisions: `tolpipe rethreshold filter` may
# change them without recomputing a score. Everything else that is not volatile is a score
# parameter (changing it needs `run filter --rebuild`).
DECISION_PARAMS = (
    "face_threshold", "animal_threshold", "museum_non_organism_labels", "occurrence_low",
    "occurrence_max_images",
)  # fmt: skip
# Where the models run and how many images go through them at once: no effect on any score.
TUNING_PARAMS = ("device", "batch_size", "torch_threads")
# Model files are tracked by their sha256 in every partition's inputs, not by path.
LOCATION_PARAMS = ("megadetector_weights", "embedder_weights", "support_set")
REQUIRED_HINTS = {
    "face": "install the filters extra (pip install 'tolpipe[filters]'): MTCNN's weights ship with it",
    "camera_trap": "set filter.megadetector_weights to a local MegaDetector v6 file",
    "museum": "set filter.embedder_weights and filter.support_set "
    "(built with `tolpipe filter build-support-set FOLDER`)",
    "occurrence": "set filter.embedder_weights",
}


def scopes(params: dict[str, Any]) -> dict[str, Scope]:
    return {
        name: Scope(frozenset(params[f"{name}_image_types"]), frozenset(params[f"{name}_providers"]))
        for name in FILTERS
    }


def resolve_device(device: str) -> str:
    """"auto": cuda when torch sees a GPU, else cpu (torch imported only here)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def limit_torch_threads(params: dict[str, Any], cluster: dict[str, Any]) -> None:
    """Share the cores between the worker processes of a local cluster (see torch_threads)."""
    import torch

    from pipeline.executors import local_workers, usable_cpus

    threads = int(params["torch_threads"])
    if threads == 0 and cluster.get("kind") == "local":
        workers = local_workers(cluster) * int(cluster["threads_per_worker"])
        threads = max(1, usable_cpus() // workers)
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def validate(params: dict[str, Any]) -> None:
    """The rules the model settings add to the documented ranges, checked before any work."""
    from stages.filter.models import face_settings, md_settings

    for name, build in (("face", face_settings), ("camera_trap", md_settings)):
        try:
            build(params, "cpu")
        except ValueError as exc:
            raise ConfigError(f"filter ({name}): {exc}") from None
    if not -1 <= float(params["occurrence_low"]) <= float(params["occurrence_high"]) <= 1:
        raise ConfigError("filter: need -1 <= occurrence_low <= occurrence_high <= 1")


def require(params: dict[str, Any], not_run: list[str]) -> None:
    """Filters configured as required must run: a clear error naming what is missing."""
    missing = [name for name in not_run if params[f"{name}_required"]]
    if missing:
        hints = "; ".join(f"{name}: {REQUIRED_HINTS[name]}" for name in missing)
        raise ConfigError(f"filter.*_required is set but these filters have no model: {hints}")
