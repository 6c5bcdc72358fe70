"""Data loading whose every random choice depends on ``(seed, epoch)`` alone: the key to exact resume.

``fit`` seeds torch, numpy and ``random`` from :func:`epoch_seed` at the start of every epoch and
tells the sampler which epoch starts (:func:`set_epoch`); :func:`make_loader` builds a DataLoader
whose order follows from that.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from .distributed import rank as distributed_rank
from .distributed import world_size as distributed_world_size


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A well-mixed 32-bit seed for one epoch of one run (and one process ``rank`` of a distributed run:
    each process draws its own masks and augmentations)."""
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and all devices), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """Indices in an order that depends only on ``(seed, epoch)``; ``fit`` calls ``set_epoch``."""

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0):
        self.num_samples, self.shuffle, self.seed, self.epoch = num_samples, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, *,
                num_workers: int = 0, drop_last: bool = False, distributed: bool = False,
                **loader_kwargs: Any) -> DataLoader:
    """A DataLoader whose order is a function of ``(seed, epoch)``, so resumed runs see the same batches.

    Worker processes (``num_workers > 0``) get their seeds from torch's global RNG, which ``fit``
    seeds at the start of every epoch. Extra keywords go to ``DataLoader``.

    ``distributed=True`` uses torch's ``DistributedSampler``: every epoch's permutation (seeded by
    ``seed + epoch``) is dealt out to the processes, so each process iterates over its own
    1/world-size share, ``batch_size`` images at a time. In a single process it is the whole
    permutation: one process with batch 2b sees the same batches as two processes with b each.
    """
    loader_kwargs.setdefault("pin_memory", torch.cuda.is_available())
    if distributed:
        sampler = DistributedSampler(dataset, num_replicas=distributed_world_size(), rank=distributed_rank(),
                                     shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = EpochSampler(len(dataset), shuffle, seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, **loader_kwargs)


def set_epoch(loader: Iterable, epoch: int) -> None:
    """Tell the loader's sampler which epoch starts (make_loader, DistributedSampler)."""
    for part in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
            return


def images_of(batch: Any) -> torch.Tensor:
    """The images of a batch: the batch itself, or the first item of ``(images, labels)``."""
    imgs = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(imgs, torch.Tensor):
        raise TypeError(f"a batch must be an image tensor or an (images, labels) pair, "
                        f"got {type(imgs).__name__}")
    return imgs
