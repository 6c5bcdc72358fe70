"""Augmentation with ``torchvision.transforms.v2``, on float image tensors ``(C, H, W)`` in [0, 1].

MAE needs only light augmentation (the paper uses random resized crops and flips). Each step here
can be switched off, and evaluation uses none: only a resize + centre crop to the model's size,
which does nothing when the images already have that size.

Standardising images with a data set's per-channel statistics is :class:`maelib.normalize.PixelNormalizer`
(re-exported by :mod:`maelib.data`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import InterpolationMode, v2

from ..normalize import PixelNormalizer  # noqa: F401 (maelib.data exports it)
from .decode import as_hw


def train_transforms(size: int | Sequence[int], *, crop_scale: tuple[float, float] | None = (0.6, 1.0),
                     hflip: bool = True, rotation: float = 0.0,
                     color_jitter: float | Sequence[float] = 0.0) -> v2.Compose:
    """Random augmentation for training; output ``(C, *size)`` float in [0, 1].

    Args:
        size: output size, ``int`` or ``(H, W)``.
        crop_scale: ``RandomResizedCrop`` area range as fractions of the image, ``0 < lo <= hi <= 1``;
            ``None`` for no random crop (only a resize + centre crop to ``size``).
        hflip: flip left-right with probability 0.5.
        rotation: rotate by a random angle in ``[-rotation, rotation]`` degrees (0: off); the
            corners that rotate in are black.
        color_jitter: ``s`` jitters brightness, contrast and saturation by up to ``s`` (hue
            untouched), or a 4-tuple ``(brightness, contrast, saturation, hue)``; 0: off.
            Saturation and hue leave 1-channel images unchanged.
    """
    hw = as_hw(size)
    steps: list = []
    if crop_scale is None:
        steps += [v2.Resize(max(hw), antialias=True), v2.CenterCrop(hw)]
    else:
        lo, hi = crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale}")
        steps.append(v2.RandomResizedCrop(hw, scale=(lo, hi), interpolation=InterpolationMode.BILINEAR,
                                          antialias=True))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if rotation < 0:
        raise ValueError(f"rotation is a maximum angle in degrees and must be >= 0, got {rotation}")
    if rotation > 0:
        steps.append(v2.RandomRotation(rotation, interpolation=InterpolationMode.BILINEAR, fill=0.0))
    jitter = (color_jitter,) * 3 + (0.0,) if isinstance(color_jitter, int | float) else tuple(color_jitter)
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ValueError(f"color_jitter must be a number >= 0 or (brightness, contrast, saturation, hue) "
                         f"with all >= 0 and hue <= 0.5, got {color_jitter}")
    if any(jitter):
        steps.append(v2.ColorJitter(*jitter))
    return v2.Compose(steps)


def eval_transforms(size: int | Sequence[int]) -> v2.Compose:
    """No augmentation: resize the shorter side to ``max(size)`` and centre-crop to ``size`` (for a
    square size: shorter side, then centre crop). An image that already has ``size`` is returned
    unchanged. Output ``(C, *size)`` float in [0, 1]."""
    hw = as_hw(size)
    return v2.Compose([v2.Resize(max(hw), antialias=True), v2.CenterCrop(hw)])
