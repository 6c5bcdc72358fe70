"""Where the data lives (the *data root*) and where decoded tensors are cached.

One data root holds every dataset in the layout of the course's shared data folder::

    <root>/cats_dogs/cats/*.jpg   <root>/cats_dogs/dogs/*.jpg
    <root>/faces/celeba/*.jpg     <root>/faces/lfw_gray/*.jpg
    <root>/facades/images/cmp_bNNNN.jpg   <root>/facades/labels/cmp_bNNNN.png
    <root>/MANIFEST.tsv           (optional: relative_path, sha256, width, height, split_hint)

The root is chosen in this order: the ``root`` argument, else the environment variable
``MAELIB_DATA_DIR``, else the folder ``data/`` of the repository (next to the ``maelib`` package).

The data root may be read-only (a shared course folder), so the decoded-tensor cache lives
elsewhere: ``$MAELIB_CACHE_DIR/tensors``, default ``~/.cache/maelib/tensors`` (:mod:`maelib.cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import cache

DATA_ENV = "MAELIB_DATA_DIR"

# maelib/data/root.py -> parents[0] = maelib/data, [1] = maelib, [2] = the repository.
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def data_root(root: str | os.PathLike | None = None, *, must_exist: bool = True) -> Path:
    """Return the data root: ``root`` if given, else ``$MAELIB_DATA_DIR``, else ``<repo>/data``.

    A root that you name (argument or environment variable) must exist: a typo should be an error,
    not a surprise folder that a download then fills. The repository default ``data/`` is created
    on first use. Pass ``must_exist=False`` to get the path without any check.
    """
    if root is not None:
        path, origin = Path(root), "the root argument"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]), f"the environment variable {DATA_ENV}"
    else:
        path, origin = REPO_DATA_DIR, "the repository default"
        if must_exist:
            path.mkdir(parents=True, exist_ok=True)
    path = path.expanduser()
    if must_exist and not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"data root {path} (from {origin}) {what}; pass root=<folder>, set {DATA_ENV}, "
            f"or unset it to use {REPO_DATA_DIR}"
        )
    return path


def cache_dir() -> Path:
    """Folder for decoded-tensor caches: ``$MAELIB_CACHE_DIR/tensors``, default ``~/.cache/maelib/tensors``."""
    return cache.cache_dir("tensors")
