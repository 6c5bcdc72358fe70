"""Fixed 2D sine-cosine position embeddings, as in the MAE paper (and facebookresearch/mae).

Each patch at grid position (row, col) gets a ``D``-dimensional code: the first ``D/2`` numbers
encode the column, the last ``D/2`` the row, each as sines and cosines of the position at
geometrically spaced frequencies. Nothing is learned, and nearby patches get similar codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``(M,)`` positions -> ``(M, embed_dim)``: ``[sin(pos * w_k) ..., cos(pos * w_k) ...]``."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even for sin-cos embeddings, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,) frequencies from 1 down to 1/10000
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)  # (M, D/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, grid: tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """Position embeddings for a ``(rows, cols)`` patch grid: ``(rows*cols [+1], embed_dim)`` float32.

    Patches are in row-major order. With ``cls_token`` a row of zeros comes first.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for 2D sin-cos embeddings, got {embed_dim}")
    rows, cols = grid
    row_idx, col_idx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat([sincos_1d(embed_dim // 2, col_idx.flatten()),   # first half: column
                     sincos_1d(embed_dim // 2, row_idx.flatten())], dim=1)  # second half: row
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def interpolate_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                          num_extra_tokens: int = 1) -> torch.Tensor:
    """Resize ``(1, extra + old_rows*old_cols, D)`` position embeddings to a new grid (bicubic).

    The extra (cls) tokens are kept as they are. Used to load weights trained at another image size.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    d = pos_embed.shape[-1]
    expected = num_extra_tokens + old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != expected:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} tokens, expected {expected} for grid {old_grid}")
    extra, patches = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    patches = patches.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos_embed.dtype)
    return torch.cat([extra, patches], dim=1)
