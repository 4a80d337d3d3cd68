"""BioCLIP 2's replay path: the replay projection learns only from replay samples, the main one
only from organism samples; and every batch is captioned with one caption type."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("open_clip")
import torch  # noqa: E402

from training.data import CAPTION_COLUMN, caption_type_for_step, captions_for_step  # noqa: E402
from training.loss import ReplayClipLoss  # noqa: E402
from training.model import build_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.support.train_fixtures"]


def _grads(model, images, texts, replay_images, replay_texts, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    losses = ReplayClipLoss()(model(images, texts, replay_images, replay_texts))
    losses[part].backward()
    main, replay = model.clip.visual.proj, model.replay_proj  # no gradient at all reads as zeros
    return (torch.zeros_like(main) if main.grad is None else main.grad.clone(),
            torch.zeros_like(replay) if replay.grad is None else replay.grad.clone())  # fmt: skip


def test_each_projection_learns_only_from_its_own_samples():
    torch.manual_seed(0)
    model, _, tokenizer = build_model("tolpipe-tiny-vit")
    assert torch.equal(model.replay_proj, model.clip.visual.proj)  # starts as a copy
    images, replay_images = torch.randn(6, 3, 64, 64), torch.randn(4, 3, 64, 64)
    texts = tokenizer([f"a photo of species {i}." for i in range(6)])
    replay_texts = tokenizer([f"a picture of thing {i}" for i in range(4)])

    main, replay = _grads(model, images, texts, replay_images, replay_texts, "organism")
    assert main.abs().sum() > 0 and torch.count_nonzero(replay) == 0
    main, replay = _grads(model, images, texts, replay_images, replay_texts, "replay")
    assert replay.abs().sum() > 0 and torch.count_nonzero(main) == 0
    # The total is the sum of both losses, each projection getting its own part.
    main_total, replay_total = _grads(model, images, texts, replay_images, replay_texts, "total")
    main_only, _ = _grads(model, images, texts, replay_images, replay_texts, "organism")
    _, replay_only = _grads(model, images, texts, replay_images, replay_texts, "replay")
    assert torch.allclose(main_total, main_only, atol=1e-6)
    assert torch.allclose(replay_total, replay_only, atol=1e-6)


def test_one_caption_type_per_batch_drawn_by_seed_and_step():
    types = ("sci", "com", "taxon", "sci_com", "taxon_com")
    columns = [[f"{kind} caption {i}" for i in range(8)] for kind in CAPTION_COLUMN]
    drawn = [caption_type_for_step(types, 0, step) for step in range(200)]
    assert set(drawn) == set(types)  # every configured type is used
    assert drawn == [caption_type_for_step(types, 0, step) for step in range(200)]  # same on resume
    assert drawn != [caption_type_for_step(types, 1, step) for step in range(200)]  # the seed matters
    for step in range(20):
        kind, texts = captions_for_step(columns, types, 0, step)
        assert kind == drawn[step]
        assert texts == [f"{kind} caption {i}" for i in range(8)]  # the whole batch, one type


def test_training_batches_carry_one_caption_type_each(synth_data: Path, tmp_path: Path):
    """A few real steps: the recorded caption type of each step is the seeded draw, and the
    replay loss is computed from replay samples."""
    import json

    from tests.support.train_fixtures import tiny_settings
    from training.loop import Trainer

    settings = tiny_settings(synth_data, max_steps=3, batch_size=16, replay_batch_size=4)
    Trainer(settings, tmp_path, log=lambda _text: None).train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["caption_type"] for r in rows] == [caption_type_for_step(settings.caption_types, 0, s)
                                                for s in range(3)]  # fmt: skip
    assert all(r["replay_loss"] is not None and r["replay_loss"] > 0 for r in rows)


def test_a_signal_inside_a_deferred_block_is_handled_when_it_ends():
    import os
    import signal

    from training import signals

    seen: list[tuple[int, int]] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append((signum, depth())))
    depth = lambda: signals._depth  # noqa: E731
    try:
        signals.install()
        with signals.signals_deferred(), signals.signals_deferred():
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert seen == []  # held back, even though the handler could have run here
        assert seen == [(signal.SIGUSR2, 0)]  # once, after the outermost block
    finally:
        signal.signal(signal.SIGUSR2, previous)
        signals._original.pop(signal.SIGUSR2, None)
