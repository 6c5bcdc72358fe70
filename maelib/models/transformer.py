"""A pre-norm Vision Transformer block, with the parameter names of timm / facebookresearch/mae.

``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``. Attention is computed by
:func:`maelib.models.attention.attention`: PyTorch's fused ``scaled_dot_product_attention``, or the
formula written out where that is measured faster (short sequences on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..patches import patchify
from .attention import attention


class Attention(nn.Module):
    """Multi-head self-attention: ``(B, N, D)`` -> ``(B, N, D)``.

    Set ``keep_weights = True`` to keep the last forward's attention weights, ``(B, heads, N, N)``,
    detached, in ``self.weights`` (what :meth:`MaskedAutoencoderViT.decoder_attention` reads).
    """

    keep_weights: bool = False
    weights: torch.Tensor | None = None

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # one matmul for queries, keys and values; split heads: 3 x (B, heads, N, D/heads)
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        # (unbinding dim 2 before the transpose lets backward stack the three gradients straight into
        # qkv's layout: one copy fewer than permuting (3, B, heads, N, D/heads) to the front)
        q, k, v = [t.transpose(1, 2) for t in qkv.unbind(2)]
        x, weights = attention(q, k, v, need_weights=self.keep_weights)  # softmax(q k^T / sqrt(d)) v
        if self.keep_weights:
            self.weights = weights.detach()
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Token-wise feed-forward network: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``(B, N, D)`` -> ``(B, N, D)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Cut an image into patches and project each to ``embed_dim``: ``(B, C, H, W)`` -> ``(B, N, D)``.

    A convolution with kernel = stride = patch size is exactly a shared linear layer per patch.
    The weights are stored as that convolution's (``proj``, the name and shape of every ViT
    checkpoint), and applied as the linear layer on :func:`~maelib.patches.patchify`'s output:
    the same numbers, and faster on a CPU than the convolution, in bf16 most of all
    (``benchmarks/train_step.py --attention-only`` times both).
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_size = patch_size
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"model built for {self.img_size[0]}x{self.img_size[1]} images, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; resize the images or call resize_pos_embed()")
        # the kernel's (D, C, p, p) reordered to patchify's (row, column, channel) order: (D, p*p*C)
        weight = self.proj.weight.permute(0, 2, 3, 1).reshape(self.proj.out_channels, -1)
        return F.linear(patchify(x, self.patch_size), weight, self.proj.bias)
