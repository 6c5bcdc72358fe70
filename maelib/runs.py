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
from .configs import CONFIGS, RunConfig, as_dict, batch_plan, get_config, learning_rate
from .course import REPO_ROOT, shown_path
from .loggers import Logger
from .models import build_model as build_from_architecture
from .models import create_model
from .normalize import PixelNormalizer
from .presets import default_device
from .train import LossFn, fit, make_loader


# --------------------------------------------------------------------------- data, model, loss
def _image_set(run: RunConfig, progress: bool) -> data.ImageSet:
    size, kw = run.img_size, dict(run.data_kwargs)
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


def _split(images: data.ImageSet, run: RunConfig
           ) -> tuple[data.ImageSet, data.ImageSet | None, data.ImageSet | None]:
    """``(train, val or None, test or None)``: the recipe's split, stratified by label where there are labels."""
    if run.split == "hint":
        parts = images.hint_indices()
        if "train" not in parts or "val" not in parts:
            raise ValueError(f"split='hint' needs train and val hints; this data set has {sorted(parts)}")
        test = images.subset(parts["test"]) if "test" in parts else None
        return images.subset(parts["train"]), images.subset(parts["val"]), test
    by = images.labels.numpy() if images.labels is not None else len(images)
    v, t = run.val_fraction, run.test_fraction
    if v == 0 and t == 0:
        return images, None, None
    fractions = [1 - v - t] + [f for f in (v, t) if f > 0]
    parts = iter(data.split_indices(by, tuple(fractions), seed=run.train.seed))
    train = images.subset(next(parts))
    val = images.subset(next(parts)) if v > 0 else None
    test = images.subset(next(parts)) if t > 0 else None
    return train, val, test


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
    train_images, val_images, test_images = _split(images, run)
    whole_train = train_images
    for_model: dict[str, Any] = {"in_chans": images.images.shape[1]}
    # fitted on the whole training split, like the pixel statistics and the lessons' normaliser
    normalizer = PixelNormalizer.fit(train_images.images) if run.normalize_inputs else None
    if run.subset is not None:
        train_images = train_images.subset(range(min(run.subset, len(train_images))))
    augment = data.train_transforms(run.img_size, **run.augment) if run.augment is not None else None
    if normalizer is not None:  # augment the image in [0, 1] first, then standardise it
        augment = normalizer if augment is None else v2.Compose([augment, normalizer])
    val_set = val_images.dataset(normalizer) if val_images is not None else None
    splits = {k: v for k, v in (("train", whole_train), ("val", val_images), ("test", test_images)) if v is not None}
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
    from .losses import CombinedLoss

    check_loss(run)
    criterion = CombinedLoss(model.patch_size, norm_pix=model.norm_pix_loss, normalizer=normalizer).to(device)
    mask = dict(run.train.mask)

    def combined(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
        _, pred, masked = model(imgs, **mask)
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
    data: RunData | None = field(default=None, repr=False)


def checkpoint_path(run: RunConfig) -> Path:
    """Where :func:`train_or_load` keeps a recipe's trained model: ``checkpoints/<name>-<preset>.pt``.

    A changed recipe (``configs.replace``) gets a file of its own: ``<name>-<preset>-<8 hex digits of
    what changed>.pt``, so that variants never overwrite the recipe's model or each other.
    """
    overrides = recipe_record(run)["overrides"]
    changed = "-" + hashlib.sha1(repr(sorted(overrides.items())).encode()).hexdigest()[:8] if overrides else ""
    return REPO_ROOT / "checkpoints" / f"{run.name}-{run.preset or 'custom'}{changed}.pt"


def train_or_load(run: RunConfig, *, path: str | os.PathLike | None = None, reuse: bool = True,
                  data: RunData | None = None, device: torch.device | str | None = None,
                  logger: Logger | None = None, progress: bool = True) -> TrainedRun:
    """The recipe's trained model: loaded when ``path`` already holds it, else trained and saved there.

    Args:
        run: the recipe (:func:`maelib.configs.get_config`, maybe changed with ``configs.replace``).
        path: the checkpoint (default :func:`checkpoint_path`). With ``reuse``, a checkpoint there of
            the same recipe (name, preset and changes) is loaded instead of training; one of another
            recipe is trained over, and said so. Without ``reuse`` the model is always trained.
        data: the recipe's :func:`load_data`, if the caller has it already.
        device / logger / progress: for :func:`maelib.train.fit` (device: default the best one here);
            a loaded model is put on ``device`` too.

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
            return TrainedRun(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(LoadedRun)},
                              loaded=True, minutes=float(loaded.checkpoint.get("train_minutes", 0.0)), data=data)
        print(f"{shown_path(path)} holds another recipe ({loaded.recipe}); training this one ({recipe})")
    data = data or load_data(run, progress=progress)
    torch.manual_seed(run.train.seed)
    model = build_model(run, **data.from_data)
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
    history = fit(model, train_loader, val_loader, config, loss_fn=loss_fn, device=device, logger=logger,
                  normalizer=data.normalizer, recipe=recipe)
    minutes = sum(history["epoch_time"]) / 60  # every epoch's, also those of a run this one continued
    save_checkpoint(path, model, epoch=len(history["epoch"]), history=history, config=config,
                    normalizer=data.normalizer, recipe=recipe, train_minutes=minutes)
    print(f"trained {run.name} ({run.preset} preset) for {len(history['epoch'])} epochs in {minutes:.1f} min; "
          f"saved {shown_path(path)}")
    return TrainedRun(model=model.eval(), normalizer=data.normalizer, path=path, epoch=len(history["epoch"]),
                      recipe=recipe, history=history, loaded=False, minutes=minutes, data=data)
