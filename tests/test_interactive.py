"""Lesson 07's widget logic, without a browser: the patch under the pointer, mask edits and presets,
one update of the views, the decoder's attention from a hidden patch, the pictures, and the
Playground driven the way its canvas drives it (tests/test_browser.py drives the real canvas)."""

import io
from datetime import datetime

import numpy as np
import pytest
import torch
from PIL import Image

from maelib import interactive as it
from maelib import metrics
from maelib.models import MaskedAutoencoderViT
from maelib.normalize import PixelNormalizer
from maelib.patches import patch_mask_to_pixels, patchify

GRID = (4, 6)  # a 16 x 24 image in 4 px patches: rows and columns differ, so a swapped axis shows


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return MaskedAutoencoderViT(img_size=(16, 24), patch_size=4, in_chans=3, embed_dim=32, depth=1, num_heads=2,
                                decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2).eval()


def images(n=3, seed=0):
    return torch.rand(n, 3, 16, 24, generator=torch.Generator().manual_seed(seed))


def hidden(*patches, n=24):
    masked = torch.zeros(n, dtype=torch.bool)
    masked[list(patches)] = True
    return masked


# --------------------------------------------------------------------------- the pointer
def test_patch_at_maps_image_pixels_to_raster_patches_and_nothing_outside():
    assert it.patch_at(0, 0, GRID, 4) == 0
    assert it.patch_at(3.99, 3.99, GRID, 4) == 0
    assert it.patch_at(4, 0, GRID, 4) == 1  # x moves along a row
    assert it.patch_at(0, 4, GRID, 4) == 6  # y moves down a row of 6 columns
    assert it.patch_at(23.5, 15.5, GRID, 4) == 23
    for x, y in [(-0.1, 0), (0, -0.1), (24, 0), (0, 16)]:
        assert it.patch_at(x, y, GRID, 4) is None


def test_a_fast_stroke_leaves_no_gap_and_lists_each_patch_once_in_order():
    # two pointer events a whole row apart: every patch between them is crossed
    assert it.stroke_patches([[1, 2], [23, 2]], GRID, 4) == [0, 1, 2, 3, 4, 5]
    assert it.stroke_patches([[23, 2], [1, 2], [23, 2]], GRID, 4) == [5, 4, 3, 2, 1, 0]
    assert it.stroke_patches([[1, 1], [15, 15]], GRID, 4) == [0, 7, 14, 21]
    assert it.stroke_patches([[9, 9]], GRID, 4) == [14]  # a click
    assert it.stroke_patches([[-5, 2], [6, 2]], GRID, 4) == [0, 1]  # the part outside is skipped


# --------------------------------------------------------------------------- mask edits
def test_edit_mask_paints_and_erases_on_a_copy():
    start = hidden(1)
    painted = it.edit_mask(start, [2, 3], hide=True)
    assert painted.nonzero().flatten().tolist() == [1, 2, 3] and start.nonzero().flatten().tolist() == [1]
    assert it.edit_mask(painted, [1, 3], hide=False).nonzero().flatten().tolist() == [2]


def test_edit_mask_refuses_patches_outside_the_grid_and_hiding_everything():
    with pytest.raises(ValueError, match=r"patches \[24\] are outside the grid of 24"):
        it.edit_mask(hidden(), [0, 24], hide=True)
    with pytest.raises(ValueError, match="at least one visible patch"):
        it.edit_mask(hidden(*range(23)), [23], hide=True)


def test_presets_hide_what_they_say():
    rows, cols = GRID
    random = it.preset_mask("random", GRID, 0.5, seed=1)
    assert random.dtype == torch.bool and int(random.sum()) == 12
    assert not torch.equal(random, it.preset_mask("random", GRID, 0.5, seed=2))  # another draw
    assert torch.equal(random, it.preset_mask("random", GRID, 0.5, seed=1))  # the same seed, the same mask
    band = it.preset_mask("band", GRID, 0.5, seed=0).reshape(rows, cols)
    full_rows = band.all(dim=1)
    assert int(full_rows.sum()) == 2 and int(band.sum()) == 12  # two whole rows and nothing else
    assert full_rows.nonzero().flatten().diff().tolist() == [1]  # next to each other
    square = it.preset_mask("square", GRID, 0.2, seed=0).reshape(rows, cols)
    r, c = square.nonzero().unbind(1)
    assert int(square.sum()) == 4 and (r.max() - r.min(), c.max() - c.min()) == (1, 1)  # a 2 x 2 block
    assert not it.preset_mask("clear", GRID, 0.5).any()
    with pytest.raises(ValueError, match="unknown mask preset 'circle'"):
        it.preset_mask("circle", GRID, 0.5)


