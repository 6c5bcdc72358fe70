"""Runs: from a named recipe (:mod:`maelib.configs`) to data, a model, its loss, and a trained or loaded model.

Recipes are data, in :mod:`maelib.configs`; this module is the code that builds a run from one.
The command line (``maelib train``) and the lessons both go through it::

    run = configs.get_config("lesson02_vit_faces", preset="cpu")
    parts = runs.load_data(run)                 # train / val / test, the normaliser
    model = runs.build_model(run, **parts.from_data)
    trained = runs.train_or_load(run)           # train it (or load it: checkpoints/lesson02_vit_faces-cpu.pt)
    loaded = runs.load_run("runs/lesson02_vit_faces")   # a checkpoint or a run folder -> a ready model

A checkpoint written by :func:`maelib.train.fit` (``last.pt``) or by :func:`maelib.checkpoint.save_checkpoint`
holds the architecture, the normaliser and the recipe, so :func:`load_run` needs nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from . import data
from .checkpoint import load_weights, read_checkpoint, save_checkpoint
from .configs import CONFIGS, RunConfig, as_dict, batch_plan, get_config, learning_rate, replace
from .course import REPO_ROOT, shown_path
from .loggers import Logger, make_logger
from .models import build_model as build_from_architecture
from .models import create_model
from .normalize import PixelNormalizer
from .presets import capped_path, default_device
from .train import LossFn, fit, make_loader


# --------------------------------------------------------------------------- data, model, loss
def _image_set(run: RunConfig, progress: bool, size: int | None = None) -> data.ImageSet:
    size, kw = size or run.img_size, dict(run.data_kwargs)
    if run.dataset in ("folder", "npy") and run.data_folder is None:
        raise ValueError(f"dataset {run.dataset!r} needs a folder: pass --data-folder")
    if run.dataset == "cats_dogs":
        return data.cats_dogs(run.data_root, size, progress=progress, **kw)
    if run.dataset == "faces":
        return data.faces(run.data_root, size, progress=progress, **kw)
    if run.dataset == "facades":
        return data.facades(run.data_root, size, progress=progress, **kw)
    if run.dataset == "folder":
        return data.load_image_folder(run.data_folder, size, progress=progress, **kw)
    return data.load_npy_folder(run.data_folder, size, **kw)


def _split(images: data.ImageSet, run: RunConfig) -> dict[str, Any]:
    """``{"train": indices, "val": ..., "test": ...}`` (the parts the recipe has): the recipe's split,
    stratified by label where there are labels."""
    if run.split == "hint":
        parts = images.hint_indices()
        if "train" not in parts or "val" not in parts:
            raise ValueError(f"split='hint' needs train and val hints; this data set has {sorted(parts)}")
        return {k: parts[k] for k in ("train", "val", "test") if k in parts}
    by = images.labels.numpy() if images.labels is not None else len(images)
    v, t = run.val_fraction, run.test_fraction
    if v == 0 and t == 0:
        return {"train": range(len(images))}
    fractions = [1 - v - t] + [f for f in (v, t) if f > 0]
    parts = iter(data.split_indices(by, tuple(fractions), seed=run.train.seed))
    return {"train": next(parts)} | ({"val": next(parts)} if v > 0 else {}) | ({"test": next(parts)} if t > 0 else {})


def _streamed_folder(run: RunConfig) -> tuple[Dataset, Dataset | None, dict[str, Any]]:
    """An ImageNet-style folder (one subfolder per class), decoded image by image in the loader."""
    from torchvision.datasets import ImageFolder

    if run.data_folder is None:
        raise ValueError("dataset 'imagefolder' needs a folder of class subfolders: pass --data-folder")
    to_float = v2.ToDtype(torch.float32, scale=True)
    augment = data.train_transforms(run.img_size, **run.augment) if run.augment is not None \
        else data.eval_transforms(run.img_size)
    # decode to a uint8 tensor, crop and flip it (cheaper than in float), then scale to [0, 1]
    train_set: Dataset = ImageFolder(run.data_folder, transform=v2.Compose([v2.ToImage(), augment, to_float]))
    val_set: Dataset | None = None
    if run.val_fraction > 0:
        evaluation = ImageFolder(run.data_folder, transform=v2.Compose(
            [v2.ToImage(), data.eval_transforms(run.img_size), to_float]))
        train_idx, val_idx = data.split_indices(len(train_set), (1 - run.val_fraction, run.val_fraction),
                                                seed=run.train.seed)
        train_set, val_set = Subset(train_set, train_idx.tolist()), Subset(evaluation, val_idx.tolist())
    if run.subset is not None:
        train_set = Subset(train_set, range(min(run.subset, len(train_set))))
    if run.normalize_inputs:
        raise ValueError("normalize_inputs needs the images in memory; not available with dataset "
                         "'imagefolder'")
    return train_set, val_set, {"in_chans": 3}


@dataclass
class RunData:
    """What :func:`load_data` returns.

    Attributes:
        train / val: torch Datasets of float images (in [0, 1], or standardised by ``normalizer``);
            the training images augmented as the recipe says, the validation images not.
        test: the held-out test images as an :class:`~maelib.data.ImageSet` (uint8, unaugmented,
            never trained or validated on), or None when the recipe keeps no test split.
        from_data: what the model needs to know about the data (``in_chans``); pass it to
            :func:`build_model`.
        normalizer: the :class:`~maelib.normalize.PixelNormalizer` fitted on the training split
            (``normalize_inputs``), or None.
        images: every image of the data set, as decoded (None for a streamed ``imagefolder``).
        splits: the split's parts as :class:`~maelib.data.ImageSet` s, uint8 and unaugmented:
            ``"train"`` (whole, before ``subset``), ``"val"``, ``"test"`` where the recipe has them.
    """

    train: Dataset
    val: Dataset | None
    test: data.ImageSet | None
    from_data: dict[str, Any]
    normalizer: PixelNormalizer | None
    images: data.ImageSet | None = field(default=None, repr=False)
    splits: dict[str, data.ImageSet] = field(default_factory=dict, repr=False)


def load_data(run: RunConfig, progress: bool = True) -> RunData:
    """The recipe's data: train / val / test splits, what the model needs to know, and the normaliser."""
    if run.dataset == "imagefolder":
        train_set, val_set, from_data = _streamed_folder(run)
        return RunData(train_set, val_set, None, from_data, None)
    images = _image_set(run, progress)
    splits = {name: images.subset(idx) for name, idx in _split(images, run).items()}
    train_images, val_images, test_images = splits["train"], splits.get("val"), splits.get("test")
    for_model: dict[str, Any] = {"in_chans": images.images.shape[1]}
    # fitted on the whole training split, like the pixel statistics and the lessons' normaliser
    normalizer = PixelNormalizer.fit(train_images.images) if run.normalize_inputs else None
    if run.decode_scale != 1:  # the same training photos, decoded larger, for the random crops
        larger = _image_set(run, progress, size=round(run.img_size * run.decode_scale))
        train_images = larger.subset(_split(images, run)["train"])
    if run.subset is not None:
        train_images = train_images.subset(range(min(run.subset, len(train_images))))
    augment = data.train_transforms(run.img_size, **run.augment) if run.augment is not None else None
    if run.decode_scale != 1 and augment is None:
        raise ValueError(f"decode_scale {run.decode_scale} needs an augmentation that resizes the training images "
                         "to img_size (augment with crop_scale); or set decode_scale=1")
    if normalizer is not None:  # augment the image in [0, 1] first, then standardise it
        augment = normalizer if augment is None else v2.Compose([augment, normalizer])
    val_set = val_images.dataset(normalizer) if val_images is not None else None
    return RunData(train_images.dataset(augment), val_set, test_images, for_model, normalizer, images, splits)


