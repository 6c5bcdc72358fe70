"""Which patches does the encoder get to see?

Every strategy returns the same :class:`Mask`: the indices of the kept (visible) patches, the
indices that restore the original order, and a 0/1 mask with 1 = masked -- the three tensors
facebookresearch/mae's ``random_masking`` returns. A batch gets a different mask per sample in
one call (no Python loop over the batch), and every random choice comes from ``generator`` (or
the given ``noise``), so masks are reproducible on any device.

Since a batch is processed as one tensor, every sample of a batch keeps the same *number* of
patches; only which ones differs.

The trick shared by all strategies (from the MAE paper's code): give every patch a score, sort,
and keep the lowest-scoring patches. For random masking the score is uniform noise; for the other
strategies masked patches get a score above every visible one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Grid = tuple[int, int]  # the patch grid (rows, columns) = (H/p, W/p)


@dataclass(frozen=True)
class Mask:
    """A batch of masks over an ``(rows, cols)`` patch grid, ``N = rows * cols``.

    Attributes:
        ids_keep: ``(B, N_visible)`` long, indices of the visible patches (what the encoder sees).
        ids_restore: ``(B, N)`` long, ``x_shuffled.gather(1, ids_restore)`` undoes the
            visible-first order in which the encoder and decoder see the patches.
        mask: ``(B, N)`` float, 1 = masked (to be predicted), 0 = visible.
    """

    ids_keep: torch.Tensor
    ids_restore: torch.Tensor
    mask: torch.Tensor

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]

    @property
    def num_masked(self) -> int:
        return self.ids_restore.shape[1] - self.ids_keep.shape[1]

    def to(self, device: torch.device | str) -> Mask:
        return Mask(self.ids_keep.to(device), self.ids_restore.to(device), self.mask.to(device))

    def __getitem__(self, index: int | slice | torch.Tensor) -> Mask:
        """The masks of some samples, e.g. ``mask[:64]`` for the first 64 images of a batch."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Mask(self.ids_keep[index], self.ids_restore[index], self.mask[index])


