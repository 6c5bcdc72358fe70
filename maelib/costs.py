"""What a training step costs, counted on a CPU: its peak memory, FLOPs and operations.

**Peak memory** (:func:`step_memory`). The step -- forward, loss, backward, AdamW -- runs on fake
tensors (torch's ``FakeTensorMode``: every tensor has its real shape, dtype and storage size, but
no data and no arithmetic is done), under :class:`StorageTracker`, which adds up the bytes of every
tensor storage alive at each moment and keeps the maximum, the way a GPU's caching allocator
counts them (rounded up to its 512-byte blocks). Parameters, gradients, AdamW's two moments, the
activations saved for backward and the temporaries of each operation are all storages, so the
peak is the step's. Two steps are run, so that AdamW's state exists during the second. Attention
runs through PyTorch's SDPA, as on a GPU (it keeps no ``N x N`` weights for backward). In float32
the count is an upper bound of what fp16 autocast (a T4's ``amp="auto"``) holds, but for
autocast's fp16 copies of the weights (2 bytes a parameter); the fp16 count follows the CPU's
autocast lists, which keep layer norms in fp16 where CUDA's compute them in fp32, so a T4 holds a
little more than it. The budgets use float32. Not counted: the CUDA context and cuBLAS/cuDNN
workspaces (a few hundred MB, outside PyTorch's allocator) and the allocator's fragmentation,
hence the margin of :data:`T4_USABLE_GIB`.

The same tracker on real tensors gives the same count (``tests/test_memory.py`` checks it), and an
independent count agrees: the CPU allocator's own allocation events from ``torch.profiler``
(``profile_memory=True``) on a real step (:func:`profiler_peak`).

**FLOPs and operations** (:class:`StepCost`): ``torch.utils.flop_counter.FlopCounterMode`` counts
the floating-point operations of matrix products, convolutions and attention (2 per
multiply-add, forward and backward); every ATen operation is counted too, since each one is at
least one GPU kernel launch. Under the step cap, :func:`maelib.train.fit` counts its first step
and prints what the whole run would do (:func:`planned_work`), which :mod:`maelib.predict` turns
into minutes on a T4.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

GIB = 2**30
CUDA_BLOCK = 512  # bytes: the CUDA caching allocator rounds every allocation up to a multiple of this
# A Colab T4 has 16 GB (15,360 MiB in nvidia-smi); keep a recipe's step under 12 GiB, so that the CUDA
# context, cuBLAS workspaces, fragmentation and the evaluation code running beside it fit in the rest.
T4_USABLE_GIB = 12.0


# --------------------------------------------------------------------------- memory
class StorageTracker(TorchDispatchMode):
    """Live bytes of every tensor storage made under it (or handed to :meth:`track`), and their peak.

    A storage is counted once however many tensors view it, and uncounted when Python frees it (a
    weak reference's callback), so ``live`` is what the allocator holds and ``peak`` its maximum.
    """

    def __init__(self, block: int = CUDA_BLOCK):
        super().__init__()
        self.block, self.live, self.peak = block, 0, 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def track(self, *tensors: torch.Tensor) -> None:
        """Count tensors made before the tracker was entered (parameters, inputs)."""
        for t in tensors:
            storage = t.untyped_storage()
            if storage in self._seen:
                continue
            size = -(-storage.nbytes() // self.block) * self.block
            self._seen[storage] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.track(*(t for t in tree_leaves(out) if isinstance(t, torch.Tensor)))
        return out


@dataclass
class StepMemory:
    """The peak of one training step, and what it is made of (bytes)."""

    peak: int
    parameters: int  # the model's (and a loss network's) weights and buffers
    gradients: int  # one per trainable parameter
    optimizer: int  # AdamW's two moments per trainable parameter
    batch: int
    amp: str

    @property
    def activations(self) -> int:
        """Everything else at the peak: saved activations, temporaries, the input batch."""
        return self.peak - self.parameters - self.gradients - self.optimizer

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in (("parameters", self.parameters), (
            "gradients", self.gradients), ("AdamW", self.optimizer), ("activations and temporaries", self.activations)))
        return f"peak {self.peak / GIB:.2f} GiB at batch {self.batch}, {self.amp} ({parts})"


def _trainable_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def training_mask(run: Any, batch: int):
    """The recipe's training mask for one batch, on real tensors (drawing a mask needs data: not on fake tensors)."""
    from . import runs
    from .masking import make_mask

    with torch.device("meta"):  # the model's grid, without making its weights
        grid = runs.build_model(run).grid_size
    options = dict(run.train.masking)
    mask_mode = options.pop("mask_mode", "random")
    return make_mask(mask_mode, batch, grid, generator=torch.Generator().manual_seed(0), **options)


@dataclass
class RecipeStep:
    """One training step of a recipe: its model, the loss of a batch, the batch's shape, the loss network."""

    model: nn.Module
    loss_of: Callable[[torch.Tensor], torch.Tensor]
    shape: torch.Size
    loss_network: nn.Module | None = None


def recipe_step(run: Any, batch_size: int | None = None, mask: Any = None) -> RecipeStep:
    """A recipe's training step (model, masks, loss), built on the current device and tensor mode.

    The loss is the recipe's (as :func:`maelib.runs.build_loss` makes it), with a VGG19 of random
    weights for the perceptual term: the shapes of ImageNet's weights, no download. ``mask``: the
    batch's mask (default :func:`training_mask`).
    """
    from . import runs
    from .losses import CombinedLoss, SSIMLoss, VGGPerceptualLoss

    batch = batch_size or run.batch_size
    shape = torch.Size((batch, 3, run.img_size, run.img_size))
    if run.train.task == "classify":  # a classifier on the recipe's encoder (lesson 06), two classes
        from .models import MAEClassifier

        classifier = MAEClassifier(runs.build_model(run), num_classes=2)

        def classify_loss(imgs: torch.Tensor) -> torch.Tensor:
            labels = torch.zeros(imgs.shape[0], dtype=torch.long, device=imgs.device)
            return nn.functional.cross_entropy(classifier(imgs), labels)

        return RecipeStep(classifier, classify_loss, shape)
    model = runs.build_model(run)
    mask = mask if mask is not None else training_mask(run, batch)
    criterion: CombinedLoss | None = None
    if run.loss == "combined":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "random weights: only useful for tests": here only shapes matter
            criterion = CombinedLoss(model.patch_size, perceptual=VGGPerceptualLoss(weights=None),
                                     norm_pix=model.norm_pix_loss)
    elif run.loss == "mse+ssim":
        criterion = CombinedLoss(model.patch_size, mse_weight=1.0, perceptual_weight=run.ssim_weight,
                                 perceptual=SSIMLoss(), norm_pix=model.norm_pix_loss, paste_visible=True)

    def loss_of(imgs: torch.Tensor) -> torch.Tensor:
        loss, pred, masked = model(imgs, mask=mask)
        return loss if criterion is None else criterion(pred, imgs, masked)

    return RecipeStep(model, loss_of, shape, criterion)


def step_memory(run: Any, *, amp: str = "fp16", batch_size: int | None = None, fake: bool = True,
                steps: int = 2) -> StepMemory:
    """Peak memory of ``steps`` training steps of recipe ``run`` (its batch, model, masks and loss).

    ``amp``: ``"fp16"`` (autocast, what ``amp="auto"`` picks on a T4) or ``"fp32"``. ``fake=False``
    runs the step for real on the CPU (slow at the gpu preset's sizes; the tests use it at small batches).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .models.attention import use_attention
    from .optim import make_optimizer

    if amp not in ("fp16", "fp32"):
        raise ValueError(f"amp must be 'fp16' or 'fp32', got {amp!r}")
    mask = training_mask(run, batch_size or run.batch_size) if run.train.task == "mae" else None
    with use_attention("sdpa"):
        if fake:  # built on the meta device (no initialisation), then given fake storage
            with torch.device("meta"):
                step = recipe_step(run, batch_size, mask)
            mode: contextlib.AbstractContextManager = FakeTensorMode(allow_non_fake_inputs=True)
        else:
            step, mode = recipe_step(run, batch_size, mask), contextlib.nullcontext()
        modules = [m for m in (step.model, step.loss_network) if m is not None]
        with mode:
            for module in modules if fake else ():
                module.to_empty(device="cpu")
            weights = [t for m in modules for t in (*m.parameters(), *m.buffers())]
            imgs = torch.randn(step.shape)
            tracker = StorageTracker()
            tracker.track(*weights, imgs)
            optimizer = make_optimizer(step.model, 1e-3, run.train.weight_decay, run.train.betas)
            with tracker:
                for _ in range(steps):
                    with torch.autocast("cpu", dtype=torch.float16, enabled=amp == "fp16"):
                        loss = step.loss_of(imgs)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
    trainable = _trainable_bytes(step.model)
    return StepMemory(peak=tracker.peak, parameters=sum(t.numel() * t.element_size() for t in weights),
                      gradients=trainable, optimizer=2 * trainable, batch=step.shape[0], amp=amp)


def profiler_peak(step: Callable[[], Any]) -> int:
    """Peak bytes the CPU allocator held above its level at the start, while ``step()`` ran for real.

    An independent check of :class:`StorageTracker`: ``torch.profiler`` records every allocation and
    free of the CPU allocator (``profile_memory=True``); their running sum's maximum is the peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    level = peak = 0  # every allocation and free is the "self" memory of exactly one operation (or a [memory] event)
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


# --------------------------------------------------------------------------- FLOPs and operations
class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:  # views launch no kernel
            self.ops += 1
        return func(*args, **(kwargs or {}))


@dataclass
class StepCost:
    """FLOPs and ATen operations of what runs inside :meth:`count`, by name (``"train"``, ``"val"``)."""

    flops: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def count(self, name: str, images: int = 0) -> Iterator[None]:
        flops, ops = FlopCounterMode(display=False), _OpCounter()
        with flops, ops:
            yield
        self.flops[name] = self.flops.get(name, 0) + flops.get_total_flops()
        self.ops[name] = self.ops.get(name, 0) + ops.ops
        self.images[name] = self.images.get(name, 0) + images

    def time_batches(self, loader: Iterable, batches: int = 2) -> None:
        """CPU seconds per batch the loader takes to deliver (decoded images augmented on this CPU, one thread):
        ``seconds["data"]``. CPU time, not wall time, so that other programs on a shared machine do not count."""
        it, start, n = iter(loader), time.process_time(), 0
        for _ in range(batches):
            if next(it, None) is None:
                break
            n += 1
        self.seconds["data"] = (time.process_time() - start) / max(1, n)


PLANNED = "planned work (step cap): "  # the line fit prints; lessons predict reads it back


def planned_work(cost: StepCost, *, epochs: int, steps_per_epoch: int, batches_per_step: int,
                 val_images: int) -> str:
    """The line fit prints under the step cap: what the uncapped run would compute (JSON after :data:`PLANNED`)."""
    per_image = cost.flops.get("val", 0) / max(1, cost.images.get("val", 0))
    record = {"epochs": epochs, "steps_per_epoch": steps_per_epoch,
              "train_flops_per_step": cost.flops["train"] * batches_per_step,
              "train_ops_per_step": cost.ops["train"] * batches_per_step,
              "data_seconds_per_step": cost.seconds.get("data", 0.0) * batches_per_step,
              "val_images": val_images, "val_flops_per_image": per_image}
    return PLANNED + json.dumps(record)


__all__ = ["CUDA_BLOCK", "GIB", "PLANNED", "T4_USABLE_GIB", "RecipeStep", "StepCost", "StepMemory", "StorageTracker",
           "planned_work", "profiler_peak", "recipe_step", "step_memory", "training_mask"]
