"""Pretrained MAE weights: load them, freeze them, and stack new trainable blocks on top.

Where weights come from:

* **facebookresearch/mae's checkpoints**, ``{"model": state_dict}`` with the parameter names of
  :class:`~maelib.models.MaskedAutoencoderViT`. Two kinds exist:

  - ``mae_pretrain_vit_{base,large,huge}.pth``: the **encoder only** (the paper's checkpoints for
    fine-tuning). The decoder keeps its fresh initialisation, so reconstructions look like noise
    until the decoder is trained;
  - ``mae_visualize_vit_*.pth``: **encoder and decoder**, trained with pixel targets (no
    ``norm_pix_loss``) for the visualisation demo: they reconstruct images out of the box.

  :data:`OFFICIAL_WEIGHTS` lists them by name. They are under CC BY-NC 4.0 (non-commercial).
* **maelib's own checkpoints** (:func:`maelib.checkpoint.save_checkpoint`), or a bare state dict.

Every load returns a :class:`LoadReport`: which tensors were loaded, which were missing and why,
which were in the file but not in the model (e.g. a fine-tuned checkpoint's ``head``), and which
position embeddings were interpolated because the checkpoint was trained at another image size.
URLs are downloaded once, verified and atomically, by :func:`maelib.download.download_and_extract`
into ``$MAELIB_CACHE_DIR/weights`` (default ``~/.cache/maelib/weights``).

New blocks (:func:`add_encoder_blocks`) are appended to ``model.blocks``: the forward pass is
unchanged, and the model is then simply a deeper ViT-MAE (its state dict has ``blocks.0`` ...
``blocks.{depth + n - 1}``). Load an official checkpoint *before* adding blocks.
``model.pretrained_depth`` remembers how many of the blocks are pretrained, for
:func:`freeze_pretrained_weights`::

    model = from_pretrained("mae_visualize_vit_large", img_size=128)
    print(model.load_report)
    add_encoder_blocks(model, 2)           # blocks 24 and 25: new, trainable
    freeze_pretrained_weights(model)       # patch_embed, cls_token, blocks 0-23
    print(count_parameters(model))
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .cache import cache_dir
from .checkpoint import clean_key, load_weights, read_checkpoint, unwrap
from .course import shown_path
from .download import DownloadError, download_and_extract, sha256_of
from .models import MaskedAutoencoderViT, build_model, create_model, interpolate_pos_embed

OFFICIAL_LICENCE = "CC BY-NC 4.0 (facebookresearch/mae: https://github.com/facebookresearch/mae/blob/main/LICENSE)"
_FAIR = "https://dl.fbaipublicfiles.com/mae"


@dataclass(frozen=True)
class OfficialWeights:
    """One checkpoint published by facebookresearch/mae."""

    url: str
    arch: str  # the name of its architecture in maelib.models.MODEL_CONFIGS
    decoder: bool  # True: encoder and decoder (visualisation checkpoints); False: encoder only
    licence: str = OFFICIAL_LICENCE


# Sources: the README of facebookresearch/mae (pretrain/), its demo notebook demo/mae_visualize.ipynb
# (visualize/ ... large, large_ganloss) and K. He in facebookresearch/mae issue #3 (visualize/ base, huge).
OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {
    "mae_pretrain_vit_base": OfficialWeights(f"{_FAIR}/pretrain/mae_pretrain_vit_base.pth",
                                             "mae_vit_base_patch16", decoder=False),
    "mae_pretrain_vit_large": OfficialWeights(f"{_FAIR}/pretrain/mae_pretrain_vit_large.pth",
                                              "mae_vit_large_patch16", decoder=False),
    "mae_pretrain_vit_huge": OfficialWeights(f"{_FAIR}/pretrain/mae_pretrain_vit_huge.pth",
                                             "mae_vit_huge_patch14", decoder=False),
    "mae_visualize_vit_base": OfficialWeights(f"{_FAIR}/visualize/mae_visualize_vit_base.pth",
                                              "mae_vit_base_patch16", decoder=True),
    "mae_visualize_vit_large": OfficialWeights(f"{_FAIR}/visualize/mae_visualize_vit_large.pth",
                                               "mae_vit_large_patch16", decoder=True),
    "mae_visualize_vit_large_ganloss": OfficialWeights(f"{_FAIR}/visualize/mae_visualize_vit_large_ganloss.pth",
                                                       "mae_vit_large_patch16", decoder=True),
    "mae_visualize_vit_huge": OfficialWeights(f"{_FAIR}/visualize/mae_visualize_vit_huge.pth",
                                              "mae_vit_huge_patch14", decoder=True),
}

# The top-level names of MaskedAutoencoderViT's state dict, by part.
ENCODER_PARTS = {"patch_embed", "cls_token", "pos_embed", "blocks", "norm"}
DECODER_PARTS = {"decoder_embed", "mask_token", "decoder_pos_embed", "decoder_blocks", "decoder_norm", "decoder_pred"}
FIXED = {"pos_embed", "decoder_pos_embed"}  # sin-cos, never trained
FINETUNE_PARTS = {"head", "fc_norm"}  # facebookresearch/mae's models_vit.VisionTransformer adds these

DECODER_MISSING = ("decoder not in this checkpoint: the decoder keeps its fresh initialisation; "
                   "reconstructions need fine-tuning or a visualisation checkpoint")


# --------------------------------------------------------------------------- the report
@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. ``print(report)`` gives a short summary."""

    source: str
    loaded: list[str] = field(default_factory=list)  # model keys set from the checkpoint
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks (kept as they were)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacks (ignored)
    interpolated: list[str] = field(default_factory=list)  # position embeddings resized to the model's grid
    notes: list[str] = field(default_factory=list)  # why keys are missing or unexpected; what was resized

    @property
    def decoder_loaded(self) -> bool:
        """True if every learned decoder tensor came from the checkpoint."""
        return any(_part(k) in DECODER_PARTS for k in self.loaded) and \
            not any(_part(k) in DECODER_PARTS - FIXED for k in self.missing)

    def __str__(self) -> str:
        source = shown_path(self.source) if Path(self.source).exists() else self.source
        lines = [f"{source}: loaded {len(self.loaded)} tensors ({summarise_keys(self.loaded) or 'none'})"]
        for label, keys in (("interpolated", self.interpolated), ("missing", self.missing),
                            ("unexpected, ignored", self.unexpected)):
            if keys:
                lines.append(f"  {label} ({len(keys)}): {summarise_keys(keys)}")
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


