"""Training-step benchmark: maelib's ViT-MAE against Hugging Face's ViTMAE and a stock-PyTorch MAE.

Three implementations of one model, side by side in one run:

* ``maelib``    -- ``maelib.models.MaskedAutoencoderViT`` (fused qkv, ``scaled_dot_product_attention``);
* ``HF``        -- ``transformers.ViTMAEForPreTraining`` (separate q/k/v linears, its SDPA attention);
* ``torch.nn``  -- the same MAE built from ``torch.nn.TransformerEncoder`` (encoder on the visible tokens,
  decoder with mask tokens), written below in 40 lines;

plus maelib's fast path: ``maelib bf16`` (bf16 autocast), ``maelib bf16 SDPA`` (the same with attention
forced through ``scaled_dot_product_attention``, to show what maelib's choice of attention is worth) and
``maelib compiled`` (``torch.compile``, with bf16 autocast where the hardware computes in bf16 natively).

Attention alone: for every configuration, the encoder's and the decoder's attention (forward + backward) at
their real shapes, in float32 and bf16, with SDPA and with the explicit products, and which one
``maelib.models.attention`` chooses (``--attention-only`` prints just this table, in a minute).

Every model starts from the *same weights* (maelib's initialisation, copied into the others), sees the
same images and the same masks, and is trained with the same AdamW (fused where torch has it). So the
step-0 losses must agree to float rounding (a check that the three really compute the same function),
and every loss curve is a short training run that the fp32 curve is compared with.

Timing: full training steps (zero_grad, forward, backward, AdamW step), interleaved round by round
(A B C D, then B C D A, ...) after warm-up, so that a change in the machine's load hits every model
alike. A 2048x2048 fp32 matmul takes a turn in every round too (and a bf16 one where bf16 models run): the
machine's throughput *right now*, which every model's achieved FLOP/s is divided by (MFU, against the
matmul of the model's own precision). Each step also records how busy the rest of the
machine was (``/proc/stat`` busy time minus this process's CPU time, and the hypervisor's steal time) and
how much CPU time this process got; results are flagged NOISY when other processes took more than the CPUs
this run leaves idle (+10%) or our threads got less than 90% of their CPU time. On a busy machine, run with
``--threads 1``: several OpenMP threads wait for each other at every op when one of them is descheduled.
Per step, this process's CPU time is recorded too (img/CPU-s), which the other processes barely affect.

Usage::

    python benchmarks/train_step.py                        # tiny32, faces64, base224, with torch.compile
    python benchmarks/train_step.py --no-compile           # about 10 min on an idle 2-core CPU
    python benchmarks/train_step.py --configs faces64 --json out.json --markdown table.md
    python benchmarks/train_step.py --configs micro --steps 2 --warmup 1 --no-compile   # smoke test
    python benchmarks/train_step.py --attention-only       # SDPA vs explicit attention at every configuration
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import operator
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from maelib.data import ImageTensorDataset, train_transforms
from maelib.models import MaskedAutoencoderViT, create_model
from maelib.models.attention import attention, choose, use_attention
from maelib.models.transformer import PatchEmbed
from maelib.train import cpu_has_native_bf16, cuda_has_native_bf16, make_loader, make_optimizer

BUSY_THRESHOLD = 0.10  # other processes taking more than this fraction of the CPUs we use -> NOISY
LOSS_TOL = {"fp32": 1e-3, "bf16": 3e-2}  # relative difference of the final loss to maelib fp32


# --------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class Bench:
    """One model size and how to benchmark it."""

    img: int
    patch: int
    dim: int
    depth: int
    heads: int
    dec_dim: int
    dec_depth: int
    dec_heads: int
    batch: int
    warmup: int
    steps: int
    model_name: str | None = None  # maelib's named configuration, if it has one
    note: str = ""

    def maelib_model(self) -> MaskedAutoencoderViT:
        if self.model_name:
            model = create_model(self.model_name, img_size=self.img)
        else:
            model = MaskedAutoencoderViT(img_size=self.img, patch_size=self.patch, embed_dim=self.dim,
                                         depth=self.depth, num_heads=self.heads, decoder_embed_dim=self.dec_dim,
                                         decoder_depth=self.dec_depth, decoder_num_heads=self.dec_heads)
        got = (model.patch_size, model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads,
               model.decoder_embed_dim, len(model.decoder_blocks), model.decoder_blocks[0].attn.num_heads)
        assert got == (self.patch, self.dim, self.depth, self.heads, self.dec_dim, self.dec_depth, self.dec_heads)
        return model


CONFIGS = {
    "micro": Bench(16, 4, 32, 2, 2, 32, 1, 2, batch=4, warmup=2, steps=5, note="smoke test"),
    "tiny32": Bench(32, 2, 192, 12, 3, 192, 4, 3, batch=16, warmup=3, steps=12, model_name="mae_vit_tiny_patch2_32",
                    note="IcarusWizard's CIFAR-10 model"),
    "faces64": Bench(64, 8, 192, 6, 3, 128, 2, 4, batch=64, warmup=5, steps=25, model_name="mae_vit_small_faces64",
                     note="lesson model, 64 px faces"),
    "base224": Bench(224, 16, 768, 12, 12, 512, 8, 16, batch=8, warmup=2, steps=4, model_name="mae_vit_base_patch16",
                     note="the paper's ViT-B/16 MAE"),
}
MASK_RATIO = 0.75


def train_flops_per_image(c: Bench, mask_ratio: float = MASK_RATIO) -> float:
    """Analytic training FLOPs per image: 3 x the forward FLOPs of every matmul (1 forward + 2 backward).

    Encoder on the visible tokens + cls, decoder on all tokens + cls. Per block of ``t`` tokens, width
    ``d``: qkv, proj, fc1, fc2 = ``2 t (3d + d + 4d + 4d) d``; attention ``q k^T`` and ``a v`` = ``4 t^2 d``.
    Norms, GELU, softmax and the optimizer are left out (a few percent at these sizes).
    """
    def block(t: int, d: int) -> int:
        return 2 * t * 12 * d * d + 4 * t * t * d

    n = (c.img // c.patch) ** 2
    keep = n - round(n * mask_ratio)
    patch_dim = c.patch * c.patch * 3
    forward = (2 * n * patch_dim * c.dim                      # patch embedding (all patches, before masking)
               + c.depth * block(keep + 1, c.dim)            # encoder
               + 2 * (keep + 1) * c.dim * c.dec_dim          # decoder_embed
               + c.dec_depth * block(n + 1, c.dec_dim)       # decoder
               + 2 * (n + 1) * c.dec_dim * patch_dim)        # prediction head
    return 3.0 * forward


# --------------------------------------------------------------------------- the two peer models
def hf_model(c: Bench, maelib: MaskedAutoencoderViT) -> nn.Module:
    """``transformers.ViTMAEForPreTraining`` with maelib's sizes, loaded with maelib's weights."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = ViTMAEConfig(image_size=c.img, patch_size=c.patch, num_channels=3, hidden_size=c.dim,
                          num_hidden_layers=c.depth, num_attention_heads=c.heads, intermediate_size=4 * c.dim,
                          decoder_hidden_size=c.dec_dim, decoder_num_hidden_layers=c.dec_depth,
                          decoder_num_attention_heads=c.dec_heads, decoder_intermediate_size=4 * c.dec_dim,
                          qkv_bias=True, layer_norm_eps=1e-6, mask_ratio=MASK_RATIO, hidden_act="gelu",
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, norm_pix_loss=False,
                          attn_implementation="sdpa")
    model = ViTMAEForPreTraining(config)
    copy_weights_to_hf(maelib, model)
    return model


