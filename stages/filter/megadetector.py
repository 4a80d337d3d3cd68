"""Camera-trap empty frames: MegaDetector v6 scores per image, and the keep/drop rule on them.

MegaDetector v6 weight files are ultralytics checkpoints; they are loaded with ultralytics
directly, with PytorchWildlife's class map (0 animal, 1 person, 2 vehicle), inference size (1280)
and preprocessing (ultralytics' letterbox), not through PytorchWildlife itself: see
docs/filters-megadetector.md for why. torch and ultralytics are imported only when a model is
loaded, so every worker can import this module cheaply.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.digest import sha256_file

if TYPE_CHECKING:
    from PIL import Image

# PytorchWildlife's MegaDetectorV6.CLASS_NAMES: the class ids every MDv6 file predicts.
CLASS_NAMES: dict[int, str] = {0: "animal", 1: "person", 2: "vehicle"}
ANIMAL, PERSON, VEHICLE = 0, 1, 2


class MegaDetectorError(ValueError):
    """A weights file that cannot serve as MegaDetector v6 (the message names the file)."""


@dataclass(frozen=True)
class MDSettings:
    weights_path: str = ""  # local MDv6 .pt file; empty: the filter is not configured
    version: str = "MDV6-yolov9-c"  # recorded in the identity only; the original used MDV6-yolov10-e
    image_size: int = 1280  # MDv6 is trained at 1280 px (PytorchWildlife's IMAGE_SIZE)
    detection_floor: float = 0.1  # boxes below it are not reported at all
    count_confidence: float = 0.2  # boxes at or above it are counted in md_*_count
    animal_threshold: float = 0.2  # a frame is kept when an animal box reaches it
    batch_size: int = 8
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("detection_floor", "count_confidence", "animal_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MegaDetector {name} must be in 0..1, got {value}")
        # Stored scores only know boxes above the floor: a count or decision below it would be
        # computed from boxes that were never kept.
        for name in ("count_confidence", "animal_threshold"):
            if getattr(self, name) < self.detection_floor:
                raise ValueError(
                    f"MegaDetector {name} ({getattr(self, name)}) is below detection_floor "
                    f"({self.detection_floor}): boxes under the floor are not reported"
                )
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"MegaDetector image_size must be a multiple of 32, got {self.image_size}")
        if self.batch_size < 1:
            raise ValueError(f"MegaDetector batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class MDScores:
    md_animal_count: int  # animal boxes with confidence >= count_confidence
    md_animal_conf_max: float | None  # best reported animal box; None: no animal box above the floor
    md_person_count: int
    md_vehicle_count: int


def summarize(detections: Sequence[tuple[int, float]], settings: MDSettings) -> MDScores:
    """Scores of one image from its boxes as (class id, confidence) pairs; boxes below the floor
    are ignored, as the detector never reports them."""
    by_class: dict[int, list[float]] = {ANIMAL: [], PERSON: [], VEHICLE: []}
    for class_id, confidence in detections:
        if class_id not in by_class:
            raise ValueError(f"MegaDetector class id {class_id} is not one of {sorted(CLASS_NAMES)}")
        if confidence >= settings.detection_floor:
            by_class[class_id].append(float(confidence))

    def count(class_id: int) -> int:
        return sum(c >= settings.count_confidence for c in by_class[class_id])

    return MDScores(
        md_animal_count=count(ANIMAL),
        md_animal_conf_max=max(by_class[ANIMAL], default=None),
        md_person_count=count(PERSON),
        md_vehicle_count=count(VEHICLE),
    )


def empty_frame(scores: MDScores, settings: MDSettings) -> bool:
    """True when no animal box reaches animal_threshold: decided from stored scores alone, so a
    new threshold needs no model (persons and vehicles never keep a frame)."""
    best = scores.md_animal_conf_max
    return best is None or best < settings.animal_threshold


def size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of the images grouped into batches of one size each, in order of first appearance.

    ultralytics pads a batch of equal sizes to the nearest stride multiple but a mixed batch to a
    full square, which changes the boxes: one size per batch makes an image's scores independent
    of its neighbours, and equal to scoring it alone (as PytorchWildlife's single-image call does).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return [group[i : i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


class MegaDetector:
    """A MegaDetector v6 weights file loaded once, scoring lists of images in batches."""

    def __init__(self, settings: MDSettings) -> None:
        self.settings = settings
        self._key = _file_key(settings.weights_path)
        self._loaded = _load(*self._key, settings.device)  # here: a bad file fails at once

    @property
    def identity(self) -> dict[str, str]:
        return {
            "name": "MegaDetector",
            "version": self.settings.version,
            "weights_sha256": self._loaded.sha256,
            "loader": self._loaded.loader,
        }

    def score(self, images: Sequence[Image.Image]) -> list[MDScores]:
        """One MDScores per image, in order."""
        found: list[MDScores | None] = [None] * len(images)
        for batch in size_batches([im.size for im in images], self.settings.batch_size):
            for index, detections in zip(batch, self._detect([images[i] for i in batch]), strict=True):
                found[index] = summarize(detections, self.settings)
        return [s for s in found if s is not None]

    def _detect(self, images: list[Image.Image]) -> list[list[tuple[int, float]]]:
        import torch
        from ultralytics.utils import torch_utils

        s = self.settings

        # ultralytics sets torch's CPU threads to its NUM_THREADS, min(8, cores - 1), when it picks
        # the device, for the whole process: keep the count the worker chose instead (1 on a
        # 2-core machine halves the speed; the other filters share the count).
        threads = torch.get_num_threads()
        torch_utils.NUM_THREADS = threads
        try:
            results = _load(*self._key, s.device).model.predict(
                source=images, imgsz=s.image_size, conf=s.detection_floor, device=s.device, verbose=False
            )  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        return [_pairs(r.boxes.cls.tolist(), r.boxes.conf.tolist()) for r in results]


def _pairs(classes: list[float], confidences: list[float]) -> list[tuple[int, float]]:
    return [(int(k), float(c)) for k, c in zip(classes, confidences, strict=True)]


@lru_cache(maxsize=8)
def detector(settings: MDSettings) -> MegaDetector:
    """The MegaDetector for `settings`, built once per process (the model itself is shared by all
    settings naming the same unchanged file and device)."""
    return MegaDetector(settings)


@dataclass
class _Loaded:
    model: Any  # ultralytics.YOLO
    sha256: str
    loader: str


def _file_key(weights_path: str) -> tuple[str, int, int]:
    """The weights file as (absolute path, size, mtime): a replaced file is loaded again."""
    if not weights_path:
        raise MegaDetectorError("MegaDetector weights_path is not set (filter.megadetector_weights)")
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"MegaDetector weights not found: {path}")
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


_LOAD_LOCK = threading.Lock()
_PER_THREAD = threading.local()
MODELS_PER_THREAD = 4  # weights files (or devices) a thread keeps loaded at once


def _load(path: str, size: int, mtime_ns: int, device: str) -> _Loaded:
    """This thread's copy of the model. A YOLO object keeps one predictor with per-call state, so
    the threads of one process (a threaded local cluster) each load their own rather than share
    one under a lock, which would score one batch at a time on all the cores."""
    models: dict[tuple[str, int, int, str], _Loaded] = _PER_THREAD.__dict__.setdefault("models", {})
    key = (path, size, mtime_ns, device)
    if key not in models:
        if len(models) >= MODELS_PER_THREAD:
            models.pop(next(iter(models)))  # the oldest
        with _LOAD_LOCK:  # ultralytics' loading touches process-wide state: one load at a time
            models[key] = _load_file(*key)
    return models[key]


@lru_cache(maxsize=4)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def _load_file(path: str, size: int, mtime_ns: int, device: str) -> _Loaded:
    if not path.endswith(".pt"):
        raise MegaDetectorError(f"{path} is not a MegaDetector v6 file: expected an ultralytics .pt file")
    yolo = _import_yolo()
    try:
        model = yolo.YOLO(path, task="detect")
    except Exception as exc:  # ultralytics raises many kinds for a foreign file: one clear line instead
        raise MegaDetectorError(
            f"{path} is not an ultralytics detection checkpoint "
            f"({type(exc).__name__}: {_first_line(exc).replace(path, 'the file')})"
        ) from exc
    _check_model(path, model)
    import ultralytics

    return _Loaded(model, _file_sha256(path, size, mtime_ns), f"ultralytics {ultralytics.__version__}")


def _check_model(path: str, model: Any) -> None:
    from ultralytics.nn.tasks import DetectionModel

    # Exactly a YOLO detection model: RT-DETR files (MDV6-rtdetr-c) need another predictor, and
    # segmentation, pose or open-vocabulary models are subclasses that would pass an isinstance.
    network = model.model
    if type(network) is not DetectionModel:
        raise MegaDetectorError(
            f"{path} holds a {type(network).__name__} ({model.task}), not a YOLO DetectionModel: "
            f"supported are the YOLO MegaDetector v6 files (MDV6-yolov9-c/e, MDV6-yolov10-c/e)"
        )
    names = {int(k): str(v).strip().lower() for k, v in dict(model.names).items()}
    if names != CLASS_NAMES:
        shown = dict(list(names.items())[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise MegaDetectorError(
            f"{path} is not a MegaDetector v6 file: its classes are {shown}{more}, expected {CLASS_NAMES}"
        )


def undo_ultralytics_patches() -> None:
    """ultralytics' import replaces PIL.Image.open (with a fallback that imports pi_heif, not
    installed, on any unidentified image) and torch.save for the whole process: the download
    stage in the same worker would then fail undecodable bodies as internal errors. Put both
    back (a no-op when ultralytics was never imported)."""
    import sys

    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is None:
        return
    from PIL import Image

    Image.open = patches._image_open
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(patches, "_torch_save"):
        torch.save = patches._torch_save


def _import_yolo() -> Any:
    """ultralytics with every network path closed; the flags are read when it is first imported.

    Offline, ultralytics sends no usage events and checks no updates; with auto-install off, a
    checkpoint naming a module that is not installed fails instead of running pip.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    omp = os.environ.get("OMP_NUM_THREADS")
    import ultralytics
    import ultralytics.utils  # noqa: F401  (where the patches are applied)

    undo_ultralytics_patches()

    # Its import sets OMP_NUM_THREADS=1 (for its training) when unset: processes this one starts
    # later (dask workers) must not inherit that.
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    from ultralytics.utils import checks

    # Imported earlier by other code, ultralytics computed these already: close them as well.
    checks.ONLINE = checks.AUTOINSTALL = False
    try:
        from ultralytics.utils.events import events

        events.enabled = False
    except ImportError:  # releases without usage events
        pass
    return ultralytics


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without ultralytics' "ERROR ❌️" prefix."""
    lines = str(exc).strip().splitlines() or ["no message"]
    return re.sub(r"^ERROR\s+\S+\s+", "", lines[0])
