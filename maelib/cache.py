"""Where maelib keeps what it computes or downloads once: one folder, ``MAELIB_CACHE_DIR``.

``$MAELIB_CACHE_DIR`` (default ``~/.cache/maelib``) holds

* ``tensors/``: decoded images, one file per data set and size (:mod:`maelib.data.decode`);
* ``weights/``: downloaded model weights (:mod:`maelib.pretrained`);
* ``downloads/``: data-set archives while they are downloaded and unpacked (:mod:`maelib.data.sources`),
  emptied once a data set is in place.

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
    """The cache's folder for one kind of thing: ``"tensors"``, ``"weights"`` or ``"downloads"``."""
    if kind not in ("tensors", "weights", "downloads"):
        raise ValueError(f"kind must be 'tensors', 'weights' or 'downloads', got {kind!r}")
    return cache_root() / kind
