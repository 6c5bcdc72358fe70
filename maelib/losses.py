"""Reconstruction losses.

The MAE loss is a mean squared error computed on the *masked* patches only: the model is never
asked to copy what it was shown.

A pixel loss alone rewards blurry guesses (the average of all plausible patches). A *perceptual*
loss compares images through the eyes of a network trained on ImageNet (VGG19): two images are
close when they produce similar edges, textures and parts. :class:`CombinedLoss` mixes the two,
``0.6 * masked MSE + 0.4 * perceptual`` by default. :class:`SSIMLoss` (``1 - SSIM``) is a
structural term that needs no weights at all; it takes the perceptual term's place in
:class:`CombinedLoss` (``perceptual=SSIMLoss()``).

The VGG19 weights (about 550 MB) come from torchvision's download server. Without a network
they must be put into torch's cache by hand; :func:`vgg19_weights_available` tells a notebook
whether they are there, so it can fall back to the MSE loss and say so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from .masked_loss import masked_mse, normalize_patches  # noqa: F401 (part of this module's API)
from .patches import paste_back, patch_mask_to_pixels, patchify, unpatchify
from .ssim import ssim

if TYPE_CHECKING:
    from .normalize import PixelNormalizer


# --------------------------------------------------------------------------------------------
# Perceptual loss
# --------------------------------------------------------------------------------------------

VGG19_WEIGHTS = VGG19_Weights.IMAGENET1K_V1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")


def _vgg19_layer_names() -> dict[str, int]:
    """Name every layer of ``vgg19().features``: ``conv3_4`` -> 16, ``relu3_4`` -> 17, ``pool3`` -> 18.

    VGG19 has five blocks of 2, 2, 4, 4, 4 convolutions; each convolution is followed by a ReLU,
    each block by a max-pool.
    """
    names: dict[str, int] = {}
    index = 0
    for block, num_convs in enumerate((2, 2, 4, 4, 4), start=1):
        for conv in range(1, num_convs + 1):
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
        names[f"pool{block}"] = index
        index += 1
    return names


VGG19_LAYERS: dict[str, int] = _vgg19_layer_names()


class VGGWeightsUnavailableError(RuntimeError):
    """The VGG19 ImageNet weights are neither cached nor downloadable."""


def vgg19_weights_path() -> Path:
    """Where torchvision keeps the VGG19 weights: ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_WEIGHTS.url).name


def _weights_help(reason: str) -> str:
    path = vgg19_weights_path()
    return (
        f"The VGG19 ImageNet weights needed by the perceptual loss are not available ({reason}).\n"
        f"Get the file {path.name} (about 550 MB) from\n"
        f"    {VGG19_WEIGHTS.url}\n"
        f"and put it at\n"
        f"    {path}\n"
        f"(the folder is torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another one).\n"
        f"Or train with the MSE loss only (maelib.masked_loss.masked_mse); "
        f"maelib.losses.vgg19_weights_available() tells which case you are in."
    )


def vgg19_weights_available(download: bool = False) -> bool:
    """Are the VGG19 ImageNet weights in torch's cache? With ``download=True``, try to fetch them first.

    Never raises: a failed download just returns ``False``.
    """
    path = vgg19_weights_path()
    if not path.exists() and download:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(VGG19_WEIGHTS.url, str(path), progress=True)
        except OSError:  # no network, refused, disk full, ... (URLError is an OSError)
            return False
    return path.exists()


def _vgg19_features(pretrained: bool) -> nn.Sequential:
    """The convolutional part of torchvision's VGG19 (``vgg19().features``), no classifier head."""
    state = None
    if pretrained:  # fetch the weights first: fail fast, before building anything
        try:
            state = VGG19_WEIGHTS.get_state_dict(progress=True)
        except OSError as err:  # urllib's URLError and socket errors are OSErrors
            raise VGGWeightsUnavailableError(_weights_help(f"{type(err).__name__}: {err}")) from err
    features = make_layers(cfgs["E"], batch_norm=False)  # "E" is VGG19's configuration
    if state is not None:
        prefix = "features."
        features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return features