def _part(key: str) -> str:
    return key.split(".", 1)[0]


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def summarise_keys(keys: list[str]) -> str:
    """State-dict keys by module: ``patch_embed, cls_token, blocks.0-11, norm``."""
    groups: dict[str, list[int]] = {}
    for key in keys:
        parts = key.split(".")
        indexed = parts[0] in ("blocks", "decoder_blocks") and len(parts) > 1 and parts[1].isdigit()
        groups.setdefault(parts[0], []).extend([int(parts[1])] if indexed else [])
    return ", ".join(f"{name}.{_ranges(idx)}" if idx else name for name, idx in groups.items())


# --------------------------------------------------------------------------- finding the file
def weights_dir() -> Path:
    """Where downloaded weights are kept: ``$MAELIB_CACHE_DIR/weights``, default ``~/.cache/maelib/weights``."""
    return cache_dir("weights")


def _official_for(source: str | os.PathLike) -> OfficialWeights | None:
    """The official checkpoint named ``source``, or whose file name ``source`` has (a local copy, a mirror)."""
    text = str(source)
    if text in OFFICIAL_WEIGHTS:
        return OFFICIAL_WEIGHTS[text]
    name = Path(urlparse(text).path).name
    return next((w for w in OFFICIAL_WEIGHTS.values() if Path(urlparse(w.url).path).name == name), None)


def resolve_weights(source: str | os.PathLike, *, sha256: str | None = None, progress: bool = True) -> Path:
    """A local file for ``source``: a path, an http(s) URL (downloaded once), or a name in OFFICIAL_WEIGHTS."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        if sha256 is not None and sha256_of(path) != sha256.lower():
            raise DownloadError(f"{path} does not have the sha256 {sha256}")
        return path
    url = OFFICIAL_WEIGHTS[text].url if text in OFFICIAL_WEIGHTS else text
    if url.startswith(("http://", "https://")):
        name = Path(urlparse(url).path).name
        if not name:
            raise ValueError(f"cannot name the file that {url} would be saved as; give a URL ending in a file name")
        official = _official_for(url)
        return download_and_extract(url, weights_dir() / name, sha256=sha256, extract=False, progress=progress,
                                    licence=official.licence if official else "not stated by the source")
    raise FileNotFoundError(f"no weights file {text}; give a path, an http(s) URL, or one of "
                            f"{sorted(OFFICIAL_WEIGHTS)}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file: under ``"model"`` (facebookresearch/mae, maelib) or bare.

    Loaded with ``weights_only=True``: opening the file runs no code from it. Checkpoints written by
    facebookresearch/mae's training scripts also hold their ``argparse.Namespace`` of arguments,
    which is allowed (it only holds values).
    """
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
        checkpoint = read_checkpoint(path, "cpu")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        top = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path} holds no state dict (neither under 'model' nor at the top level); found {top}")
    return {clean_key(k): v for k, v in state.items()}


