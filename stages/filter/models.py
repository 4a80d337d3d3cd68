"""The filters' models: what identifies them (computed in the driver without loading anything
but file hashes, for the partitions' inputs) and the loaded models (in the workers, once per
process through each module's cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.digest import sha256_file
from pipeline.errors import ConfigError

# How many times this process asked for a loaded model (tests check re-thresholding asks none).
MODEL_REQUESTS = {"count": 0}


def _file(path: str, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"filter.{what} = {path!r}: no such file")
    return file


def face_available() -> bool:
    """MTCNN's weights ship with facenet-pytorch: the face filter runs wherever it is installed."""
    import importlib.util

    return importlib.util.find_spec("facenet_pytorch") is not None


def identities(params: dict[str, Any]) -> dict[str, dict[str, str] | None]:
    """Per filter, the identity of its model (None: not configured, the filter records not_run).
    The occurrence filter uses the embedder alone; the museum filter the embedder and support set."""
    found: dict[str, dict[str, str] | None] = {}
    if face_available():
        from importlib import metadata

        from stages.filter.faces import DISTRIBUTION, MODEL_NAME, weights_sha256

        found["face"] = {"name": MODEL_NAME, "version": metadata.version(DISTRIBUTION),
                         "weights_sha256": weights_sha256()}  # fmt: skip
    else:
        found["face"] = None
    weights = params["megadetector_weights"]
    found["camera_trap"] = {
        "name": "MegaDetector", "version": params["megadetector_version"],
        "weights_sha256": sha256_file(_file(weights, "megadetector_weights")),
    } if weights else None  # fmt: skip
    embedder = embedder_identity(params)
    found["occurrence"] = embedder
    found["museum"] = None
    if embedder and params["support_set"]:
        support = sha256_file(_file(params["support_set"], "support_set"))
        found["museum"] = {**embedder, "support_set_sha256": support}
    return found


def embedder_identity(params: dict[str, Any]) -> dict[str, str] | None:
    """open_clip embedders need weights; an embedder of the user's own ("python:...") may not."""
    spec, weights = params["embedder"], params["embedder_weights"]
    if not weights and not spec.startswith("python:"):
        return None
    sha = sha256_file(_file(weights, "embedder_weights")) if weights else ""
    return {"name": spec, "version": "", "weights_sha256": sha}


@dataclass
class Models:
    """The loaded models a worker needs for one partition (None: that filter does not run)."""

    face: Any = None
    camera_trap: Any = None
    embedder: Any = None
    support: Any = None


def face_settings(params: dict[str, Any], device: str) -> Any:
    from stages.filter.faces import FaceSettings

    return FaceSettings(
        stage_thresholds=tuple(float(t) for t in params["face_stage_thresholds"]),  # type: ignore[arg-type]
        min_face_px=int(params["face_min_px"]), face_threshold=float(params["face_threshold"]),
        rule=params["face_rule"], batch_size=int(params["batch_size"]), device=device,
    )  # fmt: skip


def md_settings(params: dict[str, Any], device: str) -> Any:
    from stages.filter.megadetector import MDSettings

    return MDSettings(
        weights_path=params["megadetector_weights"], version=params["megadetector_version"],
        image_size=int(params["megadetector_image_size"]),
        detection_floor=float(params["megadetector_detection_floor"]),
        count_confidence=float(params["megadetector_count_confidence"]),
        animal_threshold=float(params["animal_threshold"]), batch_size=int(params["batch_size"]),
        device=device,
    )  # fmt: skip


def load_models(params: dict[str, Any], wanted: set[str], device: str) -> Models:
    """The models of the filters in `wanted` that are configured (each module caches per process)."""
    models = Models()
    configured = identities(params)
    if "face" in wanted and configured["face"]:
        from stages.filter.faces import detector

        MODEL_REQUESTS["count"] += 1
        models.face = detector(face_settings(params, device))
    if "camera_trap" in wanted and configured["camera_trap"]:
        from stages.filter.megadetector import detector as md_detector

        MODEL_REQUESTS["count"] += 1
        models.camera_trap = md_detector(md_settings(params, device))
    if wanted & {"museum", "occurrence"} and configured["occurrence"]:
        models.embedder = load_embedder(params, device)
    if "museum" in wanted and configured["museum"]:
        from stages.filter.museum import SupportSet

        models.support = SupportSet.load(Path(params["support_set"]), models.embedder.identity)
    return models


def load_embedder(params: dict[str, Any], device: str) -> Any:
    from stages.filter.embedder import load_embedder as load

    MODEL_REQUESTS["count"] += 1
    embedder = load(params["embedder"], params["embedder_weights"], device, int(params["batch_size"]))
    if embedder is None:
        raise ConfigError(f"filter.embedder = {params['embedder']!r} could not be loaded")
    return embedder
