"""Metrics (masked PSNR, SSIM), paste-back, the classical baselines and the comparison table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import inpaint_biharmonic

from maelib import metrics
from maelib.metrics import (
    BASELINES,
    biharmonic_inpaint,
    evaluate_reconstructions,
    format_table,
    interpolate_fill,
    masked_psnr,
    mean_fill,
    paste_back,
    ssim,
    telea_inpaint,
)


def _images(b: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def _patch_mask(b: int = 2, size: int = 32, p: int = 8, seed: int = 0) -> torch.Tensor:
    """``(B, 1, H, W)`` 0/1 pixel mask: about 3/4 of the p x p patches masked, at least one visible."""
    g = torch.Generator().manual_seed(seed)
    grid = size // p
    patches = (torch.rand(b, 1, grid, grid, generator=g) < 0.75).float()
    patches[:, :, 0, 0] = 0  # one patch always visible
    patches[:, :, -1, -1] = 1  # one patch always masked
    return patches.repeat_interleave(p, 2).repeat_interleave(p, 3)


def _gradient_images(b: int = 2, size: int = 32) -> torch.Tensor:
    """Smooth colour ramps: a fair test that interpolation can exploit and a flat fill cannot."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([0.1 + 0.8 * xx, 0.1 + 0.8 * yy, 0.5 + 0.3 * torch.sin(3 * xx) * yy])
    return img.unsqueeze(0).repeat(b, 1, 1, 1)


# ---------------------------------------------------------------------------- paste-back, PSNR, SSIM


def test_paste_back_keeps_visible_pixels_exactly():
    imgs, pred, pm = _images(seed=1), _images(seed=2), _patch_mask()
    out = paste_back(pred, imgs, pm)
    visible, masked = (pm == 0).expand_as(imgs), (pm == 1).expand_as(imgs)
    assert torch.equal(out[visible], imgs[visible])
    assert torch.equal(out[masked], pred[masked])


def test_masked_psnr_known_value_and_ignores_visible_pixels():
    target, pm = _images() * 0.8, _patch_mask()
    masked = (pm == 1).expand_as(target)
    pred = target + 0.1 * masked  # error 0.1 on every masked pixel -> MSE 0.01 -> 20 dB
    pred = torch.where(masked, pred, torch.rand_like(target))  # garbage on visible pixels
    assert masked_psnr(pred, target, pm).item() == pytest.approx(20.0, abs=1e-4)
    # per image: error 0.1 in image 0, 0.01 in image 1 -> 20 dB and 40 dB, mean 30 dB
    pred2 = target + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1) * masked
    per_image = masked_psnr(pred2, target, pm, per_image=True)
    assert per_image.shape == (2,)
    assert per_image.tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert masked_psnr(pred2, target, pm).item() == pytest.approx(30.0, abs=1e-4)


def test_masked_psnr_perfect_is_capped_and_empty_mask_rejected():
    imgs, pm = _images(), _patch_mask()
    assert masked_psnr(imgs, imgs, pm).item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"\[1\]"):
        masked_psnr(imgs, imgs, torch.stack([pm[0], torch.zeros_like(pm[1])]))
    with pytest.raises(ValueError, match="patch_mask_to_pixels"):
        masked_psnr(imgs, imgs, pm[:, 0])


def test_ssim_identical_is_one_and_lower_otherwise():
    imgs = _images()
    assert ssim(imgs, imgs.clone()).item() == pytest.approx(1.0, abs=1e-5)
    per_image = ssim((imgs + 0.2 * _images(seed=3)).clamp(0, 1), imgs, per_image=True)
    assert per_image.shape == (2,) and (per_image < 0.99).all()


# ---------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("channels", [3, 1])
def test_baseline_fills_only_masked_pixels_within_range(name, channels):
    imgs, pm = _images(c=channels), _patch_mask()
    out = BASELINES[name](imgs, pm)
    assert out.shape == imgs.shape and out.dtype == imgs.dtype
    visible, masked = (pm == 0).expand_as(imgs), (pm == 1).expand_as(imgs)
    assert torch.equal(out[visible], imgs[visible])
    assert not torch.equal(out[masked], imgs[masked])  # the hole was really filled, not left as is
    assert out.min() >= 0 and out.max() <= 1


def test_mean_fill_uses_visible_mean_colour():
    imgs, pm = _images(), _patch_mask()
    out = mean_fill(imgs, pm)
    for i in range(2):
        visible = pm[i, 0] == 0
        expected = imgs[i][:, visible].mean(dim=1)  # (C,)
        assert torch.allclose(out[i][:, pm[i, 0] == 1], expected[:, None].expand(-1, int((~visible).sum())))


def test_interpolation_beats_mean_fill_on_smooth_image():
    imgs, pm = _gradient_images(), _patch_mask(seed=4)
    mean_psnr = masked_psnr(mean_fill(imgs, pm), imgs, pm)
    assert masked_psnr(interpolate_fill(imgs, pm), imgs, pm) > mean_psnr + 5
    assert masked_psnr(biharmonic_inpaint(imgs, pm), imgs, pm) > mean_psnr + 5
    assert masked_psnr(telea_inpaint(imgs, pm), imgs, pm) > mean_psnr


