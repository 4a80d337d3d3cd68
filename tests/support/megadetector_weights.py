"""Local MegaDetector v6 weight files for tests: the real MDv6 architecture, untrained.

No package ships MegaDetector weights and nothing may be downloaded, so tests build the
architecture of MDV6-yolov9-c (ultralytics' yolov9c with three classes) and save it the way MDv6
files are saved: an ultralytics checkpoint, a half-precision DetectionModel under "model" and the
training arguments under "train_args". `YOLO(path)` and the filter load it like a released file.

Untrained, every box has about the same low confidence (0.004). `favour` gives one class a high
confidence everywhere (by its classification bias), so a test sees that class counted through the
whole path with the default thresholds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MD_NAMES: dict[int, str] = {0: "animal", 1: "person", 2: "vehicle"}
MD_ARCHITECTURE = "yolov9c.yaml"  # MDV6-yolov9-c
# A small ultralytics architecture, for checkpoints whose content, not size, matters (wrong names).
SMALL_ARCHITECTURE = "yolov9t.yaml"

_BUILT: dict[tuple[Any, ...], Path] = {}


def build_weights(
    path: Path,
    names: dict[int, str] = MD_NAMES,
    architecture: str = MD_ARCHITECTURE,
    favour: int | None = None,
) -> Path:
    """Write an untrained checkpoint (deterministic: seeded) to `path` and return it."""
    os.environ["YOLO_OFFLINE"] = "1"  # read when ultralytics is first imported
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(architecture, nc=len(names), verbose=False)
    model.names = dict(names)
    if favour is not None:
        _favour_class(model, favour)
    torch.save({"model": model.half(), "train_args": {"imgsz": 1280, "task": "detect"}}, path)
    return path


def _favour_class(model: Any, class_id: int) -> None:
    """Set the last classification bias of every detection scale: sigmoid(6) = 0.998 for
    `class_id`, sigmoid(-10) for the others."""
    import torch

    head = model.model[-1]
    with torch.no_grad():
        for branch in head.cv3:
            bias = branch[-1].bias
            bias.fill_(-10.0)
            bias[class_id] = 6.0


def cached_weights(tmp_path_factory: Any, **options: Any) -> Path:
    """`build_weights` once per test session and options (pass pytest's tmp_path_factory)."""
    key = tuple(sorted((k, repr(v)) for k, v in options.items()))
    if key not in _BUILT or not _BUILT[key].is_file():
        folder = tmp_path_factory.mktemp("megadetector")
        _BUILT[key] = build_weights(folder / "md_v6_untrained.pt", **options)
    return _BUILT[key]
