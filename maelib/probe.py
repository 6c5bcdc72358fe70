"""What an encoder learned: frozen features, linear probes, k-NN, and fine-tuning the top blocks.

The MAE paper judges pre-training by what the encoder's features are good for, in three ways
that this module gives at any scale:

* **linear probing** (:func:`linear_probe`): freeze the encoder, compute every image's features
  once (:func:`extract_features`: the class token, and the mean of the patch tokens), and train a
  linear classifier on them, behind a ``BatchNorm1d`` without affine parameters, as the paper does;
* **k-NN** (:func:`knn_predict`): no training at all, each test image takes the majority label of
  its ``k`` nearest training images by cosine similarity (scikit-learn);
* **fine-tuning** (:func:`finetune`): an :class:`~maelib.models.MAEClassifier` on the encoder,
  trained whole, or only its top ``k`` blocks (:func:`tune_top_blocks`, the paper's partial
  fine-tuning), or from random weights (training from scratch).

Every classifier trains through :func:`maelib.train.fit` with ``task="classify"``: the same
loop as pre-training, with the cross-entropy as loss and the accuracy as validation metric.
Test accuracies come with 95% Wilson intervals (:func:`score`), and two classifiers scored on the
same test images are compared with McNemar's exact test (:func:`mcnemar`)::

    feats = extract_features(encoder, splits["train"], normalizer=norm)
    probe, history = linear_probe(feats.get("cls"), splits["train"].labels, ...)
    print(score(predict_features(probe, test_feats.get("cls")), test_labels))
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from .configs import RunConfig, learning_rate
from .data import ImageSet, train_transforms
from .models import MAEClassifier, MaskedAutoencoderViT
from .precision import resolve_amp
from .presets import default_device
from .pretrained import freeze_pretrained_weights
from .train import History, TrainConfig, fit, make_loader

if TYPE_CHECKING:
    from .normalize import PixelNormalizer

POOLS = ("cls", "mean", "cls+mean")


# --------------------------------------------------------------------------- features
@dataclass
class Features:
    """An encoder's features of a set of images, one row per image.

    Attributes:
        cls: ``(N, D)`` the class token after the encoder's last block and norm.
        mean: ``(N, D)`` the patch tokens averaged over the image.
        labels: ``(N,)`` the images' labels (None if they have none).
    """

    cls: torch.Tensor
    mean: torch.Tensor
    labels: torch.Tensor | None = None

    def get(self, pool: str) -> torch.Tensor:
        """``"cls"``, ``"mean"``, or ``"cls+mean"`` (both side by side, ``(N, 2D)``)."""
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        return torch.cat([self.cls, self.mean], dim=1) if pool == "cls+mean" else getattr(self, pool)


def _as_floats(images: ImageSet | torch.Tensor) -> torch.Tensor:
    imgs = images.images if isinstance(images, ImageSet) else images
    if imgs.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(imgs.shape)}")
    return imgs.float() / 255 if imgs.dtype == torch.uint8 else imgs.float()


@torch.no_grad()
def encode(encoder: MaskedAutoencoderViT, images: ImageSet | torch.Tensor, *,
           normalizer: PixelNormalizer | None = None, batch_size: int = 200,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Every token of whole images (nothing masked): ``(N, 1 + num_patches, D)``, class token first, float32 on the CPU.

    ``images``: an :class:`~maelib.data.ImageSet` or a tensor ``(N, C, H, W)``, uint8 (0..255) or
    floats in [0, 1]; ``normalizer``: the one the encoder was pre-trained with (applied here).
    Runs in eval mode, ``batch_size`` images at a time, in the precision ``amp="auto"`` picks.
    """
    if not isinstance(encoder, MaskedAutoencoderViT):
        raise TypeError(f"encode takes a MaskedAutoencoderViT (for an MAEClassifier, pass its .mae), "
                        f"got {type(encoder).__name__}")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    imgs = _as_floats(images)
    amp_dtype = resolve_amp("auto", device)
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for start in range(0, len(imgs), batch_size):
            x = imgs[start:start + batch_size].to(device)
            x = normalizer(x) if normalizer is not None else x
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out.append(encoder.forward_features(x).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def extract_features(encoder: MaskedAutoencoderViT, images: ImageSet | torch.Tensor, **kwargs) -> Features:
    """The frozen features of every image: class token and mean patch token (:class:`Features`).

    Takes the arguments of :func:`encode`; an :class:`~maelib.data.ImageSet`'s labels come along.
    """
    tokens = encode(encoder, images, **kwargs)
    labels = images.labels if isinstance(images, ImageSet) else None
    return Features(cls=tokens[:, 0], mean=tokens[:, 1:].mean(dim=1), labels=labels)


# --------------------------------------------------------------------------- linear probe
class LinearProbe(nn.Module):
    """The paper's linear probe: ``BatchNorm1d(affine=False)`` then a linear layer, ``(B, D)`` -> ``(B, classes)``.

    The parameter-free BatchNorm standardises every feature with the training set's statistics
    (running averages at evaluation); it changes nothing a linear layer could not, but features of
    very different scales (MAE's are) then train well with one learning rate.
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)  # as facebookresearch/mae's main_linprobe.py
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(features))


def _check_pairs(features: torch.Tensor, labels: torch.Tensor | None, what: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"{what}: these images have no labels; a probe needs labelled images")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"{what}: need features (N, D) and N labels, got {tuple(features.shape)} and {len(labels)} "
                         "labels")
    return labels


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor,
                 val_features: torch.Tensor | None = None, val_labels: torch.Tensor | None = None, *,
                 num_classes: int | None = None, epochs: int = 100, lr: float = 1e-3, batch_size: int = 256,
                 seed: int = 0, device: torch.device | str | None = None,
                 progress: bool = False) -> tuple[LinearProbe, History]:
    """Train a :class:`LinearProbe` on frozen features with :func:`maelib.train.fit`; return it and its history.

    AdamW without weight decay, cosine schedule with one warmup epoch, ``batch_size`` feature
    vectors a step (the paper: LARS, batch 16384, 90 epochs on ImageNet's 1.28 M images; with a
    few thousand images, smaller batches and more epochs). The features are computed once, so the
    probe sees no augmentation. ``history["val_accuracy"]`` follows the validation features.
    ``num_classes``: default the largest training label + 1.
    """
    train_labels = _check_pairs(train_features, train_labels, "train")
    num_classes = num_classes or int(train_labels.max()) + 1
    torch.manual_seed(seed)
    probe = LinearProbe(train_features.shape[1], num_classes)
    train_loader = make_loader(TensorDataset(train_features.float(), train_labels), batch_size, shuffle=True, seed=seed)
    val_loader = None
    if val_features is not None:
        val_loader = make_loader(TensorDataset(val_features.float(), _check_pairs(val_features, val_labels, "val")),
                                 1024, shuffle=False)
    config = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.0, warmup_epochs=min(1, epochs / 10), schedule="cosine",
                         amp="off", task="classify", seed=seed, progress=progress)
    history = fit(probe, train_loader, val_loader, config, device=device or "cpu")
    return probe.eval(), history


@torch.no_grad()
def predict_features(probe: nn.Module, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The classes ``probe`` gives ``features`` ``(N, D)``: ``(N,)`` int64 on the CPU."""
    device = next(probe.parameters()).device
    was_training = probe.training
    probe.eval()
    out = [probe(features[i:i + batch_size].float().to(device)).argmax(dim=1).cpu()
           for i in range(0, len(features), batch_size)]
    probe.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------- k-NN
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, features: torch.Tensor,
                k: int = 20) -> torch.Tensor:
    """The majority label of each row's ``k`` nearest training rows by cosine similarity: ``(N,)`` int64.

    scikit-learn's ``KNeighborsClassifier`` (brute force, cosine distance, uniform votes); the
    features are used as they are, with no training. ``k`` is capped at the training set's size.
    """
    from sklearn.neighbors import KNeighborsClassifier

    train_labels = _check_pairs(train_features, train_labels, "k-NN training set")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_features)), metric="cosine", algorithm="brute")
    knn.fit(train_features.float().numpy(), train_labels.numpy())
    return torch.as_tensor(knn.predict(features.float().numpy()), dtype=torch.long)


