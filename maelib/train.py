"""One training loop for every lesson: ``fit(model, train_loader, val_loader, config)``.

Like nanoGPT's ``train.py``, it is one readable loop, no framework:

    for every epoch:
        seed every random number generator from (seed, epoch)
        for every batch:  loss = model(imgs, **config.masking)[0]  ->  backward  ->  AdamW step
                          (a classifier, task="classify": loss = cross_entropy(model(imgs), labels))
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
mask generators passed in ``config.masking``: their state would carry over from epoch to epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint, to_plain
from .costs import StepCost, planned_work
from .distributed import is_main, mean_over_processes, same_everywhere
from .distributed import rank as distributed_rank
from .distributed import world_size as distributed_world_size
from .loader import epoch_seed, images_of, make_loader, seed_everything, set_epoch  # noqa: F401 (API)
from .loggers import Logger
from .optim import SCHEDULES, lr_factor, make_optimizer, make_scheduler, param_groups  # noqa: F401 (API)
from .precision import AMP_MODES, cpu_has_native_bf16, cuda_has_native_bf16, describe_amp, resolve_amp  # noqa: F401
from .presets import FEW, capped_path, default_device, max_steps

if TYPE_CHECKING:
    from .normalize import PixelNormalizer

# One value per epoch under "epoch", "train_loss" (mean over the epoch's steps), "val_loss" (NaN
# without a val_loader), "lr" (at the end of the epoch) and "epoch_time" (seconds, with validation);
# for task="classify" also "val_accuracy" (the share of validation images classified right).
History = dict[str, list[float]]
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, imgs) -> scalar loss
TASKS = ("mae", "classify")  # what fit trains: a masked autoencoder (its own loss), or a classifier



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
        masking: how training and validation draw their masks: keyword arguments for
            ``model(imgs, **masking)`` (:meth:`~maelib.models.base.MaskedAutoencoder.make_mask`), e.g.
            ``{"mask_ratio": 0.75}`` or ``{"mask_mode": "block", "block_ratio": 0.5}``.
        val_mask_seed: validation draws its masks from this seed every epoch, so the validation
            loss of different epochs is measured on the same masks and can be compared.
        seed: seeds each epoch's randomness (shuffling, masks, augmentation) with (seed, epoch).
        checkpoint_dir: write ``checkpoint_dir/last.pt`` after every epoch (None = never).
        resume: continue from ``checkpoint_dir/last.pt`` if it exists.
        progress: ``"auto"``/True = a tqdm.auto bar (a widget in Jupyter, text in logs) and a line
            per epoch (see ``print_every``); False = silent.
        print_every: print the epoch line every this many epochs (and always the first and the last);
            None: about 25 lines a run, every ``ceil(epochs / 25)`` epochs. The history keeps every epoch.
        log_every: read the running loss (the only host-device sync) every this many steps.
        accum_steps: batches whose gradients are added up before each optimizer step (gradient
            accumulation); the effective batch is ``accum_steps`` x the loader's batch size (x the
            number of processes). Schedules and ``log_every`` count optimizer steps.
        task: ``"mae"``: the loss is the model's own (``model(imgs, **mask)[0]``, or ``loss_fn``);
            ``"classify"``: the model maps images to class logits, the batches are ``(images, labels)``
            pairs, the loss is the cross-entropy (with ``label_smoothing``), and validation also
            measures the accuracy (``history["val_accuracy"]``; the validation loss is the plain
            cross-entropy). Fine-tuning and linear probes (:mod:`maelib.probe`) train this way.
        label_smoothing: for ``task="classify"``: the share of the target spread over all classes.
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
    masking: dict[str, Any] = field(default_factory=dict)
    val_mask_seed: int = 0
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    progress: bool | Literal["auto"] = "auto"
    print_every: int | None = None
    log_every: int = 50
    accum_steps: int = 1
    task: Literal["mae", "classify"] = "mae"
    label_smoothing: float = 0.0

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
        if self.print_every is not None and self.print_every < 1:
            raise ValueError(f"print_every must be None (about 25 lines a run) or >= 1, got {self.print_every}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip}")
        if self.seed < 0 or self.val_mask_seed < 0:
            raise ValueError(f"seeds must be >= 0, got seed={self.seed}, val_mask_seed={self.val_mask_seed}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not isinstance(self.masking, dict):
            raise TypeError(f"masking must be a dict of forward keywords, got {type(self.masking).__name__}")
        self.betas = tuple(self.betas)


# --------------------------------------------------------------------------- validation
def _loss_fn(config: TrainConfig, loss_fn: LossFn | None) -> Callable[..., torch.Tensor]:
    """``(model, imgs, labels) -> loss`` for the config's task (labels are None for an MAE)."""
    if config.task == "classify":
        if loss_fn is not None:
            raise ValueError("task='classify' trains with the cross-entropy; pass no loss_fn (or use task='mae')")
        return lambda model, imgs, labels: F.cross_entropy(model(imgs).float(), labels,
                                                           label_smoothing=config.label_smoothing)
    compute = loss_fn or (lambda model, imgs: model(imgs, **config.masking)[0])
    return lambda model, imgs, labels: compute(model, imgs)


