"""What every masked autoencoder here shares: its patch geometry, drawing masks, the loss, reconstructing.

Each model writes its own ``forward`` out in its file (mask -> encode -> decode -> loss, as
facebookresearch/mae's ``models_mae.py``); this class holds the pieces those forwards share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..masked_loss import masked_mse
from ..masking import Mask, make_mask
from ..patches import check_patch_size, patchify, unpatchify

if TYPE_CHECKING:
    from ..normalize import PixelNormalizer


def as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class MaskedAutoencoder(nn.Module):
    """Base class. Subclasses set ``img_size``, ``patch_size``, ``in_chans`` and write ``predict`` and ``forward``."""

    norm_pix_loss: bool = False

    def _init_geometry(self, img_size: int | tuple[int, int], patch_size: int, in_chans: int) -> None:
        self.img_size = as_pair(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = check_patch_size(*self.img_size, patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def architecture(self) -> dict:
        """What rebuilds this model, as plain data: ``{"class": ..., "kwargs": constructor arguments}``.

        Read off the modules as they are now (after ``resize_pos_embed`` or added blocks too);
        checkpoints store it, and :func:`maelib.models.build_model` turns it back into a model.
        """
        return {"class": type(self).__name__, "kwargs": self._constructor_kwargs()}

    def _constructor_kwargs(self) -> dict:
        raise NotImplementedError

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, p*p*C)``."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, p*p*C)`` -> ``(B, C, H, W)``."""
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

    def make_mask(self, imgs: torch.Tensor, mask_mode: str = "random", *, mask_ratio: float = 0.75,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                  **mask_kwargs) -> Mask:
        """Draw a mask for the batch ``imgs``: which of its ``N`` patches each image hides.

        Args:
            mask_mode: ``random``, ``block``, ``square``, ``combined`` or ``grid``; its own
                arguments (``block_ratio=``, ``flipped=``, ...) are passed as keywords.
            mask_ratio / noise: the fraction hidden by ``random`` masking, and the ``(B, N)``
                noise whose lowest values are kept (random masking only).
            generator: makes the mask reproducible.
        """
        if mask_mode == "random":
            mask_kwargs.update(mask_ratio=mask_ratio, noise=noise)
        return make_mask(mask_mode, imgs.shape[0], self.grid_size, generator=generator,
                         device=imgs.device, **mask_kwargs)

    def check_inputs(self, imgs: torch.Tensor, mask: Mask | None = None) -> None:
        """Raise ``ValueError`` unless ``imgs`` is a batch this model takes and ``mask``, if given, was drawn for it.

        ``imgs`` must be ``(B, in_chans, H, W)`` with ``(H, W) = img_size``; ``mask.mask`` must be
        ``(B, N)``: one row per image, one column per patch of this model's grid. ``forward`` and
        ``predict`` call it first, so that a wrong input is named here rather than deep in a layer
        (a ``mask`` that is not a :class:`~maelib.masking.Mask` is a ``TypeError``).
        """
        c, (h, w) = self.in_chans, self.img_size
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != (c, h, w):
            if imgs.ndim == 3:
                hint = "one image without the batch dimension? pass imgs.unsqueeze(0)"
            elif imgs.ndim != 4:
                hint = "pass a batch of images"
            elif imgs.shape[1] != c:
                grey = (imgs.shape[1], c) == (1, 3)
                fix = "repeat grey images over 3 channels with imgs.expand(-1, 3, -1, -1)" if grey else \
                    f"convert the images to {c} channel{'s' if c > 1 else ''}"
                hint = f"{fix}, or use a model built with in_chans={imgs.shape[1]}"
            else:
                size = f"{imgs.shape[2]}x{imgs.shape[3]}"
                hint = f"the model is built for {h}x{w} images, got {size}; resize them, or use a model for {size}"
            raise ValueError(f"{type(self).__name__} takes images of shape (B, C, H, W) = (B, {c}, {h}, {w}), got "
                             f"{tuple(imgs.shape)}: {hint}")
        if mask is None:
            return
        if not isinstance(mask, Mask):
            raise TypeError(f"mask must be a maelib.masking.Mask, e.g. model.make_mask(imgs), got "
                            f"{type(mask).__name__}")
        if tuple(mask.mask.shape) != (imgs.shape[0], self.num_patches):
            raise ValueError(f"{type(self).__name__}: the mask has shape {tuple(mask.mask.shape)} (images, patches), "
                             f"these images need ({imgs.shape[0]}, {self.num_patches}): {imgs.shape[0]} images, "
                             f"{self.num_patches} patches of the model's {self.grid_size[0]}x{self.grid_size[1]} "
                             "grid; draw one for them with model.make_mask(imgs, ...)")

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
        (``maelib.patches.paste_back`` puts the visible pixels back). Runs in eval mode on the
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
        """imgs: ``(B, C, H, W)``; pred: ``(B, N, p*p*C)``; mask: ``(B, N)``, 1 = masked -> scalar.

        The mean squared error over the masked patches only; with ``norm_pix_loss`` the target
        patches are each standardised first (:mod:`maelib.masked_loss`).
        """
        return masked_mse(pred, self.patchify(imgs), mask, norm_pix=self.norm_pix_loss)
