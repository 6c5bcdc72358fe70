"""A first run on a new machine: every data set downloaded from the official sources' formats.

The sources are replaced by a mirror (``MAELIB_DOWNLOAD_MIRROR``) of small synthetic archives in each
source's own format (``official_mirror.py``), served on 127.0.0.1 by the session fixture
``official_mirror`` (conftest.py). What the lessons print about the data must come out the same as on
the course's copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from official_mirror import label_map, photo, serve_mirror

from maelib import download
from maelib.data import DownloadError, balanced_choice, cats_dogs, facades, faces, sources

# The course's copy (CI: MAELIB_DATA_DIR), read at import: the fixture below points the variable elsewhere.
SHARED = next((Path(p) for p in (os.environ.get("MAELIB_DATA_DIR"), Path(__file__).parents[2] / "shared" / "data")
               if p and (Path(p) / "MANIFEST.tsv").is_file()), None)

# What lesson 00 prints about each data set on the course's copy (its committed output)
COURSE_COPY = {
    "cats and dogs": "ImageSet(4000 images 3x16x16 uint8; classes cat=2000, dog=2000; split train=2000, test=2000)",
    "CelebA": "ImageSet(5000 images 3x16x16 uint8; split train=5000)",
    "LFW grey": "ImageSet(2000 images 1x16x16 uint8)",
    "facades": "ImageSet(378 images 3x16x16 uint8; split train=302, val=37, test=39; label maps (1, 16, 16))",
}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty cache (where downloads are staged too), outside tmp_path."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MAELIB_CACHE_DIR", str(folder))
    monkeypatch.setenv("no_proxy", "*")
    return folder


@pytest.fixture
def fresh(tmp_path, monkeypatch, official_mirror):
    """An empty data root, with downloads going to the mirror."""
    monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", official_mirror)
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("MAELIB_DATA_DIR", str(root))
    return root


def load_all(root=None, size=16):
    return {"cats and dogs": cats_dogs(root, size=size, progress=False),
            "CelebA": faces(root, size=size, progress=False),
            "LFW grey": faces(root, size=size, variant="lfw_gray", progress=False),
            "facades": facades(root, size=size, with_labels=True, progress=False)}


def test_a_first_run_downloads_every_data_set_into_the_course_layout(fresh, cache, monkeypatch):
    sets = load_all()
    assert {name: repr(s) for name, s in sets.items()} == COURSE_COPY
    # the layout of the course's copy, the raw downloads gone
    assert sorted(p.name for p in fresh.iterdir()) == ["MANIFEST.tsv", "cats_dogs", "facades", "faces"]
    assert list((cache / "downloads").iterdir()) == []
    pets = sets["cats and dogs"]
    assert len(list((fresh / "cats_dogs" / "cats").iterdir())) == 12 * (92 + 91)  # every cat photo is kept ...
    assert all(p.name.startswith("breed") for p in pets.paths if p.parent.name == "dogs")  # ... and sorted
    counts = {(y, h): 0 for y in (0, 1) for h in ("train", "test")}
    for y, h in zip(pets.labels.tolist(), pets.split_hint, strict=True):
        counts[y, h] += 1
    assert set(counts.values()) == {1000}  # balanced in class and in the source's split
    assert {p.name for p in sets["CelebA"].paths} == {f"{i:06d}.jpg" for i in range(1, 5001)}
    assert all(p.name.endswith("_0001.jpg") for p in sets["LFW grey"].paths)  # one photo per person
    assert "seeded split" in sets["facades"].split_source  # CMP has no split: the same sizes, seeded

    # a second run finds everything in place: no server needed
    monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", "http://127.0.0.1:9")
    again = load_all()
    assert all(torch.equal(again[k].images, s.images) for k, s in sets.items())


@pytest.mark.skipif(SHARED is None, reason="the course's copy of the data is not here (set MAELIB_DATA_DIR)")
def test_the_course_copy_prints_the_same():
    assert {name: repr(s) for name, s in load_all(SHARED).items()} == COURSE_COPY


def test_the_balanced_subset_is_the_same_rule_on_every_source(tmp_path):
    files = [tmp_path / f"cat.{i}.jpg" for i in range(3000)]
    hints = ["train" if i % 3 else "test" for i in range(3000)]  # 2,000 train, 1,000 test
    chosen = balanced_choice(files, 1000, hints)
    assert len(chosen) == 1000 and chosen == sorted(chosen)
    hint_of = dict(zip(files, hints, strict=True))
    assert [hint_of[p] for p in chosen].count("test") == 500
    # files that were not chosen can go, and others can come: the chosen ones stay chosen
    kept = [f for f in files if f in chosen or int(f.stem.split(".")[1]) % 2]
    more = [tmp_path / f"other.{i}.jpg" for i in range(50)]
    again = balanced_choice(kept, 1000, [hint_of[f] for f in kept])
    assert again == chosen
    with_more = balanced_choice(kept + more, 1000, [hint_of[f] for f in kept] + ["train"] * 50)
    assert len(set(with_more) & set(chosen)) >= 950  # only newcomers that rank first displace a few
    # a folder that holds exactly the balanced set gives all of it (the course's copy)
    assert balanced_choice(chosen, 1000, [hint_of[p] for p in chosen]) == chosen
    with pytest.raises(ValueError, match=r"'test' split has 500 files, fewer than the 600.*per_class=None"):
        balanced_choice(chosen, 1200, [hint_of[p] for p in chosen], what="cats")


def test_the_mirror_checksums_are_verified(tmp_path, monkeypatch):
    """A file that does not match the mirror's SHA256SUMS is refused, and nothing is kept."""
    mirror = tmp_path / "mirror"
    (mirror / "facades").mkdir(parents=True)
    zipped = tmp_path / "base.zip"
    shutil.make_archive(str(zipped.with_suffix("")), "zip", _facade_folder(tmp_path / "src"))
    (mirror / "facades" / "CMP_facade_DB_base.zip").write_bytes(zipped.read_bytes())
    (mirror / "SHA256SUMS").write_text(f"{'0' * 64}  facades/CMP_facade_DB_base.zip\n")
    root = tmp_path / "root"
    root.mkdir()
    with serve_mirror(mirror) as url:
        monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", url)
        with pytest.raises(DownloadError, match="sha256 mismatch"):
            facades(root, size=8, progress=False)
        assert sorted(p.name for p in root.iterdir()) == []
        (mirror / "SHA256SUMS").write_text("facades/CMP_facade_DB_base.zip\n")
        with pytest.raises(DownloadError, match=r"SHA256SUMS has a line that is not '<sha256>  <data set>/<file"):
            facades(root, size=8, progress=False)
        # listed right, it is accepted
        digest = hashlib.sha256(zipped.read_bytes()).hexdigest()
        (mirror / "SHA256SUMS").write_text(f"{digest}  facades/CMP_facade_DB_base.zip\n")
        assert len(facades(root, size=8, progress=False)) == 378