# --------------------------------------------------------------------------- one update
def test_update_pastes_back_the_true_pixels_and_scores_the_hidden_ones():
    model, image = tiny_model(), images()[0]
    masked = hidden(0, 1, 7, 20)
    u = it.update(model, image, masked)
    pixels = patch_mask_to_pixels(masked[None].float(), 4, GRID)[0]
    recon = model.reconstruct(image[None], it.as_mask(masked))[0].clamp(0, 1)
    assert torch.allclose(u.recon, recon)
    assert torch.equal(u.pasted, torch.where(pixels > 0.5, recon, image))  # true pixels where visible
    expected = metrics.masked_psnr(u.pasted[None], image[None], pixels[None])
    assert u.model_psnr == pytest.approx(float(expected))
    assert set(u.baseline_psnr) == set(metrics.BASELINES)
    for name, fill in metrics.BASELINES.items():
        assert u.baseline_psnr[name] == pytest.approx(
            float(metrics.masked_psnr(fill(image[None], pixels[None]), image[None], pixels[None])))
    assert u.best_baseline == max(u.baseline_psnr.items(), key=lambda kv: kv[1])


def test_update_gives_the_model_normalised_pixels_and_maps_its_output_back(monkeypatch):
    model, image = tiny_model(), images()[0]
    norm = PixelNormalizer((0.2, 0.5, 0.7), (0.1, 0.3, 0.2))
    seen = []

    def oracle(x, mask):  # a perfect model: returns the (normalised) image it was given
        seen.append(x)
        return patchify(x, 4)

    monkeypatch.setattr(model, "predict", oracle)
    u = it.update(model, image, hidden(3, 4), normalizer=norm)
    assert torch.allclose(seen[0], norm(image[None]))
    assert torch.allclose(u.recon, image, atol=1e-5)
    assert u.model_psnr > 90  # perfect, up to float rounding (capped at 100 dB)


def test_update_with_nothing_hidden_has_no_score_and_wrong_images_are_named():
    model = tiny_model()
    u = it.update(model, images()[0], hidden())
    assert u.model_psnr is None and u.best_baseline is None
    with pytest.raises(ValueError, match=r"one \(C, H, W\) image"):
        it.update(model, images(), hidden(1))
    with pytest.raises(ValueError, match="16x24"):
        it.update(model, torch.rand(3, 16, 16), hidden(1))
    with pytest.raises(ValueError, match="unknown baseline 'magic'"):
        it.update(model, images()[0], hidden(1), baselines=["magic"])


# --------------------------------------------------------------------------- attention
def test_attention_from_a_hidden_patch_is_the_models_own_row():
    model, image = tiny_model(), images()[0]
    masked = hidden(2, 3, 8, 9, 14)
    att = it.attention_from(model, image, masked, 9)
    full = model.decoder_attention(image[None], it.as_mask(masked))  # (blocks, 1, heads, 1 + N, 1 + N)
    row = full[:, 0, :, 1 + 9].mean(dim=(0, 1))
    assert att.weights.shape == GRID
    assert torch.allclose(att.weights.flatten(), row[1:]) and att.cls == pytest.approx(float(row[0]))
    assert float(att.weights.sum()) + att.cls == pytest.approx(1.0, abs=1e-5)
    last = it.attention_from(model, image, masked, 9, block=-1)
    assert torch.allclose(last.weights.flatten(), full[-1, 0, :, 10, 1:].mean(dim=0))
    hidden_share = float(att.weights.flatten()[masked].sum())
    assert att.visible_share(masked) == pytest.approx(1 - att.cls - hidden_share, abs=1e-5)


def test_attention_maps_give_every_hidden_patch_its_row_from_one_forward_pass(monkeypatch):
    model, image = tiny_model(), images()[0]
    masked = hidden(2, 3, 8, 9, 14)
    one_by_one = [it.attention_from(model, image, masked, p, block=-1) for p in (2, 3, 8, 9, 14)]
    forwards = []
    monkeypatch.setattr(model, "predict", lambda *a, _p=model.predict: forwards.append(1) or _p(*a))
    together = it.attention_maps(model, image, masked, block=-1)
    assert len(forwards) == 1 and [a.patch for a in together] == [2, 3, 8, 9, 14]
    for a, b in zip(together, one_by_one, strict=True):
        assert torch.equal(a.weights, b.weights) and a.cls == b.cls


