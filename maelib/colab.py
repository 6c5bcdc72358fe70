"""Colab: each lesson sets up a fresh Colab VM on its own, optionally keeping its files in Google Drive.

The first code cell of every lesson, on Colab only, clones the course, installs it, and calls
:func:`setup_colab`. A Colab VM forgets everything when the session ends: the downloaded data sets,
the decoded-image cache, and the models a lesson trained. With ``DRIVE = True`` in that cell,
:func:`setup_colab` mounts your Google Drive (Colab asks for permission) and keeps, in
``MyDrive/maelib/``:

* ``data/``: the data root (``MAELIB_DATA_DIR``): each data set is downloaded once, ever;
* ``checkpoints/``: the trained models (the repository's ``checkpoints/`` becomes a link to it),
  so lesson 05 finds lesson 02's model in a later session, and an interrupted training resumes.

Caches stay on the VM's disk (``MAELIB_CACHE_DIR``): archives are unpacked there, not in Drive,
whose many-small-files writes are slow, and the decoded tensors are quick to make again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .course import REPO_ROOT
from .data.root import DATA_ENV

DRIVE_MOUNT = Path("/content/drive")
DRIVE_FOLDER = "MyDrive/maelib"


@dataclass(frozen=True)
class ColabSetup:
    """Where a Colab session keeps things: ``data`` (the data root) and ``checkpoints``; ``drive``: in Google Drive."""

    data: Path
    checkpoints: Path
    drive: bool


def setup_colab(drive: bool = False, *, folder: str = DRIVE_FOLDER, mount_point: str | os.PathLike = DRIVE_MOUNT,
                repo: str | os.PathLike = REPO_ROOT) -> ColabSetup:
    """Set up this Colab session for the lessons; with ``drive=True`` keep data and checkpoints in Google Drive.

    Args:
        drive: mount Google Drive and keep the data root and the trained models in ``<Drive>/<folder>``.
        folder: the folder under the mount point (default ``MyDrive/maelib``).
        mount_point: where Drive is mounted (Colab's default ``/content/drive``).
        repo: the course's clone, whose ``checkpoints/`` the lessons write.

    Without ``drive``, nothing changes: the lessons download into the clone's ``data/`` on the VM.
    """
    repo = Path(repo)
    checkpoints = repo / "checkpoints"
    if not drive:
        setup = ColabSetup(data=Path(os.environ.get(DATA_ENV) or repo / "data"), checkpoints=checkpoints, drive=False)
        print(f"data in {setup.data}, trained models in {checkpoints}: on this VM, gone when the session ends "
              f"(DRIVE = True keeps them in Google Drive)")
        return setup

    mount_point = Path(mount_point)
    base = mount_point / folder
    if not base.parent.is_dir():  # not mounted yet
        from google.colab import drive as google_drive

        google_drive.mount(str(mount_point))
        if not base.parent.is_dir():
            raise FileNotFoundError(f"Google Drive was mounted at {mount_point}, but {base.parent} is not there; "
                                    f"pass folder= with a folder of your Drive")
    setup = ColabSetup(data=base / "data", checkpoints=base / "checkpoints", drive=True)
    setup.data.mkdir(parents=True, exist_ok=True)
    setup.checkpoints.mkdir(parents=True, exist_ok=True)
    os.environ[DATA_ENV] = str(setup.data)
    _link(checkpoints, setup.checkpoints)
    print(f"Google Drive: data in {setup.data}, trained models in {setup.checkpoints} (kept between sessions)")
    return setup


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target``; files already in a real folder ``link`` move to ``target``."""
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    elif link.is_dir():
        for item in link.iterdir():
            if (target / item.name).exists():
                raise FileExistsError(f"{item} is also in {target}; move one of them away, then run this again")
            shutil.move(str(item), str(target / item.name))
        link.rmdir()
    elif link.exists():
        raise FileExistsError(f"{link} is a file; move it away so that it can link to {target}")
    link.symlink_to(target, target_is_directory=True)
