"""Human-face filter of stage 04: facenet-pytorch's MTCNN with its shipped weights.

TreeOfLife-200M dropped an image when the mean probability of the face boxes MTCNN found
(thresholds 0.9 / 0.95 / 0.95, min face 20 px) exceeded 0.985 after squashing the image to
720x720. The default rule here keeps the aspect ratio (squashing distorts faces and makes small
ones vanish) and drops when ANY box reaches the threshold: one clear face among doubtful boxes is
still a person. The original's rule stays available as "mean_squashed" to reproduce it.

Scores (box count, max and mean probability) are stored so that `face_drop` can re-apply another
threshold without loading the model. torch and facenet_pytorch are imported only when a detector
is built: every worker imports this module, few of them run the face filter.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from facenet_pytorch import MTCNN

RULES = ("any_box", "mean_squashed")
MODEL_NAME = "facenet-pytorch MTCNN"
DISTRIBUTION = "facenet-pytorch"
WEIGHT_FILES = ("onet.pt", "pnet.pt", "rnet.pt")  # sorted: the order they are hashed in


@dataclass(frozen=True)
class FaceSettings:
    # P-, R- and O-net probability thresholds of MTCNN's three stages (TreeOfLife-200M's values).
    stage_thresholds: tuple[float, float, float] = (0.9, 0.95, 0.95)
    min_face_px: int = 20
    face_threshold: float = 0.985
    rule: str = "any_box"  # or "mean_squashed" (the original's rule)
    squash_px: int = 720  # side of the square the "mean_squashed" rule resizes every image to
    batch_size: int = 8
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"face rule {self.rule!r}: expected one of {RULES}")
        if len(self.stage_thresholds) != 3 or not all(0 <= t <= 1 for t in self.stage_thresholds):
            raise ValueError(f"stage_thresholds {self.stage_thresholds}: expected three values in 0..1")
        if not 0 <= self.face_threshold <= 1:
            raise ValueError(f"face_threshold {self.face_threshold}: expected a value in 0..1")
        for name in ("min_face_px", "squash_px", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: expected >= 1")

    @property
    def model_key(self) -> tuple[Any, ...]:
        """The settings the loaded model depends on (the others only steer `score`)."""
        return (tuple(float(t) for t in self.stage_thresholds), self.min_face_px, self.device)


@dataclass(frozen=True)
class FaceScores:
    face_count: int  # boxes MTCNN kept above its stage thresholds
    face_prob_max: float | None  # None when no box
    face_prob_mean: float | None

    @classmethod
    def from_probs(cls, probs: list[float]) -> FaceScores:
        if not probs:
            return cls(0, None, None)
        return cls(len(probs), max(probs), sum(probs) / len(probs))


def face_drop(scores: FaceScores, settings: FaceSettings) -> bool:
    """The decision from stored scores alone, so a new threshold needs no model."""
    if settings.rule == "any_box":
        return scores.face_prob_max is not None and scores.face_prob_max >= settings.face_threshold
    return scores.face_prob_mean is not None and scores.face_prob_mean > settings.face_threshold


def weights_dir() -> Path:
    """The folder of the MTCNN weights shipped inside the facenet_pytorch package. Found without
    importing it: the import pulls in torch (seconds), and the driver only hashes the files."""
    import importlib.util

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'facenet_pytorch'", name="facenet_pytorch")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "data"


def weights_sha256() -> str:
    """sha256 of the three weight files concatenated in name order
    (`cat onet.pt pnet.pt rnet.pt | sha256sum` in that folder)."""
    digest = hashlib.sha256()
    folder = weights_dir()
    for name in WEIGHT_FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _probs_of(row: Any) -> list[float]:
    """Box probabilities of one image from `detect()`'s object array: [None] when no face."""
    if row is None:
        return []
    return [float(p) for p in list(row) if p is not None]


class FaceDetector:
    """MTCNN loaded once; scores lists of RGB images."""

    def __init__(self, settings: FaceSettings | None = None):
        from facenet_pytorch import MTCNN

        self.settings = settings or FaceSettings()
        # keep_all: every box counts; select_largest=False: no reordering we would not use.
        self.model: MTCNN = MTCNN(
            keep_all=True,
            select_largest=False,
            thresholds=list(self.settings.stage_thresholds),
            min_face_size=self.settings.min_face_px,
            device=self.settings.device,
        )
        self.model.eval()
        self._identity: dict[str, str] | None = None

    @property
    def identity(self) -> dict[str, str]:
        if self._identity is None:
            self._identity = {
                "name": MODEL_NAME,
                "version": metadata.version(DISTRIBUTION),
                "weights_sha256": weights_sha256(),
            }
        return dict(self._identity)

    def with_settings(self, settings: FaceSettings) -> FaceDetector:
        """A detector sharing this one's model under other non-model settings (rule, batch)."""
        if settings.model_key != self.settings.model_key:
            raise ValueError("settings differ in what the loaded model depends on")
        other = copy.copy(self)
        other.settings = settings
        return other

    def score(self, images: list[Image.Image]) -> list[FaceScores]:
        """FaceScores per image, in input order. Batched `detect()` needs equal sizes, so images
        are grouped by size and each group is cut into batches of `batch_size`."""
        prepared = [self._prepare(im) for im in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, im in enumerate(prepared):
            groups[im.size].append(index)
        results: list[FaceScores | None] = [None] * len(prepared)
        step = self.settings.batch_size
        for indices in groups.values():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                for index, probs in zip(chunk, self._detect([prepared[i] for i in chunk]), strict=True):
                    results[index] = FaceScores.from_probs(probs)
        return [r for r in results if r is not None]

    def _prepare(self, im: Image.Image) -> Image.Image:
        im = im if im.mode == "RGB" else im.convert("RGB")
        if self.settings.rule == "mean_squashed":
            side = self.settings.squash_px
            # The original's squash: aspect ratio ignored (Pillow's default bicubic filter).
            im = im.resize((side, side), Image.Resampling.BICUBIC)
        return im

    def _detect(self, batch: list[Image.Image]) -> list[list[float]]:
        _, probs = self.model.detect(batch)
        return [_probs_of(row) for row in probs]


_CACHE: dict[tuple[Any, ...], FaceDetector] = {}
_CACHE_LOCK = threading.Lock()


def detector(settings: FaceSettings) -> FaceDetector:
    """This process's detector for `settings`: the model is loaded once per model key, so the
    tasks a worker runs share it."""
    with _CACHE_LOCK:
        cached = _CACHE.get(settings.model_key)
        if cached is None:
            cached = _CACHE[settings.model_key] = FaceDetector(settings)
    return cached if cached.settings == settings else cached.with_settings(settings)