class VGGPerceptualLoss(nn.Module):
    """Distance between VGG19 feature maps of two images.

    The network is frozen and always in eval mode (it is a fixed measuring instrument, not part
    of the model), and cut after the deepest layer used.

    Args:
        layers: names from :data:`VGG19_LAYERS`, e.g. ``("relu1_2", "relu2_2", "relu3_4", "relu4_4")``.
            Shallow layers compare edges and colours, deep layers textures and parts.
        criterion: ``"l1"`` or ``"mse"``, applied to every layer's feature maps.
        layer_weights: one weight per layer (default: equal weights summing to 1).
        weights: ``"imagenet"`` (torchvision's ``VGG19_Weights.IMAGENET1K_V1``) or ``None`` for
            random weights -- meaningless as a loss, only for tests that must not download.

    Raises :class:`VGGWeightsUnavailableError` naming the URL and the folder when the ImageNet
    weights are neither cached nor downloadable.
    """

    def __init__(self, layers: Sequence[str] = DEFAULT_PERCEPTUAL_LAYERS, *, criterion: str = "l1",
                 layer_weights: Sequence[float] | None = None, weights: str | None = "imagenet"):
        super().__init__()
        layers = tuple(layers)
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if not layers or unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown or list(layers)}; "
                             f"choose from {list(VGG19_LAYERS)}")
        if criterion not in ("l1", "mse"):
            raise ValueError(f"criterion must be 'l1' or 'mse', got {criterion!r}")
        if layer_weights is None:
            layer_weights = [1.0 / len(layers)] * len(layers)
        if len(layer_weights) != len(layers):
            raise ValueError(f"got {len(layer_weights)} layer_weights for the {len(layers)} layers "
                             f"{list(layers)}; give one weight per layer")
        if weights not in ("imagenet", None):
            raise ValueError(f"weights must be 'imagenet' or None (random, for tests only), got {weights!r}")
        if weights is None:
            warnings.warn("VGGPerceptualLoss with random weights: only useful for tests, "
                          "it does not measure perceptual similarity", UserWarning, stacklevel=2)

        self.layers = layers
        self.criterion = criterion
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.layer_indices = tuple(VGG19_LAYERS[name] for name in layers)

        # Keep only the layers up to the deepest one we read from.
        features = _vgg19_features(pretrained=weights == "imagenet")[: max(self.layer_indices) + 1]
        for module in features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # we read the ReLU outputs; in-place ops would overwrite them
        features.requires_grad_(False)
        self.features = features.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Ignore ``mode``: the frozen VGG stays in eval mode even when the parent model trains."""
        return super().train(False)

    def extract(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at ``self.layers`` for images ``(B, C, H, W)`` in [0, 1], C = 1 or 3."""
        if imgs.ndim != 4 or imgs.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, C, H, W) with C = 1 or 3, got {tuple(imgs.shape)}")
        x = imgs.expand(-1, 3, -1, -1)  # greyscale -> 3 identical channels
        x = (x - self.mean) / self.std  # the normalisation VGG19 was trained with
        wanted = set(self.layer_indices)
        feats = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                feats[index] = x
        return [feats[i] for i in self.layer_indices]

    def forward(self, pred_imgs: torch.Tensor, target_imgs: torch.Tensor) -> torch.Tensor:
        """Weighted mean over layers of L1 (or MSE) between feature maps; a scalar.

        ``pred_imgs``, ``target_imgs``: ``(B, C, H, W)`` in [0, 1]. The target is a constant:
        gradients flow only into ``pred_imgs``.
        """
        if pred_imgs.shape != target_imgs.shape:
            raise ValueError(f"pred_imgs {tuple(pred_imgs.shape)} and target_imgs "
                             f"{tuple(target_imgs.shape)} differ in shape")
        distance = F.l1_loss if self.criterion == "l1" else F.mse_loss
        with torch.no_grad():
            target_feats = self.extract(target_imgs)
        pred_feats = self.extract(pred_imgs)
        pairs = zip(self.layer_weights, pred_feats, target_feats, strict=True)
        return sum(w * distance(p, t) for w, p, t in pairs)


# --------------------------------------------------------------------------------------------
# A structural loss that needs no download
# --------------------------------------------------------------------------------------------

class SSIMLoss(nn.Module):
    """``1 - SSIM(pred_imgs, target_imgs)``: 0 for identical images, up to 2.

    SSIM compares local means, contrasts and correlations in 11x11 Gaussian windows (exactly
    ``metrics.ssim``, the score the lessons report), so a flat fill where the target
    has edges costs more than it does under a pixel MSE. It needs no pretrained network, which
    makes it the structural term to use where the VGG19 weights cannot be had. Zhao et al. (2017,
    "Loss Functions for Image Restoration with Neural Networks") found mixes of an SSIM-type and
    a pixel loss better than L2 alone for restoration.

    ``forward(pred_imgs, target_imgs)``: ``(B, C, H, W)`` in [0, 1], at least 11 pixels on each
    side -> scalar; it has the perceptual loss's interface, so ``CombinedLoss(..., perceptual=SSIMLoss(),
    paste_visible=True)`` gives ``mse_weight * masked MSE + perceptual_weight * (1 - SSIM of the
    paste-back)``.
    """

    def forward(self, pred_imgs: torch.Tensor, target_imgs: torch.Tensor) -> torch.Tensor:
        return 1 - ssim(pred_imgs, target_imgs)


