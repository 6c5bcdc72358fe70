"""Deterministic train/val/test splits, made with scikit-learn.

``split_indices`` gives the same indices for the same inputs and seed on every machine: the part
sizes are computed here with plain integer arithmetic, and the shuffling is scikit-learn's
``train_test_split`` with an integer ``random_state`` (NumPy's legacy, version-stable generator).
Each returned part is sorted, so it reads well and subsets keep the original order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the parts of ``n`` items: ``floor(f * n)`` each, the remainder going one by one to the
    parts with the largest fractional parts (ties: the earlier part). ``split_counts(378,
    (302/378, 37/378, 39/378)) == [302, 37, 39]``; ``split_counts(10, (0.8, 0.2)) == [8, 2]``."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r + 1e-9) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_indices(n_or_labels: int | Sequence | np.ndarray, fractions: Sequence[float] = (0.8, 0.2), *,
                  seed: int = 0, stratify: bool | None = None) -> tuple[np.ndarray, ...]:
    """Split ``range(n)`` into 2 or 3 disjoint, sorted index arrays (train, [val,] test).

    Args:
        n_or_labels: the number of items, or one label per item (array-like of length n).
        fractions: 2 or 3 positive fractions that sum to 1, e.g. ``(0.8, 0.2)`` or ``(0.8, 0.1, 0.1)``.
        seed: the integer seed; the same seed gives the same split.
        stratify: keep the label proportions in every part. ``None`` (default) means: stratify when
            labels were given. ``True`` without labels is an error.

    Returns:
        One int64 array of indices per fraction, sorted, together covering ``range(n)`` once.
    """
    if isinstance(n_or_labels, bool) or not isinstance(n_or_labels, int | np.integer):
        labels = np.asarray(n_or_labels)
        if labels.ndim != 1:
            raise ValueError(f"n_or_labels must be an int or a 1-D sequence of labels, "
                             f"got shape {labels.shape}")
        n = len(labels)
    else:
        labels, n = None, int(n_or_labels)
    if stratify is None:
        stratify = labels is not None
    if stratify and labels is None:
        raise ValueError("stratify=True needs labels: pass the labels instead of the count n")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) not in (2, 3) or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be 2 or 3 positive numbers that sum to 1, got {fractions}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    counts = split_counts(n, fractions)
    if min(counts) < 1:
        raise ValueError(f"fractions {fractions} of {n} items give an empty part (sizes {counts}); "
                         f"use more items or larger fractions")

    index = np.arange(n)
    strat = labels if stratify else None
    first, rest = train_test_split(index, train_size=counts[0], test_size=n - counts[0],
                                   random_state=int(seed), shuffle=True, stratify=strat)
    if len(counts) == 2:
        parts = (first, rest)
    else:
        strat_rest = labels[rest] if stratify else None
        middle, last = train_test_split(rest, train_size=counts[1], test_size=counts[2],
                                        random_state=int(seed), shuffle=True, stratify=strat_rest)
        parts = (first, middle, last)
    return tuple(np.sort(p).astype(np.int64) for p in parts)


def hint_indices(split_hint: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"train": [...], "val": [...], "test": [...]}``: indices per non-empty hint, in the order
    train, val, test, then any other hint names alphabetically."""
    hints = np.asarray(list(split_hint), dtype=object)
    names = sorted({h for h in hints if h}, key=lambda h: ({"train": 0, "val": 1, "test": 2}.get(h, 3), h))
    return {name: np.flatnonzero(hints == name).astype(np.int64) for name in names}
