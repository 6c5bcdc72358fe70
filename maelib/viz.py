"""Figures for the lessons (matplotlib).

Every function returns the :class:`matplotlib.figure.Figure`, already detached from pyplot's list of
open figures, so a notebook draws it exactly once: as the cell's result when it is the last
expression (``fig.savefig(...)`` works too). ``show=True`` draws it right away instead.

Images are ``(B, C, H, W)`` tensors in [0, 1], C = 1 (drawn in grey) or 3; pixel masks are
``(B, 1, H, W)`` with 1 = masked (``maelib.patches.patch_mask_to_pixels``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .labels import METRIC_LABELS, SERIES_LABELS, method_label
from .patches import paste_back

MASK_GREY = 0.5  # the colour of hidden patches


# words for the identifiers that histories and metric rows use
def _to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor -> ``(H, W)`` (C = 1) or ``(H, W, 3)`` array, clipped to [0, 1]."""
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (C, H, W) with C = 1 or 3, got {tuple(img.shape)}")
    arr = img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[2] == 1 else arr


def _imshow(ax: Axes, img: torch.Tensor, title: str | None = None) -> None:
    arr = _to_numpy_image(img)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(textwrap.fill(title, 24), fontsize=9)  # long titles wrap instead of running into the next


def _finish(fig: Figure, show: bool) -> Figure:
    fig.tight_layout()
    if show:
        plt.show()
    plt.close(fig)  # pyplot forgets it; the returned Figure still renders as a cell result
    return fig


def grey_out(imgs: torch.Tensor, pixel_mask: torch.Tensor, value: float = MASK_GREY) -> torch.Tensor:
    """``(B, C, H, W)``: the images as the encoder sees them, masked pixels painted grey."""
    return torch.where(pixel_mask.to(imgs.device) > 0.5, torch.full_like(imgs, value), imgs)


def show_images(imgs: torch.Tensor | Sequence[torch.Tensor], titles: Sequence[str] | None = None, nrow: int = 8, *,
                row_labels: Sequence[str] | None = None, size: float = 1.8, show: bool = False) -> Figure:
    """A grid of images ``(B, C, H, W)`` (or a list of ``(C, H, W)`` images of any sizes), ``nrow`` per
    row; one axes per image.

    ``titles`` label each image; ``row_labels`` label each row once, at its left (for rows that
    each show one method, where a title over every image would repeat it).
    """
    if torch.is_tensor(imgs) and imgs.ndim != 4:
        raise ValueError(f"show_images expects (B, C, H, W), got {tuple(imgs.shape)}")
    if not torch.is_tensor(imgs) and any(img.ndim != 3 for img in imgs):
        raise ValueError(f"show_images expects a list of (C, H, W) images, got shapes "
                         f"{[tuple(img.shape) for img in imgs]}")
    if titles is not None and len(titles) != len(imgs):
        raise ValueError(f"got {len(titles)} titles for {len(imgs)} images")
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    n = len(imgs)
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"got {len(row_labels)} row labels for {rows} rows of {cols} images")
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _imshow(ax, imgs[i], titles[i] if titles else None)
        else:
            fig.delaxes(ax)  # an incomplete last row
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(textwrap.fill(label, 16), fontsize=9)
    return _finish(fig, show)


def show_reconstructions(imgs: torch.Tensor, pred_imgs: torch.Tensor, pixel_mask: torch.Tensor, n: int = 8, *,
                         size: float = 1.8, show: bool = False) -> Figure:
    """Four rows for the first ``n`` images: original, masked, reconstruction, paste-back.

    ``pred_imgs`` ``(B, C, H, W)`` is the model's raw output (e.g. ``unpatchify(pred, p)``);
    the last row shows it with the true visible pixels put back.
    """
    if not imgs.shape == pred_imgs.shape or imgs.ndim != 4:
        raise ValueError(f"imgs {tuple(imgs.shape)} and pred_imgs {tuple(pred_imgs.shape)} "
                         f"must be equal (B, C, H, W) shapes")
    n = min(n, len(imgs))
    pixel_mask = pixel_mask[:n].to(imgs.device)
    imgs, pred_imgs = imgs[:n], pred_imgs[:n].to(imgs.device)
    pasted = paste_back(pred_imgs, imgs, pixel_mask)
    panels = {"original": imgs, "masked": grey_out(imgs, pixel_mask),
              "reconstruction": pred_imgs, "visible pasted back": pasted}
    fig, axes = plt.subplots(len(panels), n, figsize=(size * n, size * len(panels)), squeeze=False)
    for r, (label, batch) in enumerate(panels.items()):
        for c in range(n):
            _imshow(axes[r, c], batch[c])
        axes[r, 0].set_ylabel(label, fontsize=9)
    return _finish(fig, show)


