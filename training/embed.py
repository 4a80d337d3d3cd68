"""Embeddings with the main projection: images and texts -> L2-normalised float32 arrays."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

BATCH = 128


def _batches(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_images(model: Any, preprocess: Any, images: Iterable[Any], batch_size: int = BATCH,
                  device: str = "cpu") -> np.ndarray:  # fmt: skip
    """PIL images -> (n, d) float32, L2-normalised, through the model's main visual projection."""
    import torch

    out = []
    with torch.inference_mode():
        for chunk in _batches(images, batch_size):
            pixels = torch.stack([preprocess(im.convert("RGB")) for im in chunk]).to(device)
            out.append(model.encode_image(pixels, normalize=True).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, _dim(model)), np.float32)


def encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = BATCH,
                 device: str = "cpu") -> np.ndarray:  # fmt: skip
    """Texts -> (m, d) float32, L2-normalised."""
    import torch

    out = []
    with torch.inference_mode():
        for chunk in _batches(texts, batch_size):
            out.append(model.encode_text(tokenizer(chunk).to(device), normalize=True).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, _dim(model)), np.float32)


def _dim(model: Any) -> int:
    return int(model.visual.output_dim)
