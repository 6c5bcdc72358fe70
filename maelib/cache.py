"""Where maelib keeps what it computes or downloads once: one folder, ``MAELIB_CACHE_DIR``.

``$MAELIB_CACHE_DIR`` (default ``~/.cache/maelib``) holds

* ``tensors/``: decoded images, one file per data set and size (:mod:`maelib.data.decode`);
* ``weights/``: downloaded model weights (:mod:`maelib.pretrained`).

It is kept apart from the data root, which may be a read-only course folder.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MAELIB_CACHE_DIR"


def cache_root() -> Path:
    """``$MAELIB_CACHE_DIR``, else ``~/.cache/maelib``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "maelib"


def cache_dir(kind: str) -> Path:
    """The cache's folder for one kind of thing: ``"tensors"`` or ``"weights"``."""
    if kind not in ("tensors", "weights"):
        raise ValueError(f"kind must be 'tensors' or 'weights', got {kind!r}")
    return cache_root() / kind