def build_model(run: RunConfig, **from_data: Any) -> nn.Module:
    """The configuration's model for images of ``run.img_size``; ``from_data`` is the third item of
    :func:`load_data` (default: 3 channels)."""
    sizes = {"img_size": run.img_size, "in_chans": 3, **from_data}
    if run.patch_size is not None:
        sizes["patch_size"] = run.patch_size
    return create_model(run.model, **{**sizes, **run.model_kwargs})


def check_loss(run: RunConfig) -> None:
    """Raise ``FileNotFoundError`` now if ``run.loss`` needs weights that are not here."""
    from .losses import vgg19_weights_available, vgg19_weights_path

    if run.loss == "combined" and not vgg19_weights_available():
        raise FileNotFoundError(f"loss 'combined' needs the VGG19 weights at {vgg19_weights_path()} (torchvision "
                                "downloads them on first use when online); or train with --loss mse")


def build_loss(run: RunConfig, model: nn.Module, device: torch.device | str = "cpu",
               normalizer: PixelNormalizer | None = None) -> LossFn | None:
    """``None`` for the model's own masked MSE, or a ``loss_fn(model, imgs)`` for :func:`fit`.

    ``normalizer``: the one :func:`load_data` returned, if the images are standardised (the
    perceptual network is then given pixels again)."""
    if run.loss == "mse":
        return None
    from .losses import CombinedLoss, SSIMLoss

    check_loss(run)
    if run.loss == "mse+ssim":  # SSIM judges the hidden part in its context: the paste-back, in pixels
        criterion = CombinedLoss(model.patch_size, mse_weight=1.0, perceptual_weight=run.ssim_weight,
                                 perceptual=SSIMLoss(), norm_pix=model.norm_pix_loss, paste_visible=True,
                                 normalizer=normalizer).to(device)
    else:
        criterion = CombinedLoss(model.patch_size, norm_pix=model.norm_pix_loss, normalizer=normalizer).to(device)
    masking = dict(run.train.masking)

    def combined(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
        _, pred, masked = model(imgs, **masking)
        return criterion(pred, imgs, masked)

    return combined


# --------------------------------------------------------------------------- recipes in checkpoints
def recipe_record(run: RunConfig) -> dict[str, Any]:
    """``{"name", "preset", "overrides"}``: the named recipe and what differs from it (plain data)."""
    if run.preset is None or run.name not in CONFIGS:  # not a named recipe: the whole configuration is the record
        return {"name": run.name, "preset": run.preset, "overrides": as_dict(run)}
    base, now = _flat(as_dict(get_config(run.name, run.preset))), _flat(as_dict(run))
    overrides = {k: v for k, v in now.items() if repr(base.get(k)) != repr(v) and k != "preset"}
    return {"name": run.name, "preset": run.preset, "overrides": overrides}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k == "train":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------- loading a run back
@dataclass
class LoadedRun:
    """A trained model, ready to use, and what its checkpoint says about it."""

    model: nn.Module
    normalizer: PixelNormalizer | None
    path: Path
    epoch: int = 0
    recipe: dict[str, Any] | None = None
    history: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict, repr=False)


