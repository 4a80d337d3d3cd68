"""The cpu-tiny profile learns the synthetic tree: after a short run on the synthetic shards the
main projection classifies held-out images of the 40 species zero-shot well above chance.

The figures of a full run (300 steps) are in docs/architecture.md ("The train stage (07)");
this is the short version with a weaker bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("open_clip")

from tests.support.train_fixtures import SPECIES, tiny_settings  # noqa: E402
from training.evaluate import evaluate  # noqa: E402
from training.loop import Trainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.support.train_fixtures"]
STEPS = 60
# Zero-shot species top-1 after STEPS steps, in multiples of chance (1 / SPECIES); a full run
# reaches about 38x.
MIN_SPECIES_X_CHANCE = 4


@pytest.mark.timeout(900)  # about a minute on an idle 2-core machine
def test_short_training_learns_species_zero_shot(synth_data: Path, tmp_path: Path):
    settings = tiny_settings(synth_data, max_steps=STEPS, warmup_steps=10, checkpoint_every=STEPS)
    summary = Trainer(settings, tmp_path / "run", log=lambda _text: None).train()
    assert summary["steps"] == STEPS
    eval_set = str(synth_data / "eval" / "eval.parquet")
    results = evaluate(tmp_path / "run", eval_set, ["core"], tmp_path / "eval")
    core = results["families"]["core"]
    chance = 1 / SPECIES
    assert core["species"] == SPECIES and results["step"] == STEPS
    assert core["zero_shot"]["top1"] >= MIN_SPECIES_X_CHANCE * chance, core
    assert core["few_shot"]["1-shot"]["mean"] >= MIN_SPECIES_X_CHANCE * chance, core
    # Every rank is learned beyond chance (its own number of taxa).
    for rank, entry in core["rank_zero_shot"].items():
        assert entry["top1"] > 1 / entry["classes"], (rank, entry)
    assert (tmp_path / "eval" / "results.txt").read_text().startswith("core metrics")
