"""SSIM of whole images: the structural score the lessons report, and the basis of :class:`~maelib.losses.SSIMLoss`."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def ssim(pred: torch.Tensor, target: torch.Tensor, *, per_image: bool = False) -> torch.Tensor:
    """SSIM of whole images ``(B, C, H, W)`` in [0, 1] (pass the paste-back image as ``pred``).

    Uses torchmetrics' ``structural_similarity_index_measure`` with ``data_range=1.0``; images
    must be at least 11 pixels on each side (the Gaussian window).
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"must be equal (B, C, H, W) shapes")
    values = structural_similarity_index_measure(pred.float(), target.float(),
                                                 data_range=1.0, reduction="none")
    return values if per_image else values.mean()
