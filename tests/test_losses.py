"""Losses: masked MSE, the VGG perceptual loss (random weights, never downloaded) and their mix."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from maelib.data import PixelNormalizer
from maelib.losses import (
    VGG19_LAYERS,
    VGG19_WEIGHTS,
    CombinedLoss,
    SSIMLoss,
    VGGPerceptualLoss,
    VGGWeightsUnavailableError,
    combined_loss,
    masked_mse,
    normalize_patches,
    vgg19_weights_available,
    vgg19_weights_path,
)
from maelib.metrics import ssim
from maelib.patches import patchify, unpatchify

# ---------------------------------------------------------------------------- masked MSE


def test_masked_mse_hand_computed():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [2.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    # masked patches: mean((1, 1)^2) = 1 and mean((2, 0)^2) = 2 -> (1 + 2) / 2
    assert masked_mse(pred, target, mask).item() == pytest.approx(1.5)


def test_masked_mse_ignores_visible_patches():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 6, 12, generator=g), torch.rand(2, 6, 12, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 1, 0]], dtype=torch.float32)
    before = masked_mse(pred, target, mask)
    changed = pred.clone()
    changed[mask == 0] += 100.0
    assert masked_mse(changed, target, mask) == before
    changed[mask == 1] += 1.0  # ... but the masked patches do count
    assert masked_mse(changed, target, mask) != before


def test_masked_mse_norm_pix_matches_manual_normalisation():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 4, 8, generator=g), torch.rand(2, 4, 8, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.float32)
    d = target.shape[-1]
    mean = target.sum(-1, keepdim=True) / d
    var = ((target - mean) ** 2).sum(-1, keepdim=True) / (d - 1)  # unbiased, like the paper's code
    manual_target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - manual_target) ** 2).mean(-1)
    expected = (per_patch * mask).sum() / mask.sum()
    assert masked_mse(pred, target, mask, norm_pix=True).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(normalize_patches(target), manual_target, atol=1e-6)


# ---------------------------------------------------------------------------- perceptual loss


@pytest.fixture(scope="module")
def perceptual() -> VGGPerceptualLoss:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="random weights"):
        return VGGPerceptualLoss(weights=None)


def test_perceptual_zero_for_identical_positive_otherwise(perceptual):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert perceptual(x, x.clone()).item() == 0.0
    assert perceptual((x + 0.1).clamp(0, 1), x).item() > 0.0


def test_perceptual_is_frozen_and_stays_in_eval(perceptual):
    params = list(perceptual.parameters())
    assert params and not any(p.requires_grad for p in params)
    parent = nn.ModuleDict({"head": nn.Linear(2, 2), "loss": perceptual})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in perceptual.modules())


def test_perceptual_gradients_flow_to_input(perceptual):
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    pred = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)).requires_grad_()
    perceptual(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_perceptual_greyscale_equals_three_equal_channels(perceptual):
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    rgb = lambda x: x.repeat(1, 3, 1, 1)
    assert torch.allclose(perceptual(a, b), perceptual(rgb(a), rgb(b)))


def test_perceptual_layers_criterion_and_truncation():
    with pytest.warns(UserWarning):
        loss = VGGPerceptualLoss(layers=("relu1_2",), criterion="mse", weights=None)
    assert len(loss.features) == VGG19_LAYERS["relu1_2"] + 1 == 4  # cut after the deepest layer used
    g = torch.Generator().manual_seed(6)
    a, b = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    (fa,), (fb,) = loss.extract(a), loss.extract(b)
    assert loss(a, b).item() == pytest.approx(F.mse_loss(fa, fb).item(), rel=1e-6)


def test_perceptual_rejects_bad_arguments():
    with pytest.raises(ValueError, match="relu9_9"):
        VGGPerceptualLoss(layers=("relu9_9",), weights=None)
    with pytest.raises(ValueError, match="'huber'"):
        VGGPerceptualLoss(criterion="huber", weights=None)
    with pytest.raises(ValueError, match="'random'"):
        VGGPerceptualLoss(weights="random")


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """An empty torch cache, and a download that fails as it does offline (never the network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def test_missing_weights_error_names_url_and_folder(empty_torch_home):
    expected_path = empty_torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg19_weights_path() == expected_path
    assert not vgg19_weights_available()
    assert not vgg19_weights_available(download=True)
    with pytest.raises(VGGWeightsUnavailableError) as info:
        VGGPerceptualLoss()
    message = str(info.value)
    assert VGG19_WEIGHTS.url in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert str(expected_path) in message
    with pytest.raises(VGGWeightsUnavailableError):
        CombinedLoss(patch_size=4)  # the default perceptual term needs the weights too


def test_cached_weights_are_loaded(empty_torch_home):
    # A stand-in for the real file: torchvision's key names, our own numbers.
    torch.manual_seed(7)
    features = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # the head is in the file but not used
    path = vgg19_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert vgg19_weights_available()
    loss = VGGPerceptualLoss(layers=("relu2_2",))
    assert torch.equal(loss.features[7].weight, features[7].weight)


# ---------------------------------------------------------------------------- combined loss


def _batch(p: int = 4, seed: int = 8):
    """16 x 16 images (small: VGG on a CPU is slow), predictions for a 4 x 4 patch grid, a mask."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(2, 3, 16, 16, generator=g)
    pred = torch.rand(2, (16 // p) ** 2, p * p * 3, generator=g)
    mask = (torch.rand(2, (16 // p) ** 2, generator=g) < 0.75).float()
    return imgs, pred, mask


def test_combined_loss_is_weighted_sum(perceptual):
    imgs, pred, mask = _batch()
    mse = masked_mse(pred, patchify(imgs, 4), mask)
    perc = perceptual(unpatchify(pred, 4), imgs)
    loss, parts = combined_loss(pred, imgs, mask, patch_size=4, perceptual=perceptual, return_parts=True)
    assert loss.item() == pytest.approx((0.6 * mse + 0.4 * perc).item(), rel=1e-6)
    assert parts["mse"].item() == pytest.approx(mse.item())
    assert parts["perceptual"].item() == pytest.approx(perc.item())
    module = CombinedLoss(4, perceptual=perceptual, mse_weight=0.3, perceptual_weight=0.7)
    assert module(pred, imgs, mask).item() == pytest.approx((0.3 * mse + 0.7 * perc).item(), rel=1e-6)
    module.train()
    assert not perceptual.training


def test_combined_loss_paste_visible_compares_pasted_image(perceptual):
    imgs, pred, mask = _batch()
    keep = mask.unsqueeze(-1)
    pasted = unpatchify(pred * keep + patchify(imgs, 4) * (1 - keep), 4)
    expected = 0.6 * masked_mse(pred, patchify(imgs, 4), mask) + 0.4 * perceptual(pasted, imgs)
    got = combined_loss(pred, imgs, mask, patch_size=4, perceptual=perceptual, paste_visible=True)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_combined_loss_norm_pix_unnormalises_for_perceptual(perceptual):
    imgs, _, mask = _batch()
    perfect = normalize_patches(patchify(imgs, 4))  # what a perfect norm_pix model predicts
    loss, parts = combined_loss(perfect, imgs, mask, patch_size=4, perceptual=perceptual,
                                norm_pix=True, return_parts=True)
    assert parts["mse"].item() == 0.0
    assert parts["perceptual"].item() == pytest.approx(0.0, abs=1e-4)


def test_combined_loss_with_normalizer_gives_vgg_pixels(perceptual):
    imgs, pred, mask = _batch()
    norm = PixelNormalizer((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    z, zpred = norm(imgs), patchify(norm(unpatchify(pred, 4)), 4)  # the model's world: normalised images
    loss, parts = combined_loss(zpred, z, mask, patch_size=4, perceptual=perceptual, normalizer=norm,
                                return_parts=True)
    assert parts["mse"].item() == pytest.approx(masked_mse(zpred, patchify(z, 4), mask).item(), rel=1e-6)
    # the perceptual term sees the same pixels as without normalisation
    assert parts["perceptual"].item() == pytest.approx(perceptual(unpatchify(pred, 4), imgs).item(), rel=1e-4)
    module = CombinedLoss(4, perceptual=perceptual, normalizer=norm)
    assert module(zpred, z, mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_combined_loss_without_perceptual_term():
    imgs, pred, mask = _batch()
    mse = masked_mse(pred, patchify(imgs, 4), mask)
    mse_only = CombinedLoss(4, mse_weight=1.0, perceptual_weight=0.0)
    assert mse_only.perceptual is None
    assert mse_only(pred, imgs, mask).item() == pytest.approx(mse.item())
    with pytest.raises(ValueError, match="perceptual_weight"):
        combined_loss(pred, imgs, mask, patch_size=4, perceptual=None)


# ---------------------------------------------------------------------------- SSIM loss


def _windows(size: int = 32) -> torch.Tensor:
    """``(2, 3, size, size)``: a wall of bright windows on a dark grid, the structure of a facade."""
    row, col = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    wall = 0.3 + 0.4 * (((row % 8) < 4) & ((col % 6) < 3)).float()
    return torch.stack([wall.expand(3, -1, -1), wall.flip(-1).expand(3, -1, -1)])


def test_ssim_loss_is_one_minus_the_lessons_ssim():
    imgs = _windows()
    other = (imgs + 0.1 * torch.randn(imgs.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    loss = SSIMLoss()
    assert loss(imgs, imgs).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(other, imgs).item() == pytest.approx(1 - ssim(other, imgs).item(), rel=1e-6)
    assert loss(other, imgs).item() > 0.1


def test_ssim_loss_prefers_structure_to_a_flat_fill_that_mse_rates_equal():
    imgs = _windows()
    band = torch.zeros(2, 1, 32, 32)
    band[:, :, 8:24] = 1  # the hidden rows
    flat = torch.where(band > 0, imgs[:, :, 8:24].mean(dim=(2, 3), keepdim=True).expand_as(imgs), imgs)
    # the true band plus noise: exactly as much squared error as the flat fill, but the structure is kept
    error = ((flat - imgs) ** 2).sum()
    noise = torch.randn(imgs.shape, generator=torch.Generator().manual_seed(1)) * band
    structured = imgs + noise * (error / (noise**2).sum()).sqrt()
    assert ((structured - imgs) ** 2).sum().item() == pytest.approx(error.item(), rel=1e-5)
    assert SSIMLoss()(structured, imgs) < SSIMLoss()(flat, imgs) - 0.05


def test_combined_loss_with_ssim_term_trains_only_the_masked_patches():
    imgs = _windows()
    mask = torch.zeros(2, 16)
    mask[:, 4:12] = 1  # rows 1 and 2 of the 4x4 grid of 8x8 patches
    pred = torch.full((2, 16, 8 * 8 * 3), 0.5, requires_grad=True)
    criterion = CombinedLoss(8, mse_weight=1.0, perceptual_weight=2.0, perceptual=SSIMLoss(), paste_visible=True)
    loss, parts = criterion(pred, imgs, mask, return_parts=True)
    pasted = unpatchify(pred.detach() * mask.unsqueeze(-1) + patchify(imgs, 8) * (1 - mask.unsqueeze(-1)), 8)
    assert parts["perceptual"].item() == pytest.approx(1 - ssim(pasted, imgs).item(), rel=1e-6)
    assert loss.item() == pytest.approx(parts["mse"].item() + 2 * parts["perceptual"].item(), rel=1e-6)
    loss.backward()
    assert pred.grad[mask == 0].abs().max().item() == 0.0  # visible patches are the photo's: no gradient
    assert pred.grad[mask == 1].abs().sum(dim=-1).min().item() > 0
