import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maelib.masking import (
    block_masking,
    combined_masking,
    grid_masking,
    keep_visible,
    make_mask,
    random_masking,
    square_block_masking,
)

grids = st.tuples(st.integers(2, 12), st.integers(2, 12))
ratios = st.floats(0.0, 0.95)


def check_consistent(m, batch, n):
    """The three views of a mask agree: kept ids are exactly the zeros of `mask`."""
    assert m.mask.shape == (batch, n) and m.ids_restore.shape == (batch, n)
    for i in range(batch):
        kept = set(m.ids_keep[i].tolist())
        assert kept == set(torch.nonzero(m.mask[i] == 0).flatten().tolist())
        assert sorted(m.ids_restore[i].tolist()) == list(range(n))


@settings(max_examples=60, deadline=None)
@given(grid=grids, ratio=ratios, batch=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_random_masking_masks_exactly_round_n_ratio(grid, ratio, batch, seed):
    n = grid[0] * grid[1]
    if round(n * ratio) >= n:
        with pytest.raises(ValueError, match="masks all"):
            random_masking(batch, grid, ratio)
        return
    m = random_masking(batch, grid, ratio, generator=torch.Generator().manual_seed(seed))
    assert m.mask.sum(dim=1).tolist() == [float(round(n * ratio))] * batch
    check_consistent(m, batch, n)


@settings(max_examples=30, deadline=None)
@given(grid=grids, ratio=st.floats(0.1, 0.9), seed=st.integers(0, 10_000))
def test_restore_order_inverts_the_shuffle(grid, ratio, seed):
    n = grid[0] * grid[1]
    if round(n * ratio) >= n:
        return
    m = random_masking(3, grid, ratio, generator=torch.Generator().manual_seed(seed))
    tokens = torch.arange(n).float().expand(3, n).unsqueeze(-1)
    # visible tokens + placeholders for the masked ones, then restored: every token back in place
    visible = keep_visible(tokens, m.ids_keep)
    placeholders = torch.full((3, n - m.num_visible, 1), -1.0)
    restored = torch.gather(torch.cat([visible, placeholders], 1), 1, m.ids_restore.unsqueeze(-1))
    expected = torch.where(m.mask.bool().unsqueeze(-1), torch.tensor(-1.0), tokens)
    assert torch.equal(restored, expected)


def test_random_masking_equals_the_paper_algorithm_for_given_noise():
    # facebookresearch/mae: ids_shuffle = argsort(noise); keep the first len_keep.
    noise = torch.rand(5, 49)
    m = random_masking(5, (7, 7), 0.75, noise=noise)
    ids_shuffle = torch.argsort(noise, dim=1)
    len_keep = int(49 * (1 - 0.75))
    assert torch.equal(m.ids_keep, ids_shuffle[:, :len_keep])
    assert torch.equal(m.ids_restore, torch.argsort(ids_shuffle, dim=1))


def test_masks_differ_per_sample_and_repeat_with_the_same_seed():
    a = random_masking(8, (8, 8), 0.75, generator=torch.Generator().manual_seed(1))
    b = random_masking(8, (8, 8), 0.75, generator=torch.Generator().manual_seed(1))
    c = random_masking(8, (8, 8), 0.75, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    assert len({tuple(row.tolist()) for row in a.mask}) == 8


@settings(max_examples=60, deadline=None)
@given(grid=grids, ratio=st.floats(0.05, 0.95), flipped=st.booleans(), offset=st.booleans(),
       seed=st.integers(0, 1000))
def test_block_masking_masks_contiguous_whole_rows(grid, ratio, flipped, offset, seed):
    rows, cols = grid
    k = round(rows * ratio)
    if k == 0 or k >= rows:
        with pytest.raises(ValueError, match="block_ratio"):
            block_masking(2, grid, ratio)
        return
    m = block_masking(4, grid, ratio, flipped=flipped, random_offset=offset,
                      generator=torch.Generator().manual_seed(seed))
    check_consistent(m, 4, rows * cols)
    for sample in m.mask.reshape(4, rows, cols):
        assert (sample == sample[:, :1]).all()  # whole rows
        masked_rows = torch.nonzero(sample[:, 0]).flatten().tolist()
        assert masked_rows == list(range(masked_rows[0], masked_rows[0] + k))  # contiguous
        if not offset:
            assert masked_rows[0] == (rows - k if flipped else 0)


def test_block_masking_with_flipped_masks_the_bottom_rows():
    m = block_masking(1, (4, 3), 0.5, flipped=True)
    assert m.mask.reshape(4, 3).tolist() == [[0] * 3, [0] * 3, [1] * 3, [1] * 3]


@settings(max_examples=40, deadline=None)
@given(grid=st.tuples(st.integers(3, 12), st.integers(3, 12)), ratio=st.floats(0.05, 0.6), seed=st.integers(0, 999))
def test_square_block_is_one_square(grid, ratio, seed):
    rows, cols = grid
    side = round(math.sqrt(ratio * rows * cols))
    if side == 0 or side > min(rows, cols) or side * side >= rows * cols:
        with pytest.raises(ValueError):
            square_block_masking(2, grid, ratio)
        return
    m = square_block_masking(3, grid, ratio, generator=torch.Generator().manual_seed(seed))
    for sample in m.mask.reshape(3, rows, cols):
        ys, xs = torch.nonzero(sample, as_tuple=True)
        assert len(ys) == side * side
        assert ys.max() - ys.min() == side - 1 and xs.max() - xs.min() == side - 1


@settings(max_examples=40, deadline=None)
@given(ratio=st.floats(0.05, 0.5), random_ratio=st.floats(0.0, 0.9), flipped=st.booleans(),
       h_off=st.booleans(), v_off=st.booleans(), seed=st.integers(0, 999))
def test_combined_masking_is_a_square_plus_random_fraction_of_the_rest(ratio, random_ratio, flipped, h_off,
                                                                        v_off, seed):
    grid, n = (10, 10), 100
    side = round(math.sqrt(ratio * n))
    rest = n - side * side
    m = combined_masking(4, grid, ratio, random_ratio, flipped=flipped, horizontal_random_offset=h_off,
                         random_offset=v_off, generator=torch.Generator().manual_seed(seed))
    assert m.mask.sum(1).tolist() == [float(side * side + round(rest * random_ratio))] * 4
    check_consistent(m, 4, n)
    if not h_off and not v_off:  # the square sits in the left corner, top (bottom if flipped)
        corner = m.mask.reshape(4, 10, 10)[:, -side:, :side] if flipped else m.mask.reshape(4, 10, 10)[:, :side, :side]
        assert corner.eq(1).all()


def test_grid_masking_keeps_one_patch_per_2x2_cell():
    m = grid_masking(2, (4, 6))
    assert m.num_visible == 6 and m.mask.sum(1).tolist() == [18.0, 18.0]
    assert m.ids_keep[0].tolist() == [0, 2, 4, 12, 14, 16]


@pytest.mark.parametrize("kwargs", [{"mask_ratio": 1.0}, {"mask_ratio": -0.1}, {"mask_ratio": 1.5}])
def test_ratios_outside_zero_one_are_errors_naming_the_value(kwargs):
    with pytest.raises(ValueError, match=f"mask_ratio must be in \\[0, 1\\).*{kwargs['mask_ratio']}"):
        random_masking(2, (4, 4), **kwargs)


def test_a_square_covering_the_whole_grid_is_an_error_naming_the_ratio():
    with pytest.raises(ValueError, match="block_ratio 0.95 gives a 14x14 square that covers the whole 14x14"):
        square_block_masking(1, (14, 14), 0.95)


def test_zero_ratio_masks_nothing_and_unknown_mode_is_an_error():
    m = random_masking(2, (4, 4), 0.0)
    assert m.mask.sum() == 0 and m.num_visible == 16
    with pytest.raises(ValueError, match="unknown mask mode 'blocky'"):
        make_mask("blocky", 2, (4, 4))


@pytest.mark.parametrize("mode,kwargs", [("random", {"mask_ratio": 0.6}), ("block", {"block_ratio": 0.5}),
                                         ("square", {"block_ratio": 0.25}), ("grid", {}),
                                         ("combined", {"block_ratio": 0.2, "random_ratio": 0.3})])
def test_make_mask_is_deterministic_per_generator(mode, kwargs):
    a = make_mask(mode, 4, (8, 8), generator=torch.Generator().manual_seed(3), **kwargs)
    b = make_mask(mode, 4, (8, 8), generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_keep, b.ids_keep)
