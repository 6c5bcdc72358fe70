"""Decode image files once into a uint8 tensor ``(N, C, H, W)`` and cache that tensor on disk.

Training never decodes a JPEG: the first call decodes every file (a few seconds for thousands of
small images), stacks them, and saves ONE ``.pt`` file in the cache folder
(``$MAELIB_CACHE_DIR/tensors``, default ``~/.cache/maelib/tensors``). The file name is a hash of

* every source file's absolute path, size and modification time, and
* the target size, channels, fit and kind (image or label map),

so any change to the files or to the settings gives a new key and a fresh decode.

Resizing (``fit``):

* ``"crop"`` (default): scale the image so that it covers the target, i.e. the shorter side
  (relative to the target's aspect ratio) matches, then cut the centre. For a square target this is
  "resize the shorter side to ``size``, then centre-crop ``size x size``". Nothing is distorted.
* ``"stretch"``: scale width and height independently to the target; nothing is cut off.

Photos are resampled bicubically with antialiasing (Pillow always antialiases when it shrinks);
JPEGs are first shrunk inside the decoder (Pillow's ``draft``: 1/2, 1/4 or 1/8 scale, never below
what the resize needs), which is what makes decoding fast. Label maps (class ids) use nearest
neighbour, so no new ids appear. Images smaller than the target are enlarged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image
from tqdm.auto import tqdm

from .root import cache_dir

FITS = ("crop", "stretch")
CHANNELS = (1, 3)
KINDS = ("image", "label_map")
CACHE_VERSION = 1  # bump when the decoding itself changes, to invalidate old caches


class SkippedFilesWarning(UserWarning):
    """Some files in a folder could not be decoded and were left out."""


class NoImagesError(FileNotFoundError):
    """A folder (or list of files) holds no decodable image."""


@dataclass
class Decoded:
    """Result of :func:`load_images`: ``images`` uint8 ``(N, C, H, W)``, the ``N`` paths that
    decoded, and the ``(path, reason)`` pairs that did not."""

    images: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    from_cache: bool = False


# ----------------------------------------------------------------------------- argument checks


def as_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``48 -> (48, 48)``, ``(64, 96) -> (64, 96)`` (height, width), ``None -> None``."""
    if size is None:
        return None
    if isinstance(size, bool):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    if isinstance(size, int | np.integer):
        hw = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int | np.integer) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be a positive int or a (height, width) pair of ints, got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return hw


