"""Synthetic training data for stage 07's tests (training/synth.py) and a helper to train a few
steps of the cpu-tiny profile in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Small enough to write in about a second, big enough for every rank to have several taxa.
SPECIES = 40
IMAGES_PER_SPECIES = 40
EVAL_PER_SPECIES = 10
REPLAY = 256


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SPECIES, IMAGES_PER_SPECIES, EVAL_PER_SPECIES, REPLAY, seed=0)
    return out


def tiny_settings(data: Path, **overrides: Any):
    """cpu-tiny settings on the synthetic shards (and replay pairs), with overrides."""
    from training.profiles import resolve

    train = {"profile": "cpu-tiny", **overrides}
    return resolve(train, str(data / "shards"), str(data / "replay"))
