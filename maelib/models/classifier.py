"""A classifier on top of a (pre-trained) MAE encoder, for linear probing and fine-tuning."""

from __future__ import annotations

import torch
from torch import nn

from .vit_mae import MaskedAutoencoderViT


class MAEClassifier(nn.Module):
    """Encoder of a :class:`MaskedAutoencoderViT` + a linear head: ``(B, C, H, W)`` -> ``(B, classes)``.

    ``pool="cls"`` uses the cls token, ``pool="mean"`` averages the patch tokens (the paper's
    fine-tuning default). ``linear_probe=True`` freezes the encoder and puts a parameter-free
    BatchNorm before the head, as in the paper's linear probing.
    """

    def __init__(self, mae: MaskedAutoencoderViT, num_classes: int, pool: str = "mean",
                 linear_probe: bool = False):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.mae, self.pool, self.linear_probe = mae, pool, linear_probe
        dim = mae.embed_dim
        self.head_norm = nn.BatchNorm1d(dim, affine=False) if linear_probe else nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01 if linear_probe else 2e-5)
        nn.init.zeros_(self.head.bias)
        if linear_probe:
            for p in self.mae.parameters():
                p.requires_grad_(False)

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> pooled features ``(B, D)``."""
        tokens = self.mae.forward_features(imgs)
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_norm(self.features(imgs)))