# --------------------------------------------------------------------------------------------
# MSE + perceptual
# --------------------------------------------------------------------------------------------

def _prediction_images(pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, *,
                       norm_pix: bool, paste_visible: bool) -> torch.Tensor:
    """Predicted patches ``(B, N, p*p*C)`` -> images ``(B, C, H, W)`` comparable with ``imgs``.

    With ``norm_pix`` the model predicts normalised patches; they are mapped back to pixels with
    the mean and std of the *true* patches (as in facebookresearch/mae's visualisation).
    """
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        pred = pred * std + mean
    grid = (imgs.shape[2] // patch_size, imgs.shape[3] // patch_size)
    pred_imgs = unpatchify(pred, patch_size, grid, channels=imgs.shape[1])
    if paste_visible:  # the true pixels where the patch was visible: no gradient reaches those predictions
        pred_imgs = paste_back(pred_imgs, imgs, patch_mask_to_pixels(mask, patch_size, grid))
    return pred_imgs


def combined_loss(pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, *, patch_size: int,
                  perceptual: nn.Module | None, mse_weight: float = 0.6, perceptual_weight: float = 0.4,
                  norm_pix: bool = False, paste_visible: bool = False, normalizer: PixelNormalizer | None = None,
                  return_parts: bool = False):
    """``mse_weight * masked_mse + perceptual_weight * perceptual(reconstruction, imgs)``.

    Args:
        pred: ``(B, N, p*p*C)`` predicted patches.
        imgs: ``(B, C, H, W)`` original images in [0, 1] (normalised by ``normalizer`` if given).
        mask: ``(B, N)``, 1 = masked.
        perceptual: a loss ``(pred_imgs, target_imgs) -> scalar`` on pixel images: a
            :class:`VGGPerceptualLoss` or an :class:`SSIMLoss`; may be ``None`` when
            ``perceptual_weight`` is 0.
        norm_pix: the MSE uses normalised target patches; the perceptual term un-normalises ``pred``.
        paste_visible: the perceptual term sees the true visible patches instead of the predicted
            ones, so it judges only what the model had to invent (and how well it fits in).
        normalizer: the :class:`~maelib.data.PixelNormalizer` the model's inputs (and so its
            targets) were standardised with; the MSE stays in those units, while the perceptual
            network is given both images mapped back to pixels, the only inputs it was trained on.
        return_parts: also return ``{"mse": ..., "perceptual": ...}`` (unweighted, for logging).

    Returns the scalar loss, or ``(loss, parts)`` with ``return_parts``.
    """
    mse = masked_mse(pred, patchify(imgs, patch_size), mask, norm_pix=norm_pix)
    if perceptual_weight == 0:
        perc = torch.zeros((), device=mse.device)
    elif perceptual is None:
        raise ValueError(f"perceptual_weight is {perceptual_weight} but no perceptual loss was given")
    else:
        recon = _prediction_images(pred, imgs, mask, patch_size,
                                   norm_pix=norm_pix, paste_visible=paste_visible)
        if normalizer is not None:
            recon, imgs = normalizer.denormalize(recon), normalizer.denormalize(imgs)
        perc = perceptual(recon, imgs)
    loss = mse_weight * mse + perceptual_weight * perc
    return (loss, {"mse": mse.detach(), "perceptual": perc.detach()}) if return_parts else loss


class CombinedLoss(nn.Module):
    """:func:`combined_loss` as a module that owns its perceptual network (so ``.to(device)`` moves it).

    ``perceptual=None`` builds a :class:`VGGPerceptualLoss` with ImageNet weights (raising a
    clear error when they are missing); pass ``perceptual_weight=0`` for the MSE alone.
    """

    def __init__(self, patch_size: int, *, mse_weight: float = 0.6, perceptual_weight: float = 0.4,
                 perceptual: nn.Module | None = None, norm_pix: bool = False, paste_visible: bool = False,
                 normalizer: PixelNormalizer | None = None):
        super().__init__()
        if perceptual is None and perceptual_weight != 0:
            perceptual = VGGPerceptualLoss()
        self.patch_size = patch_size
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight
        self.perceptual = perceptual
        self.norm_pix = norm_pix
        self.paste_visible = paste_visible
        self.normalizer = normalizer

    def forward(self, pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, *,
                return_parts: bool = False):
        """``pred (B, N, p*p*C)``, ``imgs (B, C, H, W)`` in [0, 1], ``mask (B, N)`` -> scalar loss."""
        return combined_loss(pred, imgs, mask, patch_size=self.patch_size, perceptual=self.perceptual,
                             mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight,
                             norm_pix=self.norm_pix, paste_visible=self.paste_visible,
                             normalizer=self.normalizer, return_parts=return_parts)