# --------------------------------------------------------------------------- loading
def _depth(keys, part: str) -> int:
    """Number of blocks in ``part`` (``blocks`` or ``decoder_blocks``) among ``keys``."""
    return 1 + max((int(k.split(".")[1]) for k in keys if _part(k) == part), default=-1)


def _grid_of(tokens: int) -> tuple[int, int]:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"cannot tell the patch grid of a position embedding with {tokens} patch tokens (not a "
                         "square); build the model at the checkpoint's image size, load, then resize_pos_embed()")
    return side, side


def _interpolate_pos_embeds(model: MaskedAutoencoderViT, state: dict, report: LoadReport) -> None:
    """Resize the checkpoint's position embeddings to the model's patch grid (in ``state``)."""
    own = model.state_dict()
    for key in ("pos_embed", "decoder_pos_embed"):
        theirs, ours = state.get(key), own[key]
        if theirs is None or theirs.ndim != 3 or theirs.shape[2] != ours.shape[2] or theirs.shape[1] == ours.shape[1]:
            continue  # absent, same grid, or another width (a shape mismatch, reported by load_weights)
        old = _grid_of(theirs.shape[1] - 1)
        state[key] = interpolate_pos_embed(theirs, old, model.grid_size)
        report.interpolated.append(key)
        note = f"position embeddings interpolated (bicubic) from a {old[0]}x{old[1]} to a " \
               f"{model.grid_size[0]}x{model.grid_size[1]} patch grid: the checkpoint was trained at another image size"
        if note not in report.notes:
            report.notes.append(note)


def _judge(model: MaskedAutoencoderViT, state: dict, missing: list[str], unexpected: list[str],
           strict_encoder: bool) -> tuple[list[str], list[str]]:
    """Explain the missing and unexpected keys: ``(notes, problems)``; problems stop the loading."""
    notes, problems = [], []
    depth, ckpt_depth = len(model.blocks), _depth(state, "blocks")
    dec_depth, ckpt_dec_depth = len(model.decoder_blocks), _depth(state, "decoder_blocks")

    has_decoder = any(_part(k) in DECODER_PARTS - FIXED for k in state)
    fixed = [k for k in missing if k == "pos_embed" or (k == "decoder_pos_embed" and has_decoder)]
    if fixed:
        notes.append(f"{', '.join(fixed)}: fixed sin-cos position embeddings, not learned: the model's own are used")

    # --- the decoder: all or nothing
    decoder = [k for k in missing + unexpected if _part(k) in DECODER_PARTS and k not in FIXED]
    if decoder and not has_decoder:
        notes.append(DECODER_MISSING)
    elif decoder:
        text = f"the checkpoint's decoder does not fit the model's ({summarise_keys(decoder)})"
        if ckpt_dec_depth != dec_depth:
            text += f": it has {ckpt_dec_depth} decoder blocks, the model {dec_depth} (decoder_depth=)"
        (problems if strict_encoder else notes).append(text)

    # --- the encoder: complete, unless the checkpoint was fine-tuned with global pooling
    encoder = [k for k in missing if _part(k) in ENCODER_PARTS and k not in FIXED]
    if "fc_norm.weight" in state and any(_part(k) == "norm" for k in encoder):
        encoder = [k for k in encoder if _part(k) != "norm"]
        notes.append("norm: the checkpoint was fine-tuned with global pooling (its fc_norm replaces norm); "
                     "norm keeps its fresh initialisation")
    extra = [k for k in unexpected if _part(k) in ENCODER_PARTS]
    if encoder or extra:
        text = f"encoder keys {'missing from' if encoder else 'only in'} the checkpoint: " \
               f"{summarise_keys(encoder or extra)}"
        if ckpt_depth < depth:
            text += f"; the checkpoint has {ckpt_depth} encoder blocks, the model {depth}: build the model with " \
                    f"depth={ckpt_depth}, load, then add_encoder_blocks(model, {depth - ckpt_depth})"
        elif ckpt_depth > depth:
            text += f"; the checkpoint has {ckpt_depth} encoder blocks, the model only {depth}"
        foreign = [k for k in unexpected if _part(k) not in ENCODER_PARTS | DECODER_PARTS]
        if encoder and foreign:
            text += f"; the checkpoint has keys the model does not know: {summarise_keys(foreign)}"
        if strict_encoder:
            problems.append(text)
        else:
            notes.append(text + ("; they keep their fresh initialisation" if encoder else "; ignored"))

    # --- keys of other models
    head = [k for k in unexpected if _part(k) in FINETUNE_PARTS]
    if head:
        notes.append(f"{summarise_keys(head)}: the classifier of a fine-tuned checkpoint, not part of an MAE; ignored")
    other = [k for k in unexpected if _part(k) not in ENCODER_PARTS | DECODER_PARTS | FINETUNE_PARTS]
    if other:
        notes.append(f"{summarise_keys(other)}: not in this model; ignored")
    return notes, problems