def check_choice(name: str, value: object, allowed: Sequence) -> None:
    """Raise a ValueError naming ``value`` and the ``allowed`` choices if it is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------- one file


def crop_box(width: int, height: int, out_hw: tuple[int, int], fit: str) -> tuple[float, float, float, float]:
    """The region ``(left, top, right, bottom)`` of a ``width x height`` image that is resized to
    ``out_hw``: the whole image for ``"stretch"``, the centred region with the target's aspect
    ratio for ``"crop"``."""
    if fit == "stretch":
        return (0.0, 0.0, float(width), float(height))
    out_h, out_w = out_hw
    scale = max(out_w / width, out_h / height)  # the scale at which the image covers the target
    crop_w, crop_h = out_w / scale, out_h / scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    # min/max only absorb floating-point noise (crop_w <= width holds exactly in real numbers).
    return (max(0.0, left), max(0.0, top), min(float(width), left + crop_w), min(float(height), top + crop_h))


def resize_pil(img: Image.Image, out_hw: tuple[int, int] | None, fit: str, resample: int) -> Image.Image:
    """Resize a PIL image to ``out_hw`` = (height, width) as ``fit`` says (see the module doc)."""
    if out_hw is None or img.size == (out_hw[1], out_hw[0]):
        return img
    box = crop_box(img.width, img.height, out_hw, fit)
    return img.resize((out_hw[1], out_hw[0]), resample, box=box)


def _to_chw(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def decode_image(path: str | os.PathLike, size: int | Sequence[int] | None = None, *,
                 channels: int = 3, fit: str = "crop") -> np.ndarray:
    """Decode one photo to a uint8 array ``(channels, H, W)``: RGB for 3 channels, L for 1.

    Raises whatever Pillow raises for a file that is not a (complete) image.
    """
    out_hw = as_hw(size)
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as img:
        if out_hw is not None and img.format == "JPEG":
            # Let the JPEG decoder shrink by 1/2, 1/4 or 1/8, but keep at least what the resize needs.
            left, top, right, bottom = crop_box(img.width, img.height, out_hw, fit)
            sx, sy = out_hw[1] / (right - left), out_hw[0] / (bottom - top)
            img.draft(mode, (math.ceil(img.width * sx), math.ceil(img.height * sy)))
        img = img.convert(mode)  # loads the pixels: a truncated file fails here
    return _to_chw(resize_pil(img, out_hw, fit, Image.Resampling.BICUBIC))


def decode_label_map(path: str | os.PathLike, size: int | Sequence[int] | None = None, *,
                     fit: str = "crop") -> np.ndarray:
    """Decode one label map of class ids (palette "P" or greyscale "L" PNG) to uint8 ``(1, H, W)``.

    The pixel values are the ids themselves (palette indices), resized with nearest neighbour.
    """
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"label map mode is {img.mode!r}; expected 'P' (palette) or 'L' of class ids")
        img.load()
        return _to_chw(resize_pil(img, as_hw(size), fit, Image.Resampling.NEAREST))


# ----------------------------------------------------------------------------- many files + cache


def cache_key(paths: Sequence[Path], size: tuple[int, int] | None, channels: int, fit: str, kind: str) -> str:
    """Hash of the source files (absolute path, size, mtime) and the decoding settings."""
    h = hashlib.sha256()
    settings = {"v": CACHE_VERSION, "pil": PIL.__version__, "size": size, "channels": channels,
                "fit": fit, "kind": kind}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(p)}\0missing\n".encode())
    return h.hexdigest()


def load_images(paths: Sequence[str | os.PathLike], size: int | Sequence[int] | None, *,
                channels: int = 3, fit: str = "crop", kind: str = "image", what: str | None = None,
                progress: bool = True, cache: bool = True) -> Decoded:
    """Decode ``paths`` (in this order) into one uint8 tensor ``(N, C, H, W)``, using the cache.

    Files that fail to decode are skipped with one :class:`SkippedFilesWarning` that names them and
    gives their count; if none decodes, :class:`NoImagesError` names ``what`` (e.g. the folder).
    With ``size=None`` the images keep their size, which must then be the same for all.
    ``kind="label_map"`` decodes label maps (1 channel of class ids, nearest-neighbour resize).
    """
    out_hw = as_hw(size)
    check_choice("fit", fit, FITS)
    check_choice("channels", channels, CHANNELS)
    check_choice("kind", kind, KINDS)
    if kind == "label_map":
        channels = 1
    paths = [Path(p) for p in paths]
    what = what or (f"{len(paths)} files" if not paths else f"{len(paths)} files under {paths[0].parent}")
    if not paths:
        raise NoImagesError(f"no image files in {what}")

    cache_file = cache_dir() / f"{kind}-{cache_key(paths, out_hw, channels, fit, kind)[:40]}.pt"
    result = _read_cache(cache_file) if cache else None
    if result is None:
        result = _decode_all(paths, out_hw, channels, fit, kind, progress)
        if cache and result.paths:
            _write_cache(cache_file, result)
    if result.skipped:
        shown = "; ".join(f"{p} ({reason})" for p, reason in result.skipped[:10])
        more = f"; and {len(result.skipped) - 10} more" if len(result.skipped) > 10 else ""
        warnings.warn(
            f"skipped {len(result.skipped)} of {len(paths)} files in {what} that are not decodable "
            f"{'label maps' if kind == 'label_map' else 'images'}: {shown}{more}",
            SkippedFilesWarning, stacklevel=2,
        )
    if not result.paths:
        raise NoImagesError(f"no decodable {'label map' if kind == 'label_map' else 'image'} in {what} "
                            f"({len(paths)} files tried)")
    return result


def _decode_all(paths: list[Path], out_hw: tuple[int, int] | None, channels: int, fit: str, kind: str,
                progress: bool) -> Decoded:
    def one(path: Path) -> np.ndarray | str:
        try:
            if kind == "label_map":
                return decode_label_map(path, out_hw, fit=fit)
            return decode_image(path, out_hw, channels=channels, fit=fit)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return f"{type(err).__name__}: {err}"

    # Pillow releases the GIL while it decodes and resizes, so threads give a real speed-up.
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc="decoding", unit="img",
                            disable=not progress or len(paths) < 200, leave=False))
    kept = [(p, r) for p, r in zip(paths, results, strict=True) if not isinstance(r, str)]
    skipped = [(p, r) for p, r in zip(paths, results, strict=True) if isinstance(r, str)]
    if not kept:
        return Decoded(torch.empty(0, channels, *(out_hw or (0, 0)), dtype=torch.uint8), [], skipped)
    shapes = {arr.shape for _, arr in kept}
    if len(shapes) > 1:
        (p0, a0), (p1, a1) = kept[0], next((p, a) for p, a in kept if a.shape != kept[0][1].shape)
        raise ValueError(
            f"images differ in size: {p0} is {a0.shape[1]}x{a0.shape[2]} and {p1} is "
            f"{a1.shape[1]}x{a1.shape[2]} (H x W); pass size=<int> or (H, W) to resize them to one size"
        )
    images = torch.from_numpy(np.stack([arr for _, arr in kept]))
    return Decoded(images, [p for p, _ in kept], skipped)


def _read_cache(cache_file: Path) -> Decoded | None:
    if not cache_file.is_file():
        return None
    try:
        blob = torch.load(cache_file, weights_only=True)
        return Decoded(blob["images"], [Path(p) for p in blob["paths"]],
                       [(Path(p), r) for p, r in blob["skipped"]], from_cache=True)
    except Exception as err:  # a damaged cache file is only a lost shortcut: decode again
        warnings.warn(f"ignoring unreadable tensor cache {cache_file} ({err!r}); decoding again",
                      stacklevel=3)
        return None


def _write_cache(cache_file: Path, result: Decoded) -> None:
    blob = {"images": result.images, "paths": [str(p) for p in result.paths],
            "skipped": [[str(p), r] for p, r in result.skipped]}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=cache_file.name, suffix=".tmp", dir=cache_file.parent)
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, cache_file)  # atomic: readers never see half a file
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as err:
        warnings.warn(f"could not write the tensor cache {cache_file} ({err}); set MAELIB_CACHE_DIR "
                      f"to a writable folder to avoid decoding again next time", stacklevel=3)
