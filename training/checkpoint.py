"""Checkpoints: written atomically every N steps and at the end; resume from the latest; load one
for inference.

A checkpoint `<run>/checkpoints/step-NNNNNNNN.pt` holds the model (the CLIP and the replay
projection), the optimiser, the schedule position, the data position (epoch, batches taken in
it, replay batches taken), the RNG states (python, numpy, torch, CUDA), the effective settings
and the taxa seen in training. It is written to a temp name, fsynced and renamed, so a kill
leaves either the old set or a complete new file; the newest complete one is the one resumed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.errors import TolpipeError

CHECKPOINT_DIR = "checkpoints"
NAME = re.compile(r"^step-(\d{8})\.pt$")
# Checkpoints kept per run (the newest ones); older ones are removed after a new one is written.
KEEP = 2


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def latest(run_dir: Path) -> Path | None:
    folder = run_dir / CHECKPOINT_DIR
    found = sorted((int(m[1]), p) for p in folder.glob("step-*.pt") if (m := NAME.match(p.name)))
    return found[-1][1] if found else None


def rng_states() -> dict[str, Any]:
    import numpy as np
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` as the step's checkpoint (temp name, fsync, rename); prune older ones."""
    import torch

    dest = checkpoint_path(run_dir, step)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = atomic.temp_name(dest)
    torch.save(state, temp)
    atomic.publish(temp, dest)
    kept = sorted(p for p in dest.parent.glob("step-*.pt") if NAME.match(p.name))
    for old in kept[:-KEEP]:
        old.unlink(missing_ok=True)
    return dest


def load(path: Path, device: str = "cpu") -> dict[str, Any]:
    import torch

    if not Path(path).is_file():
        raise TolpipeError(f"{path}: no such checkpoint")
    # Our own files: RNG states and settings need full unpickling.
    return torch.load(path, map_location=device, weights_only=False)


@dataclass
class InferenceModel:
    """A trained model ready to embed: main projection only."""

    model: Any  # open_clip CLIP in eval mode
    preprocess: Any
    tokenizer: Any
    taxa: list[tuple[str, ...]]  # 7-rank lineages seen in training
    meta: dict[str, Any] = field(default_factory=dict)  # profile, step, config


def load_for_inference(path: Path, device: str = "cpu") -> InferenceModel:
    """Load a training checkpoint (a file, or a run folder: its latest) for evaluation."""
    from training.model import build_model

    path = Path(path)
    if path.is_dir():
        found = latest(path.parent if path.name == CHECKPOINT_DIR else path)
        if found is None:
            raise TolpipeError(f"{path}: no checkpoint in this folder (expected {CHECKPOINT_DIR}/step-*.pt)")
        path = found
    state = load(path, device)
    settings = state["settings"]
    bioclip, preprocess, tokenizer = build_model(settings["model"], "")
    bioclip.load_state_dict(state["model"])
    clip = bioclip.clip.to(device).eval()
    meta = {"profile": settings["profile"], "step": state["step"], "config": settings, "path": str(path)}
    taxa = [tuple(t) for t in state.get("taxa", [])]
    return InferenceModel(clip, preprocess, tokenizer, taxa, meta)
