"""Presets: one switch that sizes every lesson for the machine it runs on.

``MAELIB_PRESET`` selects one of

* ``smoke`` -- a tiny subset and one or two epochs, so CI executes every notebook in minutes;
* ``cpu``   -- the real run whose outputs are committed: real data, under ~45 minutes on 2 cores;
* ``gpu``   -- the full recipe, for a Colab GPU.

Default: ``gpu`` when CUDA is available, else ``cpu``. A lesson writes its settings once per
preset and takes the one in force with :func:`pick`.
"""

from __future__ import annotations

import os
import platform
from typing import TypeVar

import torch

PRESETS = ("smoke", "cpu", "gpu")
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
    return preset, device