def _first(obj: object, *paths: str):
    """The first of these attribute paths that exists (transformers 5.x renamed ViTMAE's submodules)."""
    for path in paths:
        with contextlib.suppress(AttributeError):
            return operator.attrgetter(path)(obj)
    raise AttributeError(f"{type(obj).__name__} has none of {paths}")


@torch.no_grad()
def copy_weights_to_hf(maelib: MaskedAutoencoderViT, hf: nn.Module) -> None:
    """Give HF's ViTMAE maelib's weights, module by module; every HF parameter must get written."""
    written: set[int] = set()

    def put(dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src)
        written.add(id(dst))

    def same(dst: nn.Module, src: nn.Module) -> None:  # Linear, Conv2d, LayerNorm: weight and bias
        put(dst.weight, src.weight)
        put(dst.bias, src.bias)

    emb, dec = hf.vit.embeddings, hf.decoder
    put(emb.cls_token, maelib.cls_token)
    put(emb.position_embeddings, maelib.pos_embed)
    same(emb.patch_embeddings.projection, maelib.patch_embed.proj)
    same(hf.vit.layernorm, maelib.norm)
    put(dec.mask_token, maelib.mask_token)
    put(dec.decoder_pos_embed, maelib.decoder_pos_embed)
    for dst, src in ((dec.decoder_embed, maelib.decoder_embed), (dec.decoder_norm, maelib.decoder_norm),
                     (dec.decoder_pred, maelib.decoder_pred)):
        same(dst, src)
    hf_layers = list(_first(hf.vit, "layers", "encoder.layer")) + list(dec.decoder_layers)
    for theirs, ours in zip(hf_layers, list(maelib.blocks) + list(maelib.decoder_blocks), strict=True):
        att = theirs.attention
        # fused qkv = [q; k; v] along the output features, heads contiguous within each
        qkv = [_first(att, f"{new}_proj", f"attention.{old}") for new, old in (("q", "query"), ("k", "key"),
                                                                               ("v", "value"))]
        for lin, w, b in zip(qkv, ours.attn.qkv.weight.chunk(3), ours.attn.qkv.bias.chunk(3), strict=True):
            put(lin.weight, w)
            put(lin.bias, b)
        same(_first(att, "o_proj", "output.dense"), ours.attn.proj)
        same(theirs.layernorm_before, ours.norm1)
        same(theirs.layernorm_after, ours.norm2)
        same(_first(theirs, "mlp.fc1", "intermediate.dense"), ours.mlp.fc1)
        same(_first(theirs, "mlp.fc2", "output.dense"), ours.mlp.fc2)
    missed = [name for name, p in hf.named_parameters() if id(p) not in written]
    if missed:
        raise RuntimeError(f"HF parameters without a maelib counterpart: {missed}")


