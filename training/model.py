"""The BioCLIP 2 model: an open_clip CLIP (built by open_clip's factory, from a local weights
file or from scratch) plus a second visual projection for replay samples.

Organism images go through the main projection (the CLIP's own `visual.proj`, which evaluation
and `encode_image` use); replay images (general image-text pairs) through `replay_proj`, which
starts as a copy of the main one. Both share the image trunk, the text tower and the logit scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import ConfigError


def create_clip(model_name: str, pretrained: str = "", precision: str = "fp32") -> tuple[Any, Any, Any]:
    """(open_clip model, eval preprocess, tokenizer); weights only from a local file."""
    import open_clip

    from training.profiles import register_model_configs

    register_model_configs()
    if model_name not in open_clip.list_models():
        raise ConfigError(f"train.model = {model_name!r} is not an open_clip model config")
    if pretrained and not Path(pretrained).is_file():
        raise ConfigError(f"train.pretrained = {pretrained!r}: no such weights file (nothing is downloaded)")
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained or None, precision="fp32"
    )
    return model, preprocess, open_clip.get_tokenizer(model_name)


def train_transform(model_name: str) -> Any:
    """open_clip's training transform (random resized crop) at the model's image size."""
    import open_clip

    model_cfg = open_clip.get_model_config(model_name)
    size = model_cfg["vision_cfg"]["image_size"]
    return open_clip.image_transform(size, is_train=True)


class BioClip(nn.Module):
    """An open_clip CLIP with a replay projection beside its main visual projection."""

    def __init__(self, clip: Any):
        super().__init__()
        visual = getattr(clip, "visual", None)
        if not isinstance(getattr(visual, "proj", None), nn.Parameter):
            raise ConfigError(
                "train.model: the replay projection needs a ViT image tower with a `proj` matrix"
            )
        self.clip = clip
        self.replay_proj = nn.Parameter(visual.proj.detach().clone())

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def pooled_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The image trunk's pooled output, before any projection. open_clip's forward skips the
        projection when `proj` is None; while it is swapped out, a checkpoint requested by a
        preemption signal would lack it, so those signals wait until it is back."""
        from training.signals import signals_deferred

        visual = self.clip.visual
        main = visual.proj
        with signals_deferred():
            visual.proj = None
            try:
                return visual(images)
            finally:
                visual.proj = main

    def forward(
        self, images: torch.Tensor, texts: torch.Tensor, replay_images: torch.Tensor | None = None,
        replay_texts: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Normalised features: organism images through the main projection, replay images
        through the replay projection, all texts through the one text tower."""
        n = images.shape[0]
        with_replay = replay_images is not None and replay_images.shape[0] > 0
        all_images = torch.cat([images, replay_images]) if with_replay else images
        all_texts = torch.cat([texts, replay_texts]) if with_replay else texts
        pooled = self.pooled_image_features(all_images)
        text = self.clip.encode_text(all_texts, normalize=True)
        out = {
            "image": nn.functional.normalize(pooled[:n] @ self.clip.visual.proj, dim=-1),
            "text": text[:n],
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if with_replay:
            out["replay_image"] = nn.functional.normalize(pooled[n:] @ self.replay_proj, dim=-1)
            out["replay_text"] = text[n:]
        return out


def build_model(
    model_name: str, pretrained: str = "", grad_checkpointing: bool = False
) -> tuple[BioClip, Any, Any]:
    """(BioClip, eval preprocess, tokenizer)."""
    clip, preprocess, tokenizer = create_clip(model_name, pretrained)
    if grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return BioClip(clip), preprocess, tokenizer
