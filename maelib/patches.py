"""Cutting images into patches and putting them back together; putting the visible pixels back.

An image batch ``(B, C, H, W)`` becomes a sequence of ``N = (H/p) * (W/p)`` flattened patches
``(B, N, p*p*C)``, in row-major order (left to right, then top to bottom). Inside a patch the
values are ordered ``(row, column, channel)``, exactly as in facebookresearch/mae, so a decoder
head trained there predicts patches that ``unpatchify`` here puts in the right place.
"""

from __future__ import annotations

import torch


def check_patch_size(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Return the patch grid ``(H/p, W/p)``; raise if ``patch_size`` does not divide both sides."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"patch_size {patch_size} does not divide the image size {height}x{width} (H x W); "
            f"choose a patch size that divides both {height} and {width}"
        )
    return height // patch_size, width // patch_size


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` images -> ``(B, N, p*p*C)`` patches, N = (H/p)*(W/p), row-major."""
    if imgs.ndim != 4:
        raise ValueError(f"patchify expects images of shape (B, C, H, W), got {tuple(imgs.shape)}")
    b, c, h, w = imgs.shape
    gh, gw = check_patch_size(h, w, patch_size)
    p = patch_size
    x = imgs.reshape(b, c, gh, p, gw, p)
    x = torch.einsum("bchpwq->bhwpqc", x)  # group the pixels of each patch together
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int] | None = None,
               channels: int | None = None) -> torch.Tensor:
    """``(B, N, p*p*C)`` patches -> ``(B, C, H, W)`` images; the exact inverse of :func:`patchify`.

    ``grid`` is the patch grid ``(H/p, W/p)``; it defaults to a square grid. ``channels`` is
    derived from the last dimension when not given.
    """
    if patches.ndim != 3:
        raise ValueError(f"unpatchify expects patches of shape (B, N, p*p*C), got {tuple(patches.shape)}")
    b, n, d = patches.shape
    p = patch_size
    if channels is None:
        if d % (p * p):
            raise ValueError(f"patch dimension {d} is not a multiple of patch_size**2 = {p * p}")
        channels = d // (p * p)
    if d != p * p * channels:
        raise ValueError(f"patch dimension {d} != patch_size**2 * channels = {p * p * channels}")
    if grid is None:
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(f"{n} patches do not form a square grid; pass grid=(rows, cols)")
        grid = (side, side)
    gh, gw = grid
    if gh * gw != n:
        raise ValueError(f"grid {gh}x{gw} holds {gh * gw} patches, but got {n}")
    x = patches.reshape(b, gh, gw, p, p, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(b, channels, gh * p, gw * p)


def patch_mask_to_pixels(mask: torch.Tensor, patch_size: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """A per-patch mask ``(B, N)`` -> a per-pixel mask ``(B, 1, H, W)`` with the same values."""
    b, n = mask.shape
    expanded = mask.unsqueeze(-1).expand(b, n, patch_size * patch_size)
    return unpatchify(expanded.to(torch.float32), patch_size, grid, channels=1)


def check_images_and_mask(imgs: torch.Tensor, pixel_mask: torch.Tensor) -> None:
    """Raise unless ``imgs`` is ``(B, C, H, W)`` and ``pixel_mask`` is ``(B, 1, H, W)``."""
    if imgs.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(imgs.shape)}")
    b, _, h, w = imgs.shape
    if tuple(pixel_mask.shape) != (b, 1, h, w):
        raise ValueError(f"pixel_mask must be (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(pixel_mask.shape)}; "
                         f"a (B, N) patch mask becomes one with maelib.patches.patch_mask_to_pixels")


def paste_back(pred_imgs: torch.Tensor, imgs: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)``: ``pred_imgs`` where masked, the true ``imgs`` (exactly) where visible."""
    check_images_and_mask(imgs, pixel_mask)
    if pred_imgs.shape != imgs.shape:
        raise ValueError(f"pred_imgs {tuple(pred_imgs.shape)} and imgs {tuple(imgs.shape)} differ in shape")
    return torch.where(pixel_mask > 0.5, pred_imgs, imgs)
