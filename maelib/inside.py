"""Looking inside an encoder: where its class token looks, and which patches its features group together.

Two pictures of what a ViT encoder computes, for whole images (nothing masked):

* :func:`cls_attention`: the attention weights of the class token over the patches in one block
  (the last by default), one map per head. In an encoder trained to classify, the class token
  gathers the image's answer there, so its map shows what it reads; in an MAE encoder the class
  token has no loss of its own, and its map says how much of that it learned anyway.
* :func:`pca_colours`: the patch tokens of a set of images, projected on their first three
  principal components (scikit-learn's PCA, fitted on all patches of all the images together)
  and shown as red, green and blue: patches the encoder represents alike get alike colours.

:func:`overlay` turns maps into heat-map images over the photos, ready for
:func:`maelib.viz.show_images`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .models import MaskedAutoencoderViT
from .probe import encode

if TYPE_CHECKING:
    from .normalize import PixelNormalizer


@torch.no_grad()
def cls_attention(encoder: MaskedAutoencoderViT, images: torch.Tensor, *, normalizer: PixelNormalizer | None = None,
                  block: int = -1, batch_size: int = 64) -> torch.Tensor:
    """The class token's attention over the patches in ``block``: ``(B, heads, grid_h, grid_w)``.

    ``images``: ``(B, C, H, W)``, uint8 or floats in [0, 1] (``normalizer`` as for
    :func:`maelib.probe.encode`). The weight the class token gives itself is left out, so a map
    sums to 1 minus that (at most 1). Runs the encoder in eval mode, ``batch_size`` images at a time.
    """
    attn = encoder.blocks[block].attn
    maps = []
    try:
        attn.keep_weights = True
        for start in range(0, len(images), batch_size):
            encode(encoder, images[start:start + batch_size], normalizer=normalizer, batch_size=batch_size)
            maps.append(attn.weights[:, :, 0, 1:].float().cpu())  # (B, heads, N): row 0 is the class token's query
    finally:
        attn.keep_weights, attn.weights = False, None
    weights = torch.cat(maps)
    return weights.reshape(*weights.shape[:2], *encoder.grid_size)


def pca_colours(tokens: torch.Tensor, grid_size: tuple[int, int], *, quantile: float = 0.01) -> torch.Tensor:
    """Patch tokens ``(B, N, D)`` as colours: ``(B, 3, grid_h, grid_w)`` in [0, 1].

    Tokens ``(B, 1 + N, D)`` with the class token first (:func:`maelib.probe.encode`) are taken too.

    One PCA is fitted on the patches of all ``B`` images, so a colour means the same in every
    image. Each component is scaled to [0, 1] between its ``quantile`` and ``1 - quantile``
    values (a few extreme patches do not wash the others out).
    """
    from sklearn.decomposition import PCA

    b, n = tokens.shape[:2]
    patches = grid_size[0] * grid_size[1]
    if n == patches + 1:
        tokens, n = tokens[:, 1:], patches
    if n != patches:
        raise ValueError(f"tokens have {n} patches per image, the grid {grid_size[0]}x{grid_size[1]} has {patches}")
    flat = tokens.reshape(b * n, -1).float().numpy()
    projected = torch.as_tensor(PCA(n_components=3, random_state=0).fit_transform(flat))  # (B * N, 3)
    low, high = torch.quantile(projected, quantile, dim=0), torch.quantile(projected, 1 - quantile, dim=0)
    colours = ((projected - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    return colours.reshape(b, *grid_size, 3).permute(0, 3, 1, 2).contiguous()


def overlay(images: torch.Tensor, maps: torch.Tensor, *, alpha: float = 0.6, cmap: str = "inferno") -> torch.Tensor:
    """Heat maps ``(B, h, w)`` over images ``(B, C, H, W)`` in [0, 1]: ``(B, 3, H, W)`` RGB in [0, 1].

    Each map is scaled to its own maximum, upsampled to the image size (bilinear) and coloured
    with matplotlib's ``cmap``; ``alpha`` is the heat map's share of the blend.
    """
    from matplotlib import colormaps

    if maps.ndim != 3 or len(maps) != len(images):
        raise ValueError(f"need one map (h, w) per image: got maps {tuple(maps.shape)} for {len(images)} images")
    imgs = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    imgs = imgs.expand(-1, 3, -1, -1) if imgs.shape[1] == 1 else imgs
    scaled = maps.float() / maps.flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None]
    big = F.interpolate(scaled[:, None], size=imgs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    heat = torch.as_tensor(colormaps[cmap](big.clamp(0, 1).numpy())[..., :3], dtype=torch.float32).permute(0, 3, 1, 2)
    return (1 - alpha) * imgs + alpha * heat


__all__ = ["cls_attention", "overlay", "pca_colours"]
