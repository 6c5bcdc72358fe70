"""Checkpoints that survive a crash and load safely.

A checkpoint is one ``torch.save`` file holding only tensors and plain containers (dict, list,
tuple, str, int, float, bool, None), so it loads with ``torch.load(..., weights_only=True)``:
opening a checkpoint never runs code from it.

Saving is atomic: the file is written to a temporary name in the same folder, flushed to disk
(``fsync``) and only then renamed over the old checkpoint (``os.replace``). A crash, a full disk
or a Colab disconnect while saving leaves the previous checkpoint untouched -- never a
half-written file.

Contents (what :func:`save_checkpoint` writes): everything to rebuild the model, use it, and go on
training it, however it was trained (a notebook, ``maelib train``, ``fit``)::

    {"format": 2, "epoch": completed epochs, "model": state dict,
     "architecture": {"class": "MaskedAutoencoderViT", "kwargs": {...}},   # maelib.models.build_model
     "normalizer": {"mean": [...], "std": [...]} or None,                   # the inputs' standardisation
     "recipe": {"name": ..., "preset": ..., "overrides": {...}} or None,    # the named recipe, if any
     "metrics": {...},                                                       # final scores, if given
     "optimizer": ..., "scheduler": ..., "scaler": ..., "history": {"train_loss": [...], ...},
     "config": the TrainConfig as a plain dict, "rng": {"torch": ..., "cuda": [...]}, "torch_version": "2.x"}

:func:`maelib.runs.load_run` turns such a file (or a run folder holding ``last.pt``) back into a
ready model with its normaliser.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = 2  # 1: before the architecture, normaliser and recipe were stored


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint: damaged (an interrupted copy), empty, or something else."""


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


def is_plain(obj: Any) -> bool:
    """Can ``torch.load(..., weights_only=True)`` read ``obj`` back? Tensors, numbers, strings, None, and
    dicts (with str/int keys), lists and tuples of those."""
    if obj is None or isinstance(obj, torch.Tensor) or type(obj) in (bool, int, float, str):
        return True
    if type(obj) is dict:
        return all(type(k) in (str, int) and is_plain(v) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return all(is_plain(v) for v in obj)
    return False


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files (``.<name>.*.tmp``) that interrupted saves of ``path`` left behind."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return stale


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, but all or nothing: a temp file, fsync, then ``os.replace``.

    Temp files that an earlier, interrupted save of the same ``path`` left are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
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
                    history: dict[str, list] | None = None, config: Any = None, normalizer: Any = None,
                    recipe: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                    **extra: Any) -> Path:
    """Write everything needed to rebuild, use and continue training the model to ``path``, atomically.

    Args:
        epoch: the number of *completed* epochs.
        config: the training settings (a dataclass or dict), stored as a plain dict.
        normalizer: the :class:`~maelib.normalize.PixelNormalizer` the inputs were standardised with
            (or its ``{"mean": ..., "std": ...}``).
        recipe: ``{"name": ..., "preset": ..., "overrides": {...}}`` when the run follows a named recipe.
        metrics: final scores, e.g. ``{"masked_psnr": 17.5}``.
        extra: more entries, stored as they are: tensors and plain data only (``TypeError`` otherwise,
            now rather than when the file is loaded).

    The model's architecture (:meth:`~maelib.models.MaskedAutoencoder.architecture`) is stored when
    it has one, so the file alone rebuilds it.
    """
    for key, value in extra.items():
        if not is_plain(value):
            raise TypeError(f"save_checkpoint: {key}={value!r} ({type(value).__name__}) could not be loaded back "
                            "with weights_only=True; store tensors, numbers, strings, None, or dicts/lists/"
                            "tuples of them (e.g. str(path), float(x))")
    inner = unwrap(model)
    checkpoint = {
        "format": FORMAT,
        "epoch": int(epoch),
        "model": inner.state_dict(),
        "architecture": to_plain(inner.architecture()) if hasattr(inner, "architecture") else None,
        "normalizer": _normalizer_record(normalizer),
        "recipe": to_plain(recipe),
        "metrics": to_plain(metrics or {}),
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


def _normalizer_record(normalizer: Any) -> dict[str, list[float]] | None:
    """``{"mean": [...], "std": [...]}`` from a PixelNormalizer (or such a dict already), or None."""
    if normalizer is None:
        return None
    mean, std = (normalizer["mean"], normalizer["std"]) if isinstance(normalizer, dict) else \
        (normalizer.mean, normalizer.std)
    return {"mean": [float(m) for m in mean], "std": [float(v) for v in std]}


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
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a save or a copy was interrupted; delete it "
                              "and resume from an earlier checkpoint, or train again")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused what the file holds
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"an object of type {found.group(1)}" if found else "objects beyond tensors and plain data"
        raise CheckpointError(f"checkpoint {path} holds {what}, so it does not load safely. Do not load files you "
                              "do not trust with weights_only=False: re-save the weights as a state dict where "
                              "they were made, or point to the right file") from err
    except Exception as err:  # torch's readers fail in many ways on a truncated or foreign file
        with open(path, "rb") as f:
            zip_file = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
        if zip_file and zipfile.is_zipfile(path):
            raise  # an intact archive: the problem is elsewhere (a device to map to, say), not the file
        what = ("is damaged: it was cut short (a save or a copy was interrupted); delete it and resume from an "
                "earlier checkpoint, or train again") if zip_file else \
            "is not a PyTorch checkpoint (not a file torch.save wrote); point to the right file"
        raise CheckpointError(f"checkpoint {path} {what} ({type(err).__name__}: {_first_line(err)})") from err


def _first_line(err: BaseException, limit: int = 100) -> str:
    line = str(err).splitlines()[0] if str(err) else "no message"
    return line if len(line) <= limit else line[:limit] + "..."


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
