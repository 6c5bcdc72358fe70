"""Scaled dot-product attention, ``softmax(q k^T / sqrt(d)) v``, computed the way that is faster here.

Two implementations compute the same thing:

* ``"sdpa"``: PyTorch's fused ``scaled_dot_product_attention`` (flash / memory-efficient kernels
  on GPUs; a flash kernel on the CPU);
* ``"explicit"``: the formula written out, two batched matrix products and a softmax.

Which one is faster depends on the device, the dtype and the sequence length, and the MAE's
sequences are short (faces64: 17 tokens in the encoder, 65 in the decoder). On a CPU, SDPA's flash
kernel costs more than the explicit products at these lengths in float32, and in bfloat16 it is
2 to 7 times slower at every length measured (17 to 257 tokens), while the explicit products run
on the CPU's bf16 matrix units. ``python benchmarks/train_step.py --attention-only`` measures both,
forward and backward, at every configuration's shapes (README, Performance). The rule below is
that table: the explicit products on the CPU up to ``EXPLICIT_MAX_TOKENS`` tokens for the dtype,
SDPA everywhere else (CUDA, MPS, long sequences, float16).

The explicit form also gives the attention weights themselves (``need_weights=True``), which the
interactive lesson draws; asking for them picks the explicit form whatever the rule says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F

Implementation = Literal["auto", "sdpa", "explicit"]
IMPLEMENTATIONS = ("auto", "sdpa", "explicit")

# Longest sequence for which the explicit products are used on the CPU, per dtype. Measured with
# benchmarks/train_step.py --attention-only (forward + backward, one thread, Xeon with AMX):
# float32: explicit 1.3x faster at 17 and 65 tokens, SDPA 1.2x faster at 197; bfloat16: explicit
# 2.5x to 7x faster from 17 to 257 tokens (longer sequences not measured, so not claimed).
EXPLICIT_MAX_TOKENS = {torch.float32: 128, torch.bfloat16: 257}

_forced: Implementation = "auto"


@contextlib.contextmanager
def use_attention(implementation: Implementation) -> Iterator[None]:
    """Force one implementation inside the ``with`` block (for benchmarks and tests)."""
    global _forced
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    before, _forced = _forced, implementation
    try:
        yield
    finally:
        _forced = before


def choose(device: torch.device, dtype: torch.dtype, tokens: int) -> Literal["sdpa", "explicit"]:
    """The implementation used for queries of this device, dtype and sequence length."""
    if _forced != "auto":
        return _forced
    if device.type == "cpu" and tokens <= EXPLICIT_MAX_TOKENS.get(dtype, 0):
        return "explicit"
    return "sdpa"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
              need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(q k^T / sqrt(d)) v`` for ``q, k, v`` of shape ``(B, heads, N, d)``.

    Returns ``(out (B, heads, N, d), weights (B, heads, N, N) or None)``; the weights only with
    ``need_weights=True``.
    """
    if not need_weights and choose(q.device, q.dtype, q.shape[-2]) == "sdpa":
        return F.scaled_dot_product_attention(q, k, v), None
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, heads, N, N): every query against every key
    weights = weights.softmax(dim=-1)  # each query's weights over the keys sum to 1
    return weights @ v, (weights if need_weights else None)
