"""BioCLIP 2's loss: CLIP loss of the organism samples (main projection) plus CLIP loss of the
replay samples (replay projection), with the shared logit scale. Both are open_clip's ClipLoss,
with local loss and gather-with-grad under DDP."""

from __future__ import annotations

import torch
from open_clip import ClipLoss


class ReplayClipLoss(torch.nn.Module):
    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        distributed = world_size > 1
        options = {"local_loss": distributed, "gather_with_grad": distributed, "cache_labels": True}
        self.organism = ClipLoss(rank=rank, world_size=world_size, **options)
        self.replay = ClipLoss(rank=rank, world_size=world_size, **options)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scale = features["logit_scale"]
        organism = self.organism(features["image"], features["text"], scale)
        out = {"organism": organism, "total": organism}
        if "replay_image" in features:
            replay = self.replay(features["replay_image"], features["replay_text"], scale)
            out["replay"] = replay
            out["total"] = organism + replay
        return out
