"""pytest configuration shared by the unit tests and the notebook run (nbval).

Notebooks are executed under the smoke preset unless the caller chose another one: the kernels
nbval starts inherit this process's environment.

The notebooks read the course's images from the data root (``MAELIB_DATA_DIR``, else ``data/``).
Where that holds none of them (a fresh clone), or with ``pytest --first-run``, they run as a
student's first run does instead: each notebook on an empty data root and an empty cache of its
own, as on a fresh Colab VM, so each lesson downloads its data sets (download -> verify -> extract
-> layout -> decode) before it goes on. The
downloads come from a mirror of the official sources (``MAELIB_DOWNLOAD_MIRROR``) that this session
builds from small synthetic images in each source's own archive format (``tests/official_mirror.py``)
and serves on 127.0.0.1, so nothing reaches the internet. CI runs the notebooks both ways.
"""

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("MAELIB_PRESET", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))  # official_mirror.py and helpers.py

# what the lessons read, under the data root (see maelib.data.root)
LESSON_DATA = ("cats_dogs/cats", "cats_dogs/dogs", "faces/celeba", "faces/lfw_gray", "facades/images")


def pytest_addoption(parser):
    parser.addoption("--first-run", action="store_true",
                     help="run the notebooks as on a new machine: on an empty data root that downloads every data "
                          "set from a local mirror of the official sources (synthetic images); automatic when the "
                          "data root holds none of the course's images")


def missing_lesson_data() -> list[str]:
    from maelib.data import data_root

    root = data_root(must_exist=False)
    return [str(root / part) for part in LESSON_DATA if not (root / part).is_dir() or not any((root / part).iterdir())]


class FirstRun:
    """The mirror, served on 127.0.0.1, and the empty data root and cache of a first run; made on first use."""

    def __init__(self) -> None:
        self.wanted = False  # the notebooks of this session run as a first run
        self.folder: Path | None = None
        self.mirror_url = ""
        self.seconds = 0.0
        self._stack = contextlib.ExitStack()
        self._saved: dict[str, str | None] = {}

    def mirror(self) -> str:
        """The mirror's URL (built and served on first call)."""
        if self.folder is None:
            from official_mirror import build_mirror, serve_mirror

            start = time.perf_counter()
            self.folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="maelib-first-run-")))
            (self.folder / "mirror").mkdir()
            build_mirror(self.folder / "mirror")
            self.mirror_url = self._stack.enter_context(serve_mirror(self.folder / "mirror"))
            self.seconds = time.perf_counter() - start
        return self.mirror_url

    def enter(self, notebook: str) -> None:
        """Point this process's environment (which a notebook's kernel inherits) at the notebook's first run."""
        url = self.mirror()
        machine = self.folder / "machines" / notebook  # a fresh machine per notebook
        (machine / "data").mkdir(parents=True, exist_ok=True)
        no_proxy = ",".join(filter(None, [os.environ.get("no_proxy", ""), "127.0.0.1,localhost"]))
        env = {"MAELIB_DOWNLOAD_MIRROR": url, "MAELIB_DATA_DIR": str(machine / "data"),
               "MAELIB_CACHE_DIR": str(machine / "cache"), "no_proxy": no_proxy, "NO_PROXY": no_proxy}
        self._saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)

    def leave(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}

    def close(self) -> None:
        self._stack.close()


FIRST_RUN = FirstRun()


def is_notebook(item) -> bool:
    return str(item.fspath).endswith(".ipynb")


def pytest_collection_modifyitems(config, items):
    if any(is_notebook(item) for item in items):
        FIRST_RUN.wanted = config.getoption("--first-run") or bool(missing_lesson_data())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if FIRST_RUN.wanted and is_notebook(item):  # before nbval starts the notebook's kernel
        FIRST_RUN.enter(Path(str(item.fspath)).stem)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    if FIRST_RUN.wanted and is_notebook(item):
        FIRST_RUN.leave()


def pytest_terminal_summary(terminalreporter):
    if FIRST_RUN.wanted and FIRST_RUN.folder is not None:
        terminalreporter.write_line(
            f"first run: the notebooks downloaded their data from a mirror of the official sources "
            f"(synthetic images, built in {FIRST_RUN.seconds:.0f} s) at {FIRST_RUN.mirror_url}, each into an empty "
            f"data root")


def pytest_sessionfinish(session):
    FIRST_RUN.close()


@pytest.fixture(scope="session")
def official_mirror() -> str:
    """The URL of a mirror of the official data sources (tests/official_mirror.py) served on 127.0.0.1."""
    return FIRST_RUN.mirror()
