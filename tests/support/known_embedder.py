"""An Embedder whose answers are known in advance, for tests of what consumes embeddings.

`KnownEmbedder` embeds an image as its mean RGB colour, L2-normalised (d = 3): a solid red image
is (1, 0, 0), a solid (255, 255, 0) image is (1, 1, 0) / sqrt(2), and the cosine similarity of
two solid images is the cosine of the angle between their colours. Every grey, black included
(whose mean colour has no direction), embeds to (1, 1, 1) / sqrt(3). No model, no weights, no
torch: tests of K-means support sets, nearest centres and occurrence similarities can state their
expected numbers exactly.

Loadable like a user's embedder: `load_embedder("python:tests.support.known_embedder:KnownEmbedder",
weights_path, device, batch_size)` constructs it with (weights_path=..., device=...); both are
accepted and ignored, except that the weights path (any text) goes into the identity, so tests
can make two "different" embedders.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SPEC = "python:tests.support.known_embedder:KnownEmbedder"
GREY = np.full(3, 1 / np.sqrt(3), dtype=np.float32)


class KnownEmbedder:
    def __init__(self, weights_path: str = "", device: str = "cpu") -> None:
        self.device = device
        self.identity: dict[str, str] = {
            "name": "known mean-rgb",
            "version": "1",
            "weights_sha256": str(weights_path),
        }

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([mean_rgb(image) for image in images]) if images else np.zeros((0, 3), np.float32)


def mean_rgb(image: Image.Image) -> np.ndarray:
    """The normalised mean colour of an image, float32 (3,)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    mean = pixels.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        return GREY.copy()
    return (mean / norm).astype(np.float32)


def solid(rgb: tuple[int, int, int], size: int = 8) -> Image.Image:
    """A solid-colour RGB image: its embedding is the normalised `rgb`."""
    return Image.new("RGB", (size, size), rgb)


def unit(rgb: tuple[float, float, float]) -> np.ndarray:
    """What KnownEmbedder answers for a solid image of colour `rgb` (float32)."""
    vector = np.asarray(rgb, dtype=np.float64)
    return (vector / np.linalg.norm(vector)).astype(np.float32)