def _inputs(batch: Any, device: torch.device, task: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's images on ``device``, and its labels for ``task="classify"`` (else None)."""
    imgs = images_of(batch).to(device, non_blocking=True)
    if task != "classify":
        return imgs, None
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError("task='classify' needs (images, labels) batches; this loader yields images alone (give "
                         "the data set its labels, e.g. ImageSet.dataset() of an ImageSet with labels)")
    return imgs, batch[1].to(device, non_blocking=True)


@torch.no_grad()
def _evaluate(model: nn.Module, loader: Iterable, config: TrainConfig, loss_fn: LossFn | None,
              device: torch.device) -> tuple[float, float | None]:
    """``(mean loss, accuracy or None)`` over ``loader``: see :func:`evaluate`."""
    compute_loss = _loss_fn(config, loss_fn)
    amp_dtype = resolve_amp(config.amp, device)
    was_training = model.training
    model.eval()
    total, correct, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(config.val_mask_seed)
        for batch in loader:
            imgs, labels = _inputs(batch, device, config.task)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                if labels is None:
                    total += compute_loss(model, imgs, labels).float() * imgs.shape[0]
                else:  # one forward pass for both: the plain cross-entropy, and the right answers
                    logits = model(imgs).float()
                    total += F.cross_entropy(logits, labels, reduction="sum")
                    correct += (logits.argmax(dim=1) == labels).sum()
            count += imgs.shape[0]
    model.train(was_training)
    if count == 0:
        raise ValueError("the validation loader yielded no batches")
    return total.item() / count, (correct.item() / count if config.task == "classify" else None)


def evaluate(model: nn.Module, loader: Iterable, config: TrainConfig | None = None, *,
             loss_fn: LossFn | None = None, device: torch.device | str | None = None) -> float:
    """Mean loss over ``loader`` (weighted by batch size) in eval mode, with fixed masks.

    Masks (and any other randomness) come from ``config.val_mask_seed``, so the result for a
    given model does not change from call to call; the caller's RNG state is left as it was.
    With ``config.task="classify"`` it is the plain cross-entropy (no label smoothing).
    """
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return _evaluate(model, loader, config, loss_fn, device)[0]


# --------------------------------------------------------------------------- the loop
class _FirstImages:
    """The first ``n`` images of ``loader`` (with their labels), batch by batch, each time it is iterated:
    validation under the step cap. ``seen``: how many it gave the last time."""

    def __init__(self, loader: Iterable, n: int):
        self.loader, self.n, self.seen = loader, n, 0

    def __iter__(self) -> Iterator:
        self.seen = 0
        for batch in self.loader:
            if self.seen >= self.n:
                return
            left = self.n - self.seen
            batch = batch[:left] if torch.is_tensor(batch) else type(batch)(part[:left] for part in batch)
            self.seen += len(images_of(batch))
            yield batch


class _StepCap:
    """The step cap (``MAELIB_MAX_STEPS``, CI's runs at a preset's real shapes): stop after ``cap`` optimizer
    steps, validate a few images, count the FLOPs of the first batch and of validation, and at the end
    print what the whole run would compute. Without a cap every method does nothing."""

    def __init__(self, train_loader: Iterable, val_loader: Iterable | None, start_step: int):
        self.cap, self.start_step = max_steps(), start_step
        self.val_loader = val_loader if self.cap is None or val_loader is None else _FirstImages(val_loader, FEW)
        self.cost = StepCost() if self.cap is not None else None
        if self.cost is not None:
            self.cost.time_batches(train_loader)

    def count(self, name: str, images: int = 0, first: bool = True) -> contextlib.AbstractContextManager:
        """Count FLOPs in this block if it is the first of its kind (``first``) under a cap."""
        return self.cost.count(name, images) if self.cost is not None and first else contextlib.nullcontext()

    def reached(self, step: int) -> bool:
        return self.cap is not None and step - self.start_step >= self.cap

    def report(self, config: TrainConfig, start_epoch: int, steps_per_epoch: int, val_loader: Iterable | None) -> None:
        if self.cost is None:
            return
        self.cost.images["val"] = getattr(self.val_loader, "seen", 0)
        print(planned_work(self.cost, epochs=config.epochs - start_epoch, steps_per_epoch=steps_per_epoch,
                           batches_per_step=config.accum_steps, val_images=len(getattr(val_loader, "dataset", ()))),
              flush=True)


def _optimizer_step(model: nn.Module, optimizer, scheduler, scaler, grad_clip: float | None) -> None:
    """One optimizer step on the summed gradients (clipped), then the schedule's step."""
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def _epoch_line(row: dict[str, float], epochs: int, validated: bool) -> str:
    """``epoch 3/70  train 0.5571  val 0.5298  lr 1.31e-04  12.9 s`` (and the accuracy of a classifier)."""
    val = f"  val {row['val_loss']:.4f}" if validated else ""
    val += f"  accuracy {row['val_accuracy']:.1%}" if validated and "val_accuracy" in row else ""
    return (f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.4f}{val}  lr {row['lr']:.2e}  "
            f"{row['epoch_time']:.1f} s")


