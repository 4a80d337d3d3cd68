"""Checkpoints: a run stopped after a checkpoint and started again continues at the same step
with the same data position (same samples, same caption types) as a run never stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("open_clip")

from tests.support.train_fixtures import tiny_settings  # noqa: E402
from training import checkpoint as ckpt  # noqa: E402
from training.loop import Trainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.support.train_fixtures"]


def _steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_step_count_and_data_position(synth_data: Path, tmp_path: Path):
    quiet = {"log": lambda _text: None}
    options = {"batch_size": 16, "replay_batch_size": 4, "checkpoint_every": 2}
    whole, split = tmp_path / "whole", tmp_path / "split"
    Trainer(tiny_settings(synth_data, max_steps=6, **options), whole, **quiet).train()

    Trainer(tiny_settings(synth_data, max_steps=3, **options), split, **quiet).train()
    assert ckpt.latest(split).name == "step-00000003.pt"  # every 2 steps and at the end
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == [
        "step-00000002.pt",
        "step-00000003.pt",
    ]
    resumed = Trainer(tiny_settings(synth_data, max_steps=6, **options), split, **quiet)
    assert (resumed.step, resumed.position.batch, resumed.position.replay_batches) == (3, 3, 3)
    summary = resumed.train()
    assert summary["resumed_from"].endswith("step-00000003.pt") and summary["steps"] == 6

    first, second = _steps(whole), _steps(split)
    assert [r["step"] for r in second] == [1, 2, 3, 4, 5, 6]
    # The same samples lead each batch and the same caption types are drawn, before and after.
    assert [r["first_key"] for r in second] == [r["first_key"] for r in first]
    assert [r["caption_type"] for r in second] == [r["caption_type"] for r in first]
    state = ckpt.load(ckpt.latest(split))
    assert state["position"] == {"epoch": 0, "batch": 6, "replay_batches": 6}
    assert {"python", "numpy", "torch"} <= set(state["rng"]) and state["optimizer"]["state"]
    assert len(state["taxa"]) > 1 and all(len(t) == 7 for t in state["taxa"])


def test_inference_model_loads_from_a_run_folder(synth_data: Path, tmp_path: Path):
    import numpy as np

    from training.checkpoint import load_for_inference
    from training.embed import encode_texts

    Trainer(tiny_settings(synth_data, max_steps=1, batch_size=8, replay_batch_size=0), tmp_path,
            log=lambda _text: None).train()  # fmt: skip
    loaded = load_for_inference(tmp_path)
    assert loaded.meta["step"] == 1 and loaded.meta["profile"] == "cpu-tiny"
    assert not loaded.model.training
    texts = encode_texts(loaded.model, loaded.tokenizer, ["a photo of a thing.", "another"])
    assert texts.shape == (2, 128) and texts.dtype == np.float32
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
