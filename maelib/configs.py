"""Named recipes: a lesson's model, data, mask and schedule, by name and preset, as data.

    run = get_config("lesson01_mlp_cats_dogs", preset="cpu")
    parts = maelib.runs.load_data(run)                     # train / val / test, normaliser
    model = maelib.runs.build_model(run, **parts.from_data)

The code that builds a run from a recipe is :mod:`maelib.runs`.

A configuration writes down, per preset (``smoke`` / ``cpu`` / ``gpu``), what a lesson's notebook
trains, so the command line trains the same thing with the same pieces of maelib (models, data,
augmentation, losses, :func:`~maelib.train.fit`), on one device or on many:

======================== ====== ===================== =========================== ======================
name                     lesson model                 data                        mask
======================== ====== ===================== =========================== ======================
tiny                     --     2-block ViT, 32 px    cats and dogs               random 75%
lesson01_mlp_cats_dogs   01     MLP-MAE, 48 px        cats and dogs               random 75%
lesson02_vit_faces       02     ViT-MAE, 64 / 256 px  CelebA faces                random 75%
lesson04_facades_*       04     ViT-MAE, 64 / 224 px  CMP facades                 random / block / combined
lesson04b_facades_*      04b    the same              CMP facades                 pre-train random or block,
                                                                                  fine-tune on bands
lesson05_finetune_facades 05    pretrained, 64 / 224  CMP facades                 block, half the rows
lesson06_mae_cats_dogs   06     ViT-MAE, 64 px        cats and dogs (70/10/20)    random 75%
paper_vit_base           --     ViT-B/16, 224 px      an ImageNet-style folder    random 75%, norm_pix
======================== ====== ===================== =========================== ======================

**The learning rate follows the batch.** A configuration gives a *base* learning rate ``blr``, the
rate for a batch of 256 images; the run uses ``lr = blr x global batch / 256`` (the MAE paper's
rule), where the global batch is the per-device batch x the number of processes x the gradient
accumulation steps. A lesson's ``lr`` at its batch size is ``blr`` x batch / 256; the comments
give both. ``global_batch`` (the paper's 4096) fixes the global batch instead: the accumulation
steps are then worked out from the number of processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .models import MODEL_CONFIGS
from .presets import PRESETS, current_preset
from .train import TrainConfig

DATASETS = ("cats_dogs", "faces", "facades", "folder", "npy", "imagefolder")
LOSSES = ("mse", "combined", "mse+ssim")


@dataclass
class RunConfig:
    """Everything ``maelib train`` needs besides the devices: model, data, batch, learning rate.

    Attributes:
        name: the configuration's name (also the default output folder ``runs/<name>``).
        model / model_kwargs: a name in :data:`maelib.models.MODEL_CONFIGS` and settings that
            override its own (e.g. ``{"norm_pix_loss": True}``).
        dataset: ``cats_dogs``, ``faces`` or ``facades`` (from the data root); ``folder`` (a flat
            folder of images) or ``npy`` (a folder of ``.npy`` arrays), decoded once into memory;
            ``imagefolder``: class subfolders of images, decoded on the fly by the loader's workers
            (ImageNet's layout; too big to hold in memory).
        data_kwargs: extra keywords for the dataset function, e.g. ``{"variant": "lfw_gray"}``.
        data_root: the data root for the named datasets (None: ``MAELIB_DATA_DIR`` or ``data/``).
        data_folder: the folder for ``folder``, ``npy`` and ``imagefolder``.
        img_size / patch_size: images are resized to ``img_size``; ``patch_size`` None keeps the model's.
        augment: keywords for :func:`maelib.data.train_transforms` (None: no augmentation).
        decode_scale: the training images are decoded this many times larger than ``img_size`` so that
            random crops keep detail (1: at the model's size); validation and test images are not.
        split: ``"random"`` (a seeded split with ``val_fraction``, stratified by label when there are
            labels) or ``"hint"`` (the data set's own train/val split from MANIFEST.tsv).
        val_fraction: share of the images kept for validation with ``split="random"`` (0: none).
        test_fraction: share of the images held out for a test set, never trained on or validated
            with (``split="random"``, images held in memory; 0: none).
        subset: train on the first ``subset`` training images only (the smoke preset).
        batch_size: images per device per step; ``val_batch_size`` for validation.
        global_batch: if set, the accumulation steps are chosen so that batch_size x processes x
            accum_steps equals it; otherwise ``train.accum_steps`` is used as it is.
        blr / lr: base learning rate for a batch of 256, scaled with the global batch; an explicit
            ``lr`` is used as it is.
        loss: ``"mse"`` (the model's masked MSE), ``"combined"`` (0.6 MSE + 0.4 VGG19 perceptual) or
            ``"mse+ssim"`` (masked MSE + ``ssim_weight`` x (1 - SSIM of the paste-back), needs no weights).
        ssim_weight: the SSIM term's weight in ``"mse+ssim"``.
        init_from: fine-tuning: the name of the recipe (same preset) whose trained model this run
            starts from, instead of a random initialisation (:func:`maelib.runs.train_or_load` trains
            or loads it first), or the path of a maelib checkpoint (``.pt``). None: from scratch.
        normalize_inputs: standardise every image with the training images' per-channel mean and
            std (a :class:`~maelib.data.PixelNormalizer`, as the lessons do); the numbers
            are written to ``run.json`` so that outputs can be mapped back to pixels.
        workers: DataLoader worker processes per training process.
        train: the :class:`~maelib.train.TrainConfig` (epochs, schedule, masking, weight decay, ...);
            its ``lr`` and ``accum_steps`` are filled in when the run starts.
        preset: the preset :func:`get_config` sized it for (recorded in checkpoints with the name).
    """

    name: str
    model: str
    dataset: str
    img_size: int
    patch_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    data_folder: str | None = None
    augment: dict[str, Any] | None = field(default_factory=lambda: {"crop_scale": (0.8, 1.0), "hflip": True})
    decode_scale: float = 1.0
    split: str = "random"
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    subset: int | None = None
    batch_size: int = 64
    val_batch_size: int = 256
    global_batch: int | None = None
    blr: float = 1.5e-4
    lr: float | None = None
    loss: str = "mse"
    ssim_weight: float = 4.0
    init_from: str | None = None
    normalize_inputs: bool = False
    workers: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_CONFIGS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODEL_CONFIGS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {DATASETS}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES}")
        if self.split not in ("random", "hint"):
            raise ValueError(f"split must be 'random' or 'hint', got {self.split!r}")
        if min(self.val_fraction, self.test_fraction) < 0 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction and test_fraction must be >= 0 and leave images to train on, got "
                             f"{self.val_fraction} and {self.test_fraction}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be >= 1, got {self.subset}: it is the number of training images kept "
                             "(leave it out to keep them all)")
        if self.batch_size < 1 or (self.global_batch is not None and self.global_batch < 1):
            raise ValueError(f"need batch_size >= 1 and global_batch None or >= 1, got {self.batch_size}, "
                             f"{self.global_batch}")
        if self.decode_scale < 1:
            raise ValueError(f"decode_scale must be >= 1 (training images decoded at least at the model's size), "
                             f"got {self.decode_scale}")
        if self.init_from is not None and self.init_from not in CONFIGS and not str(self.init_from).endswith(".pt"):
            raise ValueError(f"init_from names no recipe and no checkpoint (.pt): {self.init_from!r}; recipes are "
                             f"{sorted(CONFIGS)}")
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError(f"learning rates must be > 0, got blr={self.blr}, lr={self.lr}")


def _by_preset(preset: str, *, smoke: Any, cpu: Any, gpu: Any) -> Any:
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[preset]


# --------------------------------------------------------------------------- the configurations
def tiny(preset: str) -> RunConfig:
    """A 2-block ViT on 32x32 cats and dogs: try the command (and torchrun) in a minute on a CPU."""
    epochs = _by_preset(preset, smoke=1, cpu=10, gpu=10)
    return RunConfig(
        name="tiny", model="mae_vit_micro_patch4_32", img_size=32, dataset="cats_dogs",
        subset=_by_preset(preset, smoke=256, cpu=None, gpu=None), val_fraction=0.2,
        batch_size=64, blr=4e-3,  # lr 1e-3 at batch 64
        train=TrainConfig(epochs=epochs, warmup_epochs=1, schedule="cosine", masking={"mask_ratio": 0.75}))


def lesson01_mlp_cats_dogs(preset: str) -> RunConfig:
    """Lesson 01: the MLP-MAE on 48x48 cats and dogs, 6x6 patches, 75% random masking."""
    epochs = _by_preset(preset, smoke=1, cpu=50, gpu=50)  # the seed project's 50 epochs
    return RunConfig(
        name="lesson01_mlp_cats_dogs", model="mae_mlp_48", img_size=48, patch_size=6, dataset="cats_dogs",
        augment={"crop_scale": (0.8, 1.0), "hflip": True}, split="random", val_fraction=0.2,
        subset=_by_preset(preset, smoke=256, cpu=None, gpu=None), normalize_inputs=True,
        batch_size=128, blr=1e-2,  # lr 5e-3 at batch 128, the seed project's
        train=TrainConfig(epochs=epochs, warmup_epochs=1, weight_decay=0.05, schedule="cosine",
                          masking={"mask_ratio": 0.75}, seed=0))


def lesson02_vit_faces(preset: str) -> RunConfig:
    """Lesson 02: a small ViT-MAE on CelebA faces (64 px, patch 8; gpu 256 px, patch 16), 75% random masks.

    Like the notebook, it standardises the inputs with the training faces' per-channel statistics.
    """
    big = preset == "gpu"  # the lesson's 256 px geometry: encoder 384 x 12, decoder 256 x 4
    return RunConfig(
        name="lesson02_vit_faces", model="mae_vit_small_faces256" if big else "mae_vit_small_faces64",
        dataset="faces", data_kwargs={"variant": "celeba"}, img_size=256 if big else 64,
        augment={"crop_scale": None, "hflip": True},  # aligned faces: flips only, no crops
        normalize_inputs=True,
        split="random", val_fraction=0.1, test_fraction=0.1,  # the lesson's 80 / 10 / 10 split
        subset=_by_preset(preset, smoke=256, cpu=None, gpu=None),
        batch_size=128 if big else 16, val_batch_size=250,
        blr=3e-3 if big else 2.4e-2,  # lr 1.5e-3 at batch 128 / 1.5e-3 at batch 16
        train=TrainConfig(epochs=_by_preset(preset, smoke=1, cpu=70, gpu=100), schedule="onecycle",
                          weight_decay=0.05, masking={"mask_ratio": 0.75}, seed=0))


def _facades(preset: str, name: str, masking: dict[str, Any], *, epochs: int, warmup: float,
             patch_size: int | None = None, augment: dict[str, Any] | None = None, decode_scale: float = 1.5,
             loss: str | None = None, init_from: str | None = None) -> RunConfig:
    """The facade ViT-MAE of lessons 04 and 04b: 64 px, patch 8 (gpu: 224 px, patch 16), on CMP facades.

    The gpu preset's model is 224 px, patch 16, encoder 256 x 12, decoder 256 x 6; the cpu and smoke
    presets' is 64 px, patch 8, encoder 192 x 6, decoder 128 x 2. Inputs are standardised with the
    training facades' statistics; the training photos are decoded 1.5x larger so that the random
    crops keep detail. The loss is the masked MSE, with the VGG19 perceptual term (0.6 MSE + 0.4
    perceptual) on the gpu preset, where the ImageNet weights can be downloaded.
    """
    big = preset == "gpu"
    return RunConfig(
        name=name, model="mae_vit_facades", dataset="facades",
        img_size=224 if big else 64, patch_size=patch_size or (16 if big else 8),
        model_kwargs={} if big else dict(embed_dim=192, depth=6, num_heads=3, decoder_embed_dim=128,
                                         decoder_depth=2, decoder_num_heads=4),
        augment=augment or {"crop_scale": (0.4, 1.0), "hflip": True, "rotation": 5.0, "color_jitter": 0.1},
        decode_scale=decode_scale, normalize_inputs=True,
        split="hint",  # the source's 302 / 37 / 39 split
        subset=_by_preset(preset, smoke=48, cpu=None, gpu=None),
        batch_size=32 if big else 16, val_batch_size=64,
        blr=4e-3 if big else 1.6e-2,  # lr 5e-4 at batch 32 / 1e-3 at batch 16
        loss=loss or ("combined" if big else "mse"), init_from=init_from,
        train=TrainConfig(epochs=epochs, warmup_epochs=warmup, schedule="cosine", weight_decay=0.05,
                          grad_clip=1.0, masking=masking, seed=0))


# the masks of lesson 03, each trained into its own model in lesson 04; the test task is the band
FACADE_MASKS = {
    "random": {"mask_mode": "random", "mask_ratio": 0.75},
    "block": {"mask_mode": "block", "block_ratio": 0.5, "random_offset": True},
    "combined": {"mask_mode": "combined", "block_ratio": 0.3, "random_ratio": 0.45, "random_offset": True,
                 "horizontal_random_offset": True},
}
# fine-tuning sees whole facades framed as the test frames them: flips and colour jitter, no crops or rotation
WHOLE_FACADES = {"crop_scale": None, "hflip": True, "color_jitter": 0.1}


def _lesson04(preset: str, strategy: str) -> RunConfig:
    epochs = _by_preset(preset, smoke=1, cpu=60, gpu=400)
    return _facades(preset, f"lesson04_facades_{strategy}", FACADE_MASKS[strategy], epochs=epochs,
                    warmup=min(5, epochs / 10) if preset != "gpu" else 20)


def lesson04_facades_random(preset: str) -> RunConfig:
    """Lesson 04: the facade ViT-MAE trained on random masks (75%), scored on bands (64 px; gpu 224 px)."""
    return _lesson04(preset, "random")


def lesson04_facades_block(preset: str) -> RunConfig:
    """Lesson 04: the facade ViT-MAE trained on bands of half the rows (64 px; gpu 224 px, + VGG19 loss)."""
    return _lesson04(preset, "block")


def lesson04_facades_combined(preset: str) -> RunConfig:
    """Lesson 04: the facade ViT-MAE trained on a square + random patches (seed 003's masks)."""
    return _lesson04(preset, "combined")


def lesson04_facades_block_patch4(preset: str) -> RunConfig:
    """Lesson 04: the block recipe on a grid twice as fine (patch 4; gpu 8), a quarter of the epochs."""
    run = _lesson04(preset, "block")
    epochs = max(1, run.train.epochs // 4)
    return dataclasses.replace(run, name="lesson04_facades_block_patch4", patch_size=run.patch_size // 2,
                               train=dataclasses.replace(run.train, epochs=epochs, warmup_epochs=min(5, epochs / 10)))


def _pretrain(preset: str, name: str, strategy: str) -> RunConfig:
    epochs = _by_preset(preset, smoke=1, cpu=400, gpu=1600)
    return _facades(preset, name, FACADE_MASKS[strategy], epochs=epochs, warmup=min(5, epochs / 10), loss="mse")


def _finetune(preset: str, name: str, init_from: str, loss: str | None = None) -> RunConfig:
    epochs = _by_preset(preset, smoke=1, cpu=30, gpu=100)
    return _facades(preset, name, FACADE_MASKS["block"], epochs=epochs, warmup=min(3, epochs / 10),
                    augment=WHOLE_FACADES, decode_scale=1.0, loss=loss or "mse", init_from=init_from)


def lesson04b_facades_pretrain(preset: str) -> RunConfig:
    """Lesson 04b: pre-training on facades with random masks, for long (400 epochs; gpu 1600)."""
    return _pretrain(preset, "lesson04b_facades_pretrain", "random")


def lesson04b_facades_finetune(preset: str) -> RunConfig:
    """Lesson 04b: the random-mask pre-training fine-tuned on bands of whole facades (30 epochs; gpu 100)."""
    return _finetune(preset, "lesson04b_facades_finetune", "lesson04b_facades_pretrain")


def lesson04b_facades_finetune_ssim(preset: str) -> RunConfig:
    """Lesson 04b: the same fine-tuning with masked MSE + 4 x (1 - SSIM of the paste-back)."""
    return _finetune(preset, "lesson04b_facades_finetune_ssim", "lesson04b_facades_pretrain", loss="mse+ssim")


def lesson04b_facades_finetune_vgg(preset: str) -> RunConfig:
    """Lesson 04b: the same fine-tuning with 0.6 masked MSE + 0.4 VGG19 perceptual (needs the VGG19 weights)."""
    return _finetune(preset, "lesson04b_facades_finetune_vgg", "lesson04b_facades_pretrain", loss="combined")


def lesson04b_facades_block_pretrain(preset: str) -> RunConfig:
    """Lesson 04b, the control: the same long pre-training, on bands instead of random masks."""
    return _pretrain(preset, "lesson04b_facades_block_pretrain", "block")


def lesson04b_facades_block_finetune(preset: str) -> RunConfig:
    """Lesson 04b, the control: the band pre-training, fine-tuned like the random one (same 430 epochs)."""
    return _finetune(preset, "lesson04b_facades_block_finetune", "lesson04b_facades_block_pretrain")


def paper_vit_base(preset: str) -> RunConfig:
    """The paper's pre-training recipe: ViT-B/16 at 224 px, batch 4096, 800 epochs (needs --data-folder)."""
    smoke = preset == "smoke"  # checks the pipeline on a few images; the recipe itself needs GPUs
    return RunConfig(
        name="paper_vit_base", model="mae_vit_base_patch16", model_kwargs={"norm_pix_loss": True},
        img_size=224, patch_size=16, dataset="imagefolder",
        augment={"crop_scale": (0.2, 1.0), "hflip": True},  # RandomResizedCrop(0.2, 1) + flip, as the paper
        val_fraction=0.0,  # the paper validates by fine-tuning, not by a reconstruction loss
        subset=64 if smoke else None,
        batch_size=8 if smoke else 64,  # per GPU, as in facebookresearch/mae
        global_batch=None if smoke else 4096,  # 64 x 8 GPUs x 8 accumulation steps, or 64 x 64 GPUs
        blr=1.5e-4,  # lr 2.4e-3 at 4096
        workers=2 if smoke else 10,
        train=TrainConfig(epochs=1 if smoke else 800,  # 800 in the paper's main table; 1600 is better still
                          warmup_epochs=0 if smoke else 40, schedule="cosine", weight_decay=0.05,
                          betas=(0.9, 0.95), masking={"mask_ratio": 0.75}))


CONFIGS: dict[str, Callable[[str], RunConfig]] = {
    f.__name__: f for f in (tiny, lesson01_mlp_cats_dogs, lesson02_vit_faces,
                            lesson04_facades_random, lesson04_facades_block, lesson04_facades_combined,
                            lesson04_facades_block_patch4, lesson04b_facades_pretrain, lesson04b_facades_finetune,
                            lesson04b_facades_finetune_ssim, lesson04b_facades_finetune_vgg,
                            lesson04b_facades_block_pretrain, lesson04b_facades_block_finetune, paper_vit_base)
}


# --------------------------------------------------------------------------- lesson 06: what the encoder learned
# One split for everything lesson 06 trains and scores: cats and dogs, stratified 70 / 10 / 20 (seed 0),
# so the 800 test images are never pre-trained, fine-tuned or probed on.
_LESSON06_SPLIT = dict(dataset="cats_dogs", split="random", val_fraction=0.1, test_fraction=0.2)


def lesson06_mae_cats_dogs(preset: str) -> RunConfig:
    """Lesson 06: lesson 02's ViT-MAE (64 px, patch 8) pre-trained on cats and dogs, labels unused."""
    epochs = _by_preset(preset, smoke=1, cpu=40, gpu=100)
    return RunConfig(
        name="lesson06_mae_cats_dogs", model="mae_vit_small_faces64", img_size=64, **_LESSON06_SPLIT,
        model_kwargs={"norm_pix_loss": True},  # the paper's target: each hidden patch standardised
        augment={"crop_scale": (0.5, 1.0), "hflip": True}, normalize_inputs=True,
        subset=_by_preset(preset, smoke=256, cpu=None, gpu=None),
        batch_size=32, val_batch_size=200,
        blr=1.2e-2,  # lr 1.5e-3 at batch 32
        train=TrainConfig(epochs=epochs, warmup_epochs=min(5, epochs / 10), schedule="cosine", weight_decay=0.05,
                          masking={"mask_ratio": 0.75}, seed=0))


def lesson06_finetune_cats_dogs(preset: str) -> RunConfig:
    """Lesson 06: cat-or-dog classification on the same split, for ``maelib.probe.finetune`` (not ``maelib train``).

    The encoder's architecture and input normalisation come from the encoder being tuned (the cpu
    preset's MAE above, 64 px; the gpu preset's official ViT-B/16 at 224 px); this recipe gives the
    images (pixels in [0, 1]), the augmentation, the batch and the schedule, the same for every
    encoder, so that fine-tuning and training from scratch differ only in where the weights start.
    """
    big = preset == "gpu"
    epochs = _by_preset(preset, smoke=1, cpu=15, gpu=20)
    return RunConfig(
        name="lesson06_finetune_cats_dogs", model="mae_vit_base_patch16" if big else "mae_vit_small_faces64",
        img_size=224 if big else 64, **_LESSON06_SPLIT,
        augment={"crop_scale": (0.5, 1.0), "hflip": True}, normalize_inputs=False,
        subset=_by_preset(preset, smoke=256, cpu=None, gpu=None),
        batch_size=32, val_batch_size=200, preset=preset,
        blr=_by_preset(preset, smoke=2.4e-3, cpu=2.4e-3, gpu=8e-4),  # lr 3e-4 / 1e-4 at batch 32
        train=TrainConfig(epochs=epochs, warmup_epochs=min(2, epochs / 10), schedule="cosine", weight_decay=0.05,
                          task="classify", label_smoothing=0.1, seed=0))


CONFIGS["lesson06_mae_cats_dogs"] = lesson06_mae_cats_dogs  # the fine-tuning recipe is not one `maelib train` runs


# --------------------------------------------------------------------------- lesson 05: fine-tuning pretrained weights
def lesson05_finetune_facades(preset: str) -> RunConfig:
    """Lesson 05: a pretrained ViT-MAE fine-tuned on facades with bands masked, for ``maelib.train.fit`` in the lesson.

    The model is the pretrained one's (gpu: the official ViT-B/16 at 224 px, patch 16; cpu and smoke:
    lesson 02's faces model, 64 px, patch 8), loaded by the lesson; this recipe gives its size, the
    images, the batch, the schedule and the masks (lesson 04's bands). ``lr`` is the rate from
    scratch; the lesson fine-tunes pretrained weights at half of it.
    """
    big = preset == "gpu"
    epochs = _by_preset(preset, smoke=1, cpu=60, gpu=100)
    return RunConfig(
        name="lesson05_finetune_facades", model="mae_vit_base_patch16" if big else "mae_vit_small_faces64",
        dataset="facades", img_size=224 if big else 64, patch_size=16 if big else 8,
        augment={"crop_scale": (0.4, 1.0), "hflip": True, "rotation": 5.0, "color_jitter": 0.1}, decode_scale=1.5,
        normalize_inputs=True, split="hint", subset=_by_preset(preset, smoke=48, cpu=None, gpu=None),
        batch_size=32 if big else 16, val_batch_size=64, lr=5e-4 if big else 1e-3,
        train=TrainConfig(epochs=epochs, warmup_epochs=min(5, epochs / 10), schedule="cosine", weight_decay=0.05,
                          grad_clip=1.0, masking={"mask_mode": "block", "block_ratio": 0.5, "random_offset": True},
                          seed=0))


# --------------------------------------------------------------------------- what fits a T4
# Peak memory of one gpu-preset training step of each recipe, in GiB, that it must stay under: counted in
# float32 by maelib.costs.step_memory (fp16 autocast, which a T4 trains in, holds less), printed by
# `python -m maelib lessons predict --memory`. tests/test_memory.py fails when a recipe outgrows its budget or has
# none, and when a budget exceeds maelib.costs.T4_USABLE_GIB (12 of the T4's 16 GB).
GPU_MEMORY_BUDGET_GIB: dict[str, float] = {  # about 1.2 x the count, rounded up to half a GiB
    "tiny": 0.5,
    "lesson01_mlp_cats_dogs": 0.5,
    "lesson02_vit_faces": 6.5,
    "lesson04_facades_random": 6.5,
    "lesson04_facades_block": 7.0,
    "lesson04_facades_combined": 6.5,
    "lesson04_facades_block_patch4": 11.0,
    "lesson04b_facades_pretrain": 1.5,
    "lesson04b_facades_finetune": 2.0,
    "lesson04b_facades_finetune_ssim": 2.5,
    "lesson04b_facades_finetune_vgg": 7.0,
    "lesson04b_facades_block_pretrain": 2.0,
    "lesson04b_facades_block_finetune": 2.0,
    "lesson05_finetune_facades": 6.0,
    "lesson06_mae_cats_dogs": 0.5,
    "lesson06_finetune_cats_dogs": 6.0,
    "paper_vit_base": 8.0,  # per GPU at batch 64; on a T4 as well, with more accumulation steps
}


def recipe(name: str, preset: str | None = None) -> RunConfig:
    """Any recipe of this module by name: those of :data:`CONFIGS` and the lessons' own (lessons 05 and 06's
    fine-tuning, which ``maelib train`` does not run)."""
    if name in CONFIGS:
        return get_config(name, preset)
    f = globals().get(name)
    if not name.startswith("lesson") or not callable(f):
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(GPU_MEMORY_BUDGET_GIB)}")
    preset = preset or current_preset()
    return dataclasses.replace(f(preset), preset=preset)


def get_config(name: str, preset: str | None = None) -> RunConfig:
    """The named configuration for ``preset`` (default: the preset in force, see :mod:`maelib.presets`)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; choose one of {sorted(CONFIGS)}")
    preset = preset or current_preset()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    return dataclasses.replace(CONFIGS[name](preset), preset=preset)


def summary(run: RunConfig, world_size: int = 1) -> str:
    """The recipe in a few lines: what a lesson prints so that the reader sees what it trains."""
    accum, global_batch = batch_plan(run, world_size)
    t = run.train
    lr = f"lr {learning_rate(run, global_batch):.3g}" + ("" if run.lr is not None else
                                                       f" (blr {run.blr:g} x batch {global_batch} / 256)")
    split = "the source's own split" if run.split == "hint" else \
        f"random: {run.val_fraction:.0%} validation, {run.test_fraction:.0%} test"
    data_kwargs = f" {run.data_kwargs}" if run.data_kwargs else ""
    inputs = "standardised per channel with the training images' statistics" if run.normalize_inputs else \
        "pixels in [0, 1]"
    warmup = f", warmup {t.warmup_epochs:g} epochs" if t.warmup_epochs else ""
    return "\n".join([
        f"recipe {run.name} ({run.preset or 'custom'} preset)",
        f"  model     {run.model}, {run.img_size} px" + (f", patch {run.patch_size}" if run.patch_size else "")
        + (f", {run.model_kwargs}" if run.model_kwargs else "")
        + (f", loss {_loss_name(run)}" if run.loss != "mse" else "")
        + (f"; starts from {_start(run)}" if run.init_from else ""),
        f"  data      {run.dataset}{data_kwargs}; split {split}"
        + (f"; training on the first {run.subset} images" if run.subset else ""),
        f"  inputs    {inputs}; augmentation {run.augment}"
        + (f" (training images decoded at {round(run.img_size * run.decode_scale)} px)"
           if run.decode_scale != 1 else ""),
        f"  training  {t.epochs} epochs of batches of {run.batch_size}"
        + (f" x {accum} accumulated" if accum > 1 else "")
        + f", {lr}, {t.schedule}{warmup}, weight decay {t.weight_decay}, "
        + (f"masks {t.masking}" if t.task == "mae" else f"cross-entropy, label smoothing {t.label_smoothing}")
        + f", seed {t.seed}",
    ])


def _start(run: RunConfig) -> str:
    return f"the trained {run.init_from} ({run.preset} preset)" if run.init_from in CONFIGS else str(run.init_from)


def _loss_name(run: RunConfig) -> str:
    return {"combined": "0.6 masked MSE + 0.4 VGG19 perceptual",
            "mse+ssim": f"masked MSE + {run.ssim_weight:g} x (1 - SSIM of the paste-back)"}.get(run.loss, run.loss)


def describe() -> str:
    """One line per configuration: its name and what it trains."""
    width = max(map(len, CONFIGS)) + 1
    return "\n".join(f"  {name:<{width}} {f.__doc__.splitlines()[0]}" for name, f in CONFIGS.items())


# --------------------------------------------------------------------------- batch and learning rate
def batch_plan(run: RunConfig, world_size: int) -> tuple[int, int]:
    """``(accum_steps, global batch)`` for ``world_size`` processes."""
    per_step = run.batch_size * world_size
    if run.global_batch is None:
        return run.train.accum_steps, per_step * run.train.accum_steps
    if run.global_batch % per_step:
        raise ValueError(f"global batch {run.global_batch} is not a multiple of batch {run.batch_size} x "
                         f"{world_size} processes = {per_step}; change --batch-size or --global-batch")
    return run.global_batch // per_step, run.global_batch


def learning_rate(run: RunConfig, global_batch: int) -> float:
    """``run.lr`` if given, else the paper's rule ``blr x global batch / 256``."""
    return run.lr if run.lr is not None else run.blr * global_batch / 256


def replace(run: RunConfig, **changes: Any) -> RunConfig:
    """A copy of ``run`` with ``changes``; keys that are not RunConfig fields go to ``run.train``
    (``lr`` is the run's: the train config's ``lr`` is worked out from it when the run starts)."""
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    run_changes = {k: v for k, v in changes.items() if k in run_fields}
    train_changes = {k: v for k, v in changes.items() if k not in run_fields}
    return dataclasses.replace(run, train=dataclasses.replace(run.train, **train_changes), **run_changes)


def as_dict(run: RunConfig) -> dict[str, Any]:
    """The configuration as plain data (for ``run.json`` and printing)."""
    from .checkpoint import to_plain

    return to_plain(run)


__all__ = ["CONFIGS", "DATASETS", "GPU_MEMORY_BUDGET_GIB", "LOSSES", "RunConfig", "as_dict", "batch_plan", "describe",
           "get_config", "learning_rate", "recipe", "replace"]
