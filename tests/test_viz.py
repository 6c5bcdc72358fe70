"""Figures: the right number of panels, no display needed (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from maelib.masking import make_mask  # noqa: E402
from maelib.patches import patch_mask_to_pixels  # noqa: E402
from maelib.viz import (  # noqa: E402
    MASK_GREY,
    grey_out,
    plot_history,
    plot_metric_bars,
    show_images,
    show_label_maps,
    show_mask_gallery,
    show_reconstructions,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _images(b: int = 5, c: int = 3) -> torch.Tensor:
    return torch.rand(b, c, 16, 16, generator=torch.Generator().manual_seed(0))


def _pixel_mask(b: int = 5, mode: str = "random") -> torch.Tensor:
    mask = make_mask(mode, b, (4, 4), generator=torch.Generator().manual_seed(0))
    return patch_mask_to_pixels(mask.mask, 4)


def test_show_images_grid():
    fig = show_images(_images(), titles=list("abcde"), nrow=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # 2 rows of 3, the empty sixth panel removed
    assert [ax.get_title() for ax in fig.axes] == list("abcde")
    assert len(show_images(_images(2, c=1)).axes) == 2  # greyscale
    mixed = show_images([torch.rand(3, 16, 16), torch.rand(3, 8, 8)], titles=["16 px", "8 px"])
    assert [ax.get_images()[0].get_array().shape[:2] for ax in mixed.axes] == [(16, 16), (8, 8)]


def test_show_images_rejects_wrong_titles():
    with pytest.raises(ValueError, match="2 titles for 5 images"):
        show_images(_images(), titles=["a", "b"])
    with pytest.raises(ValueError, match=r"a list of \(C, H, W\) images, got shapes \[\(3, 8, 8\), \(8, 8\)\]"):
        show_images([torch.rand(3, 8, 8), torch.rand(8, 8)])
    with pytest.raises(ValueError, match="1 row labels for 2 rows of 3 images"):
        show_images(_images(), nrow=3, row_labels=["only one"])


def test_show_images_labels_each_row_once_and_wraps_long_titles():
    fig = show_images(_images(6), nrow=3, row_labels=["random 400, then block 30 + SSIM", "interpolation"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["random 400, then\nblock 30 + SSIM", "", "",
                                                    "interpolation", "", ""]
    long = "block 400 epochs, then block 30 (control)"
    title = show_images(_images(1), titles=[long]).axes[0].get_title()
    assert "\n" in title and title.replace("\n", " ") == long


def test_grey_out_paints_only_masked_pixels():
    imgs, pm = _images(), _pixel_mask()
    out = grey_out(imgs, pm)
    masked = (pm == 1).expand_as(imgs)
    assert (out[masked] == MASK_GREY).all() and torch.equal(out[~masked], imgs[~masked])


def test_show_reconstructions_four_rows():
    imgs = _images()
    fig = show_reconstructions(imgs, torch.rand_like(imgs), _pixel_mask(), n=3)
    assert len(fig.axes) == 4 * 3
    assert [fig.axes[3 * r].get_ylabel() for r in range(4)] == [
        "original", "masked", "reconstruction", "visible pasted back"]
    assert len(show_reconstructions(imgs[:2], imgs[:2], _pixel_mask(2), n=8).axes) == 4 * 2  # n capped at B


def test_show_mask_gallery_titles_count_masked_patches():
    imgs = _images()
    masks = {"random": _pixel_mask(), "grid": _pixel_mask(mode="grid"), "one": _pixel_mask(1)}
    fig = show_mask_gallery(imgs, masks, n=2, patch_size=4)
    assert len(fig.axes) == 3 * 2
    assert fig.axes[0].get_title() == "random (12 masked)"  # 75% of the 16 patches
    assert fig.axes[2].get_title() == "grid (12 masked)"
    with pytest.raises(ValueError, match="'bad'"):
        show_mask_gallery(imgs, {"bad": _pixel_mask(3)})


def test_plot_history_groups_losses_and_other_series():
    fig = plot_history({"train_loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.5]})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3]  # epochs count from 1
    assert fig.axes[0].get_ylabel() == "loss (masked MSE)"  # axes say what they show, in words
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["training loss", "validation loss"]
    fig = plot_history({"train_loss": [1.0, 0.5], "val_psnr": [12.0, 15.0], "empty": []})
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "val_psnr"


def test_plot_metric_bars_one_axes_per_metric():
    rows = [{"method": "MAE", "masked_psnr": 25.0, "ssim": 0.8},
            {"method": "mean_fill", "masked_psnr": 13.0, "ssim": 0.5},
            {"method": "biharmonic_inpaint", "masked_psnr": 22.0, "ssim": 0.7}]
    fig = plot_metric_bars(rows)
    assert len(fig.axes) == 2
    assert [len(ax.patches) for ax in fig.axes] == [3, 3]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["MAE", "mean fill", "biharmonic inpainting"]
    assert fig.axes[0].get_title().startswith("masked PSNR (dB)") and fig.axes[1].get_title().startswith("SSIM")
    assert len(plot_metric_bars(rows, metrics=["ssim"]).axes) == 1
    with pytest.raises(ValueError, match="lpips"):
        plot_metric_bars(rows, metrics=["lpips"])


def test_label_maps_get_one_colour_per_class_and_a_legend_of_the_classes_shown():
    imgs = torch.rand(2, 3, 8, 8)
    maps = torch.ones(2, 1, 8, 8, dtype=torch.uint8)
    maps[0, 0, :4] = 3  # windows in the top half of the first map
    fig = show_label_maps(imgs, maps, {1: "background", 2: "facade", 3: "window"})
    assert len(fig.axes) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "window"]  # facade not shown
    shown = fig.axes[2].images[0].get_array()  # the first label map, as drawn
    assert not np.allclose(shown[0, 0], shown[7, 0])  # window and background differ in colour
    with pytest.raises(ValueError, match="label_maps must be"):
        show_label_maps(imgs, maps[:1], {1: "background"})
