import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maelib.patches import patch_mask_to_pixels, patchify, unpatchify


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 4), p=st.integers(1, 5), gh=st.integers(1, 5), gw=st.integers(1, 5))
def test_unpatchify_inverts_patchify_for_any_shape(b, c, p, gh, gw):
    imgs = torch.rand(b, c, gh * p, gw * p)
    patches = patchify(imgs, p)
    assert patches.shape == (b, gh * gw, p * p * c)
    assert torch.equal(unpatchify(patches, p, (gh, gw), c), imgs)


def test_patch_layout_is_row_major_with_pixels_row_col_channel():
    # A hand-built image: the value encodes (channel, row, col), so each position can be checked.
    c, h, w, p = 2, 4, 6, 2
    imgs = torch.zeros(1, c, h, w)
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                imgs[0, ch, y, x] = ch * 100 + y * 10 + x
    patches = patchify(imgs, p)
    # patch index 4 = grid row 1 (of 2), grid col 1 (of 3): pixels y in {2,3}, x in {2,3}
    expected = [ch * 100 + y * 10 + x for y in (2, 3) for x in (2, 3) for ch in range(c)]
    assert patches[0, 4].tolist() == expected


def test_patch_size_that_does_not_divide_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"patch_size 5 does not divide the image size 48x48"):
        patchify(torch.rand(1, 3, 48, 48), 5)


def test_pixel_mask_marks_exactly_the_masked_patches():
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])  # 2x3 grid
    pixels = patch_mask_to_pixels(mask, patch_size=4, grid=(2, 3))
    assert pixels.shape == (1, 1, 8, 12)
    assert pixels[0, 0, :4, :4].eq(1).all() and pixels[0, 0, 4:, :4].eq(1).all()
    assert pixels.sum() == 2 * 16
