"""Load any folder: a folder of image files, or a folder of ``.npy`` arrays.

* ``load_image_folder``: every (non-hidden) file in the folder is tried as an image; what does not
  decode is skipped with one warning naming the files. With ``by_subfolder=True`` each subfolder is a
  class (like torchvision's ImageFolder, but explicit).
* ``load_npy_folder``: every ``*.npy`` file is one image ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``,
  or a stack of them ``(N, H, W, C)`` / ``(N, C, H, W)``; uint8, or float in [0, 1] (anything outside
  [0, 1] is an error naming the file, never silently clipped).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .decode import (
    CHANNELS,
    FITS,
    NoImagesError,
    SkippedFilesWarning,
    as_hw,
    check_choice,
    load_images,
    resize_pil,
)
from .imageset import ImageSet

LAYOUTS = ("auto", "HWC", "CHW")


def list_files(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Regular, non-hidden files directly in ``folder`` matching ``pattern``, sorted by name.

    Raises FileNotFoundError naming the folder if it does not exist, NoImagesError if it is empty.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist" if not folder.exists()
                                else f"{folder} is a file, not a folder")
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        matching = "" if pattern == "*" else f" matching {pattern!r}"
        raise NoImagesError(f"folder {folder} has no files{matching}")
    return files


def load_image_folder(folder: str | os.PathLike, size: int | Sequence[int] | None = None, *,
                      channels: int = 3, fit: str = "crop", by_subfolder: bool = False,
                      classes: Sequence[str] | None = None,
                      choose: Callable[[list[Path]], list[Path]] | None = None, progress: bool = True,
                      cache: bool = True) -> ImageSet:
    """Decode every image in ``folder`` into ``ImageSet.images`` ``(N, channels, H, W) uint8``.

    Args:
        folder: the folder of images (files directly inside it; hidden files are ignored).
        size: ``int`` for a square, ``(H, W)``, or ``None`` to keep the size (then all must agree).
        channels: 3 (RGB) or 1 (greyscale, Pillow's "L").
        fit: ``"crop"`` (cover the target, centre-crop) or ``"stretch"``; see ``maelib.data.decode``.
        by_subfolder: treat each subfolder as one class; ``labels`` index ``class_names``.
        classes: with ``by_subfolder``, the subfolders to use, in label order (default: all, sorted).
        choose: with ``by_subfolder``, picks the files of one class from all of them (sorted by name)
            before anything is decoded, e.g. a balanced subset (default: all).
        progress: show a progress bar while decoding.
        cache: use the on-disk tensor cache (see ``maelib.data.decode``).
    """
    folder = Path(folder)
    if not by_subfolder:
        decoded = load_images(list_files(folder), size, channels=channels, fit=fit,
                              what=f"folder {folder}", progress=progress, cache=cache)
        return ImageSet(images=decoded.images, paths=decoded.paths, skipped=[p for p, _ in decoded.skipped],
                        split_source="a plain folder has no split hint; use split_indices(...)")

    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    if classes is None:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise NoImagesError(f"folder {folder} has no subfolders, but by_subfolder=True needs one "
                                f"per class")
    files, labels = [], []
    for k, name in enumerate(classes):
        class_files = list_files(folder / name)
        if choose is not None:
            class_files = choose(class_files)
        files += class_files
        labels += [k] * len(class_files)
    decoded = load_images(files, size, channels=channels, fit=fit, what=f"folder {folder}",
                          progress=progress, cache=cache)
    label_of = dict(zip(files, labels, strict=True))
    kept_labels = torch.tensor([label_of[p] for p in decoded.paths], dtype=torch.long)
    counts = torch.bincount(kept_labels, minlength=len(classes))
    empty = [classes[k] for k in range(len(classes)) if counts[k] == 0]
    if empty:
        raise NoImagesError(f"no decodable image in {', '.join(str(folder / e) for e in empty)}")
    return ImageSet(images=decoded.images, labels=kept_labels, class_names=list(classes), paths=decoded.paths,
                    skipped=[p for p, _ in decoded.skipped],
                    split_source="a plain folder has no split hint; use split_indices(labels, ...)")


def load_npy_folder(folder: str | os.PathLike, size: int | Sequence[int] | None = None, *,
                    channels: int | None = None, fit: str = "crop", layout: str = "auto") -> ImageSet:
    """Load every ``*.npy`` in ``folder`` (sorted by name) into ``(N, C, H, W) uint8``.

    Args:
        size: resize to ``int`` / ``(H, W)`` as in ``load_image_folder``; ``None`` keeps the size.
        channels: ``None`` keeps the stored channels (all files must agree); 3 or 1 converts
            (1 -> 3 repeats the grey, 3 -> 1 uses Pillow's luminance, 4 -> 3 drops alpha).
        layout: ``"auto"`` decides per array: last axis of 1, 3 or 4 -> HWC, else first axis of
            1, 3 or 4 -> CHW (an array where both could hold channels, e.g. 3x64x3, is an error:
            pass ``"HWC"`` or ``"CHW"``).

    Float arrays must lie in [0, 1]; they become ``round(x * 255)``. Files ``np.load`` cannot read
    are skipped with a warning naming them; no other ``.npy`` problem is silent.
    """
    out_hw = as_hw(size)
    check_choice("fit", fit, FITS)
    check_choice("layout", layout, LAYOUTS)
    if channels is not None:
        check_choice("channels", channels, CHANNELS)
    files = list_files(folder, "*.npy")
    images, paths, skipped = [], [], []
    for path in files:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            skipped.append((path, f"{type(err).__name__}: {err}"))
            continue
        for chw in _as_chw_stack(arr, path, layout):
            chw = _to_uint8(chw, path)
            if channels is not None:
                chw = _convert_channels(chw, channels, path)
            if out_hw is not None:
                chw = _resize_chw(chw, out_hw, fit)
            images.append(chw)
            paths.append(path)
    if skipped:
        names = "; ".join(f"{p} ({r})" for p, r in skipped)
        warnings.warn(f"skipped {len(skipped)} of {len(files)} .npy files in {folder} that np.load cannot "
                      f"read: {names}", SkippedFilesWarning, stacklevel=2)
    if not images:
        raise NoImagesError(f"no readable .npy array in folder {folder} ({len(files)} files tried)")
    for chw, path in zip(images, paths, strict=True):
        if chw.shape != images[0].shape:
            raise ValueError(f"arrays differ: {paths[0]} gives {images[0].shape} and {path} gives "
                             f"{chw.shape} (C, H, W); pass size= to resize, and channels= to convert")
    return ImageSet(images=torch.from_numpy(np.stack(images)), paths=paths, skipped=[p for p, _ in skipped],
                    split_source="a plain folder has no split hint; use split_indices(...)")


def _as_chw_stack(arr: np.ndarray, path: Path, layout: str) -> list[np.ndarray]:
    """One array -> list of ``(C, H, W)`` arrays."""
    if arr.ndim == 2:
        return [arr[None]]
    if arr.ndim == 4:
        return [img for a in arr for img in _as_chw_stack(a, path, layout)]
    if arr.ndim != 3:
        raise ValueError(f"{path}: array of shape {arr.shape}; expected (H, W), (H, W, C), (C, H, W) "
                         f"or a stack (N, H, W, C) / (N, C, H, W)")
    if layout == "auto":
        last, first = arr.shape[-1] in (1, 3, 4), arr.shape[0] in (1, 3, 4)
        if last and first:
            raise ValueError(f"{path}: shape {arr.shape} could be HWC or CHW; pass layout='HWC' or 'CHW'")
        if not (last or first):
            raise ValueError(f"{path}: shape {arr.shape} has no axis of 1, 3 or 4 channels at either end")
        layout = "HWC" if last else "CHW"
    return [arr.transpose(2, 0, 1) if layout == "HWC" else arr]


def _to_uint8(chw: np.ndarray, path: Path) -> np.ndarray:
    if chw.dtype == np.uint8:
        return np.ascontiguousarray(chw)
    if np.issubdtype(chw.dtype, np.floating):
        lo, hi = float(np.min(chw)), float(np.max(chw))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"{path}: float values must lie in [0, 1], found min {lo} and max {hi}; "
                             f"rescale the array (nothing is clipped for you)")
        return np.rint(chw.astype(np.float64) * 255.0).astype(np.uint8)
    raise ValueError(f"{path}: dtype {chw.dtype} is not supported; use uint8 (0..255) or float in [0, 1]")


def _convert_channels(chw: np.ndarray, channels: int, path: Path) -> np.ndarray:
    c = chw.shape[0]
    if c == channels:
        return chw
    if c == 4:  # RGBA: drop the alpha channel, then convert like RGB
        chw, c = chw[:3], 3
    if c == 1 and channels == 3:
        return np.repeat(chw, 3, axis=0)
    if c == 3 and channels == 1:
        return np.asarray(Image.fromarray(chw.transpose(1, 2, 0)).convert("L"))[None]
    if c == channels:
        return chw
    raise ValueError(f"{path}: cannot convert {c} channels to {channels}")


def _resize_chw(chw: np.ndarray, out_hw: tuple[int, int], fit: str) -> np.ndarray:
    if chw.shape[0] not in (1, 3):
        raise ValueError(f"can only resize 1- or 3-channel arrays, got {chw.shape[0]} channels; "
                         f"pass channels=3")
    img = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))
    out = np.asarray(resize_pil(img, out_hw, fit, Image.Resampling.BICUBIC))
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1).copy()
