"""Per-channel standardisation of images with fixed data-set statistics (torch only).

The model is given ``(x - mean) / std`` and its output is mapped back with ``* std + mean``; the
statistics are the training images' own (:meth:`PixelNormalizer.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PixelNormalizer:
    """Per-channel standardisation with fixed data-set statistics: ``(x - mean) / std``, and back.

    Fit it on the *training* images, give the model normalised images (use the normaliser as the
    last transform of a data set), and turn the model's output back into pixels with
    :meth:`denormalize`. A model trained this way predicts normalised pixels; since ``mean`` and
    ``std`` are fixed numbers, every prediction, masked patches included, maps back to pixels.
    That is the difference from the paper's per-patch normalisation (``norm_pix_loss``), whose
    statistics belong to each hidden patch and are unknown at inference.

    ``mean`` and ``std`` are plain tuples of floats (one per channel), so a normaliser can be
    stored in a checkpoint as ``{"mean": ..., "std": ...}`` and rebuilt with ``PixelNormalizer(**d)``.

        norm = PixelNormalizer.fit(train_set.images)          # uint8 (N, C, H, W)
        ds = train_set.dataset(v2.Compose([augment, norm]))  # the model sees normalised images
        pixels = norm.denormalize(model.unpatchify(pred))    # back to [0, 1] (up to model error)
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        object.__setattr__(self, "mean", mean)  # frozen: set the converted values once
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, images: torch.Tensor, batch_size: int = 1024) -> PixelNormalizer:
        """Mean and standard deviation per channel over all pixels of ``images`` ``(N, C, H, W)``.

        ``uint8`` images (0..255) are read as ``x / 255``, floats as they are. Summed in float64,
        ``batch_size`` images at a time, so a large uint8 data set is never copied as floats whole.
        """
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}")
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        total = torch.zeros(images.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].double() / scale
            total += x.sum(dim=(0, 2, 3))
            squares += (x * x).sum(dim=(0, 2, 3))
        count = images.numel() // images.shape[1]
        mean = total / count
        var = (squares / count - mean**2).clamp_min(0.0)
        return cls(tuple(mean.tolist()), tuple(var.clamp_min(1e-12).sqrt().tolist()))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = x.shape[-3] if x.ndim >= 3 else -1
        if channels != len(self.mean):
            raise ValueError(f"expected images (..., {len(self.mean)}, H, W), got {tuple(x.shape)}")
        shape = (len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise float images ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1]."""
        mean, std = self._stats(x)
        return (x - mean) / std

    normalize = __call__

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse: normalised images ``(C, H, W)`` or ``(B, C, H, W)`` back to pixel values."""
        mean, std = self._stats(x)
        return x * std + mean