def load_run(source: str | os.PathLike, *, device: torch.device | str = "cpu") -> LoadedRun:
    """Load a checkpoint, or a run folder holding ``last.pt``, into a ready model with its normaliser.

    Reads every checkpoint maelib writes, however the model was trained: ``fit``'s and ``maelib
    train``'s ``last.pt`` and ``save_checkpoint`` files (which store the architecture), and the
    checkpoints of the lessons rendered before that (``model_config`` instead). The model is
    returned in eval mode on ``device``.
    """
    path = Path(source)
    folder = path if path.is_dir() else None
    if folder is not None:
        path = folder / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"run folder {folder} has no last.pt: is it the --out folder of a run that "
                                    "finished at least one epoch?")
    checkpoint = read_checkpoint(path, "cpu")
    if checkpoint.get("architecture"):
        model = build_from_architecture(checkpoint["architecture"])
    elif checkpoint.get("model_config"):  # the lessons' checkpoints before the architecture was stored
        model = create_model(**checkpoint["model_config"])
    else:
        raise ValueError(f"{path} does not say which model it holds (no 'architecture'): it predates maelib's "
                         "self-contained checkpoints; build the model yourself and use maelib.checkpoint.load_model")
    load_weights(model, checkpoint["model"], source=f"checkpoint {path}")
    stats = checkpoint.get("normalizer")
    return LoadedRun(model=model.to(device).eval(), normalizer=PixelNormalizer(**stats) if stats else None,
                     path=path, epoch=checkpoint.get("epoch", 0), recipe=checkpoint.get("recipe"),
                     history=checkpoint.get("history") or {}, metrics=checkpoint.get("metrics") or {},
                     checkpoint=checkpoint)


# --------------------------------------------------------------------------- train, or load what was trained
@dataclass
class TrainedRun(LoadedRun):
    """:class:`LoadedRun`, and how it came about: trained now (``minutes`` of training) or loaded."""

    loaded: bool = False
    minutes: float = 0.0
    total_minutes: float = 0.0
    data: RunData | None = field(default=None, repr=False)


