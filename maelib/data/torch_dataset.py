"""A torch ``Dataset`` over images already decoded into one uint8 tensor."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset


class ImageTensorDataset(Dataset):
    """Serve images from a uint8 tensor ``(N, C, H, W)``.

    ``dataset[i]`` is the float image ``(C, H, W)`` in [0, 1] after ``transform`` (if any), or the pair
    ``(image, label)`` when ``labels`` (``(N,)`` integers) were given. No file is read here: the
    conversion to float happens per item, so the data set itself stays 4x smaller in memory.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
            is_tensor = isinstance(images, torch.Tensor)
            got = f"{tuple(images.shape)} {images.dtype}" if is_tensor else type(images).__name__
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {got}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (len(images),):
                raise ValueError(f"labels must have shape ({len(images)},) to match the images, "
                                 f"got {tuple(labels.shape)}")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float().div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        return image if self.labels is None else (image, self.labels[index])