# --------------------------------------------------------------------------- fine-tuning
def tune_top_blocks(classifier: MAEClassifier, k: int | None) -> MAEClassifier:
    """Make only the top ``k`` encoder blocks (with the final norm) and the head trainable; ``None``: the whole encoder.

    The paper's partial fine-tuning (its figure 9): ``k = 0`` trains the head alone on frozen
    features; ``k = depth`` is full fine-tuning. The patch embedding, the class token and the lower
    blocks are frozen (``requires_grad=False``: ``fit`` leaves them out of the optimizer, and no
    gradient is computed below the lowest trainable block). The decoder, which a classifier never
    runs, is always frozen. Returns the classifier.
    """
    mae, depth = classifier.mae, len(classifier.mae.blocks)
    k = depth if k is None else k
    if not 0 <= k <= depth:
        raise ValueError(f"k must be between 0 and the encoder's {depth} blocks (or None for all), got {k}")
    mae.requires_grad_(True)
    mae.pos_embed.requires_grad_(False)  # fixed sin-cos positions, never trained
    freeze_pretrained_weights(mae, num_blocks=depth - k, norm=k == 0)
    if k == depth:
        mae.cls_token.requires_grad_(True)
        mae.patch_embed.requires_grad_(True)
    for name, module in mae.named_children():
        if name.startswith("decoder"):
            module.requires_grad_(False)
    for name in ("mask_token", "decoder_pos_embed"):
        getattr(mae, name).requires_grad_(False)
    return classifier


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the trained classifier (eval mode), its history and training minutes."""

    model: MAEClassifier
    history: History
    minutes: float


def finetune(encoder: MaskedAutoencoderViT, train: ImageSet, val: ImageSet | None, run: RunConfig, *,
             normalizer: PixelNormalizer | None = None, top_k: int | None = None, pool: str = "mean",
             device: torch.device | str | None = None, progress: bool = True) -> FinetuneResult:
    """Train a classifier on (a copy of) ``encoder`` with :func:`maelib.train.fit`, as the recipe ``run`` says.

    Args:
        encoder: the pre-trained encoder (left unchanged: a copy is tuned), or a freshly built one
            to train from scratch.
        train / val: labelled images (uint8 :class:`~maelib.data.ImageSet` s, e.g. a recipe's
            ``runs.load_data(run).splits``); ``run.subset`` keeps that many training images, drawn at random.
        run: the classification recipe (``configs.lesson06_finetune_cats_dogs``): augmentation,
            batch, learning rate (``blr`` x batch / 256), epochs, schedule, label smoothing.
        normalizer: the input normalisation the encoder was pre-trained with (after augmentation).
        top_k: tune only the top ``k`` blocks (:func:`tune_top_blocks`); None: the whole encoder.
        pool: the classifier's features, ``"mean"`` (the paper's fine-tuning default) or ``"cls"``.
    """
    if run.train.task != "classify":
        raise ValueError(f"recipe {run.name} trains task={run.train.task!r}; finetune needs a classification "
                         "recipe (train.task='classify'), e.g. configs.lesson06_finetune_cats_dogs(preset)")
    if train.labels is None:
        raise ValueError("the training images have no labels: fine-tuning needs labelled images")
    device = torch.device(device) if device is not None else default_device()
    if run.subset is not None:  # drawn at random: a split's first images may all be of one class
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.train.seed))
        train = train.subset(order[:run.subset])
    num_classes = len(train.class_names) or int(train.labels.max()) + 1
    torch.manual_seed(run.train.seed)
    classifier = tune_top_blocks(MAEClassifier(copy.deepcopy(encoder), num_classes, pool=pool), top_k)
    # the crops come out at the encoder's size (the recipe's img_size is the size the images were loaded at)
    steps = [train_transforms(encoder.img_size, **run.augment)] if run.augment is not None else []
    augment = v2.Compose(steps + ([normalizer] if normalizer is not None else [])) if steps or normalizer else None
    train_loader = make_loader(train.dataset(augment), run.batch_size, shuffle=True, seed=run.train.seed)
    val_loader = make_loader(val.dataset(normalizer), run.val_batch_size, shuffle=False) if val is not None else None
    config = dataclasses.replace(run.train, lr=learning_rate(run, run.batch_size), progress=progress)
    start = time.perf_counter()
    history = fit(classifier, train_loader, val_loader, config, device=device)
    return FinetuneResult(classifier.eval(), history, (time.perf_counter() - start) / 60)


@torch.no_grad()
def predict(classifier: nn.Module, images: ImageSet | torch.Tensor, *, normalizer: PixelNormalizer | None = None,
            batch_size: int = 200) -> torch.Tensor:
    """The classes a classifier of images gives ``images`` (uint8 or [0, 1] floats): ``(N,)`` int64 on the CPU."""
    device = next(classifier.parameters()).device
    imgs = _as_floats(images)
    amp_dtype = resolve_amp("auto", device)
    was_training = classifier.training
    classifier.eval()
    out = []
    for start in range(0, len(imgs), batch_size):
        x = imgs[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out.append(classifier(normalizer(x) if normalizer is not None else x).argmax(dim=1).cpu())
    classifier.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------- scores and their noise
def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% for ``z = 1.96``).

    Unlike ``p +- z sqrt(p (1 - p) / n)``, it stays inside [0, 1] and holds near 0 and 1 (Wilson 1927):

        centre = (p + z^2 / 2n) / (1 + z^2 / n),  half-width = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)
    """
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got correct={correct}, n={n}")
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Score:
    """An accuracy on ``n`` test images with its 95% Wilson interval."""

    correct: int
    n: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{self.accuracy:.1%} [{low:.1%}, {high:.1%}]"