def checkpoint_path(run: RunConfig) -> Path:
    """Where :func:`train_or_load` keeps a recipe's trained model: ``checkpoints/<name>-<preset>.pt``.

    A changed recipe (``configs.replace``) gets a file of its own: ``<name>-<preset>-<8 hex digits of
    what changed>.pt``, so that variants never overwrite the recipe's model or each other; so does a
    run under the step cap (``...-max2steps.pt``, see :func:`maelib.presets.capped_path`).
    """
    overrides = recipe_record(run)["overrides"]
    changed = "-" + hashlib.sha1(repr(sorted(overrides.items())).encode()).hexdigest()[:8] if overrides else ""
    return capped_path(REPO_ROOT / "checkpoints" / f"{run.name}-{run.preset or 'custom'}{changed}.pt")


def _start_name(run: RunConfig) -> str:
    return run.init_from if run.init_from in CONFIGS else shown_path(run.init_from)


def start_from(run: RunConfig, model: nn.Module, normalizer: PixelNormalizer | None, *, progress: bool = True,
               train_missing: bool = True, device: torch.device | str | None = None) -> float:
    """Load into ``model`` the trained model ``run.init_from`` names (fine-tuning); return its training minutes.

    ``init_from`` is a recipe (same preset: trained first by :func:`train_or_load` if its checkpoint is
    missing and ``train_missing``, on ``device``, else ``FileNotFoundError``) or a checkpoint file. Its inputs
    must be standardised as this run's (``normalizer``), or ``ValueError``.
    """
    if run.init_from in CONFIGS:
        recipe = get_config(run.init_from, run.preset)
        where = checkpoint_path(recipe)
        if not train_missing and not where.exists():
            raise FileNotFoundError(f"{run.name} starts from {run.init_from}, which is not trained yet "
                                    f"({shown_path(where)}); train it first: maelib train --config {run.init_from} "
                                    f"--preset {run.preset} --out {shown_path(where.with_suffix(''))}")
        start: LoadedRun = train_or_load(recipe, device=device, progress=progress)
        minutes = start.total_minutes
    else:
        start = load_run(run.init_from)
        minutes = float(start.checkpoint.get("total_minutes", start.checkpoint.get("train_minutes", 0.0)))
    load_weights(model, start.model.state_dict(), source=f"the checkpoint it starts from, {shown_path(start.path)}")
    if start.normalizer != normalizer:
        raise ValueError(f"{run.name} standardises its inputs otherwise than {run.init_from}, which it starts "
                         f"from ({normalizer} vs {start.normalizer}): they must train on the same data")
    return minutes