def test_attention_from_a_visible_patch_or_off_the_grid_is_refused():
    model, image = tiny_model(), images()[0]
    with pytest.raises(ValueError, match="patch 0 is visible"):
        it.attention_from(model, image, hidden(5), 0)
    with pytest.raises(ValueError, match="patch 30 is outside"):
        it.attention_from(model, image, hidden(5), 30)


def test_mean_distance_weighs_visible_patches_by_attention():
    weights = torch.zeros(GRID)
    weights[1, 2] = 1.0  # all attention on the right-hand neighbour of patch (1, 1)
    att = it.AttentionMap(patch=7, weights=weights, cls=0.0)
    read, uniform = att.mean_distance(hidden(7))
    assert read == pytest.approx(1.0)
    r, c = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
    dist = np.sqrt((r - 1) ** 2 + (c - 1) ** 2).flatten()
    assert uniform == pytest.approx(np.delete(dist, 7).mean())


def test_attention_picture_outlines_the_query_darkens_hidden_patches_and_lights_the_most_read():
    image = torch.full((3, 16, 24), 0.5)
    weights = torch.zeros(GRID)
    weights[0, 5], weights[3, 0] = 0.6, 0.1
    att = it.AttentionMap(patch=8, weights=weights, cls=0.3)
    pic = it.attention_picture(image, hidden(8, 9), att, 4)
    assert pic.shape == (16, 24, 3) and pic.dtype == np.uint8
    assert tuple(pic[4, 8]) == (255, 217, 0)  # the outline of patch 8 (row 1, column 2)
    assert pic[5:7, 13:15].max() < 40  # patch 9, hidden: dark
    brightest = pic.astype(int).sum(axis=2)
    assert brightest[1, 21] > brightest[13, 1] > brightest[13, 9]  # most read > less read > not read


# --------------------------------------------------------------------------- pictures and uploads
def test_to_png_enlarges_with_hard_pixel_edges():
    image = images()[0]
    decoded = np.asarray(Image.open(io.BytesIO(it.to_png(image, 96))))
    assert decoded.shape == (64, 96, 3)
    small = np.rint(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(decoded[::4, ::4], small)  # each pixel became a 4 x 4 block of itself


def test_an_upload_is_resized_and_cropped_like_the_data_sets_and_a_bad_file_is_named():
    buf = io.BytesIO()
    Image.new("RGB", (100, 40), (255, 0, 0)).save(buf, format="PNG")
    image = it.upload_to_image(buf.getvalue(), (16, 24), 3)
    assert image.shape == (3, 16, 24) and torch.allclose(image[:, 8, 12], torch.tensor([1.0, 0.0, 0.0]))
    assert it.upload_to_image(buf.getvalue(), (16, 16), 1).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="not a picture"):
        it.upload_to_image(b"not an image at all", (16, 24), 3)


# --------------------------------------------------------------------------- the widget, driven as the canvas drives it
def playground(**kwargs):
    a, b = tiny_model(0), tiny_model(1)
    return it.Playground({"a": it.Subject(a, None, images(3, 0)), "b": it.Subject(b, None, images(2, 1))},
                         preset="clear", ratio=0.25, display_size=96, **kwargs)


def test_a_painted_stroke_hides_patches_and_updates_every_view():
    pg = playground()
    before = {name: view.value for name, view in pg.views.items()}
    readout = pg.readout.value
    u = pg.stroke([[1, 2], [23, 2]], "paint")
    assert pg.masked.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert pg.canvas.mask == pg.masked.tolist()
    assert pg.views["reconstruction"].value != before["reconstruction"]
    assert pg.views["paste-back"].value != before["paste-back"]
    assert pg.readout.value != readout and "6 of 24 patches hidden" in pg.readout.value
    assert f"MAE {u.model_psnr:.2f} dB" in pg.readout.value
    assert pg.stroke([[2, 2]], "paint") is None  # nothing new: nothing recomputed
    pg.stroke([[1, 2], [10, 2]], "erase")
    assert pg.masked.nonzero().flatten().tolist() == [3, 4, 5]


