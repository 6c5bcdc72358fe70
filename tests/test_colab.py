"""maelib.colab: a lesson on a fresh Colab VM, with its data and trained models optionally in Google Drive.

Colab's ``google.colab.drive`` is replaced by a fake whose ``mount`` makes ``<mount point>/MyDrive``.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from maelib import colab
from maelib.course import lesson_paths
from maelib.data import data_root


@pytest.fixture
def fake_drive(monkeypatch, tmp_path):
    """A fake ``google.colab.drive``; returns the list of mount points it was asked to mount."""
    mounted = []

    def mount(mount_point):
        mounted.append(mount_point)
        (Path(mount_point) / "MyDrive").mkdir(parents=True, exist_ok=True)

    drive = types.SimpleNamespace(mount=mount)
    google = types.ModuleType("google")
    google_colab = types.ModuleType("google.colab")
    google_colab.drive = drive
    google.colab = google_colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.delenv("MAELIB_DATA_DIR", raising=False)
    return mounted


def test_without_drive_nothing_changes(tmp_path, fake_drive, capsys):
    setup = colab.setup_colab(drive=False, repo=tmp_path / "maelib")
    assert setup == colab.ColabSetup(tmp_path / "maelib" / "data", tmp_path / "maelib" / "checkpoints", False)
    assert fake_drive == [] and "MAELIB_DATA_DIR" not in os.environ
    assert "gone when the session ends" in capsys.readouterr().out


def test_drive_keeps_data_and_checkpoints(tmp_path, fake_drive, monkeypatch, capsys):
    repo, mount = tmp_path / "maelib", tmp_path / "drive"
    (repo / "checkpoints").mkdir(parents=True)
    (repo / "checkpoints" / "lesson01_mlp_cats_dogs-gpu.pt").write_bytes(b"trained before DRIVE was set")
    setup = colab.setup_colab(drive=True, mount_point=mount, repo=repo)

    assert fake_drive == [str(mount)]
    base = mount / "MyDrive" / "maelib"
    assert setup == colab.ColabSetup(base / "data", base / "checkpoints", True)
    assert data_root() == base / "data"  # what every lesson's loaders now read
    assert (repo / "checkpoints").is_symlink() and (repo / "checkpoints").resolve() == base / "checkpoints"
    assert (base / "checkpoints" / "lesson01_mlp_cats_dogs-gpu.pt").read_bytes() == b"trained before DRIVE was set"
    (repo / "checkpoints" / "lesson02_vit_faces-gpu.pt").write_bytes(b"new")  # what a lesson writes lands in Drive
    assert (base / "checkpoints" / "lesson02_vit_faces-gpu.pt").read_bytes() == b"new"
    assert "kept between sessions" in capsys.readouterr().out

    # the next lesson in the same session (Drive already mounted): nothing moves
    again = colab.setup_colab(drive=True, mount_point=mount, repo=repo)
    assert again == setup and fake_drive == [str(mount)]
    assert sorted(p.name for p in (repo / "checkpoints").iterdir()) == ["lesson01_mlp_cats_dogs-gpu.pt",
                                                                         "lesson02_vit_faces-gpu.pt"]


def test_drive_problems_are_explained(tmp_path, fake_drive):
    repo, mount = tmp_path / "maelib", tmp_path / "drive"
    with pytest.raises(FileNotFoundError, match=r"mounted at .*drive, but .*Shared is not there; pass folder="):
        colab.setup_colab(drive=True, folder="Shared/course", mount_point=mount, repo=repo)
    (repo / "checkpoints").mkdir(parents=True)
    (repo / "checkpoints" / "a.pt").write_bytes(b"local")
    (mount / "MyDrive" / "maelib" / "checkpoints").mkdir(parents=True)
    (mount / "MyDrive" / "maelib" / "checkpoints" / "a.pt").write_bytes(b"in Drive")
    with pytest.raises(FileExistsError, match=r"a.pt is also in .*checkpoints; move one of them away"):
        colab.setup_colab(drive=True, mount_point=mount, repo=repo)
    assert (repo / "checkpoints" / "a.pt").read_bytes() == b"local"  # nothing lost


def test_every_lesson_offers_drive_in_its_colab_cell():
    for path in lesson_paths():
        first_code = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        source = "".join(first_code["source"])
        assert "DRIVE = False  #" in source and "setup_colab(drive=DRIVE)" in source, path.name
        assert source.index("setup_colab") > source.index('if "google.colab" in sys.modules:'), path.name