class TorchMAE(nn.Module):
    """The MAE from stock ``torch.nn``: ``TransformerEncoder`` (pre-norm, GELU) for encoder and decoder."""

    def __init__(self, c: Bench, maelib: MaskedAutoencoderViT):
        super().__init__()
        n = (c.img // c.patch) ** 2
        self.patch, self.num_keep = c.patch, n - round(n * MASK_RATIO)

        def stack(d: int, heads: int, depth: int) -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.0, activation="gelu",
                                               layer_norm_eps=1e-6, batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d, eps=1e-6), enable_nested_tensor=False)

        self.patch_embed = nn.Conv2d(3, c.dim, c.patch, stride=c.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, c.dim), requires_grad=False)
        self.encoder = stack(c.dim, c.heads, c.depth)
        self.decoder_embed = nn.Linear(c.dim, c.dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, c.dec_dim), requires_grad=False)
        self.decoder = stack(c.dec_dim, c.dec_heads, c.dec_depth)
        self.decoder_pred = nn.Linear(c.dec_dim, c.patch**2 * 3)

        sd = maelib.state_dict()  # same weights as maelib's model
        new = {k: sd[k] for k in ("cls_token", "pos_embed", "mask_token", "decoder_pos_embed",
                                  "decoder_embed.weight", "decoder_embed.bias", "decoder_pred.weight",
                                  "decoder_pred.bias")}
        new |= {"patch_embed.weight": sd["patch_embed.proj.weight"], "patch_embed.bias": sd["patch_embed.proj.bias"],
                "encoder.norm.weight": sd["norm.weight"], "encoder.norm.bias": sd["norm.bias"],
                "decoder.norm.weight": sd["decoder_norm.weight"], "decoder.norm.bias": sd["decoder_norm.bias"]}
        names = {"attn.qkv": "self_attn.in_proj_", "attn.proj": "self_attn.out_proj.", "mlp.fc1": "linear1.",
                 "mlp.fc2": "linear2.", "norm1": "norm1.", "norm2": "norm2."}
        for src, dst, depth in (("blocks", "encoder", c.depth), ("decoder_blocks", "decoder", c.dec_depth)):
            for i in range(depth):
                for ours, theirs in names.items():
                    for kind in ("weight", "bias"):
                        new[f"{dst}.layers.{i}.{theirs}{kind}"] = sd[f"{src}.{i}.{ours}.{kind}"]
        self.load_state_dict(new, strict=True)

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = imgs.shape
        p, keep = self.patch, self.num_keep
        # embed every patch, add its position, keep the patches with the lowest noise
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        x = x.gather(1, ids_shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1), x], dim=1)
        # encode, then decode with a mask token in every masked position
        x = self.decoder_embed(self.encoder(x))
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, ids_restore.shape[1] - keep, -1)], dim=1)
        tokens = tokens.gather(1, ids_restore[:, :, None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        pred = self.decoder_pred(self.decoder(x))[:, 1:]
        # mean squared error on the masked patches
        target = imgs.reshape(b, ch, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(pred.shape)
        mask = torch.ones_like(noise)
        mask[:, :keep] = 0
        mask = mask.gather(1, ids_restore)
        return ((pred.float() - target) ** 2).mean(dim=-1).mul(mask).sum() / mask.sum()


# --------------------------------------------------------------------------- measuring the machine
class CpuMeter:
    """Wall time, this process's CPU time, and the whole machine's busy and steal time (``/proc/stat``)."""

    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    has_proc = os.path.exists("/proc/stat")

    def snap(self) -> tuple[float, float, int, int, int]:
        t = os.times()
        busy = total = steal = 0
        if self.has_proc:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
            total, busy, steal = sum(v), sum(v) - v[3] - v[4], v[7]
        return time.perf_counter(), t.user + t.system, busy, total, steal

    def delta(self, a: tuple, b: tuple) -> dict[str, float]:
        wall, own = b[0] - a[0], b[1] - a[1]
        total = (b[3] - a[3]) / self.hz  # CPU-seconds of all cores
        if not self.has_proc or total <= 0:
            return {"wall": wall, "own_cpu": own, "others": math.nan, "steal": math.nan, "cpu_s": 0.0}
        # busy time of everything but this process; steal counts as busy (time the VM did not get)
        others = max(0.0, (b[2] - a[2]) / self.hz - own)
        return {"wall": wall, "own_cpu": own, "others": others / total, "steal": (b[4] - a[4]) / self.hz / total,
                "cpu_s": total}


def is_noisy(others: float, steal: float, cpu_per_wall: float) -> bool:
    """Did other processes (or the hypervisor) take CPU time that this process's threads wanted?

    With ``t`` threads on ``c`` CPUs, other processes may use the ``(c - t) / c`` we leave idle; beyond
    that (plus 10% of the CPUs), or if our threads got less than 90% of their CPU time, a result is NOISY.
    """
    cpus, threads = os.cpu_count() or 1, torch.get_num_threads()
    spare = max(0.0, (cpus - threads) / cpus)
    return others + steal > spare + BUSY_THRESHOLD or cpu_per_wall < 0.9 * min(threads, cpus)


def load_summary(deltas: list[dict[str, float]]) -> dict[str, float]:
    """How busy the rest of the machine was over these measurements (time-weighted)."""
    total = sum(d["cpu_s"] for d in deltas)
    if not deltas or total <= 0:
        return {"others": math.nan, "steal": math.nan, "noisy_steps": math.nan, "cpu_per_wall": math.nan,
                "noisy": False}
    others = sum(d["others"] * d["cpu_s"] for d in deltas) / total
    steal = sum(d["steal"] * d["cpu_s"] for d in deltas) / total
    cpu_per_wall = sum(d["own_cpu"] for d in deltas) / sum(d["wall"] for d in deltas)
    noisy_steps = statistics.fmean(is_noisy(d["others"], d["steal"], d["own_cpu"] / d["wall"]) for d in deltas)
    return {"others": others, "steal": steal, "noisy_steps": noisy_steps, "cpu_per_wall": cpu_per_wall,
            "noisy": is_noisy(others, steal, cpu_per_wall)}


class MatmulProbe:
    """One ``n x n`` matmul, timed: what the machine's matmul does right now (GFLOP/s, GFLOP per CPU-s)."""

    def __init__(self, n: int, device: torch.device, dtype: torch.dtype = torch.float32):
        self.n, self.device, self.meter = n, device, CpuMeter()
        self.a, self.b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        self.a @ self.b  # warm-up

    def measure(self) -> tuple[float, float, dict[str, float]]:
        sync(self.device)
        start = self.meter.snap()
        self.a @ self.b
        sync(self.device)
        d = self.meter.delta(start, self.meter.snap())
        flops = 2 * self.n**3 / 1e9
        return flops / d["wall"], flops / max(d["own_cpu"], 1e-9), d


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SavedTensors:
    """Bytes that autograd keeps for the backward pass (the activations), counted exactly.

    Inside ``with SavedTensors(model) as saved:`` every tensor saved for backward is counted once per
    storage, leaving out the model's own parameters. Unlike the process's resident memory, this does not
    depend on the allocator or on what else was allocated before.
    """

    def __init__(self, model: nn.Module):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.params:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> SavedTensors:
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


# --------------------------------------------------------------------------- one training step per model
@dataclass
class Runner:
    """A model, its AdamW, and how to get its loss; ``step`` is one full training step."""

    name: str
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    amp: torch.dtype | None
    precision: str  # "fp32" or "bf16": which loss tolerance applies
    lr: float
    attention: str = "auto"  # maelib's attention rule, or "sdpa" / "explicit" forced
    optimizer: torch.optim.Optimizer = field(init=False)
    warmup: int = 0  # untimed first steps
    budget_s: float | None = None  # stop after the first timed step that brings the timed total past this
    times: dict[int, float] = field(default_factory=dict)  # round -> seconds, timed steps only
    cpu: dict[int, float] = field(default_factory=dict)  # round -> this process's CPU seconds
    loads: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    first_step_s: float = math.nan
    activations_mib: float = math.nan  # saved for backward (eager models)
    peak_mib: float = math.nan  # allocator's peak in a step (CUDA only)

    def __post_init__(self) -> None:
        self.optimizer = make_optimizer(self.model, self.lr, 0.05, (0.9, 0.95))  # as maelib.train.fit: fused AdamW

    def step(self, imgs: torch.Tensor, noise: torch.Tensor, measure_memory: bool = False) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        cuda = imgs.device.type == "cuda"
        if measure_memory and cuda:
            torch.cuda.synchronize(imgs.device)
            torch.cuda.reset_peak_memory_stats(imgs.device)
        # the hooks cost nothing measurable; compiled models save tensors outside them, so they are left out
        count = measure_memory and "compiled" not in self.name
        with SavedTensors(self.model) if count else contextlib.nullcontext() as saved, use_attention(self.attention):
            with torch.autocast(imgs.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
                loss = self.loss_fn(imgs, noise)
        loss.backward()
        self.optimizer.step()
        if saved is not None:
            self.activations_mib = saved.mib
        if measure_memory and cuda:
            self.peak_mib = torch.cuda.max_memory_allocated(imgs.device) / 2**20
        return loss.detach()

    def static_mib(self) -> float:
        """Weights, gradients and AdamW's two moments, all float32."""
        all_params, trainable = count_params(self.model)
        return (all_params + 3 * trainable) * 4 / 2**20


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable ones)."""
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def structured_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Random but learnable uint8 images ``(n, 3, size, size)``: smooth colour fields at two scales."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bicubic")
    fine = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear")
    return ((0.7 * coarse + 0.3 * fine).clamp(0, 1) * 255).round().to(torch.uint8)


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


# --------------------------------------------------------------------------- attention alone
def has_native_bf16(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: AVX512-BF16 / AMX on a CPU, compute capability >= 8.0 on a GPU."""
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return device.type == "cuda" and cuda_has_native_bf16(device)


def time_attention(shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device,
                   reps: int) -> dict[str, float]:
    """Median seconds of attention forward + backward on ``(B, heads, N, d)`` inputs, SDPA vs explicit,
    interleaved rep by rep."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, generator=g).to(device, dtype)
    times: dict[str, list[float]] = {"sdpa": [], "explicit": []}
    for rep in range(reps + 2):  # two warm-up reps
        for name in times:
            sync(device)
            start = time.perf_counter()
            with use_attention(name):
                out = attention(q, k, v)[0]
            out.backward(grad)
            sync(device)
            if rep >= 2:
                times[name].append(time.perf_counter() - start)
            q.grad = k.grad = v.grad = None
    return {name: statistics.median(t) for name, t in times.items()}


def time_patch_embedding(c: Bench, batch: int, dtype: torch.dtype, device: torch.device,
                         reps: int) -> dict[str, float]:
    """Median seconds of the patch embedding, forward + backward (weight gradients), as the convolution that
    timm and facebookresearch/mae run and as maelib's linear layer on patchified images, interleaved."""
    embed = PatchEmbed((c.img, c.img), c.patch, 3, c.dim).to(device)
    imgs = torch.rand(batch, 3, c.img, c.img, generator=torch.Generator().manual_seed(0)).to(device)
    ways = {"conv": lambda: embed.proj(imgs).flatten(2).transpose(1, 2), "linear": lambda: embed(imgs)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(reps + 2):
        for name, way in ways.items():
            sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = way()
            out.float().sum().backward()
            sync(device)
            if rep >= 2:
                times[name].append(time.perf_counter() - start)
            embed.zero_grad(set_to_none=True)
    return {name: statistics.median(t) for name, t in times.items()}


def attention_table(c: Bench, batch: int, device: torch.device, reps: int,
                    dtypes: tuple[torch.dtype, ...]) -> list[dict]:
    """SDPA vs the explicit products at the configuration's encoder and decoder shapes, and maelib's choice."""
    n = (c.img // c.patch) ** 2
    keep = n - round(n * MASK_RATIO)
    rows = []
    for part, tokens, dim, heads in (("encoder", keep + 1, c.dim, c.heads), ("decoder", n + 1, c.dec_dim, c.dec_heads)):
        for dtype in dtypes:
            t = time_attention((batch, heads, tokens, dim // heads), dtype, device, reps)
            chosen = choose(device, dtype, tokens)
            rows.append({"part": part, "tokens": tokens, "heads": heads, "head_dim": dim // heads,
                         "dtype": str(dtype).removeprefix("torch."), "sdpa_ms": t["sdpa"] * 1e3,
                         "explicit_ms": t["explicit"] * 1e3, "chosen": chosen,
                         "chosen_is_faster": t[chosen] <= min(t.values()) * 1.05})  # within 5%: a tie
    print(f"  attention alone, forward + backward, batch {batch} (median of {reps}, interleaved):")
    for r in rows:
        print(f"    {r['part']:<8} {r['tokens']:>4} tokens x {r['heads']:>2} heads x {r['head_dim']:>3}  "
              f"{r['dtype']:<9}"
              f"  SDPA {r['sdpa_ms']:8.2f} ms  explicit {r['explicit_ms']:8.2f} ms  -> maelib uses {r['chosen']}"
              + ("" if r["chosen_is_faster"] else "  (NOT the faster one here)"))
    for dtype in dtypes:  # the patch embedding: a convolution, or the same numbers as a linear layer
        t = time_patch_embedding(c, batch, dtype, device, reps)
        rows.append({"part": "patch embedding", "dtype": str(dtype).removeprefix("torch."),
                     "conv_ms": t["conv"] * 1e3, "linear_ms": t["linear"] * 1e3})
        r = rows[-1]
        print(f"    patch embedding {c.img} px / {c.patch}  {r['dtype']:<9}  conv {r['conv_ms']:8.2f} ms  "
              f"linear {r['linear_ms']:8.2f} ms  -> maelib uses linear")
    return rows


# --------------------------------------------------------------------------- one configuration
def run_config(name: str, c: Bench, args: argparse.Namespace, device: torch.device) -> dict:
    meter = CpuMeter()
    n = (c.img // c.patch) ** 2
    keep = n - round(n * MASK_RATIO)
    assert keep == int(n * (1 - MASK_RATIO)), "maelib and HF would keep different numbers of patches"
    warmup = c.warmup if args.warmup is None else args.warmup
    steps = c.steps if args.steps is None else args.steps
    batch = args.batch or c.batch

    torch.manual_seed(args.seed)
    base = c.maelib_model()  # maelib's initialisation; the peers get copies of these weights
    hf, tnn = hf_model(c, base).to(device), TorchMAE(c, base).to(device)
    base.to(device)
    runners = [Runner("maelib", base, lambda x, z: base(x, MASK_RATIO, noise=z)[0], None, "fp32", args.lr),
               Runner("HF", hf, lambda x, z: hf(pixel_values=x, noise=z).loss, None, "fp32", args.lr),
               Runner("torch.nn", tnn, tnn, None, "fp32", args.lr)]
    params = {r.name: count_params(r.model) for r in runners}
    for runner in runners:
        runner.warmup = warmup

    native_bf16 = has_native_bf16(device)
    if args.bf16:
        m16, s16 = copy.deepcopy(base), copy.deepcopy(base)
        runners.append(Runner("maelib bf16", m16, lambda x, z: m16(x, MASK_RATIO, noise=z)[0], torch.bfloat16,
                              "bf16", args.lr))
        runners.append(Runner("maelib bf16 SDPA", s16, lambda x, z: s16(x, MASK_RATIO, noise=z)[0], torch.bfloat16,
                              "bf16", args.lr, attention="sdpa"))
        if not native_bf16:  # emulated bf16 is many times slower than fp32: 1 warm-up step, a time budget
            for runner in runners[-2:]:
                runner.warmup, runner.budget_s = min(warmup, 1), args.emulated_bf16_seconds
    if args.compile:
        mc = copy.deepcopy(base)
        compiled = torch.compile(mc)
        amp = torch.bfloat16 if native_bf16 else None  # what maelib.train's amp="auto" picks on this device
        runners.append(Runner("maelib compiled" + (" bf16" if amp else ""), mc,
                              lambda x, z: compiled(x, MASK_RATIO, noise=z)[0], amp, "bf16" if amp else "fp32",
                              args.lr))

    flops = train_flops_per_image(c)
    print(f"\n=== {name}: {c.img}x{c.img}, patch {c.patch}, encoder {c.dim} x {c.depth} ({c.heads} heads), "
          f"decoder {c.dec_dim} x {c.dec_depth} ({c.dec_heads} heads), mask {MASK_RATIO}, batch {batch}"
          f"{'  -- ' + c.note if c.note else ''}")
    attention_rows = attention_table(c, batch, device, args.attention_reps, dtypes=(
        (torch.float32, torch.bfloat16) if args.bf16 and native_bf16 else (torch.float32,)))
    print("  parameters (all / trainable): " + " | ".join(f"{k} {a:,} / {t:,}" for k, (a, t) in params.items())
          + ("  -> equal" if len(set(params.values())) == 1 else "  -> DIFFER"))
    print(f"  training FLOPs per image (analytic, 3 x forward matmuls): {flops / 1e9:.3f} GFLOP; "
          f"{warmup} warm-up + {steps} timed steps per model, interleaved")

    # the same images and masks for every model, step by step
    pool = structured_images(4 * batch, c.img, args.seed).float().div(255).to(device)
    load_avg = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    # A matmul takes a turn in every round: fp32, and bf16 where bf16 is native (emulated bf16 has no peak worth
    # the name, and its matmul would take minutes). Each model's MFU divides by the matmul of its own precision.
    probes = {"fp32": MatmulProbe(args.matmul_size, device)}
    if args.bf16 and native_bf16:
        probes["bf16"] = MatmulProbe(args.matmul_size, device, torch.bfloat16)
    rates: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in probes}  # GFLOP/s, GFLOP per CPU-s
    matmul_loads: list[dict] = []
    order: list[int | str] = [*range(len(runners)), *probes]
    for r in range(warmup + steps):
        start = (r * batch) % len(pool)
        imgs = pool[start:start + batch]
        noise = torch.rand(batch, n, generator=torch.Generator().manual_seed(args.seed * 100_003 + r)).to(device)
        rotated = order[r % len(order):] + order[:r % len(order)]
        for i in rotated:
            if i in probes:
                gf, gf_cpu, d = probes[i].measure()
                if r >= warmup:
                    rates[i][0].append(gf)
                    rates[i][1].append(gf_cpu)
                    matmul_loads.append(d)
                continue
            runner = runners[i]
            if runner.budget_s is not None and runner.times and sum(runner.times.values()) >= runner.budget_s:
                continue
            a = meter.snap()
            loss = runner.step(imgs, noise, measure_memory=r == 1)  # 2nd step: AdamW's state exists
            sync(device)
            d = meter.delta(a, meter.snap())
            runner.losses.append(loss.item())
            if r == 0:
                runner.first_step_s = d["wall"]
            if r >= runner.warmup:
                runner.times[r] = d["wall"]
                runner.cpu[r] = max(d["own_cpu"], 1e-9)
                runner.loads.append(d)
        print(f"  round {r + 1}/{warmup + steps}" + ("  (warm-up)" if r < warmup else "") + ": loss "
              + "  ".join(f"{x.name} {x.losses[-1]:.4f}" for x in runners if len(x.losses) == r + 1), flush=True)
    if hasattr(os, "getloadavg"):
        load_avg.append(os.getloadavg()[0])
    if warmup + steps < 2:  # no second step: measure memory in one extra, untimed one
        for runner in runners:
            runner.step(imgs, noise, measure_memory=True)

    # ---- results
    ref, hf_runner = runners[0], runners[1]
    (matmul, matmul_cpu), (matmul16, matmul16_cpu) = rates["fp32"], rates.get("bf16", ([], []))
    mm_q, mm_cpu = quantiles(matmul), statistics.median(matmul_cpu)
    mm16 = statistics.median(matmul16) if matmul16 else math.nan
    mm16_cpu = statistics.median(matmul16_cpu) if matmul16_cpu else math.nan

    def vs_hf(mine: dict[int, float], theirs: dict[int, float]) -> tuple[float, float, float]:
        # paired with the HF step of the same round: the ratio cancels what the load did to that round
        pairs = [theirs[k] / t for k, t in mine.items() if k in theirs]
        return quantiles(pairs or [statistics.median(theirs.values()) / statistics.median(mine.values())])

    models = {}
    for runner in runners:
        ips = [batch / t for t in runner.times.values()]
        q = quantiles(ips)
        ratio, ratio_cpu = vs_hf(runner.times, hf_runner.times), vs_hf(runner.cpu, hf_runner.cpu)
        ratio_fp32 = vs_hf(runner.times, ref.times)  # against maelib's own fp32 step, paired by round
        achieved = q[1] * flops / 1e9
        # MFU against the matmul of the model's own precision, measured in the same rounds
        bf16_peak = runner.amp == torch.bfloat16 and bool(matmul16)
        peak, peak_cpu = (mm16, mm16_cpu) if bf16_peak else (mm_q[1], mm_cpu)
        # images per CPU-second of this process: what a step costs, whatever else the machine was doing
        # (meaningful with --threads 1; with more threads, OpenMP's spin-waiting counts as CPU time too)
        per_cpu_s = statistics.median(batch / t for t in runner.cpu.values())
        # final loss: mean of the last few steps, against maelib fp32's at the same steps
        k = len(runner.losses)
        tail = max(1, min(5, k // 3))
        final, final_ref = statistics.fmean(runner.losses[k - tail:k]), statistics.fmean(ref.losses[k - tail:k])
        rel_loss = abs(final - final_ref) / abs(final_ref)
        models[runner.name] = {
            "images_per_s": q[1], "images_per_s_q1": q[0], "images_per_s_q3": q[2], "images_per_s_best": max(ips),
            "vs_hf": ratio[1], "vs_hf_q1": ratio[0], "vs_hf_q3": ratio[2], "gflops": achieved,
            "vs_fp32": ratio_fp32[1], "vs_fp32_q1": ratio_fp32[0], "vs_fp32_q3": ratio_fp32[2],
            "mfu": achieved / peak, "mfu_matmul": "bf16" if bf16_peak else "fp32",
            "mfu_vs_standalone_peak": achieved / args.peak_gflops,
            "images_per_cpu_s": per_cpu_s, "vs_hf_cpu": ratio_cpu[1], "mfu_cpu": per_cpu_s * flops / 1e9 / peak_cpu,
            "activations_mib": runner.activations_mib, "static_mib": runner.static_mib(),
            "memory_mib": runner.peak_mib if device.type == "cuda" else runner.static_mib() + runner.activations_mib,
            "first_step_s": runner.first_step_s,
            "params": count_params(runner.model)[0], "trainable_params": count_params(runner.model)[1],
            "loss_first": runner.losses[0], "loss_final": final, "loss_final_ref": final_ref, "loss_steps": k,
            "loss_rel_diff": rel_loss, "timed_steps": len(runner.times),
            "loss_tol": LOSS_TOL[runner.precision], "loss_ok": rel_loss <= LOSS_TOL[runner.precision],
            "step0_rel_diff": abs(runner.losses[0] - ref.losses[0]) / abs(ref.losses[0]),
            "load": load_summary(runner.loads), "precision": runner.precision,
        }
    all_loads = [d for runner in runners for d in runner.loads] + matmul_loads
    load = load_summary(all_loads)
    noisy = load["noisy"]

    print(f"  {'model':<18}{'img/s':>9}{'IQR':>15}{'best':>9}{'vs HF':>7}{'vs fp32':>8}{'GFLOP/s':>9}{'MFU':>6}"
          f"{'img/CPU-s':>10}{'vs HF':>7}{'MFU':>6}{'mem MiB':>10}{'loss 0':>9}{'loss end':>10}{'diff':>8}  others")
    for k, m in models.items():
        first = f"  (first step {m['first_step_s']:.0f} s, incl. compile)" if "compiled" in k else ""
        if m["timed_steps"] < steps:
            first += f"  ({m['timed_steps']} timed steps; loss end = step {m['loss_steps']})"
        print(f"  {k:<18}{m['images_per_s']:>9.2f}{m['images_per_s_q1']:>7.2f}-{m['images_per_s_q3']:<7.2f}"
              f"{m['images_per_s_best']:>9.2f}{m['vs_hf']:>7.2f}{m['vs_fp32']:>8.2f}{m['gflops']:>9.1f}{m['mfu']:>6.0%}"
              f"{m['images_per_cpu_s']:>10.2f}{m['vs_hf_cpu']:>7.2f}{m['mfu_cpu']:>6.0%}"
              f"{m['memory_mib']:>10.0f}{m['loss_first']:>9.4f}{m['loss_final']:>10.4f}"
              f"{m['loss_rel_diff']:>8.1e}{' ok' if m['loss_ok'] else ' !!':<3} {m['load']['others']:>5.0%}{first}")
    print(f"  matmul {args.matmul_size}: {mm_q[1]:.1f} GFLOP/s median ({mm_q[0]:.1f}-{mm_q[2]:.1f}) during these "
          f"steps, {mm_cpu:.1f} per CPU-s (the MFU columns divide by these); standalone best {args.peak_gflops:.1f}"
          + (f"; bf16 {mm16:.1f} GFLOP/s median (the bf16 models' MFU divides by this)" if matmul16 else ""))
    print("  (img/s, vs HF, MFU: wall clock; img/CPU-s and the next two: this process's CPU time, which ignores "
          "the time other processes took)")
    cpu_memory = ("weights + gradients + AdamW state (16 B per parameter) + the activations saved for backward, "
                  "counted exactly; not measured for compiled models")
    print(f"  (mem MiB: {'the allocator peak in a step' if device.type == 'cuda' else cpu_memory})")
    print(f"  load: loadavg {' -> '.join(f'{x:.1f}' for x in load_avg)}; other processes used "
          f"{load['others']:.0%} of the CPUs during timed steps (steal {load['steal']:.0%}; "
          f"{load['noisy_steps']:.0%} of steps noisy); this process "
          f"{load['cpu_per_wall']:.2f} CPU-s per s on {torch.get_num_threads()} threads"
          + ("  -> NOISY" if noisy else "  -> quiet"))
    step0 = max(m["step0_rel_diff"] for m in models.values() if m["precision"] == "fp32")
    print(f"  loss tolerance vs maelib fp32 (loss end = mean of the last third, <= 5 steps): "
          f"fp32 {LOSS_TOL['fp32']:.0e}, bf16 {LOSS_TOL['bf16']:.0e} relative; step-0 losses of the fp32 models "
          f"(same weights, same masks) differ by at most {step0:.1e}")

    loader = loader_throughput(c, batch, args, meter)
    fastest = max(m["images_per_s"] for k, m in models.items() if k.startswith("maelib"))
    print(f"  data pipeline alone (uint8 tensors -> train_transforms -> make_loader, {args.loader_workers} workers): "
          f"{loader['images_per_s']:.0f} img/s = {loader['images_per_s'] / fastest:.0f}x the fastest maelib model "
          f"(others busy {loader['load']['others']:.0%})")
    return {"config": name, "bench": c.__dict__, "batch": batch, "warmup": warmup, "steps": steps,
            "flops_per_image": flops, "params": {k: v[0] for k, v in params.items()},
            "trainable_params": {k: v[1] for k, v in params.items()}, "models": models,
            "matmul_gflops": mm_q[1], "matmul_gflops_q1": mm_q[0], "matmul_gflops_q3": mm_q[2],
            "matmul_bf16_gflops": mm16, "attention": attention_rows,
            "load": load, "loadavg": load_avg, "noisy": noisy, "loader": loader,
            "loader_vs_model": loader["images_per_s"] / fastest, "native_bf16": native_bf16,
            "_runners": runners, "_inputs": (imgs, noise)}


def loader_throughput(c: Bench, batch: int, args: argparse.Namespace, meter: CpuMeter) -> dict:
    """Images per second of maelib's input pipeline alone: uint8 tensors, augmentation, DataLoader."""
    images = structured_images(max(256, 4 * batch), c.img, args.seed + 1)
    dataset = ImageTensorDataset(images, transform=train_transforms(c.img))
    loader = make_loader(dataset, batch, shuffle=True, seed=args.seed, num_workers=args.loader_workers,
                         drop_last=True)
    it = iter(loader)
    next(it)  # start-up (and workers) not counted
    count, a = 0, meter.snap()
    while True:
        try:
            count += len(next(it))
        except StopIteration:
            it = iter(loader)
            continue
        if time.perf_counter() - a[0] > args.loader_seconds:
            break
    d = meter.delta(a, meter.snap())
    return {"images_per_s": count / d["wall"], "workers": args.loader_workers, "load": load_summary([d])}


def profile_step(runner: Runner, imgs: torch.Tensor, noise: torch.Tensor, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.step(imgs, noise)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# --------------------------------------------------------------------------- goals and report
def goals(results: list[dict]) -> list[tuple[str, bool, str]]:
    out = []
    for r in results:
        m = r["models"]
        q1, q3 = m["maelib"]["vs_hf_q1"], m["maelib"]["vs_hf_q3"]
        ok = m["maelib"]["vs_hf"] >= 1.0
        tie = "" if ok or q3 < 1.0 else f" (IQR {q1:.2f}-{q3:.2f} includes 1: a tie within the noise)"
        out.append((f"{r['config']}: maelib fp32 eager >= HF fp32", ok,
                    f"maelib/HF = {m['maelib']['vs_hf']:.2f} (paired by round){tie}; by CPU time "
                    f"{m['maelib']['vs_hf_cpu']:.2f}"))
        fast = {k: v for k, v in m.items() if k.startswith("maelib") and k != "maelib"}
        best = max(fast, key=lambda k: fast[k]["vs_fp32"]) if fast else None
        if r["config"] in ("faces64", "base224") and best is not None:
            native = "" if r["native_bf16"] else " (bf16 is EMULATED on this machine: the goal needs native bf16)"
            out.append((f"{r['config']}: maelib fast path >= 2x maelib fp32", fast[best]["vs_fp32"] >= 2.0,
                        f"best variant '{best}' = {fast[best]['vs_fp32']:.2f}x maelib fp32 (paired by round, IQR "
                        f"{fast[best]['vs_fp32_q1']:.2f}-{fast[best]['vs_fp32_q3']:.2f}), {fast[best]['vs_hf']:.2f}x "
                        f"HF fp32{native}"))
        if "maelib bf16" in m:
            bf16_faster = m["maelib bf16"]["vs_fp32"] > 1.0
            out.append((f"{r['config']}: amp='auto' takes the faster precision", bf16_faster == r["native_bf16"],
                        f"bf16 / fp32 = {m['maelib bf16']['vs_fp32']:.2f}; amp='auto' picks "
                        f"{'bf16' if r['native_bf16'] else 'float32'} here"))
        if r.get("attention"):
            wrong = [f"{a['part']} {a['dtype']}" for a in r["attention"] if not a.get("chosen_is_faster", True)]
            out.append((f"{r['config']}: the attention rule picks the faster implementation", not wrong,
                        "every shape and dtype (within 5%)" if not wrong else "slower choice for " + ", ".join(wrong)))
        if r["config"] == "base224":
            out.append(("base224: maelib fp32 at >= 85% of the measured matmul peak", m["maelib"]["mfu"] >= 0.85,
                        f"{m['maelib']['gflops']:.1f} GFLOP/s = {m['maelib']['mfu']:.0%} of the matmul during the "
                        f"same rounds ({r['matmul_gflops']:.1f}); {m['maelib']['mfu_vs_standalone_peak']:.0%} of "
                        f"the standalone best; by CPU time {m['maelib']['mfu_cpu']:.0%}"))
        out.append((f"{r['config']}: data pipeline >= 10x the model", r["loader_vs_model"] >= 10,
                    f"{r['loader']['images_per_s']:.0f} img/s = {r['loader_vs_model']:.0f}x"))
        bad = [k for k, v in m.items() if not v["loss_ok"]]
        out.append((f"{r['config']}: losses match maelib fp32 within tolerance", not bad,
                    "all match" if not bad else "differ: " + ", ".join(bad)))
    return out


def markdown_table(results: list[dict]) -> str:
    names = []
    for r in results:
        names += [k for k in r["models"] if k not in names]
    head = ("| config | batch | GFLOP/img | " + " | ".join(f"{k} img/s" for k in names)
            + " | maelib / HF | fastest / maelib fp32 | MFU maelib fp32 | MFU maelib bf16 (bf16 matmul) "
            "| memory MiB maelib / HF / torch.nn | loader img/s | load |"
            + " maelib / HF, MFU (CPU time) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        m = r["models"]
        cells = [f"{m[k]['images_per_s']:.2f} ({m[k]['images_per_s_q1']:.2f}-{m[k]['images_per_s_q3']:.2f})"
                 if k in m else "" for k in names]
        fast = max((v["vs_fp32"], k) for k, v in m.items() if k.startswith("maelib"))
        mfu16 = f"{m['maelib bf16']['mfu']:.0%}" if m.get("maelib bf16", {}).get("mfu_matmul") == "bf16" else "-"
        mem = " / ".join(f"{m[k]['memory_mib']:.0f}" for k in ("maelib", "HF", "torch.nn"))
        load = f"{'NOISY' if r['noisy'] else 'quiet'}: others {r['load']['others']:.0%}"
        lines.append(f"| {r['config']} | {r['batch']} | {r['flops_per_image'] / 1e9:.2f} | " + " | ".join(cells)
                     + f" | {m['maelib']['vs_hf']:.2f} | {fast[0]:.2f} ({fast[1]}) | {m['maelib']['mfu']:.0%} "
                     f"| {mfu16} | {mem} "
                     f"| {r['loader']['images_per_s']:.0f} ({r['loader_vs_model']:.0f}x) | {load} "
                     f"| {m['maelib']['vs_hf_cpu']:.2f}, {m['maelib']['mfu_cpu']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny32,faces64,base224", help=f"comma-separated, from {sorted(CONFIGS)}")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda if present)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip torch.compile (~2 min per model on a CPU)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16-autocast model")
    p.add_argument("--emulated-bf16-seconds", type=float, default=30.0,
                   help="where bf16 is emulated (slow): time the bf16 model for this long (>= 1 step) after 1 "
                        "warm-up step")
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                   help="torch.profiler top ops: for goals not met (auto), for every configuration, or never")
    p.add_argument("--profile-max-seconds", type=float, default=60.0,
                   help="do not profile maelib variants whose step takes longer than this")
    p.add_argument("--steps", type=int, help="timed steps per model (default: per configuration)")
    p.add_argument("--warmup", type=int, help="untimed steps per model first (default: per configuration)")
    p.add_argument("--batch", type=int, help="batch size (default: per configuration)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the short training run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers for the data pipeline test")
    p.add_argument("--loader-seconds", type=float, default=3.0)
    p.add_argument("--attention-only", action="store_true",
                   help="only the attention table (SDPA vs explicit at every configuration's shapes)")
    p.add_argument("--attention-reps", type=int, default=15, help="timed repetitions per attention measurement")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--markdown", help="write the results table (markdown) to this file")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.configs.split(",") if s.strip()]
    if unknown := [s for s in names if s not in CONFIGS]:
        p.error(f"unknown configuration(s) {unknown}; choose from {sorted(CONFIGS)}")
    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 0):
        p.error("need --steps >= 1 and --warmup >= 0")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    started = time.perf_counter()
    print(f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    cpu_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    print(f"machine: {cpu_name}, {os.cpu_count()} CPUs, vector ISA {torch.backends.cpu.get_cpu_capability()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"python {platform.python_version()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    if device.type == "cpu":
        print(f"native bf16 on this CPU: {cpu_has_native_bf16()}"
              + ("" if cpu_has_native_bf16() else " -> bf16 autocast is EMULATED here (converted to fp32 for the "
                 "arithmetic); measured anyway"))

    # The machine's peak: the best of several large fp32 matmuls (and bf16, to show what emulation costs).
    probe = MatmulProbe(args.matmul_size, device)
    runs = [probe.measure() for _ in range(5)]
    fp32 = [gf for gf, _, _ in runs]
    d = {"others": statistics.fmean(x["others"] for _, _, x in runs)}
    native_bf16 = has_native_bf16(device)
    if args.attention_only:
        dtypes = (torch.float32, torch.bfloat16) if native_bf16 else (torch.float32,)
        rows = {}
        for name in names:
            c = CONFIGS[name]
            print(f"\n=== {name}")
            rows[name] = attention_table(c, args.batch or c.batch, device, args.attention_reps, dtypes)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"argv": sys.argv, "threads": torch.get_num_threads(), "attention": rows}, f, indent=1)
        return 0
    bf16_size = args.matmul_size if native_bf16 else 512  # emulated bf16 matmuls are very slow
    probe16 = MatmulProbe(bf16_size, device, torch.bfloat16)
    bf16 = [probe16.measure()[0] for _ in range(3)]
    del probe, probe16
    args.peak_gflops = max(fp32)
    print(f"matmul {args.matmul_size}x{args.matmul_size}: fp32 best {max(fp32):.1f}, "
          f"median {statistics.median(fp32):.1f} GFLOP/s; bf16 ({bf16_size}x{bf16_size}) best {max(bf16):.1f} "
          f"GFLOP/s; other processes used {d['others']:.0%} of the CPUs meanwhile")
    if d["others"] > 0.5 and torch.get_num_threads() > 1:
        print(f"WARNING: the machine is busy; {torch.get_num_threads()} threads then wait for each other at every "
              "parallel op (OpenMP barriers), which punishes small ops most. Compare with --threads 1.")

    results = []
    for name in names:
        results.append(run_config(name, CONFIGS[name], args, device))

    print("\n=== goals")
    checks = goals(results)
    for what, ok, detail in checks:
        print(f"  [{'met' if ok else 'NOT MET'}] {what}: {detail}")
    live = {r["config"]: (r.pop("_runners"), r.pop("_inputs")) for r in results}

    print(f"\n=== summary ({time.perf_counter() - started:.0f} s in all)")
    table = markdown_table(results)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "peak_gflops": args.peak_gflops, "matmul_fp32": fp32, "matmul_bf16": bf16,
                       "threads": torch.get_num_threads(), "device": str(device), "torch": torch.__version__,
                       "transformers": transformers.__version__, "results": results,
                       "goals": [{"goal": w, "met": ok, "detail": dt} for w, ok, dt in checks]}, f, indent=1,
                      default=str)

    # Where a goal is not met: where does the time go?
    for r in results:
        unmet = [w for w, ok, _ in checks if not ok and w.startswith(r["config"] + ":")]
        if args.profile == "always" or (args.profile == "auto" and unmet):
            runners, (imgs, noise) = live[r["config"]]
            # HF and maelib's variants, leaving out steps too slow to repeat (emulated bf16 at 224 px)
            for runner in runners:
                if runner.name == "HF" or (runner.name.startswith("maelib")
                                           and statistics.median(runner.times.values()) < args.profile_max_seconds):
                    print(f"\n--- {r['config']}: top ops by self CPU time, one step of {runner.name}")
                    print(profile_step(runner, imgs, noise), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
