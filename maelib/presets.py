"""Presets: one switch that sizes every lesson for the machine it runs on.

``MAELIB_PRESET`` selects one of

* ``smoke`` -- a tiny subset and one or two epochs, so CI executes every notebook in minutes;
* ``cpu``   -- the real run whose outputs are committed: real data, under ~45 minutes on 2 cores;
* ``gpu``   -- the full recipe, for a Colab GPU.

Default: ``gpu`` when CUDA is available, else ``cpu``. A lesson writes its settings once per
preset and takes the one in force with :func:`pick`.

**The step cap** (``MAELIB_MAX_STEPS=N``, read by :func:`max_steps` only) runs a preset at its real
shapes in a few minutes, so that CI can execute the ``gpu`` preset on a CPU: the model, image size,
patch grid, batch size, masks and evaluation code stay the preset's, but every training
(:func:`maelib.train.fit`) stops after N optimizer steps, validation and the lessons' scores look at
a few images (:func:`capped`), and every file a capped run writes is named apart
(:func:`capped_path`), so that it is never taken for a real run's.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TypeVar

import torch

PRESETS = ("smoke", "cpu", "gpu")
MAX_STEPS_ENV = "MAELIB_MAX_STEPS"
FEW = 8  # images a lesson scores, and fit validates on, under the step cap
T = TypeVar("T")


def default_device() -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def current_preset() -> str:
    """The preset in force: env ``MAELIB_PRESET``, else ``gpu`` with CUDA, else ``cpu``."""
    preset = os.environ.get("MAELIB_PRESET", "").strip().lower()
    if not preset:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if preset not in PRESETS:
        raise ValueError(f"MAELIB_PRESET={preset!r} is not a preset; choose one of {PRESETS}")
    return preset


def pick(*, smoke: T, cpu: T, gpu: T) -> T:
    """Return the value for the preset in force, e.g. ``epochs = pick(smoke=1, cpu=50, gpu=50)``."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[current_preset()]


def setup(seed: int = 0) -> tuple[str, torch.device]:
    """First call of every lesson: seed, print the preset and the device, return both."""
    preset, device = current_preset(), default_device()
    torch.manual_seed(seed)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"preset: {preset} | device: {device} ({name}) | torch {torch.__version__} | "
          f"threads: {torch.get_num_threads()}")
    if max_steps() is not None:
        print(f"step cap: {MAX_STEPS_ENV}={max_steps()}: every training stops after {max_steps()} steps, and a few "
              "images are scored (a test of the preset's real shapes, not a lesson)")
    return preset, device


# --------------------------------------------------------------------------- the step cap
def max_steps() -> int | None:
    """The step cap in force: env ``MAELIB_MAX_STEPS`` (a positive integer), else None (no cap)."""
    text = os.environ.get(MAX_STEPS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{MAX_STEPS_ENV}={text!r} is not a positive whole number of training steps; set it "
                         "to e.g. 2, or unset it to train in full")
    return int(text)


def capped(n: int | None, few: int = FEW) -> int | None:
    """``n`` (a count of images to score or of passes to time; None = all), or at most ``few`` under the
    step cap: ``TEST_IMAGES = capped(pick(smoke=64, cpu=None, gpu=None))``."""
    if max_steps() is None:
        return n
    return few if n is None else min(n, few)


def capped_path(path: str | os.PathLike) -> Path:
    """``path`` as it is, or named apart under the step cap: ``x.pt`` -> ``x-max2steps.pt``, ``runs/a`` ->
    ``runs/a-max2steps``: a capped run's checkpoints never pass for (or overwrite) a real run's."""
    path, cap = Path(path), max_steps()
    if cap is None or path.stem.endswith(f"-max{cap}steps"):  # not capped, or named apart already
        return path
    return path.with_name(f"{path.stem}-max{cap}steps{path.suffix}")