def test_a_mirror_without_checksums_is_held_to_the_official_ones(tmp_path, monkeypatch):
    """No SHA256SUMS: the pinned checksums apply (a mirror of the real files), so other files are refused."""
    mirror = tmp_path / "mirror"
    (mirror / "lfw").mkdir(parents=True)
    (mirror / "lfw" / "lfw.tgz").write_bytes(b"not the real lfw.tgz")
    with serve_mirror(mirror) as url:
        monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", url + "/")
        with pytest.raises(DownloadError, match=f"sha256 mismatch for {url}/lfw/lfw.tgz: expected 055f7d9c"):
            faces(tmp_path, size=8, variant="lfw_gray", progress=False)


def test_a_folder_works_as_a_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "facades").mkdir(parents=True)
    shutil.make_archive(str(mirror / "facades" / "CMP_facade_DB_base"), "zip", _facade_folder(tmp_path / "src"))
    monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", mirror.as_uri())  # no SHA256SUMS; CMP pins none anyway
    root = tmp_path / "root"
    root.mkdir()
    assert len(facades(root, size=8, progress=False)) == 378


def test_a_mirror_setting_that_is_not_a_url_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", "/srv/mirror")
    with pytest.raises(ValueError, match=r"MAELIB_DOWNLOAD_MIRROR='/srv/mirror' is not an http\(s\) or file URL"):
        facades(tmp_path, size=8, progress=False)
    monkeypatch.setenv("MAELIB_DOWNLOAD_MIRROR", "")
    assert download.download_mirror() is None  # empty: the official sources


# ----------------------------------------------------------------------------- Google Drive (CelebA)


def test_google_drive_files_come_through_gdown_and_are_md5_checked(tmp_path, monkeypatch):
    gdown = pytest.importorskip("gdown")
    payload = b"partition file"
    calls = []

    def fake_download(url, output, quiet):
        calls.append(url)
        output.write(payload)

    monkeypatch.setattr(gdown, "download", fake_download)
    monkeypatch.delenv("MAELIB_DOWNLOAD_MIRROR", raising=False)
    remote = dataclasses.replace(sources.CELEBA_PARTITION, md5=hashlib.md5(payload).hexdigest())
    got = download.fetch_remote(remote, tmp_path / "list_eval_partition.txt", progress=False)
    assert got.read_bytes() == payload and calls == [remote.url]
    with pytest.raises(DownloadError, match=r"md5 mismatch .* expected d32c9cbf5e040fd4025c592c306e6668"):
        download.fetch_remote(sources.CELEBA_PARTITION, tmp_path / "other.txt", progress=False)
    assert not (tmp_path / "other.txt").exists()


def test_google_drive_refusing_says_why_and_what_to_do(tmp_path, monkeypatch):
    gdown = pytest.importorskip("gdown")

    def refused(url, output, quiet):
        raise gdown.exceptions.FileURLRetrievalError(
            "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently.")

    monkeypatch.setattr(gdown, "download", refused)
    monkeypatch.delenv("MAELIB_DOWNLOAD_MIRROR", raising=False)
    with pytest.raises(DownloadError) as err:
        faces(tmp_path, size=8, progress=False)
    message = str(err.value)
    assert "Google Drive refused https://drive.google.com/uc?id=0B7EVK8r0v71pZjFTYXZWM3FlRnM" in message
    assert "daily download quota" in message and "Too many users" in message
    assert "img_align_celeba.zip" in message and str(tmp_path / "faces" / "celeba") in message  # by hand
    assert sources.CELEBA_LICENCE in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _facade_folder(folder: Path) -> Path:
    """CMP's base set layout with 378 tiny synthetic photos and label maps; returns ``folder``."""
    import numpy as np

    rng = np.random.default_rng(0)
    (folder / "base").mkdir(parents=True)
    for i in range(1, 379):
        (folder / "base" / f"cmp_b{i:04d}.jpg").write_bytes(photo(rng, 12, 10))
        (folder / "base" / f"cmp_b{i:04d}.png").write_bytes(label_map(rng, 12, 10))
    return folder
