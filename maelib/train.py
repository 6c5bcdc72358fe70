"""One training loop for every lesson: ``fit(model, train_loader, val_loader, config)``.

Like nanoGPT's ``train.py``, it is one readable loop, no framework:

    for every epoch:
        seed every random number generator from (seed, epoch)
        for every batch:  loss = model(imgs, **config.mask)[0]  ->  backward  ->  AdamW step
        validate with fixed masks, record the history, save a checkpoint (atomically)

What it takes care of:

* **AdamW as in facebookresearch/mae**: no weight decay on biases, norms, tokens and position
  embeddings; frozen parameters (``requires_grad=False``) are left out entirely.
* **Learning-rate schedules**, stepped every batch: ``"cosine"`` (linear warmup, then half a
  cosine down to 0), ``"onecycle"`` (the learning-rate curve of torch's ``OneCycleLR``) and
  ``"constant"`` (after an optional linear warmup).
* **Mixed precision** (``config.amp``, see :func:`resolve_amp`) and optional ``torch.compile``.
* **No waiting on the GPU inside a step**: losses are summed on the device and read every
  ``log_every`` steps. A NaN or infinite loss stops training with an error naming the epoch and
  the first bad step.
* **Gradient accumulation** (``config.accum_steps``): add up the gradients of several batches,
  then take one optimizer step, to reach a large effective batch on a small device.
* **Several processes** (under ``torchrun``, after :func:`maelib.distributed.setup`): the model is
  wrapped in ``DistributedDataParallel``, which averages the gradients over the processes; the
  losses in the history and the progress bar are means over all processes; only rank 0 shows a
  progress bar, logs and writes checkpoints (every rank reads one on resume). Give each process
  its share of the data with ``make_loader(..., distributed=True)``.
* **Exact resume**: every epoch starts by seeding torch, numpy and ``random`` from
  ``(config.seed, epoch)`` (and the process's rank), so an epoch's shuffling, masks and
  augmentations do not depend on what ran before it. A 3-epoch run that crashed (or was
  interrupted) in epoch 3 and is resumed ends bit for bit where the uninterrupted run ends, on a
  CPU; with several processes too, if resumed with as many. Extending a *finished* run
  (``epochs=2``, then ``epochs=3, resume=True``) is exact with ``schedule="constant"``; the
  cosine and one-cycle schedules are stretched to the new length from the current step on.

How to build the DataLoader so that resume is exact: use :func:`make_loader`, or any
``DataLoader`` whose randomness comes from torch's global RNG when it is iterated (the default,
e.g. ``DataLoader(ds, batch_size=64, shuffle=True)``). Avoid ``DataLoader(generator=g)`` with a
generator seeded once, ``persistent_workers=True`` (worker seeds are then drawn once per run), and
mask generators passed in ``config.mask``: their state would carry over from epoch to epoch.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint, to_plain
from .distributed import is_main, mean_over_processes, same_everywhere
from .distributed import rank as distributed_rank
from .distributed import world_size as distributed_world_size
from .loggers import Logger
from .presets import default_device

# One value per epoch under "epoch", "train_loss" (mean over the epoch's steps), "val_loss" (NaN
# without a val_loader), "lr" (at the end of the epoch) and "epoch_time" (seconds, with validation).
History = dict[str, list[float]]
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, imgs) -> scalar loss

SCHEDULES = ("onecycle", "cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained. Stored (as a plain dict) in every checkpoint.

    Attributes:
        epochs: passes over the training data.
        lr: peak learning rate.
        weight_decay / betas: AdamW's, as in the MAE paper (0.05, (0.9, 0.95)).
        schedule: ``"cosine"`` (linear warmup + cosine to 0), ``"onecycle"`` (cosine rise from
            lr/25 to lr, then cosine fall to lr/25e4, as torch's OneCycleLR) or ``"constant"``.
        warmup_epochs: length of the linear warmup for ``cosine`` / ``constant``; the rising
            phase for ``onecycle`` (0 = OneCycleLR's usual first 30% of all steps). May be fractional.
        grad_clip: clip the gradient norm to this value (None = no clipping).
        amp: mixed precision, ``"auto"`` | ``"bf16"`` | ``"fp16"`` | ``"off"``; see :func:`resolve_amp`.
        compile: run the model through ``torch.compile``.
        mask: keyword arguments for ``model(imgs, **mask)``, e.g. ``{"mask_ratio": 0.75}`` or
            ``{"mask_mode": "block", "block_ratio": 0.5}``. Used for training and validation.
        val_mask_seed: validation draws its masks from this seed every epoch, so the validation
            loss of different epochs is measured on the same masks and can be compared.
        seed: seeds each epoch's randomness (shuffling, masks, augmentation) with (seed, epoch).
        checkpoint_dir: write ``checkpoint_dir/last.pt`` after every epoch (None = never).
        resume: continue from ``checkpoint_dir/last.pt`` if it exists.
        progress: ``"auto"``/True = a tqdm.auto bar (a widget in Jupyter, text in logs) and one
            line per epoch; False = silent.
        log_every: read the running loss (the only host-device sync) every this many steps.
        accum_steps: batches whose gradients are added up before each optimizer step (gradient
            accumulation); the effective batch is ``accum_steps`` x the loader's batch size (x the
            number of processes). Schedules and ``log_every`` count optimizer steps.
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: bool = False
    mask: dict[str, Any] = field(default_factory=dict)
    val_mask_seed: int = 0
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    progress: bool | Literal["auto"] = "auto"
    log_every: int = 50
    accum_steps: int = 1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.epochs < 1 or self.lr <= 0 or self.warmup_epochs < 0 or self.log_every < 1:
            raise ValueError(f"need epochs >= 1, lr > 0, warmup_epochs >= 0, log_every >= 1; got epochs="
                             f"{self.epochs}, lr={self.lr}, warmup_epochs={self.warmup_epochs}, "
                             f"log_every={self.log_every}")
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip}")
        if self.seed < 0 or self.val_mask_seed < 0:
            raise ValueError(f"seeds must be >= 0, got seed={self.seed}, val_mask_seed={self.val_mask_seed}")
        if not isinstance(self.mask, dict):
            raise TypeError(f"mask must be a dict of forward keywords, got {type(self.mask).__name__}")
        self.betas = tuple(self.betas)


# --------------------------------------------------------------------------- devices and precision
def cpu_has_native_bf16() -> bool:
    """Does this CPU compute in bfloat16 natively (AVX512-BF16 or AMX)?

    Only then is bf16 autocast on the CPU faster than float32; elsewhere it is emulated and slower.
    ``torch.backends.cpu.get_cpu_capability()`` names the vector instruction set ("AVX2",
    "AVX512", ...), and recent torch versions also answer the finer question directly.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if "AVX512_BF16" in capability or "AMX" in capability:
        return True
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):  # private, so look before calling
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


