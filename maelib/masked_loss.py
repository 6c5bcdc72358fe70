"""The MAE's loss: mean squared error on the masked patches only (torch only).

The model is never asked to copy what it was shown: the visible patches do not count. With the
paper's ``norm_pix_loss``, every target patch is first standardised by its own mean and variance.
"""

from __future__ import annotations

import torch


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise every patch ``(B, N, D)`` to zero mean and unit variance (``norm_pix_loss``)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
               norm_pix: bool = False) -> torch.Tensor:
    """Mean squared error over the masked patches only.

    Args:
        pred: ``(B, N, p*p*C)`` predicted patches.
        target: ``(B, N, p*p*C)`` true patches (``patchify(imgs)``).
        mask: ``(B, N)``, 1 = masked. Visible patches do not contribute.
        norm_pix: compare against per-patch normalised targets (the paper's ``norm_pix_loss``).

    Returns the exact mean of the per-patch MSE over masked patches (0 when nothing is masked).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, N) = {tuple(pred.shape[:2])}")
    if norm_pix:
        target = normalize_patches(target)
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
