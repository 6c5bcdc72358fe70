"""How good is a reconstruction? Metrics, and the classical baselines every lesson compares with.

Conventions (all functions here):

* images are ``(B, C, H, W)`` float tensors in [0, 1] (C = 1 or 3);
* ``pixel_mask`` is ``(B, 1, H, W)``, 1 = masked (hidden from the model), 0 = visible;
  get it from a patch mask with ``maelib.patches.patch_mask_to_pixels(mask, patch_size)``.

Definitions:

* **paste-back**: the reconstruction with the true visible pixels put back. MAE puts no loss on
  visible patches, so its raw output there is poor; what a user of inpainting sees is the
  paste-back image.
* **masked PSNR**: ``10 * log10(1 / MSE)`` where the MSE runs over the masked pixels (all
  channels) of one image only -- the visible pixels would flatter every method equally. It is
  computed per image, then averaged over images (the mean of the PSNRs, not the PSNR of the mean
  MSE). A perfect reconstruction is capped at 100 dB so averages stay finite.
* **SSIM**: structural similarity of the paste-back image and the original (torchmetrics,
  Gaussian window 11x11, sigma 1.5, ``data_range=1``), per image, then averaged. SSIM looks at
  local structure, so it is computed on whole images, where the seams between visible and
  invented pixels count.

Neither metric clips: clip model outputs to [0, 1] first (:func:`evaluate_reconstructions` does).

Baselines (no learning, each fills only the masked pixels and keeps visible ones exactly):
:func:`mean_fill`, :func:`interpolate_fill`, :func:`telea_inpaint`, :func:`biharmonic_inpaint`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import cv2
import numpy as np
import torch
from scipy.interpolate import griddata
from scipy.spatial import QhullError
from skimage.restoration import inpaint_biharmonic

from .labels import COLUMN_LABELS, method_label
from .masking import Mask, make_mask
from .patches import check_images_and_mask, paste_back, patch_mask_to_pixels  # noqa: F401 (the lessons use metrics.paste_back)
from .ssim import ssim  # noqa: F401 (the lessons' score, metrics.ssim)

Filler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (imgs, pixel_mask) -> filled imgs

MAX_PSNR = 100.0  # dB, reported for a perfect reconstruction


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def masked_psnr(pred: torch.Tensor, target: torch.Tensor, pixel_mask: torch.Tensor, *,
                data_range: float = 1.0, per_image: bool = False) -> torch.Tensor:
    """PSNR in dB over the masked pixels of each image; their mean, or ``(B,)`` with ``per_image``."""
    check_images_and_mask(target, pixel_mask)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    m = (pixel_mask > 0.5).double().expand_as(target)  # every channel of a masked pixel counts
    squared_error = ((pred.double() - target.double()) ** 2 * m).sum(dim=(1, 2, 3))
    count = m.sum(dim=(1, 2, 3))
    if bool((count == 0).any()):
        empty = torch.nonzero(count == 0).flatten().tolist()
        raise ValueError(f"image(s) {empty} have no masked pixels; masked PSNR is undefined for them")
    mse = (squared_error / count).clamp_min(data_range**2 * 10 ** (-MAX_PSNR / 10))
    psnr = (10 * torch.log10(data_range**2 / mse)).float()
    return psnr if per_image else psnr.mean()


# --------------------------------------------------------------------------------------------
# Classical baselines
# --------------------------------------------------------------------------------------------

def _per_image(imgs: torch.Tensor, pixel_mask: torch.Tensor,
               fill: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> torch.Tensor:
    """Run ``fill(image (H, W, C) float64, masked (H, W) bool) -> (H, W, C)`` on every image.

    The result is pasted back, so visible pixels are returned exactly as they came in.
    """
    check_images_and_mask(imgs, pixel_mask)
    images = imgs.detach().cpu().double().permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    masks = (pixel_mask.detach().cpu()[:, 0] > 0.5).numpy()  # (B, H, W)
    filled = np.stack([fill(img, m) if m.any() else img for img, m in zip(images, masks, strict=True)])
    out = torch.from_numpy(filled).permute(0, 3, 1, 2).to(device=imgs.device, dtype=imgs.dtype)
    return paste_back(out, imgs, pixel_mask)


def mean_fill(imgs: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Fill masked pixels with the mean colour of the visible pixels of the same image."""
    check_images_and_mask(imgs, pixel_mask)
    visible = (pixel_mask <= 0.5).to(imgs.dtype)
    mean = (imgs * visible).sum(dim=(2, 3), keepdim=True) / visible.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    return paste_back(mean.expand_as(imgs), imgs, pixel_mask)


def _interpolate(img: np.ndarray, masked: np.ndarray) -> np.ndarray:
    known = np.argwhere(~masked)  # (n_visible, 2) pixel coordinates (row, col)
    holes = np.argwhere(masked)
    out = img.copy()
    try:
        values = griddata(known, img[~masked], holes, method="linear")  # (n_masked, C), NaN outside the hull
    except QhullError:  # too few or collinear visible pixels: no triangulation exists
        values = np.full((len(holes), img.shape[2]), np.nan)
    outside = np.isnan(values).any(axis=1)
    if outside.any():
        values[outside] = griddata(known, img[~masked], holes[outside], method="nearest")
    out[masked] = values
    return out