class LossMeter:
    """Running sums of the training loss, kept on the device: reading them waits for the GPU, so ``fit``
    reads them every ``log_every`` steps only. Remembers the first non-finite loss and its step."""

    def __init__(self, device: torch.device):
        self.epoch_sum, self.window_sum = torch.zeros((), device=device), torch.zeros((), device=device)
        self.epoch_steps = self.window_steps = 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # global step of the first NaN/inf
        self.bad_value = torch.zeros((), device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        is_first_bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad.masked_fill_(is_first_bad, step)
        self.bad_value = torch.where(is_first_bad, loss, self.bad_value)
        self.epoch_sum += loss
        self.window_sum += loss
        self.epoch_steps += 1
        self.window_steps += 1

    def window_mean(self) -> float:
        """The mean since the last call (one sync)."""
        mean = self.window_sum.item() / max(1, self.window_steps)
        self.window_sum.zero_()
        self.window_steps = 0
        return mean

    def epoch_mean(self) -> float:
        return self.epoch_sum.item() / max(1, self.epoch_steps)

    def check_finite(self, epoch: int, steps_per_epoch: int, checkpoint: Path | None) -> None:
        """Raise if a non-finite loss was recorded, naming where, and what to resume from."""
        step = int(self.first_bad.item())
        if step < 0:
            return
        resume = (f"The last checkpoint, {checkpoint}, is from before this epoch." if checkpoint is not None
                  and checkpoint.exists() else "No checkpoint was written before it.")
        raise FloatingPointError(
            f"the loss became {self.bad_value.item()} at epoch {epoch}, global step {step} (step "
            f"{(step - 1) % steps_per_epoch + 1} of {steps_per_epoch} in the epoch); try a lower lr, "
            f"grad_clip=1.0 or amp='off'. {resume}")


def _resume(last: Path, model: nn.Module, optimizer, scheduler, scaler, config: TrainConfig,
            device: torch.device, world: int) -> tuple[int, History]:
    """Load ``last`` into the model and the optimizer's state; warn about settings that changed."""
    checkpoint = load_checkpoint(last, model, optimizer, scheduler, scaler, map_location=device)
    may_change = {"epochs", "resume", "progress", "print_every", "compile", "checkpoint_dir", "log_every"}
    saved, now = checkpoint["config"], to_plain(config)
    changes = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now  # repr: values may hold tensors
               if saved and k in saved and k not in may_change and repr(saved[k]) != repr(now[k])]
    if changes:
        warnings.warn(f"resuming {last} with changed settings: {'; '.join(changes)} (lr, betas and "
                      "weight_decay stay those of the checkpoint's optimizer)", stacklevel=3)
    if checkpoint.get("world_size", 1) != world:
        warnings.warn(f"resuming {last}, written by {checkpoint.get('world_size', 1)} processes, in {world}: the "
                      "remaining epochs deal out the data differently than the original run would have",
                      stacklevel=3)
    return checkpoint["epoch"], checkpoint["history"]