def keep_visible(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """Select the visible tokens: ``(B, N, D)`` -> ``(B, N_visible, D)``."""
    return torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def check_ratio(name: str, value: float) -> float:
    """Ratios must lie in [0, 1): 1 would mask every patch."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (0 = mask nothing), got {value}")
    return float(value)


def _check_grid(grid: Grid) -> Grid:
    rows, cols = int(grid[0]), int(grid[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"patch grid must have at least one row and column, got {grid}")
    return rows, cols


def mask_from_scores(scores: torch.Tensor, num_keep: int) -> Mask:
    """Keep the ``num_keep`` lowest-scoring patches of each sample. ``scores``: ``(B, N)``."""
    ids_shuffle = torch.argsort(scores, dim=1)  # visible first, then masked
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :num_keep]
    mask = torch.ones_like(scores, dtype=torch.float32)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to the patches' own order
    return Mask(ids_keep, ids_restore, mask)


def mask_from_flags(masked: torch.Tensor) -> Mask:
    """Turn a boolean ``(B, N)`` map (True = masked) into a :class:`Mask`.

    Every sample must mask the same number of patches. Visible patches keep their raster order.
    """
    counts = masked.sum(dim=1)
    num_masked = int(counts[0])
    if not bool((counts == num_masked).all()):
        raise ValueError(f"every sample in a batch must mask the same number of patches, got {counts.tolist()}")
    n = masked.shape[1]
    if num_masked == n:
        raise ValueError("the mask covers every patch; at least one patch must stay visible")
    order = torch.arange(n, device=masked.device, dtype=torch.float32) / n  # in [0, 1)
    return mask_from_scores(masked.float() + order, n - num_masked)


def _uniform(batch_size: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(batch_size, n, generator=generator, device=device)


def _random_starts(batch_size: int, num_positions: int, generator, device) -> torch.Tensor:
    """``(B, 1)`` random start positions in ``[0, num_positions)``."""
    return torch.randint(0, num_positions, (batch_size, 1), generator=generator, device=device)


def random_masking(batch_size: int, grid: Grid, mask_ratio: float = 0.75, *,
                   generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                   device: torch.device | str | None = None) -> Mask:
    """Mask exactly ``round(N * mask_ratio)`` patches per sample, chosen uniformly at random.

    Given the same ``noise`` ``(B, N)``, this is facebookresearch/mae's ``random_masking``
    whenever both count alike: it keeps ``int(N * (1 - mask_ratio))`` patches, which differs from
    ``N - round(N * mask_ratio)`` only at rounding edges (e.g. 14 patches at 0.75: 4 kept here, 3 there;
    196 patches at 0.75: 49 kept in both).
    """
    rows, cols = _check_grid(grid)
    check_ratio("mask_ratio", mask_ratio)
    n = rows * cols
    num_masked = round(n * mask_ratio)
    if num_masked >= n:
        raise ValueError(f"mask_ratio {mask_ratio} masks all {n} patches; use a smaller ratio")
    if noise is None:
        noise = _uniform(batch_size, n, generator, device)
    elif noise.shape != (batch_size, n):
        raise ValueError(f"noise must have shape (B, N) = {(batch_size, n)}, got {tuple(noise.shape)}")
    return mask_from_scores(noise, n - num_masked)


def _row_band(batch_size: int, rows: int, num_rows: int, random_offset: bool, flipped: bool,
              generator, device) -> torch.Tensor:
    """``(B, rows)`` bool: a band of ``num_rows`` consecutive rows, from the top (bottom if flipped)."""
    if random_offset:
        start = _random_starts(batch_size, rows - num_rows + 1, generator, device)
    else:
        start = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
    row = torch.arange(rows, device=device).unsqueeze(0)
    band = (row >= start) & (row < start + num_rows)
    return band.flip(1) if flipped else band


def block_masking(batch_size: int, grid: Grid, block_ratio: float = 0.5, *, flipped: bool = False,
                  random_offset: bool = False, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> Mask:
    """Mask ``round(rows * block_ratio)`` whole consecutive rows of patches.

    The band starts at the top row (``flipped=True``: rows are counted from the bottom, so the
    band covers the lowest rows, where a car or a tree hides a facade); ``random_offset=True``
    moves it to a random vertical position, different for every sample.
    """
    rows, cols = _check_grid(grid)
    check_ratio("block_ratio", block_ratio)
    num_rows = round(rows * block_ratio)
    if block_ratio > 0 and num_rows == 0:
        raise ValueError(f"block_ratio {block_ratio} of {rows} rows rounds to 0 rows; use at least {0.5 / rows:.3g}")
    if num_rows >= rows:
        raise ValueError(f"block_ratio {block_ratio} masks all {rows} rows; use a smaller ratio")
    band = _row_band(batch_size, rows, num_rows, random_offset, flipped, generator, device)
    return mask_from_flags(band.unsqueeze(2).expand(batch_size, rows, cols).reshape(batch_size, -1))


def _square(batch_size: int, rows: int, cols: int, block_ratio: float, *, flipped: bool,
            random_offset: bool, horizontal_random_offset: bool, generator, device) -> torch.Tensor:
    """``(B, N)`` bool: one square of side ``round(sqrt(block_ratio * N))`` patches per sample."""
    side = round(math.sqrt(block_ratio * rows * cols))
    if block_ratio > 0 and side == 0:
        raise ValueError(f"block_ratio {block_ratio} gives a square of side 0 on a {rows}x{cols} grid")
    if side > min(rows, cols):
        raise ValueError(f"block_ratio {block_ratio} needs a square of {side}x{side} patches, "
                         f"which does not fit the {rows}x{cols} patch grid")
    if side * side >= rows * cols:
        raise ValueError(f"block_ratio {block_ratio} gives a {side}x{side} square that covers the whole "
                         f"{rows}x{cols} patch grid; use a smaller ratio")
    band_rows = _row_band(batch_size, rows, side, random_offset, flipped, generator, device)
    band_cols = _row_band(batch_size, cols, side, horizontal_random_offset, False, generator, device)
    return (band_rows.unsqueeze(2) & band_cols.unsqueeze(1)).reshape(batch_size, -1)


def square_block_masking(batch_size: int, grid: Grid, block_ratio: float = 0.25, *, flipped: bool = False,
                         random_offset: bool = True, horizontal_random_offset: bool = True,
                         generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Mask:
    """Mask one square block of ``round(sqrt(block_ratio * N))`` x that many patches.

    Without offsets the square sits in the top-left corner (bottom-left when ``flipped``);
    ``random_offset`` / ``horizontal_random_offset`` move it vertically / horizontally.
    """
    rows, cols = _check_grid(grid)
    check_ratio("block_ratio", block_ratio)
    masked = _square(batch_size, rows, cols, block_ratio, flipped=flipped, random_offset=random_offset,
                     horizontal_random_offset=horizontal_random_offset, generator=generator, device=device)
    return mask_from_flags(masked)


def combined_masking(batch_size: int, grid: Grid, block_ratio: float = 0.3, random_ratio: float = 0.45, *,
                     flipped: bool = False, horizontal_random_offset: bool = False, random_offset: bool = False,
                     generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Mask:
    """A square block (as in :func:`square_block_masking`), then random masking of the rest.

    ``block_ratio`` is the fraction of all patches in the square; ``random_ratio`` the fraction
    of the *remaining* patches that are masked at random (seed project 003's meaning).
    """
    rows, cols = _check_grid(grid)
    check_ratio("block_ratio", block_ratio)
    check_ratio("random_ratio", random_ratio)
    n = rows * cols
    block = _square(batch_size, rows, cols, block_ratio, flipped=flipped, random_offset=random_offset,
                    horizontal_random_offset=horizontal_random_offset, generator=generator, device=device)
    remaining = n - int(block[0].sum())
    num_random = round(remaining * random_ratio)
    if num_random >= remaining:
        raise ValueError(f"block_ratio {block_ratio} with random_ratio {random_ratio} masks every patch")
    # Among the patches outside the block, the num_random with the highest noise are masked too.
    noise = _uniform(batch_size, n, generator, device).masked_fill(block, -1.0)
    ranks = noise.argsort(dim=1, descending=True).argsort(dim=1)
    masked = block | (ranks < num_random)
    return mask_from_flags(masked)


def grid_masking(batch_size: int, grid: Grid, *, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> Mask:
    """Keep the top-left patch of every 2x2 cell and mask the other three (the paper's 'grid').

    On an even grid this masks exactly 75%. ``generator`` is accepted for a uniform interface.
    """
    rows, cols = _check_grid(grid)
    if rows * cols < 2:
        raise ValueError(f"grid masking needs more than one patch, got a {rows}x{cols} grid")
    r = torch.arange(rows, device=device).unsqueeze(1)
    c = torch.arange(cols, device=device).unsqueeze(0)
    visible = (r % 2 == 0) & (c % 2 == 0)
    return mask_from_flags((~visible).reshape(1, -1).expand(batch_size, -1))


MASKINGS: dict[str, Callable[..., Mask]] = {
    "random": random_masking,
    "block": block_masking,
    "square": square_block_masking,
    "combined": combined_masking,
    "grid": grid_masking,
}


def make_mask(mask_mode: str, batch_size: int, grid: Grid, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None, **kwargs) -> Mask:
    """Build a mask by strategy name (``random``, ``block``, ``square``, ``combined``, ``grid``).

    ``kwargs`` are the strategy's own arguments, e.g. ``make_mask("block", 8, (14, 14),
    block_ratio=0.5, flipped=True)``. ``mask_mode`` is spelled as in a recipe's ``masking``
    (:class:`maelib.train.TrainConfig`) and the model's ``forward``.
    """
    if mask_mode not in MASKINGS:
        raise ValueError(f"unknown mask mode {mask_mode!r}; choose one of {sorted(MASKINGS)}")
    return MASKINGS[mask_mode](batch_size, grid, generator=generator, device=device, **kwargs)