def _right(predictions: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    predictions, labels = torch.as_tensor(predictions).cpu(), torch.as_tensor(labels).cpu()
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} must match")
    return (predictions == labels).numpy()


def score(predictions: torch.Tensor, labels: torch.Tensor) -> Score:
    """The accuracy of ``predictions`` against ``labels``, with its interval (:class:`Score`)."""
    right = _right(predictions, labels)
    return Score(int(right.sum()), len(right))


def mcnemar(predictions_a: torch.Tensor, predictions_b: torch.Tensor, labels: torch.Tensor) -> float:
    """McNemar's exact test: the p-value of "A and B are equally accurate" on the same test images.

    Only the images on which exactly one of the two is right count: under the null hypothesis each
    such image is A's or B's with probability 1/2 (a two-sided binomial test, scipy). Pairing the
    images makes it sharper than comparing two intervals: both models find the same images easy.
    """
    from scipy.stats import binomtest

    a, b = _right(predictions_a, labels), _right(predictions_b, labels)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class Comparison:
    """Two classifiers on the same test images: B's accuracy minus A's, and McNemar's p-value."""

    difference: float
    p_value: float

    @property
    def noise(self) -> bool:
        """True when the difference could well be chance (p >= 0.05)."""
        return self.p_value >= 0.05

    def __str__(self) -> str:
        verdict = "could be noise" if self.noise else "not noise"
        return f"{self.difference * 100:+.1f} points, p = {self.p_value:.2g} ({verdict})"


def compare(predictions_a: torch.Tensor, predictions_b: torch.Tensor, labels: torch.Tensor) -> Comparison:
    """How much more accurate B is than A on the same images, and whether that could be chance (:func:`mcnemar`)."""
    return Comparison(score(predictions_b, labels).accuracy - score(predictions_a, labels).accuracy,
                      mcnemar(predictions_a, predictions_b, labels))


def format_scores(rows: Mapping[str, Mapping[str, Score]], first: str = "") -> str:
    """A Markdown table: one row per key of ``rows``, one column per key of its values, ``Score`` s as text."""
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines)


__all__ = ["POOLS", "Comparison", "Features", "FinetuneResult", "LinearProbe", "Score", "compare", "encode",
           "extract_features", "finetune", "format_scores", "knn_predict", "linear_probe", "mcnemar", "predict",
           "predict_features", "score", "tune_top_blocks", "wilson_interval"]