def train_or_load(run: RunConfig, *, path: str | os.PathLike | None = None, reuse: bool = True,
                  data: RunData | None = None, device: torch.device | str | None = None,
                  logger: Logger | None = None, tracking: str = "none", progress: bool = True) -> TrainedRun:
    """The recipe's trained model: loaded when ``path`` already holds it, else trained and saved there.

    Args:
        run: the recipe (:func:`maelib.configs.get_config`, maybe changed with ``configs.replace``).
        path: the checkpoint (default :func:`checkpoint_path`). With ``reuse``, a checkpoint there of
            the same recipe (name, preset and changes) is loaded instead of training; one of another
            recipe is trained over, and said so. Without ``reuse`` the model is always trained.
        data: the recipe's :func:`load_data`, if the caller has it already.
        device / logger / progress: for :func:`maelib.train.fit` (device: default the best one here);
            a loaded model is put on ``device`` too.
        tracking: without a ``logger``, track the run with :func:`maelib.loggers.make_logger`:
            ``"none"``, ``"tensorboard"`` (``runs/tensorboard/<checkpoint name>``) or ``"wandb"`` (offline).

    A recipe with ``init_from`` starts from that recipe's trained model (trained or loaded first, the
    same way) and counts its training time in ``total_minutes``.

    While it trains, ``fit`` writes ``<path without .pt>/last.pt`` after every epoch; with ``reuse``
    an interrupted run continues from there. The learning rate follows the recipe's batch
    (:func:`maelib.configs.learning_rate`).
    """
    path = Path(path) if path is not None else checkpoint_path(run)
    if path.suffix != ".pt":
        raise ValueError(f"path {path} must name a .pt file (its training progress goes to {path}/last.pt otherwise)")
    device = torch.device(device) if device is not None else default_device()
    recipe = recipe_record(run)
    if reuse and path.exists():
        loaded = load_run(path, device=device)
        if loaded.recipe == recipe:
            print(f"loaded {shown_path(path)}: {loaded.epoch} epochs of {run.name} ({run.preset} preset)")
            minutes = float(loaded.checkpoint.get("train_minutes", 0.0))
            return TrainedRun(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(LoadedRun)},
                              loaded=True, minutes=minutes,
                              total_minutes=float(loaded.checkpoint.get("total_minutes", minutes)), data=data)
        print(f"{shown_path(path)} holds another recipe ({loaded.recipe}); training this one ({recipe})")
    data = data or load_data(run, progress=progress)
    torch.manual_seed(run.train.seed)
    model = build_model(run, **data.from_data)
    start_minutes = start_from(run, model, data.normalizer, progress=progress, device=device) if run.init_from else 0.0
    accum, global_batch = batch_plan(run, 1)
    progress_dir = path.with_suffix("")  # fit's last.pt, epoch by epoch
    if (progress_dir / "last.pt").exists() and (
            not reuse or read_checkpoint(progress_dir / "last.pt", "cpu").get("recipe") != recipe):
        shutil.rmtree(progress_dir)  # start afresh, not from an earlier run's (or another recipe's) last.pt
    config = dataclasses.replace(run.train, lr=learning_rate(run, global_batch), accum_steps=accum,
                                 checkpoint_dir=progress_dir, resume=reuse, progress=progress)
    train_loader = make_loader(data.train, run.batch_size, shuffle=True, seed=run.train.seed, num_workers=run.workers)
    val_loader = make_loader(data.val, run.val_batch_size, shuffle=False) if data.val is not None else None
    loss_fn = build_loss(run, model, device, data.normalizer)  # a perceptual network goes where the model trains
    # the caller's logger stays open (the caller closes it); one made here is closed here
    own = contextlib.nullcontext(logger) if logger is not None else \
        make_logger(tracking, path.stem, _flat(as_dict(run)), folder=REPO_ROOT / "runs")
    with own as tracker:
        history = fit(model, train_loader, val_loader, config, loss_fn=loss_fn, device=device, logger=tracker,
                      normalizer=data.normalizer, recipe=recipe)
    minutes = sum(history["epoch_time"]) / 60  # every epoch's, also those of a run this one continued
    total = start_minutes + minutes
    save_checkpoint(path, model, epoch=len(history["epoch"]), history=history, config=config,
                    normalizer=data.normalizer, recipe=recipe, train_minutes=minutes, total_minutes=total)
    print(f"trained {run.name} ({run.preset} preset) for {len(history['epoch'])} epochs in {minutes:.1f} min"
          + (f" ({total:.1f} min with {_start_name(run)})" if run.init_from else "") + f"; saved {shown_path(path)}")
    return TrainedRun(model=model.eval(), normalizer=data.normalizer, path=path, epoch=len(history["epoch"]),
                      recipe=recipe, history=history, loaded=False, minutes=minutes, total_minutes=total, data=data)


def trained_or_quick(name: str, *, quick_epochs: int, img_size: int | None = None, preset: str | None = None,
                     device: torch.device | str | None = None, progress: bool = True) -> Path:
    """The checkpoint of recipe ``name`` as its own lesson leaves it, else a quick one by the same recipe.

    For a lesson that starts from an earlier lesson's model (lesson 05 from lesson 02's faces model):
    returns :func:`checkpoint_path` of ``get_config(name, preset)`` when that file is there. Otherwise
    it says so and trains the same recipe for ``quick_epochs`` epochs at ``img_size`` (default the
    recipe's; give the size whose patch grid the caller masks), and returns that file (one of its
    own: the recipe was changed). Load it with :func:`load_run` or :func:`maelib.pretrained.from_pretrained`.
    """
    run = get_config(name, preset)
    path = checkpoint_path(run)
    if path.exists():
        return path
    resized = {"img_size": img_size} if img_size not in (None, run.img_size) else {}
    quick = replace(run, epochs=quick_epochs, **resized)
    print(f"no {shown_path(path)} (its lesson trains it); until then, a quick model by the same recipe: "
          f"{quick_epochs} epochs at {quick.img_size} px")
    return train_or_load(quick, device=device, progress=progress).path