def _check_loader(train_loader: Iterable, batches: int, world: int) -> None:
    """Refuse an empty loader; warn when several processes would each train on all of the data."""
    if batches == 0:
        raise ValueError("train_loader is empty: it yields no batches (dataset smaller than one batch "
                         "with drop_last=True?)")
    if world > 1 and not isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
        warnings.warn(f"training in {world} processes, but train_loader has no DistributedSampler: every "
                      "process iterates over the whole data set; use make_loader(..., distributed=True)",
                      stacklevel=3)


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None,
        config: TrainConfig | None = None, *, loss_fn: LossFn | None = None,
        device: torch.device | str | None = None, logger: Logger | None = None,
        normalizer: PixelNormalizer | None = None, recipe: dict[str, Any] | None = None) -> History:
    """Train ``model`` in place and return its history (one value per epoch, ready to plot).

    Args:
        model: a masked autoencoder (``model(imgs, **config.masking)`` returns ``(loss, pred, mask)``),
            or any module when ``loss_fn`` is given.
        train_loader / val_loader: iterables with ``len()`` yielding image tensors ``(B, C, H, W)``
            or ``(images, labels)`` pairs (labels are ignored). See :func:`make_loader`.
        config: a :class:`TrainConfig` (default: ``TrainConfig()``).
        loss_fn: ``loss_fn(model, imgs) -> loss`` replaces ``model(imgs, **config.masking)[0]``,
            e.g. to add a perceptual loss.
        device: where to train (default: :func:`default_device`); the model is moved there.
        logger: e.g. :class:`~maelib.loggers.TensorBoardLogger`; fit flushes it but does not close it.
        normalizer / recipe: written into every checkpoint with the architecture, so that
            ``last.pt`` alone gives back a ready model (:func:`maelib.runs.load_run`): the
            :class:`~maelib.normalize.PixelNormalizer` the inputs were standardised with, and the
            named recipe (:func:`maelib.runs.recipe_record`). fit itself uses neither.

    Several processes (torchrun): see the module's docstring. The step cap (``MAELIB_MAX_STEPS``):
    see :class:`_StepCap`; capped checkpoints are named apart (:func:`~maelib.presets.capped_path`).

    Raises ``FloatingPointError`` naming the epoch and global step of the first NaN/inf loss.
    """
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else default_device()
    world, main = distributed_world_size(), is_main()
    logger = logger if logger is not None and main else Logger()  # only rank 0 logs
    model.to(device)
    batches, accum = len(train_loader), config.accum_steps
    steps_per_epoch = math.ceil(batches / accum)  # optimizer steps; the last group may be shorter
    _check_loader(train_loader, batches, world)

    amp_dtype = resolve_amp(config.amp, device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, config.betas)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    # fp16 needs its gradients scaled up so that small ones do not underflow; bf16 and fp32 do not
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: History = {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "epoch_time": []}
    start_epoch = 0
    last = capped_path(config.checkpoint_dir) / "last.pt" if config.checkpoint_dir is not None else None
    if config.resume and last is not None and last.exists():  # every process reads the checkpoint
        start_epoch, history = _resume(last, model, optimizer, scheduler, scaler, config, device, world)
    if world > 1 and not same_everywhere(start_epoch, device):
        raise RuntimeError(f"the processes would resume from different epochs: {last} must be the same file for "
                           "all of them (on several nodes, put checkpoint_dir on a shared file system)")
    cap = _StepCap(train_loader, val_loader, start_epoch * steps_per_epoch)

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
            set_epoch(train_loader, epoch)
            model.train()
            t0, meter = time.perf_counter(), LossMeter(device)
            group_sum = torch.zeros((), device=device)  # the losses of the batches of one optimizer step

            for i, batch in enumerate(train_loader):
                # Batches come in groups of `accum` (the last group of an epoch may be shorter): their
                # gradients add up, then one optimizer step. Without accumulation every group is 1 batch.
                group_size = min(accum, batches - (i - i % accum))
                last_in_group = i % accum == group_size - 1
                step = epoch * steps_per_epoch + i // accum + 1  # global optimizer step, counted from 1
                imgs, labels = _inputs(batch, device, config.task)  # labels: None for an MAE
                # DDP averages the gradients over the processes during backward; within a group only the
                # last backward needs to (no_sync), the others just add to the local gradients.
                no_sync = train_model.no_sync() if world > 1 and not last_in_group else contextlib.nullcontext()
                with cap.count("train", len(imgs), first=i == 0 and epoch == start_epoch), no_sync:
                    with autocast():
                        loss = compute_loss(train_model, imgs, labels)
                    scaler.scale(loss / group_size if group_size > 1 else loss).backward()
                group_sum += loss.detach().float()
                if not last_in_group:
                    continue
                _optimizer_step(model, optimizer, scheduler, scaler, config.grad_clip)
                meter.add(mean_over_processes(group_sum / group_size), step)  # all batches, all processes
                group_sum.zero_()
                bar.update()
                if cap.reached(step):
                    break
                if step % config.log_every == 0 or i + 1 == batches:
                    meter.check_finite(epoch + 1, steps_per_epoch, last)
                    running, lr = meter.window_mean(), scheduler.get_last_lr()[0]
                    bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{running:.4f}", lr=f"{lr:.2e}")
                    logger.log({"train/loss": running, "lr": lr}, step)

            # End of epoch: validate, record, save (never a checkpoint of a NaN model).
            meter.check_finite(epoch + 1, steps_per_epoch, last)
            with cap.count("val", first=epoch == start_epoch):
                val_loss, val_accuracy = _evaluate(model, cap.val_loader, config, loss_fn, device) \
                    if val_loader is not None else (math.nan, None)
            row = {"epoch": epoch + 1, "train_loss": meter.epoch_mean(), "val_loss": val_loss,
                   "lr": scheduler.get_last_lr()[0], "epoch_time": time.perf_counter() - t0}
            if config.task == "classify":
                row["val_accuracy"] = math.nan if val_accuracy is None else val_accuracy
            for key, value in row.items():
                history.setdefault(key, []).append(value)
            if last is not None and main:
                save_checkpoint(last, model, optimizer, scheduler, scaler, epoch=epoch + 1, history=history,
                                config=config, normalizer=normalizer, recipe=recipe, world_size=world)
            logger.log({"train/epoch_loss": row["train_loss"], "epoch": epoch + 1, "epoch_time": row["epoch_time"]}
                       | ({"val/loss": val_loss} if val_loader is not None else {})
                       | ({"val/accuracy": val_accuracy} if val_accuracy is not None else {}), step)
            logger.flush()
            every = config.print_every or math.ceil(config.epochs / 25)
            if show and (epoch == start_epoch or (epoch + 1) % every == 0 or epoch + 1 == config.epochs):
                bar.write(_epoch_line(row, config.epochs, val_loader is not None))
            if cap.reached(step):
                break
    if main:
        cap.report(config, start_epoch, steps_per_epoch, val_loader)
    return history
