"""Image embedders for the filters, behind one small protocol.

An embedder maps images to L2-normalised float32 vectors and says, in `identity`, what those
vectors mean (model, code version, sha256 of the weights): anything built from embeddings (a
museum support set, stored similarities) records it, so vectors of two different models are never
compared. Two kinds are configured by a spec string:

- `open_clip:MODEL_NAME`: an open_clip architecture with weights from a LOCAL file (.pt, .pth,
  .bin or .safetensors). Without a weights path `load_embedder` returns None and the filter
  records that it did not run; it never falls back to a hub download or to another model.
- `python:package.module:ClassName`: a user-supplied class, constructed with
  (weights_path=..., device=...), that has `identity` and `embed` like `Embedder`.

torch and open_clip are imported only when an open_clip embedder is built, so workers that never
embed do not pay for them.
"""

from __future__ import annotations

import importlib
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from pipeline.digest import sha256_file
from pipeline.errors import ConfigError, TolpipeError

if TYPE_CHECKING:
    from PIL import Image

OPEN_CLIP = "open_clip:"
PYTHON = "python:"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@runtime_checkable
class Embedder(Protocol):
    """What the filters need from an image model."""

    # name, version, weights_sha256: whatever identifies what the vectors mean
    identity: dict[str, str]

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """float32 array (len(images), d), each row L2-normalised."""
        ...


def describe(identity: dict[str, str]) -> str:
    """One-line name of an embedder for messages: name, version and a short weights digest."""
    parts = [identity.get("name", "?"), identity.get("version", "")]
    sha = identity.get("weights_sha256", "")
    if sha:
        parts.append(f"weights {sha[:12]}")
    return " ".join(p for p in parts if p)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpenClipEmbedder:
    """The image tower of an open_clip model with local weights; eval mode, the model's own
    evaluation preprocessing, batches of `batch_size` images."""

    def __init__(self, model_name: str, weights_path: str, device: str = "cpu", batch_size: int = 32):
        if batch_size < 1:
            raise ConfigError(f"embedder batch size must be >= 1, got {batch_size}")
        path = _weights_file(weights_path)
        if ":" in model_name:  # hf-hub:..., local-dir:...: schemas that load from elsewhere
            raise ConfigError(
                f"open_clip model {model_name!r}: give a built-in model name (see open_clip.list_models())"
            )
        import open_clip
        import torch

        if open_clip.get_model_config(model_name) is None:
            raise ConfigError(f"open_clip has no model {model_name!r} (see open_clip.list_models())")
        sha256 = sha256_file(path)
        try:
            # An absolute path: open_clip tries `pretrained` as a hub tag first, and a path with a
            # slash can never be one.
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(path), device=device
            )
        except Exception as exc:  # torch and open_clip raise RuntimeError, UnpicklingError, KeyError...
            raise ConfigError(
                f"{path}: does not load as weights of open_clip {model_name} (weights of another "
                f"architecture, or not a checkpoint): {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
        model.eval()
        self._torch = torch
        self._model = model
        self._preprocess = preprocess
        self.device = device
        self.batch_size = batch_size
        self.dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        self.identity: dict[str, str] = {
            "name": f"open_clip {model_name}",
            "version": open_clip.__version__,
            "weights_sha256": sha256,
        }

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        torch = self._torch
        chunks = [np.zeros((0, self.dim), np.float32)]
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                batch = [self._preprocess(image.convert("RGB")) for image in chunk]
                features = self._model.encode_image(torch.stack(batch).to(self.device)).float()
                features = torch.nn.functional.normalize(features, dim=-1)
                chunks.append(features.cpu().numpy().astype(np.float32, copy=False))
        return np.concatenate(chunks, axis=0)


def _weights_file(weights_path: str) -> Path:
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{weights_path}: embedder weights file not found (a local file is required)")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(f"{weights_path}: embedder weights must be a {', '.join(WEIGHT_SUFFIXES)} file")
    return path


# One embedder per process and configuration: a dask worker loads the model once, however many
# partitions it runs. The key includes the weights file's size and mtime, so a replaced file is
# loaded again in a long-lived worker.
_CACHE: dict[tuple[Any, ...], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def load_embedder(spec: str, weights_path: str, device: str, batch_size: int) -> Embedder | None:
    """The embedder a spec names, loaded once per process; None for open_clip without weights."""
    if spec.startswith(OPEN_CLIP):
        if not weights_path:
            return None
        model_name = spec[len(OPEN_CLIP) :]
        if not model_name:
            raise ConfigError(f"embedder {spec!r}: expected open_clip:MODEL_NAME")
        path = _weights_file(weights_path)
        stat = path.stat()
        key: tuple[Any, ...] = (spec, str(path), stat.st_size, stat.st_mtime_ns, device, batch_size)
        return _cached(key, lambda: OpenClipEmbedder(model_name, str(path), device, batch_size))
    if spec.startswith(PYTHON):
        key = (spec, weights_path, device)
        return _cached(key, lambda: _python_embedder(spec, weights_path, device))
    raise ConfigError(
        f"embedder {spec!r}: expected 'open_clip:MODEL_NAME' or 'python:package.module:ClassName'"
    )


def clear_cache() -> None:
    """Forget every loaded embedder (tests; or to free a GPU)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _cached(key: tuple[Any, ...], build: Any) -> Embedder:
    # One lock for all: threads of one worker wait for the first load instead of each loading.
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def _python_embedder(spec: str, weights_path: str, device: str) -> Embedder:
    module_name, _, class_name = spec[len(PYTHON) :].partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"embedder {spec!r}: expected python:package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"embedder {spec!r}: cannot import {module_name} ({_one_line(exc)})") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"embedder {spec!r}: {module_name} has no {class_name}")
    try:
        embedder = cls(weights_path=weights_path, device=device)
    except TolpipeError:
        raise
    except Exception as exc:  # the user's code: say whose constructor failed, on one line
        raise ConfigError(
            f"embedder {spec!r}: {class_name}(weights_path=..., device=...) failed: {_one_line(exc)}"
        ) from exc
    identity = getattr(embedder, "identity", None)
    if not isinstance(identity, dict) or not callable(getattr(embedder, "embed", None)):
        raise ConfigError(f"embedder {spec!r}: {class_name} needs an `identity` dict and an `embed` method")
    return embedder