def interpolate_fill(imgs: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Linear interpolation from the visible pixels (``scipy.interpolate.griddata``).

    The visible pixel centres are triangulated (Delaunay) and each masked pixel gets the
    barycentric mix of its triangle's corners; masked pixels outside the visible pixels' convex
    hull (a hole at the border) take the nearest visible pixel's value.
    """
    return _per_image(imgs, pixel_mask, _interpolate)


def telea_inpaint(imgs: torch.Tensor, pixel_mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """OpenCV's fast-marching inpainting (Telea 2004, ``cv2.INPAINT_TELEA``).

    Works on 8-bit images, so the filled pixels are multiples of 1/255; ``radius`` is the
    neighbourhood (in pixels) each filled pixel is estimated from.
    """
    if imgs.ndim == 4 and imgs.shape[1] not in (1, 3):
        raise ValueError(f"cv2.inpaint needs 1 or 3 channels, got {imgs.shape[1]}")
    if radius < 1:
        raise ValueError(f"radius must be a positive number of pixels, got {radius}")

    def fill(img: np.ndarray, masked: np.ndarray) -> np.ndarray:
        img8 = np.ascontiguousarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        out = cv2.inpaint(img8, masked.astype(np.uint8) * 255, float(radius), cv2.INPAINT_TELEA)
        return out.reshape(img.shape).astype(np.float64) / 255  # cv2 drops a single channel axis

    return _per_image(imgs, pixel_mask, fill)


def biharmonic_inpaint(imgs: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """The smoothest fill (``skimage.restoration.inpaint_biharmonic``), clipped to [0, 1].

    The biharmonic equation keeps slopes continuous across the hole's border, so on large holes
    its solution overshoots beyond the range of the image. Recent scikit-image versions clip it
    to the range of the known pixels themselves; the clip here keeps every version in [0, 1].
    """
    def fill(img: np.ndarray, masked: np.ndarray) -> np.ndarray:
        if img.shape[2] == 1:
            out = inpaint_biharmonic(img[..., 0], masked)[..., None]
        else:
            out = inpaint_biharmonic(img, masked, channel_axis=-1)
        return np.clip(out, 0.0, 1.0)

    return _per_image(imgs, pixel_mask, fill)


BASELINES: dict[str, Filler] = {
    "mean_fill": mean_fill,
    "interpolate_fill": interpolate_fill,
    "telea_inpaint": telea_inpaint,
    "biharmonic_inpaint": biharmonic_inpaint,
}


# --------------------------------------------------------------------------------------------
# The comparison table
# --------------------------------------------------------------------------------------------

def masked_copies(images: torch.Tensor, patch_size: int, copies: int = 4, *, seed: int = 0, mask_mode: str = "block",
                  **mask_kwargs) -> tuple[torch.Tensor, Mask, torch.Tensor]:
    """A test task: every image ``copies`` times, each copy with its own mask, drawn from ``seed``.

    ``images`` ``(N, C, H, W)`` in [0, 1]; ``mask_mode`` and ``mask_kwargs`` as in
    :func:`maelib.masking.make_mask` (e.g. ``block_ratio=0.5, random_offset=True``). Returns
    ``(imgs (N * copies, C, H, W), mask, pixel_mask (N * copies, 1, H, W))``: the same masks on every
    call, so every method is scored on the same hidden pixels.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    h, w = images.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(f"images of {h}x{w} px do not split into patches of {patch_size} px")
    imgs = images.repeat(copies, 1, 1, 1)
    mask = make_mask(mask_mode, len(imgs), (h // patch_size, w // patch_size),
                     generator=torch.Generator().manual_seed(seed), **mask_kwargs)
    return imgs, mask, patch_mask_to_pixels(mask.mask, patch_size)



def evaluate_reconstructions(imgs: torch.Tensor, pixel_mask: torch.Tensor,
                             methods: Mapping[str, torch.Tensor | Filler] | None = None, *,
                             baselines: Iterable[str] | None = tuple(BASELINES)) -> list[dict]:
    """Score several reconstructions of the same masked images; one row per method.

    Args:
        imgs: ``(B, C, H, W)`` originals in [0, 1].
        pixel_mask: ``(B, 1, H, W)``, 1 = masked.
        methods: name -> reconstructed images ``(B, C, H, W)`` (e.g. a model's unpatchified
            prediction) or a function ``(imgs, pixel_mask) -> images``. Listed first.
        baselines: names from :data:`BASELINES` to add (``None`` for none).

    Every reconstruction is clipped to [0, 1] and pasted back. Returns
    ``[{"method": name, "masked_psnr": dB, "ssim": value}, ...]``, ready for :func:`format_table`
    or ``maelib.viz.plot_metric_bars``.
    """
    check_images_and_mask(imgs, pixel_mask)
    todo: dict[str, torch.Tensor | Filler] = dict(methods or {})
    for name in baselines or ():
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")
        if name in todo:
            raise ValueError(f"method name {name!r} is used twice")
        todo[name] = BASELINES[name]

    rows = []
    for name, method in todo.items():
        recon = method(imgs, pixel_mask) if callable(method) else method
        recon = paste_back(recon.detach().to(imgs.device, imgs.dtype).clamp(0, 1), imgs, pixel_mask)
        rows.append({"method": name,
                     "masked_psnr": float(masked_psnr(recon, imgs, pixel_mask)),
                     "ssim": float(ssim(recon, imgs))})
    return rows


def format_table(rows: list[dict], digits: int = 3) -> str:
    """Rows of dicts (same keys) -> a Markdown table string, numbers rounded to ``digits``.

    Columns and baselines are named in words (:mod:`maelib.labels`); a missing value (None or NaN,
    e.g. the training time of a method that does not train) is shown as "-".
    """
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(key: str, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return method_label(value) if key == "method" else str(value)

    lines = ["| " + " | ".join(COLUMN_LABELS.get(k, method_label(k)) for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(k, row.get(k)) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