def cuda_has_native_bf16(device: torch.device | str = "cuda") -> bool:
    """Does this GPU compute in bfloat16 natively (compute capability 8.0 or newer: A100, RTX 30xx, L4, H100)?

    ``torch.cuda.is_bf16_supported()`` also says yes on a T4 or V100 (7.x), where bf16 is emulated
    and much slower than fp16.
    """
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full float32).

    ``"auto"`` takes the fastest precision that trains as well, by device:

    * CUDA: bf16 on GPUs with native bf16 (compute capability >= 8.0); fp16 with a gradient
      scaler below that (T4, V100), where bf16 would be emulated;
    * CPU: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX): measured faster for every
      lesson model (1.1x to 2x, ``benchmarks/train_step.py``; README, Performance); float32
      elsewhere, where bf16 is emulated and 10 to 30 times slower;
    * MPS (Apple): float32.

    ``"bf16"`` / ``"fp16"`` force that dtype on any device; ``"off"`` = float32.
    """
    device = torch.device(device)
    if amp == "off":
        return None
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"amp='bf16' but {torch.cuda.get_device_name(device)} does not support "
                             "bfloat16; use amp='fp16' or 'auto'")
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None
    raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")


def describe_amp(amp: str, device: torch.device | str) -> str:
    """One line saying which precision ``amp`` gives on ``device``, and why (printed by ``fit`` and the CLI)."""
    device = torch.device(device)
    dtype = resolve_amp(amp, device)
    name = {None: "float32", torch.bfloat16: "bf16 autocast",
            torch.float16: "fp16 autocast + gradient scaler"}[dtype]
    if amp != "auto":
        return f"precision: {name} (amp={amp!r})"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        why = f"compute capability {major}.{minor}: " + ("native bf16" if dtype == torch.bfloat16 else
                                                          "no native bf16, so fp16")
    elif device.type == "cpu":
        why = "native bf16 on this CPU" if dtype == torch.bfloat16 else "no native bf16 on this CPU"
    else:
        why = f"float32 on {device.type}"
    return f"precision: {name} (amp='auto': {why})"


# --------------------------------------------------------------------------- seeds and data
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


def _set_epoch(loader: Iterable, epoch: int) -> None:
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


# --------------------------------------------------------------------------- optimizer and schedule
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups as in facebookresearch/mae: decay weight matrices only.

    No decay for biases and norms (1-d parameters), tokens (``cls_token``, ``mask_token``),
    position embeddings, and names in ``model.no_weight_decay()`` if the model has it. Frozen
    parameters are skipped, so partly frozen models (linear probing) train as expected.
    """
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, with PyTorch's fused kernel where it has one for the device.

    The fused kernel updates every parameter in one operation instead of a dozen per tensor: the
    same update (to float rounding), and on a CPU it took the ViT-B/16 step from 4.7 to 6.0 images/s
    in bf16 (benchmarks/train_step.py). Torch versions or devices without it get the usual AdamW.
    """
    try:
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):  # fused AdamW not supported by this torch for this device
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning rate of optimizer step ``step`` (0-based) as a fraction of the peak ``lr``."""
    if schedule == "onecycle":  # OneCycleLR: cosine from lr/25 up to lr, then down to lr/25e4
        rise = warmup_steps or round(0.3 * total_steps)
        start, end = 1 / 25, 1 / 25e4
        if step < rise:
            return start + (1 - start) * (1 - math.cos(math.pi * step / rise)) / 2
        t = (step - rise) / max(1, total_steps - 1 - rise)
        return end + (1 - end) * (1 + math.cos(math.pi * min(t, 1.0))) / 2
    if step < warmup_steps:  # linear warmup (cosine and constant)
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # cosine: half a cosine to 0
    return (1 + math.cos(math.pi * min(t, 1.0))) / 2


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler for ``config.schedule``; its state is one step counter."""
    total = config.epochs * steps_per_epoch
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config.schedule))


# --------------------------------------------------------------------------- validation
def _loss_fn(config: TrainConfig, loss_fn: LossFn | None) -> LossFn:
    return loss_fn or (lambda model, imgs: model(imgs, **config.mask)[0])


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, config: TrainConfig | None = None, *,
             loss_fn: LossFn | None = None, device: torch.device | str | None = None) -> float:
    """Mean loss over ``loader`` (weighted by batch size) in eval mode, with fixed masks.

    Masks (and any other randomness) come from ``config.val_mask_seed``, so the result for a
    given model does not change from call to call; the caller's RNG state is left as it was.
    """
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    compute_loss = _loss_fn(config, loss_fn)
    amp_dtype = resolve_amp(config.amp, device)
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(config.val_mask_seed)
        for batch in loader:
            imgs = images_of(batch).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                total += compute_loss(model, imgs).float() * imgs.shape[0]
            count += imgs.shape[0]
    model.train(was_training)
    if count == 0:
        raise ValueError("the validation loader yielded no batches")
    return total.item() / count


# --------------------------------------------------------------------------- the loop
def _check_finite(first_bad: torch.Tensor, bad_value: torch.Tensor, epoch: int, steps_per_epoch: int) -> None:
    """Raise if a non-finite loss was recorded (reads the device: call it every ``log_every`` steps)."""
    step = int(first_bad.item())
    if step >= 0:
        raise FloatingPointError(
            f"the loss became {bad_value.item()} at epoch {epoch}, global step {step} (step "
            f"{(step - 1) % steps_per_epoch + 1} of {steps_per_epoch} in the epoch); try a lower lr, "
            "grad_clip=1.0 or amp='off'. The last checkpoint is from before this epoch.")


def _config_changes(saved: dict[str, Any] | None, config: TrainConfig) -> list[str]:
    """Settings that differ from the checkpoint's (ignoring those that may change on resume)."""
    may_change = {"epochs", "resume", "progress", "compile", "checkpoint_dir", "log_every"}
    now = to_plain(config)
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now  # repr: values may hold tensors
            if saved and k in saved and k not in may_change and repr(saved[k]) != repr(now[k])]


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None,
        config: TrainConfig | None = None, *, loss_fn: LossFn | None = None,
        device: torch.device | str | None = None, logger: Logger | None = None) -> History:
    """Train ``model`` in place and return its history (one value per epoch, ready to plot).

    Args:
        model: a masked autoencoder (``model(imgs, **config.mask)`` returns ``(loss, pred, mask)``),
            or any module when ``loss_fn`` is given.
        train_loader / val_loader: iterables with ``len()`` yielding image tensors ``(B, C, H, W)``
            or ``(images, labels)`` pairs (labels are ignored). See :func:`make_loader`.
        config: a :class:`TrainConfig` (default: ``TrainConfig()``).
        loss_fn: ``loss_fn(model, imgs) -> loss`` replaces ``model(imgs, **config.mask)[0]``,
            e.g. to add a perceptual loss.
        device: where to train (default: :func:`default_device`); the model is moved there.
        logger: e.g. :class:`~maelib.loggers.TensorBoardLogger`; fit flushes it but does not close it.

    In a process group of several processes (torchrun, see :mod:`maelib.distributed`), every
    process calls ``fit`` with its own ``device`` and its share of the data; the model is trained
    with ``DistributedDataParallel`` and only rank 0 shows progress, logs and saves checkpoints.

    Raises ``FloatingPointError`` naming the epoch and global step of the first NaN/inf loss.
    """
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else default_device()
    world, main = distributed_world_size(), is_main()
    logger = logger if logger is not None and main else Logger()  # only rank 0 logs
    model.to(device)
    batches = len(train_loader)
    if batches == 0:
        raise ValueError("train_loader is empty: it yields no batches (dataset smaller than one batch "
                         "with drop_last=True?)")
    accum = config.accum_steps
    steps_per_epoch = math.ceil(batches / accum)  # optimizer steps; the last group may be shorter
    if world > 1 and not isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
        warnings.warn(f"training in {world} processes, but train_loader has no DistributedSampler: every "
                      "process iterates over the whole data set; use make_loader(..., distributed=True)",
                      stacklevel=2)

    amp_dtype = resolve_amp(config.amp, device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, config.betas)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    # fp16 needs its gradients scaled up so that small ones do not underflow; bf16 and fp32 do not
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: History = {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "epoch_time": []}
    start_epoch = 0

    last = Path(config.checkpoint_dir) / "last.pt" if config.checkpoint_dir is not None else None
    if config.resume and last is not None and last.exists():  # every process reads the checkpoint
        checkpoint = load_checkpoint(last, model, optimizer, scheduler, scaler, map_location=device)
        start_epoch, history = checkpoint["epoch"], checkpoint["history"]
        if changes := _config_changes(checkpoint["config"], config):
            warnings.warn(f"resuming {last} with changed settings: {'; '.join(changes)} (lr, betas and "
                          "weight_decay stay those of the checkpoint's optimizer)", stacklevel=2)
        if checkpoint.get("world_size", 1) != world:
            warnings.warn(f"resuming {last}, written by {checkpoint.get('world_size', 1)} processes, in {world}: "
                          "the remaining epochs deal out the data differently than the original run would "
                          "have", stacklevel=2)

    if world > 1 and not same_everywhere(start_epoch, device):
        raise RuntimeError(f"the processes would resume from different epochs: {last} must be the same file for "
                           "all of them (on several nodes, put checkpoint_dir on a shared file system)")

    train_model = torch.compile(model) if config.compile else model
    if world > 1:  # one copy of the model per process; backward averages the gradients over all of them
        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda"
                                              else None)
    compute_loss = _loss_fn(config, loss_fn)
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    show = bool(config.progress) and main
    if show:
        print(describe_amp(config.amp, device) + (", torch.compile" if config.compile else ""), flush=True)

    with tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, unit="step",
              disable=not show, dynamic_ncols=True) as bar:
        for epoch in range(start_epoch, config.epochs):
            # This epoch's randomness depends on (seed, epoch, rank) only: the key to exact resume.
            seed_everything(epoch_seed(config.seed, epoch, distributed_rank()))
            _set_epoch(train_loader, epoch)
            model.train()
            t0 = time.perf_counter()
            # Running sums stay on the device; reading them waits for the GPU, so we do it rarely.
            epoch_sum = torch.zeros((), device=device)
            window_sum, window_steps = torch.zeros((), device=device), 0
            group_sum = torch.zeros((), device=device)  # the losses of the batches of one optimizer step
            first_bad = torch.full((), -1, dtype=torch.long, device=device)  # step of the first NaN/inf
            bad_value = torch.zeros((), device=device)

            for i, batch in enumerate(train_loader):
                # Batches come in groups of `accum` (the last group of an epoch may be shorter): their
                # gradients add up, then one optimizer step. Without accumulation every group is 1 batch.
                group_size = min(accum, batches - (i - i % accum))
                last_in_group = i % accum == group_size - 1
                step = epoch * steps_per_epoch + i // accum + 1  # global optimizer step, counted from 1
                imgs = images_of(batch).to(device, non_blocking=True)
                # DDP averages the gradients over the processes during backward; within a group only the
                # last backward needs to (no_sync), the others just add to the local gradients.
                no_sync = world > 1 and not last_in_group
                with train_model.no_sync() if no_sync else contextlib.nullcontext():
                    with autocast():
                        loss = compute_loss(train_model, imgs)
                    scaler.scale(loss / group_size if group_size > 1 else loss).backward()
                if last_in_group:
                    if config.grad_clip is not None:
                        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()

                # Bookkeeping without a sync: the loss of the step's whole batch (all of its accumulated
                # batches, all processes), and the first non-finite one, stay on the device.
                group_sum += loss.detach().float()
                if not last_in_group:
                    continue
                loss = mean_over_processes(group_sum / group_size)
                group_sum.zero_()
                is_first_bad = (first_bad < 0) & ~torch.isfinite(loss)
                first_bad.masked_fill_(is_first_bad, step)
                bad_value = torch.where(is_first_bad, loss, bad_value)
                epoch_sum += loss
                window_sum += loss
                window_steps += 1
                bar.update()

                if step % config.log_every == 0 or i + 1 == batches:
                    _check_finite(first_bad, bad_value, epoch + 1, steps_per_epoch)
                    running, lr = window_sum.item() / window_steps, scheduler.get_last_lr()[0]
                    window_sum.zero_()
                    window_steps = 0
                    bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{running:.4f}",
                                    lr=f"{lr:.2e}")
                    logger.log({"train/loss": running, "lr": lr}, step)

            # End of epoch: validate, record, save (never a checkpoint of a NaN model).
            _check_finite(first_bad, bad_value, epoch + 1, steps_per_epoch)
            train_loss = epoch_sum.item() / (i // accum + 1)
            val_loss = evaluate(model, val_loader, config, loss_fn=loss_fn, device=device) \
                if val_loader is not None else math.nan
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                   "lr": scheduler.get_last_lr()[0], "epoch_time": time.perf_counter() - t0}
            for key, value in row.items():
                history.setdefault(key, []).append(value)
            if last is not None and main:
                save_checkpoint(last, model, optimizer, scheduler, scaler, epoch=epoch + 1, history=history,
                                config=config, world_size=world)

            summary = {"train/epoch_loss": train_loss, "epoch": epoch + 1, "epoch_time": row["epoch_time"]}
            if val_loader is not None:
                summary["val/loss"] = val_loss
            logger.log(summary, step)
            logger.flush()
            if show:
                val = f"  val {val_loss:.4f}" if val_loader is not None else ""
                bar.write(f"epoch {epoch + 1}/{config.epochs}  train {train_loss:.4f}{val}  "
                          f"lr {row['lr']:.2e}  {row['epoch_time']:.1f} s")
    return history