def test_interpolation_with_collinear_visible_pixels_falls_back_to_nearest():
    imgs, pm = _images(b=1), torch.ones(1, 1, 32, 32)
    pm[..., 0, :] = 0  # only the top row is visible: no triangle exists
    out = interpolate_fill(imgs, pm)
    assert torch.allclose(out, imgs[..., :1, :].expand_as(imgs))  # every column copies its top pixel


def test_biharmonic_is_clipped(monkeypatch):
    # Recent scikit-image clips by itself, so simulate a version whose solution overshoots.
    calls = []

    def overshooting(image, mask, channel_axis=None):
        calls.append(channel_axis)
        out = inpaint_biharmonic(image, mask, channel_axis=channel_axis)
        out[mask] += np.where(out[mask] > 0.5, 0.7, -0.7)  # way above 1 / below 0
        return out

    monkeypatch.setattr(metrics, "inpaint_biharmonic", overshooting)
    imgs, pm = _images(), _patch_mask()
    out = biharmonic_inpaint(imgs, pm)
    assert calls == [-1, -1]  # colour images: channel_axis given, one call per image
    masked = (pm == 1).expand_as(imgs)
    assert out.min() == 0 and out.max() == 1
    assert (out[masked] == 0).any() and (out[masked] == 1).any()  # the clip really acted


def test_telea_rejects_bad_radius():
    with pytest.raises(ValueError, match="radius"):
        telea_inpaint(_images(), _patch_mask(), radius=0)


# ---------------------------------------------------------------------------- the comparison table


def test_evaluate_reconstructions_rows():
    imgs, pm = _gradient_images(), _patch_mask(seed=5)
    rows = evaluate_reconstructions(imgs, pm, {"perfect": imgs.clone(), "overshoot": lambda i, m: i + 5.0})
    assert [r["method"] for r in rows] == ["perfect", "overshoot", *BASELINES]
    assert set(rows[0]) == {"method", "masked_psnr", "ssim"}
    assert rows[0]["masked_psnr"] == pytest.approx(100.0) and rows[0]["ssim"] == pytest.approx(1.0, abs=1e-5)
    # predictions are clipped to [0, 1] before scoring: "+5" becomes 1 everywhere
    clipped = paste_back(torch.ones_like(imgs), imgs, pm)
    assert rows[1]["masked_psnr"] == pytest.approx(masked_psnr(clipped, imgs, pm).item(), rel=1e-5)
    biharmonic = biharmonic_inpaint(imgs, pm)
    assert rows[-1]["masked_psnr"] == pytest.approx(masked_psnr(biharmonic, imgs, pm).item(), rel=1e-5)
    assert rows[-1]["ssim"] == pytest.approx(ssim(biharmonic, imgs).item(), rel=1e-5)

    only = evaluate_reconstructions(imgs, pm, baselines=["mean_fill"])
    assert [r["method"] for r in only] == ["mean_fill"]
    with pytest.raises(ValueError, match="'inpaint_magic'"):
        evaluate_reconstructions(imgs, pm, baselines=["inpaint_magic"])

    table = format_table(only).splitlines()
    assert table[0] == "| method | masked PSNR (dB) | SSIM |" and len(table) == 3
    assert table[2].startswith("| mean fill | ") and f"{only[0]['masked_psnr']:.3f}" in table[2]


def test_format_table_shows_a_missing_value_as_a_dash():
    rows = [{"method": "MAE", "masked_psnr": 15.5, "train min": 3.25},
            {"method": "interpolate_fill", "masked_psnr": 14.9, "train min": None},
            {"method": "telea_inpaint", "masked_psnr": float("nan"), "train min": float("nan")}]
    lines = format_table(rows, digits=1).splitlines()
    assert lines[0] == "| method | masked PSNR (dB) | training (min) |"
    assert lines[2:] == ["| MAE | 15.5 | 3.2 |", "| interpolation | 14.9 | - |", "| Telea inpainting | - | - |"]
    by_column = format_table([{"model": "faces", "MAE": 17.4, "interpolate_fill": 14.5}], digits=1)  # lesson 07
    assert by_column.splitlines()[0] == "| model | MAE | interpolation |"


def test_masked_copies_repeats_each_image_with_its_own_reproducible_masks():
    from maelib.metrics import masked_copies

    images = torch.rand(3, 3, 16, 16)
    imgs, mask, pixel_mask = masked_copies(images, 4, 2, block_ratio=0.5, random_offset=True)
    assert imgs.shape == (6, 3, 16, 16) and torch.equal(imgs[3:], images) and pixel_mask.shape == (6, 1, 16, 16)
    assert (mask.mask.sum(1) == 8).all() and pixel_mask.mean().item() == 0.5  # half the rows of a 4x4 grid
    assert len({tuple(m.tolist()) for m in mask.mask}) > 1  # the copies are masked differently ...
    again = masked_copies(images, 4, 2, block_ratio=0.5, random_offset=True)[1]
    assert torch.equal(again.mask, mask.mask)  # ... and the same on every call
    with pytest.raises(ValueError, match="16x16 px do not split into patches of 5 px"):
        masked_copies(images, 5)
