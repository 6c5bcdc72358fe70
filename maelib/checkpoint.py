"""Checkpoints that survive a crash and load safely.

A checkpoint is one ``torch.save`` file holding only tensors and plain containers (dict, list,
tuple, str, int, float, bool, None), so it loads with ``torch.load(..., weights_only=True)``:
opening a checkpoint never runs code from it.

Saving is atomic: the file is written to a temporary name in the same folder, flushed to disk
(``fsync``) and only then renamed over the old checkpoint (``os.replace``). A crash, a full disk
or a Colab disconnect while saving leaves the previous checkpoint untouched -- never a
half-written file.

Contents (what :func:`save_checkpoint` writes)::

    {"epoch": completed epochs, "model": state dict, "optimizer": ..., "scheduler": ...,
     "scaler": ..., "history": {"train_loss": [...], ...}, "config": plain dict,
     "rng": {"torch": ..., "cuda": [...]}, "torch_version": "2.x"}
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module behind ``torch.compile(model)`` (or ``model`` itself)."""
    return getattr(model, "_orig_mod", model)


def to_plain(obj: Any) -> Any:
    """Turn a config (dataclass, dict, Path, ...) into data ``weights_only`` loading accepts.

    Tensors, numbers, strings and None stay; dicts, lists and tuples are converted item by item;
    anything else (a Path, a Mask, a function) becomes its ``str``/``repr``: a record, not an object.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, but all or nothing: a temp file, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives in the same folder: os.replace is atomic only within one file system.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable (directories cannot be fsynced on Windows)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _rng_states() -> dict[str, Any]:
    """Torch's RNG states (uint8 tensors). fit() reseeds every epoch, so they are a record only."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: torch.amp.GradScaler | None = None, *, epoch: int = 0,
                    history: dict[str, list] | None = None, config: Any = None, **extra: Any) -> Path:
    """Write everything needed to continue training to ``path``, atomically.

    ``epoch`` is the number of *completed* epochs. ``config`` (a dataclass or dict) is stored as a
    plain dict; ``extra`` keywords are stored as they are (keep them to tensors and plain data).
    """
    checkpoint = {
        "epoch": int(epoch),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": to_plain(history or {}),
        "config": to_plain(config) if config is not None else None,
        "rng": _rng_states(),
        "torch_version": str(torch.__version__),  # a str subclass that weights_only refuses
        **extra,
    }
    return atomic_save(checkpoint, path)


def clean_key(key: str) -> str:
    """Drop the prefixes ``torch.compile`` (``_orig_mod.``) and DDP (``module.``) add to names."""
    return key.removeprefix("_orig_mod.").removeprefix("module.")


def _list(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, strict: bool = True,
                 source: str = "checkpoint") -> nn.Module:
    """``model.load_state_dict(state)`` with errors that name the key and both shapes.

    Shapes must always match; with ``strict=True`` (default) the key sets must match too.
    """
    model = unwrap(model)
    state = {clean_key(k): v for k, v in state.items()}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if mismatched:
        key, more = mismatched[0], len(mismatched) - 1
        also = f" (and {more} more keys)" if more else ""
        raise ValueError(f"{source}: shape mismatch for {key!r}: {tuple(state[key].shape)} in the "
                         f"checkpoint, {tuple(own[key].shape)} in the model{also}; was the model built with "
                         "other sizes?")
    if strict:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            parts = ([f"missing from the checkpoint: {_list(missing)}"] if missing else []) + \
                    ([f"not in the model: {_list(unexpected)}"] if unexpected else [])
            raise ValueError(f"{source} does not fit the model; " + "; ".join(parts) +
                             " (pass strict=False to load the keys that match)")
    model.load_state_dict(state, strict=strict)
    return model


def read_checkpoint(path: str | os.PathLike, map_location: Any) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: torch.amp.GradScaler | None = None, *,
                    map_location: Any = "cpu", strict: bool = True,
                    restore_rng: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Returns the whole checkpoint dict (``epoch``, ``history``, ``config``, ...). The optimizer,
    scheduler and scaler are restored only when given; ``restore_rng`` also restores torch's RNG.
    """
    checkpoint = read_checkpoint(path, map_location)
    load_weights(model, checkpoint["model"], strict=strict, source=f"checkpoint {path}")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and checkpoint.get("scaler"):  # {} = saved without fp16 scaling
        scaler.load_state_dict(checkpoint["scaler"])
    if restore_rng and "rng" in checkpoint:
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if "cuda" in checkpoint["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    return checkpoint


def load_model(path: str | os.PathLike, model: nn.Module, *, strict: bool = True,
               map_location: Any = "cpu") -> nn.Module:
    """Load weights into ``model`` and return it.

    ``path`` may hold a maelib checkpoint, a facebookresearch/mae checkpoint (both keep the
    weights under ``"model"``) or a bare state dict. Raises ``ValueError`` naming the key and both
    shapes on a shape mismatch, and listing missing/unexpected keys when ``strict``.
    """
    checkpoint = read_checkpoint(path, map_location)
    state = checkpoint["model"] if isinstance(checkpoint.get("model"), dict) else checkpoint
    return load_weights(model, state, strict=strict, source=f"checkpoint {path}")