def test_pointer_messages_from_the_canvas_make_the_same_stroke():
    by_hand, by_pointer = playground(), playground()
    by_hand.stroke([[1, 2], [12, 2], [12, 14]], "paint")
    for event, points in [("down", [[1, 2]]), ("move", [[12, 2]]), ("move", [[12, 14]]), ("up", [])]:
        by_pointer._on_pointer(by_pointer.canvas, {"event": event, "points": points}, [])
    by_pointer._on_pointer(by_pointer.canvas, {"event": "move", "points": [[20, 14]]}, [])  # after "up": ignored
    assert torch.equal(by_pointer.masked, by_hand.masked) and int(by_hand.masked.sum()) == 7  # 4 across, 3 down


def test_inspecting_shows_the_attention_of_a_hidden_patch_and_only_of_a_hidden_one():
    pg = playground()
    pg.stroke([[1, 6], [23, 6]], "paint")  # row 1: patches 6 to 11
    empty = pg.views["attention"].value
    assert pg.stroke([[1, 1]], "inspect") is None and "patch 0 is visible" in pg.readout.value
    pg.tool.value = "inspect"
    pg.stroke([[9, 5]])  # patch 8
    assert pg.attention.patch == 8 and pg.canvas.selected == 8
    assert pg.views["attention"].value != empty and "patch 8:" in pg.readout.value
    pg.stroke([[1, 6], [12, 6]], "erase")  # patch 8 is visible again: nothing left to explain
    assert pg.attention is None and pg.canvas.selected == -1
    pg.stroke([[21, 5]])  # patch 11, still hidden
    assert pg.canvas.selected == 11
    pg.show("a", 1)  # another image: its patches are not the inspected one's
    assert pg.attention is None and pg.canvas.selected == -1


def test_the_widget_shows_errors_in_its_readout_and_keeps_its_mask():
    pg = playground()
    pg.set_mask(hidden(*[p for p in range(24) if p != 5]))
    before = pg.masked.clone()
    assert pg.stroke([[21, 1]], "paint") is None  # patch 5, the last visible one
    assert torch.equal(pg.masked, before) and "at least one visible patch" in pg.readout.value
    pg.apply_preset("band", 0.05)  # rounds to no row
    assert torch.equal(pg.masked, before) and "rounds to 0 rows" in pg.readout.value


def test_switching_models_images_and_uploads():
    pg = playground()
    pg.picker.value = "b"
    assert pg.subject.model is pg.subjects["b"].model and pg.index.max == 1
    pg.index.value = 1
    assert torch.equal(pg.image, pg.subjects["b"].images[1])
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (0, 0, 255)).save(buf, format="PNG")
    pg.upload.value = ({"name": "me.png", "type": "image/png", "size": 1, "content": memoryview(buf.getvalue()),
                        "last_modified": datetime.now()},)
    assert pg.image.shape == (3, 16, 24) and float(pg.image[2].mean()) == pytest.approx(1.0)
    pg.upload.value = ({"name": "x.txt", "type": "text/plain", "size": 1, "content": memoryview(b"hello"),
                        "last_modified": datetime.now()},)
    assert "not a picture" in pg.readout.value
    with pytest.raises(ValueError, match="no model 'c'"):
        pg.show("c")


def test_time_updates_times_each_update_on_the_threads_asked_and_restores_them():
    pg = playground()
    threads = torch.get_num_threads()
    timings = it.time_updates(pg, repeats=4, threads=1)
    assert len(timings.wall_ms) == len(timings.cpu_ms) == 4 and all(t > 0 for t in timings.wall_ms + timings.cpu_ms)
    assert torch.get_num_threads() == threads
    assert int(pg.masked.sum()) == round(24 * 0.75)  # the last update's random mask is on show
    summary = it.Timings([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]).summary()
    assert summary == ("median 2.5 ms of CPU (90% under 4.0 ms), 25.0 ms wall clock (90% under 40.0 ms), "
                       "4 updates")


def test_time_parts_names_every_part_of_an_update():
    model, image = tiny_model(), images()[0]
    parts = it.time_parts(it.Subject(model, None, image[None]), image, hidden(1, 2, 3), repeats=3,
                          baselines=["mean_fill", "telea_inpaint"])
    assert list(parts) == ["model", "mean_fill", "telea_inpaint", "pictures"]
    assert all(ms >= 0 for ms in parts.values())
