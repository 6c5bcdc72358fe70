"""What every masked autoencoder here shares: masking, patches, the loss, and ``forward``.

A subclass says how to turn images and a mask into predicted patches (``predict``);
everything else -- drawing the mask, the loss on masked patches, the ``(loss, pred, mask)``
return value of facebookresearch/mae -- lives here once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..losses import masked_mse
from ..masking import Mask, make_mask
from ..patches import check_patch_size, patchify, unpatchify

if TYPE_CHECKING:
    from ..data import PixelNormalizer


def as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class MaskedAutoencoder(nn.Module):
    """Base class. Subclasses set ``img_size``, ``patch_size``, ``in_chans`` and implement ``predict``."""

    norm_pix_loss: bool = False

    def _init_geometry(self, img_size: int | tuple[int, int], patch_size: int, in_chans: int) -> None:
        self.img_size = as_pair(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = check_patch_size(*self.img_size, patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, p*p*C)``."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, p*p*C)`` -> ``(B, C, H, W)``."""
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

    def make_mask(self, imgs: torch.Tensor, mask_mode: str = "random", *, mask_ratio: float = 0.75,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                  **mask_kwargs) -> Mask:
        """Draw a mask for a batch; ``mask_ratio``/``noise`` apply to random masking only."""
        if mask_mode == "random":
            mask_kwargs.update(mask_ratio=mask_ratio, noise=noise)
        return make_mask(mask_mode, imgs.shape[0], self.grid_size, generator=generator,
                         device=imgs.device, **mask_kwargs)

    def predict(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """Images ``(B, C, H, W)`` and a mask -> predicted patches ``(B, N, p*p*C)``."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor, mask: Mask, *, normalizer: PixelNormalizer | None = None,
                    batch_size: int = 64) -> torch.Tensor:
        """The images ``(B, C, H, W)`` the model paints for ``imgs`` under ``mask``, ``batch_size`` at a time.

        ``imgs`` are pixels in [0, 1]; with ``normalizer`` (the :class:`~maelib.data.PixelNormalizer`
        the model was trained with) the model is given normalised images and its output is mapped
        back to pixels. This is the raw output: every patch, visible ones included, is the model's
        (``maelib.metrics.paste_back`` puts the visible pixels back). Runs in eval mode on the
        model's device; returns float32 on ``imgs``' device.
        """
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        out = []
        try:
            for start in range(0, len(imgs), batch_size):
                x, part = imgs[start:start + batch_size].to(device), mask[start:start + batch_size].to(device)
                pred = self.predict(x if normalizer is None else normalizer(x), part)
                y = self.unpatchify(pred).float()
                out.append((y if normalizer is None else normalizer.denormalize(y)).to(imgs.device))
        finally:  # a failure (a mask of the wrong size, say) does not leave a model in training stuck in eval mode
            self.train(was_training)
        return torch.cat(out)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE on the masked patches; with ``norm_pix_loss`` against per-patch normalised pixels."""
        return masked_mse(pred, self.patchify(imgs), mask, norm_pix=self.norm_pix_loss)

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, *, mask_mode: str = "random",
                mask: Mask | None = None, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, **mask_kwargs):
        """Mask, reconstruct, score.

        Args:
            imgs: ``(B, C, H, W)`` images.
            mask_ratio: fraction masked by ``mask_mode="random"``.
            mask_mode: ``random``, ``block``, ``square``, ``combined`` or ``grid``; its own
                arguments (``block_ratio=``, ``flipped=``, ...) are passed as keywords.
            mask: a ready :class:`~maelib.masking.Mask` (then no mask is drawn).
            generator / noise: make the mask reproducible.

        Returns:
            ``(loss, pred, mask)``: scalar loss, ``(B, N, p*p*C)`` predicted patches, ``(B, N)``
            mask with 1 = masked -- the same as facebookresearch/mae.
        """
        if mask is None:
            mask = self.make_mask(imgs, mask_mode, mask_ratio=mask_ratio, generator=generator,
                                  noise=noise, **mask_kwargs)
        pred = self.predict(imgs, mask)
        loss = self.forward_loss(imgs, pred, mask.mask)
        return loss, pred, mask.mask