def show_mask_gallery(imgs: torch.Tensor, masks: Mapping[str, torch.Tensor], *, n: int = 4,
                      patch_size: int | None = None, size: float = 1.8, show: bool = False) -> Figure:
    """One row per masking strategy, the first ``n`` images with their masked pixels greyed out.

    ``masks`` maps a strategy's name to a pixel mask ``(B, 1, H, W)`` (or ``(1, 1, H, W)``,
    used for every image). With ``patch_size`` the titles give the number of masked patches.
    """
    if not masks:
        raise ValueError("masks is empty; give at least one {name: pixel_mask}")
    n = min(n, len(imgs))
    fig, axes = plt.subplots(len(masks), n, figsize=(size * n, size * len(masks)), squeeze=False)
    for r, (name, pixel_mask) in enumerate(masks.items()):
        if (pixel_mask.ndim != 4 or pixel_mask.shape[0] not in (1, len(imgs)) or pixel_mask.shape[1] != 1
                or pixel_mask.shape[2:] != imgs.shape[2:]):
            raise ValueError(f"mask {name!r} must be (B, 1, H, W) or (1, 1, H, W) with B = {len(imgs)}, "
                             f"H, W = {tuple(imgs.shape[2:])}; got {tuple(pixel_mask.shape)}")
        pixel_mask = pixel_mask.expand(len(imgs), -1, -1, -1)
        for c in range(n):
            title = name
            if patch_size:
                title += f" ({round(float(pixel_mask[c].sum()) / patch_size**2)} masked)"
            _imshow(axes[r, c], grey_out(imgs[c:c + 1], pixel_mask[c:c + 1])[0], title)
    return _finish(fig, show)


def show_label_maps(imgs: torch.Tensor, label_maps: torch.Tensor, class_names: Mapping[int, str], *,
                    size: float = 2.2, show: bool = False) -> Figure:
    """Photos ``(B, C, H, W)`` above their label maps ``(B, 1, H, W)`` of class ids, one colour per class,
    with a legend that names every class shown (``class_names``: id -> name)."""
    if label_maps.ndim != 4 or label_maps.shape[1] != 1 or label_maps.shape[0] != len(imgs):
        raise ValueError(f"label_maps must be (B, 1, H, W) with B = {len(imgs)}, got {tuple(label_maps.shape)}")
    ids = sorted(class_names)
    colours = plt.get_cmap("tab20", len(ids))
    lookup = torch.zeros(max(ids) + 1, 3)  # class id -> RGB; unknown ids stay black
    for k, class_id in enumerate(ids):
        lookup[class_id] = torch.tensor(colours(k)[:3])
    coloured = lookup[label_maps[:, 0].long()].permute(0, 3, 1, 2)  # (B, 3, H, W)
    n = len(imgs)
    fig, axes = plt.subplots(2, n, figsize=(size * n, size * 2 + 0.9), squeeze=False)
    for c in range(n):
        _imshow(axes[0, c], imgs[c])
        _imshow(axes[1, c], coloured[c])
    axes[0, 0].set_ylabel("photo", fontsize=9)
    axes[1, 0].set_ylabel("labels", fontsize=9)
    present = [i for i in ids if bool((label_maps == i).any())]
    handles = [plt.Rectangle((0, 0), 1, 1, color=lookup[i].tolist()) for i in present]
    rows = -(-len(present) // 6)  # legend rows of up to 6 classes, below the maps
    fig.legend(handles, [class_names[i] for i in present], loc="lower center", ncol=min(len(present), 6),
               frameon=False)
    fig.tight_layout(rect=(0, 0.3 * rows / (size * 2 + 0.9), 1, 1))  # leave the legend its own strip
    if show:
        plt.show()
    plt.close(fig)
    return fig


def plot_history(history: Mapping[str, Sequence[float]], *, logy: bool = False, show: bool = False,
                 loss_label: str = "loss (masked MSE)") -> Figure:
    """Curves against epochs (1, 2, ...) for a dict like ``{"train_loss": [...], "val_loss": [...]}``.

    Keys containing ``loss`` share the first axes (y label ``loss_label``); any other series (e.g.
    ``lr``) get a second axes beside it, since their scale differs. Empty series are skipped.
    """
    series = {k: list(v) for k, v in history.items() if len(v) > 0}
    if not series:
        raise ValueError(f"history has no values to plot (keys: {list(history)})")
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if "loss" not in k}
    groups = [g for g in (losses, others) if g]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    for ax, group in zip(axes.flat, groups, strict=True):
        for key, values in group.items():
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, marker="o" if len(values) < 30 else None, markersize=3,
                    label=SERIES_LABELS.get(key, key))
        ax.set_xlabel("epoch")
        ax.set_ylabel(loss_label if group is losses else
                      ", ".join(SERIES_LABELS.get(k, k) for k in group) + (" (log scale)" if logy else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, show)


def plot_metric_bars(rows: Sequence[Mapping], metrics: Sequence[str] = ("masked_psnr", "ssim"), *,
                     show: bool = False) -> Figure:
    """Horizontal bars per method, one axes per metric, for rows from ``evaluate_reconstructions``."""
    if not rows:
        raise ValueError("rows is empty; nothing to compare")
    missing = [m for m in metrics if any(m not in row for row in rows)]
    if missing:
        raise ValueError(f"metric(s) {missing} missing in some rows; rows have keys {list(rows[0])}")
    names = [method_label(row["method"]) for row in rows]
    figsize = (4 * len(metrics), 0.45 * len(rows) + 1.2)
    fig, axes = plt.subplots(1, len(metrics), figsize=figsize, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=True):
        values = [float(row[metric]) for row in rows]
        bars = ax.barh(names, values, color="tab:blue")
        ax.bar_label(bars, fmt="%.3g", fontsize=8, padding=2)
        ax.invert_yaxis()  # first row on top, as in the table
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.margins(x=0.2)
    for ax in axes.flat[1:]:
        ax.tick_params(labelleft=False)  # the method names are on the first axes
    return _finish(fig, show)
