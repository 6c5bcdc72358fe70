"""AdamW as facebookresearch/mae sets it up, and the learning-rate schedules, stepped every optimizer step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .train import TrainConfig

SCHEDULES = ("onecycle", "cosine", "constant")


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
    same update (to float rounding), and on a CPU a smaller share of a bf16 step, where the matrix
    products have become cheap (README, Performance). Torch versions or devices without it get the
    usual AdamW.
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