def load_pretrained(model: nn.Module, source: str | os.PathLike, *, strict_encoder: bool = True,
                    sha256: str | None = None, progress: bool = True) -> LoadReport:
    """Load pretrained weights into a :class:`MaskedAutoencoderViT` and report what happened.

    Args:
        model: the model to load into (its architecture must match the checkpoint's, apart from
            the image size and the presence of a decoder).
        source: a file path, an http(s) URL (downloaded once into :func:`weights_dir`), or a name in
            :data:`OFFICIAL_WEIGHTS`. facebookresearch/mae checkpoints, maelib checkpoints and bare
            state dicts are all read.
        strict_encoder: the checkpoint must hold the whole encoder (``patch_embed``, ``cls_token``,
            every block, ``norm``), no extra blocks, and a decoder either completely or not at all.
            ``False``: load whatever matches, and report the rest.
        sha256: the expected sha256 of the file (checked after the download, and for local files).
        progress: show a progress bar while downloading.

    Returns:
        A :class:`LoadReport`. A missing decoder is not an error: it keeps its fresh initialisation.
        Keys of a fine-tuned classifier (``head``, ``fc_norm``) are ignored. Position embeddings
        trained at another image size are interpolated to the model's grid.

    Raises:
        ValueError: a shape mismatch (naming the key and both shapes: ``load_weights``), or, with
            ``strict_encoder``, a checkpoint that does not fit (naming the keys). Nothing is loaded then.
        DownloadError: offline, wrong checksum, ... (see :func:`maelib.download.download_and_extract`).
    """
    model = unwrap(model)
    if not isinstance(model, MaskedAutoencoderViT):
        raise TypeError(f"load_pretrained loads into a MaskedAutoencoderViT, got {type(model).__name__} "
                        "(for an MAEClassifier, load into its .mae)")
    path = resolve_weights(source, sha256=sha256, progress=progress)
    state = read_state_dict(path)
    report = LoadReport(source=str(source) if str(source) == str(path) else f"{source} ({path})")
    _interpolate_pos_embeds(model, state, report)

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    notes, problems = _judge(model, state, missing, unexpected, strict_encoder)
    if problems:
        raise ValueError(f"{report.source} does not fit the model: " + "; ".join(problems) +
                         " (strict_encoder=False loads the keys that match)")
    load_weights(model, {k: v for k, v in state.items() if k in own}, strict=False, source=report.source)

    report.loaded = [k for k in own if k in state]
    report.missing, report.unexpected, report.notes = missing, unexpected, report.notes + notes
    model.pretrained_depth = _depth(report.loaded, "blocks")
    return report


