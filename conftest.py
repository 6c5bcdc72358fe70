"""pytest configuration shared by the unit tests and the notebook run (nbval).

Notebooks are executed under the smoke preset unless the caller chose another one: the kernels
nbval starts inherit this process's environment.

The notebooks read the course's images from the data root (``MAELIB_DATA_DIR``, else ``data/``).
Where that holds none of them (a fresh clone offline, whose downloads cannot reach the official
sources), the notebooks are skipped with a reason that says what to set; CI sets
``MAELIB_DATA_DIR`` to the course's copy, so there they always run.
"""

import os

import pytest

os.environ.setdefault("MAELIB_PRESET", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")

# what the lessons read, under the data root (see maelib.data.root)
LESSON_DATA = ("cats_dogs/cats", "cats_dogs/dogs", "faces/celeba", "faces/lfw_gray", "facades/images")


def missing_lesson_data() -> list[str]:
    from maelib.data import data_root

    root = data_root(must_exist=False)
    return [str(root / part) for part in LESSON_DATA if not (root / part).is_dir() or not any((root / part).iterdir())]


def pytest_collection_modifyitems(config, items):
    notebooks = [item for item in items if str(item.fspath).endswith(".ipynb")]
    missing = missing_lesson_data() if notebooks else []
    if missing:
        reason = (f"the lessons' images are not in the data root ({', '.join(missing)} missing or empty): set "
                  "MAELIB_DATA_DIR to a copy of the course data, or download it once (lesson 00, online)")
        for item in notebooks:
            item.add_marker(pytest.mark.skip(reason=reason))
