"""``ImageSet``: a decoded data set held in memory as one uint8 tensor, plus what belongs to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .splits import hint_indices
from .torch_dataset import ImageTensorDataset


@dataclass(repr=False)
class ImageSet:
    """Images and their annotations, all in the same order.

    Attributes:
        images: ``(N, C, H, W) uint8`` pixels (0..255).
        labels: ``(N,) int64`` class index per image, or ``None`` for unlabelled data.
        class_names: ``class_names[k]`` is the name of label ``k``.
        paths: the file each image came from (a ``.npy`` holding a stack repeats its path).
        split_hint: per image ``"train"``, ``"val"``, ``"test"`` or ``""``, when the source
            defines a split; ``None`` when it does not.
        split_source: where ``split_hint`` came from (or why there is none), in words.
        label_maps: ``(N, 1, H, W) uint8`` per-pixel class ids (facades with ``with_labels=True``:
            window, door, ...).
        label_map_names: ``{class id: name}`` for ``label_maps``.
        skipped: files that could not be decoded and were left out.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    split_hint: list[str] | None = None
    split_source: str = ""
    label_maps: torch.Tensor | None = None
    label_map_names: dict[int, str] | None = None
    skipped: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        n = len(self.images)
        for name in ("labels", "paths", "split_hint", "label_maps"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries but there are {n} images")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        parts = [f"{n} images {c}x{h}x{w} uint8"]
        if self.labels is not None:
            counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
            named = zip(self.class_names, counts, strict=False)
            parts.append("classes " + ", ".join(f"{k}={v}" for k, v in named))
        if self.split_hint is not None:
            parts.append("split " + ", ".join(f"{k}={len(v)}" for k, v in self.hint_indices().items()))
        if self.label_maps is not None:
            parts.append(f"label maps {tuple(self.label_maps.shape[1:])}")
        if self.skipped:
            parts.append(f"{len(self.skipped)} files skipped")
        return f"ImageSet({'; '.join(parts)})"

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """The images at ``indices`` (e.g. one part from :func:`split_indices`, or a boolean mask),
        as a new ImageSet."""
        arr = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
        if arr.dtype == bool:  # a boolean mask: keep the True positions
            if arr.shape != (len(self),):
                raise ValueError(f"a boolean mask must have shape ({len(self)},), got {arr.shape}")
            arr = np.flatnonzero(arr)
        idx = torch.as_tensor(arr, dtype=torch.long).reshape(-1)
        pick = idx.tolist()
        return ImageSet(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            class_names=list(self.class_names),
            paths=[self.paths[i] for i in pick] if self.paths else [],
            split_hint=None if self.split_hint is None else [self.split_hint[i] for i in pick],
            split_source=self.split_source,
            label_maps=None if self.label_maps is None else self.label_maps[idx],
            label_map_names=self.label_map_names,
            skipped=list(self.skipped),
        )

    def hint_indices(self) -> dict[str, np.ndarray]:
        """``{"train": indices, "val": ..., "test": ...}`` from ``split_hint`` (error if there is none)."""
        if self.split_hint is None:
            raise ValueError(f"this ImageSet has no split hint ({self.split_source or 'none recorded'}); "
                             f"make one with split_indices(...)")
        return hint_indices(self.split_hint)

    def dataset(self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ImageTensorDataset:
        """A torch ``Dataset`` of float images in [0, 1] (and labels, if any); see ImageTensorDataset."""
        return ImageTensorDataset(self.images, self.labels, transform=transform)