def from_pretrained(name_or_path: str | os.PathLike, *, arch: str | None = None, strict_encoder: bool = True,
                    sha256: str | None = None, progress: bool = True, **model_overrides) -> MaskedAutoencoderViT:
    """Build the model of a checkpoint and load it; the report is in ``model.load_report``.

    ``name_or_path``: a name in :data:`OFFICIAL_WEIGHTS` (``"mae_visualize_vit_large"``), or a
    path / URL. ``arch`` names the architecture in ``maelib.models.MODEL_CONFIGS``; it may be left
    out for official checkpoints (also local copies with the official file name) and for maelib
    checkpoints, which store their architecture. ``model_overrides`` change the architecture,
    e.g. ``img_size=128`` (position embeddings are interpolated) or ``norm_pix_loss=True``.
    """
    official = _official_for(name_or_path)
    arch = arch or (official.arch if official else None)
    stored = _stored_architecture(name_or_path) if arch is None else None
    if arch is None and stored is None:
        raise ValueError(f"which architecture is {name_or_path}? pass arch=, e.g. arch='mae_vit_base_patch16' "
                         "(see maelib.models.MODEL_CONFIGS)")
    model = create_model(arch, **model_overrides) if arch is not None else \
        build_model({**stored, "kwargs": {**stored["kwargs"], **model_overrides}})
    model.load_report = load_pretrained(model, name_or_path, strict_encoder=strict_encoder, sha256=sha256,
                                        progress=progress)
    return model


def _stored_architecture(source: str | os.PathLike) -> dict | None:
    """The architecture a local maelib checkpoint stores (:meth:`MaskedAutoencoder.architecture`), or None."""
    path = Path(source)
    if not path.is_file():
        return None
    checkpoint = read_checkpoint(path, "cpu")
    return checkpoint.get("architecture") if isinstance(checkpoint, dict) else None


# --------------------------------------------------------------------------- freezing and new blocks
def add_encoder_blocks(model: nn.Module, n: int) -> MaskedAutoencoderViT:
    """Append ``n`` new, trainable transformer blocks to the encoder (after the existing ones).

    They have the encoder's width, heads and MLP ratio and are initialised like the rest of the
    model (xavier-uniform linears, LayerNorms at identity). ``model.pretrained_depth`` keeps the
    number of blocks before the first call. Returns the model.
    """
    model = unwrap(model)
    if n < 1 or not len(model.blocks):
        raise ValueError(f"need n >= 1 and a model with at least one block to copy the shape of; got n={n}")
    if getattr(model, "pretrained_depth", None) is None:
        model.pretrained_depth = len(model.blocks)
    for _ in range(n):
        block = copy.deepcopy(model.blocks[-1])  # same width, heads, MLP, device and dtype ...
        block.apply(model._init_module)  # ... but fresh weights
        block.requires_grad_(True)  # even if the block it copies is frozen
        model.blocks.append(block)
    return model


def freeze_pretrained_weights(model: nn.Module, *, norm: bool = False,
                              num_blocks: int | None = None) -> MaskedAutoencoderViT:
    """Freeze the pretrained encoder: ``patch_embed``, ``cls_token`` and the pretrained blocks.

    ``num_blocks``: how many blocks, from the first, are frozen; default ``model.pretrained_depth``
    (set by :func:`load_pretrained` and :func:`add_encoder_blocks`), else all of them. ``norm=True``
    also freezes the encoder's final LayerNorm. The position embeddings are fixed anyway; the
    decoder and any added blocks stay trainable. ``maelib.train.fit`` leaves frozen parameters out
    of the optimizer. Returns the model.
    """
    model = unwrap(model)
    if num_blocks is None:
        num_blocks = getattr(model, "pretrained_depth", None)
        num_blocks = len(model.blocks) if num_blocks is None else num_blocks
    if not 0 <= num_blocks <= len(model.blocks):
        raise ValueError(f"num_blocks must be between 0 and {len(model.blocks)}, got {num_blocks}")
    model.cls_token.requires_grad_(False)
    for module in [model.patch_embed, *model.blocks[:num_blocks], *([model.norm] if norm else [])]:
        module.requires_grad_(False)
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable": ..., "frozen": ..., "total": ...}`` numbers of parameters.

    "frozen" counts every parameter with ``requires_grad=False``, including the fixed sin-cos
    position embeddings.
    """
    params = list(unwrap(model).parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {"trainable": trainable, "frozen": total - trainable, "total": total}


__all__ = [
    "DECODER_MISSING", "OFFICIAL_LICENCE", "OFFICIAL_WEIGHTS", "LoadReport", "OfficialWeights",
    "add_encoder_blocks", "count_parameters", "freeze_pretrained_weights", "from_pretrained", "load_pretrained",
    "read_state_dict", "resolve_weights", "summarise_keys", "weights_dir",
]
