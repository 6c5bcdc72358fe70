"""maelib.data: data root, decoding + tensor cache, folders of images and .npy, splits, transforms,
and (when present) the course's shared data folder."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import maelib.data.decode as decode_module
from maelib.data import (
    FACADES_SPLIT,
    ImageSet,
    ImageTensorDataset,
    NoImagesError,
    PixelNormalizer,
    SkippedFilesWarning,
    cats_dogs,
    data_root,
    eval_transforms,
    facades,
    faces,
    load_image_folder,
    load_images,
    load_npy_folder,
    split_counts,
    split_indices,
    train_transforms,
)
from maelib.data.root import DATA_ENV, REPO_DATA_DIR

REPO = Path(__file__).resolve().parents[1]
# The course's shared data: the data-root setting $MAELIB_DATA_DIR when set, else shared/data beside the
# repository (CI: a copy of shared/ next to the clone). Read at import: the fixture below unsets the variable.
SHARED_ROOT = Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data")
SHARED = SHARED_ROOT if (SHARED_ROOT / "MANIFEST.tsv").is_file() else None


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache (its tensors/ folder is returned) and no data-root override."""
    monkeypatch.setenv("MAELIB_CACHE_DIR", str(tmp_path / "maelib-cache"))
    monkeypatch.delenv("MAELIB_DATA_DIR", raising=False)
    return tmp_path / "maelib-cache" / "tensors"


def write_jpeg(path: Path, rng: np.random.Generator, size=(20, 14), mode="RGB") -> np.ndarray:
    """Write a random photo-like JPEG of ``size`` (W, H); return its pixels."""
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=95)
    return pixels


def image_folder(folder: Path, n: int = 4, seed: int = 0, size=(20, 14)) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = [folder / f"img{i}.jpg" for i in range(n)]
    for p in paths:
        write_jpeg(p, rng, size)
    return paths


# ----------------------------------------------------------------------------- data root


def test_data_root_precedence_argument_env_default(tmp_path, monkeypatch):
    arg, env = tmp_path / "arg", tmp_path / "env"
    arg.mkdir()
    env.mkdir()
    assert data_root() == REPO_DATA_DIR  # repository default ...
    assert REPO_DATA_DIR == REPO / "data"  # ... is data/ next to the maelib package
    monkeypatch.setenv("MAELIB_DATA_DIR", str(env))
    assert data_root() == env  # the environment beats the default
    assert data_root(arg) == arg  # the argument beats the environment
    assert data_root(str(arg)) == arg


def test_missing_data_root_is_an_error_naming_it(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-root"
    with pytest.raises(FileNotFoundError, match="no-such-root.*does not exist"):
        data_root(missing)
    monkeypatch.setenv("MAELIB_DATA_DIR", str(missing))
    with pytest.raises(FileNotFoundError, match="MAELIB_DATA_DIR"):
        data_root()
    with pytest.raises(FileNotFoundError, match="no-such-root"):
        cats_dogs(size=8, download=False)
    assert data_root(must_exist=False) == missing


def test_missing_dataset_without_download_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cats_dogs.cats.*download=True"):
        cats_dogs(tmp_path, size=8, download=False)
    with pytest.raises(ValueError, match=r"variant must be one of \['celeba', 'lfw_gray'\], got 'lfw'"):
        faces(tmp_path, variant="lfw", download=False)


# ----------------------------------------------------------------------------- shared data


@pytest.mark.skipif(SHARED is None, reason=f"the course's shared data is not in {SHARED_ROOT} (set {DATA_ENV})")
def test_shared_data_counts_and_shapes(monkeypatch):
    monkeypatch.setenv("MAELIB_DATA_DIR", str(SHARED))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shared data decodes without a single skipped file
        cd = cats_dogs(size=32, download=False, progress=False)
        celeba = faces(size=32, download=False, progress=False)
        lfw = faces(size=32, variant="lfw_gray", download=False, progress=False)
        fac = facades(size=32, download=False, with_labels=True, progress=False)

    assert cd.images.shape == (4000, 3, 32, 32) and cd.images.dtype == torch.uint8
    assert torch.bincount(cd.labels).tolist() == [2000, 2000]
    assert cd.class_names == ["cat", "dog"]
    folders = [p.parent.name for p in cd.paths]
    assert folders == ["cats" if y == 0 else "dogs" for y in cd.labels.tolist()]
    assert {k: len(v) for k, v in cd.hint_indices().items()} == {"train": 2000, "test": 2000}

    assert celeba.images.shape == (5000, 3, 32, 32)
    assert lfw.images.shape == (2000, 1, 32, 32)

    assert fac.images.shape == (378, 3, 32, 32)
    assert fac.label_maps.shape == (378, 1, 32, 32)
    assert set(fac.label_maps.unique().tolist()) <= set(range(1, 13))
    assert fac.label_map_names[1] == "background" and fac.label_map_names[12] == "shop"
    assert {k: len(v) for k, v in fac.hint_indices().items()} == {"train": 302, "val": 37, "test": 39}
    assert "MANIFEST.tsv" in fac.split_source
    assert fac.paths[0].name == "cmp_b0001.jpg" and len(set(fac.paths)) == 378


# ----------------------------------------------------------------------------- decoding


def test_corrupt_and_non_image_files_are_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "imgs"
    good = image_folder(folder, n=3)
    (folder / "broken.jpg").write_bytes(good[0].read_bytes()[:200])  # a JPEG cut short
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden").write_text("ignored")
    with pytest.warns(SkippedFilesWarning) as record:
        s = load_image_folder(folder, 16, progress=False)
    message = str(record[0].message)
    assert "skipped 2 of 5 files" in message
    assert "broken.jpg" in message and "notes.txt" in message
    assert s.images.shape == (3, 3, 16, 16)
    assert s.paths == good
    assert sorted(p.name for p in s.skipped) == ["broken.jpg", "notes.txt"]


def test_empty_folder_and_folder_without_images_are_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoImagesError, match="empty"):
        load_image_folder(empty, 16)
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    (text_only / "a.txt").write_text("hello")
    with pytest.warns(SkippedFilesWarning), pytest.raises(NoImagesError, match="no decodable.*text_only"):
        load_image_folder(text_only, 16, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere", 16)


def test_crop_keeps_the_centre_and_stretch_keeps_everything(tmp_path):
    # A 40x20 (W x H) image: left quarter red, middle half green, right quarter blue.
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10, 0] = 255
    img[:, 10:30, 1] = 255
    img[:, 30:, 2] = 255
    Image.fromarray(img).save(tmp_path / "bands.png")
    crop = load_image_folder(tmp_path, 10, progress=False).images[0]
    stretch = load_image_folder(tmp_path, 10, fit="stretch", progress=False).images[0]
    assert crop[1].float().mean() > 250  # the centre crop is the green middle only
    assert stretch[0, :, 0].float().mean() > 200 and stretch[2, :, -1].float().mean() > 200
    tall = load_image_folder(tmp_path, (10, 5), progress=False).images  # (H, W) target
    assert tall.shape == (1, 3, 10, 5)


def test_greyscale_and_size_none(tmp_path):
    image_folder(tmp_path, n=2, size=(12, 8))
    grey = load_image_folder(tmp_path, None, channels=1, progress=False)
    assert grey.images.shape == (2, 1, 8, 12)
    write_jpeg(tmp_path / "other.jpg", np.random.default_rng(3), size=(9, 9))
    with pytest.raises(ValueError, match="differ in size.*pass size="):
        load_image_folder(tmp_path, None, progress=False)
    with pytest.raises(ValueError, match=r"channels must be one of \[1, 3\], got 2"):
        load_image_folder(tmp_path, 8, channels=2)
    with pytest.raises(ValueError, match=r"fit must be one of \['crop', 'stretch'\], got 'squash'"):
        load_image_folder(tmp_path, 8, fit="squash")
    with pytest.raises(ValueError, match="size must be positive"):
        load_image_folder(tmp_path, 0)


def test_by_subfolder_gives_labels(tmp_path):
    image_folder(tmp_path / "b", n=2, seed=1)
    image_folder(tmp_path / "a", n=3, seed=2)
    s = load_image_folder(tmp_path, 8, by_subfolder=True, progress=False)
    assert s.class_names == ["a", "b"] and s.labels.tolist() == [0, 0, 0, 1, 1]


# ----------------------------------------------------------------------------- tensor cache


def test_tensor_cache_hit_does_not_decode_and_a_changed_file_invalidates(tmp_path, monkeypatch, tmp_cache):
    folder = tmp_path / "imgs"
    paths = image_folder(folder, n=4)
    first = load_image_folder(folder, 16, progress=False)
    assert len(list(tmp_cache.iterdir())) == 1  # one cache file for the whole folder

    calls = []
    real_decode = decode_module.decode_image

    def counting_decode(*args, **kwargs):
        calls.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_image", counting_decode)
    second = load_image_folder(folder, 16, progress=False)
    assert calls == []  # served from the cache: no file was decoded
    assert torch.equal(first.images, second.images) and second.paths == first.paths
    assert load_images(paths, 16, progress=False).from_cache

    # Change one file (new pixels, later mtime): the key changes and the folder is decoded again.
    write_jpeg(paths[2], np.random.default_rng(99))
    stat = paths[2].stat()
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    third = load_image_folder(folder, 16, progress=False)
    assert len(calls) == 4
    assert not torch.equal(third.images[2], first.images[2])
    assert torch.equal(third.images[0], first.images[0])

    # Other settings are other cache entries.
    load_image_folder(folder, 8, progress=False)
    load_image_folder(folder, 16, fit="stretch", progress=False)
    assert len(list(tmp_cache.glob("*.pt"))) == 4


def test_cache_replays_the_skipped_files_warning(tmp_path):
    image_folder(tmp_path, n=2)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.warns(SkippedFilesWarning, match="readme.txt"):
        load_image_folder(tmp_path, 8, progress=False)
    with pytest.warns(SkippedFilesWarning, match="readme.txt"):
        s = load_image_folder(tmp_path, 8, progress=False)
    assert len(s) == 2


def test_unwritable_cache_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    monkeypatch.setenv("MAELIB_CACHE_DIR", str(blocker / "cache"))
    image_folder(tmp_path / "imgs", n=2)
    with pytest.warns(UserWarning, match="could not write the tensor cache"):
        assert len(load_image_folder(tmp_path / "imgs", 8, progress=False)) == 2


# ----------------------------------------------------------------------------- .npy folders


def test_npy_folder_hwc_uint8_and_chw_float(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    chw = rng.random((3, 6, 5)).astype(np.float32)
    np.save(tmp_path / "a_hwc.npy", hwc)
    np.save(tmp_path / "b_chw.npy", chw)
    np.save(tmp_path / "c_stack.npy", np.stack([hwc, hwc]))  # (N, H, W, C)
    (tmp_path / "ignored.txt").write_text("not an array")
    s = load_npy_folder(tmp_path)
    assert s.images.shape == (4, 3, 6, 5) and s.images.dtype == torch.uint8
    assert torch.equal(s.images[0], torch.from_numpy(hwc.transpose(2, 0, 1)))
    assert torch.equal(s.images[1], torch.from_numpy(np.rint(chw * 255).astype(np.uint8)))
    assert [p.name for p in s.paths] == ["a_hwc.npy", "b_chw.npy", "c_stack.npy", "c_stack.npy"]

    resized = load_npy_folder(tmp_path, size=4, channels=1)
    assert resized.images.shape == (4, 1, 4, 4)


def test_npy_folder_errors_name_the_file(tmp_path):
    np.save(tmp_path / "too_bright.npy", np.full((5, 5, 3), 1.5, np.float32))
    with pytest.raises(ValueError, match=r"too_bright.npy.*\[0, 1\].*max 1.5"):
        load_npy_folder(tmp_path)
    (tmp_path / "too_bright.npy").unlink()
    np.save(tmp_path / "ints.npy", np.zeros((5, 5, 3), np.int64))
    with pytest.raises(ValueError, match="ints.npy.*int64.*uint8"):
        load_npy_folder(tmp_path)
    (tmp_path / "ints.npy").unlink()
    np.save(tmp_path / "square.npy", np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="square.npy.*layout="):
        load_npy_folder(tmp_path)
    assert load_npy_folder(tmp_path, layout="CHW").images.shape == (1, 3, 4, 3)
    (tmp_path / "junk.npy").write_bytes(b"definitely not numpy")
    with pytest.warns(SkippedFilesWarning, match="junk.npy"):
        assert len(load_npy_folder(tmp_path, layout="HWC")) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoImagesError, match="empty"):
        load_npy_folder(empty)


# ----------------------------------------------------------------------------- splits


def test_split_indices_deterministic_disjoint_complete():
    a = split_indices(100, (0.8, 0.1, 0.1), seed=3)
    b = split_indices(100, (0.8, 0.1, 0.1), seed=3)
    c = split_indices(100, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert [len(p) for p in a] == [80, 10, 10]
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(100))
    assert all(np.array_equal(p, np.sort(p)) for p in a)
    # Pinned values: the same indices on every machine (NumPy's legacy RandomState via scikit-learn).
    assert split_indices(10, (0.8, 0.2), seed=0)[1].tolist() == [2, 8]


def test_split_indices_stratified_keeps_proportions():
    labels = np.array([0] * 140 + [1] * 60)
    parts = split_indices(labels, (0.7, 0.15, 0.15), seed=0)
    assert [len(p) for p in parts] == [140, 30, 30]
    for part in parts:
        assert abs(labels[part].mean() - 0.3) <= 1 / len(part)
    unstratified = split_indices(labels, (0.7, 0.15, 0.15), seed=0, stratify=False)
    assert np.array_equal(np.sort(np.concatenate(unstratified)), np.arange(200))


def test_split_indices_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.2))
    with pytest.raises(ValueError, match="2 or 3"):
        split_indices(10, (0.25,) * 4)
    with pytest.raises(ValueError, match="empty part"):
        split_indices(3, (0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match="needs labels"):
        split_indices(10, stratify=True)
    with pytest.raises(ValueError, match="seed"):
        split_indices(10, seed=-1)


def test_split_counts_reproduce_the_facade_split():
    assert split_counts(378, FACADES_SPLIT) == [302, 37, 39]
    assert split_counts(10, (0.8, 0.2)) == [8, 2]


@given(st.integers(3, 500), st.floats(0.05, 0.9), st.floats(0.05, 0.9))
def test_split_counts_sum_to_n_and_round(n, f1, f2):
    total = f1 + f2 + 0.1
    fractions = (f1 / total, f2 / total, 0.1 / total)
    counts = split_counts(n, fractions)
    assert sum(counts) == n
    assert all(abs(c - f * n) < 1 for c, f in zip(counts, fractions, strict=True))


def test_facades_without_manifest_get_a_seeded_split_and_say_so(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 21):
        write_jpeg(tmp_path / "facades" / "images" / f"cmp_b{i:04d}.jpg", rng, (16, 24))
        ids = rng.integers(1, 13, (24, 16), dtype=np.uint8)
        (tmp_path / "facades" / "labels").mkdir(exist_ok=True)
        Image.fromarray(ids, mode="P").save(tmp_path / "facades" / "labels" / f"cmp_b{i:04d}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said in split_source, not in a warning: a lesson's checked output
        s = facades(tmp_path, size=8, with_labels=True, download=False, progress=False)  # stays the same
    assert s.split_source.startswith("seeded split (seed=0), train/val/test 16/2/2")
    assert "no split_hint" in s.split_source
    assert [s.split_hint.count(k) for k in ("train", "val", "test")] == split_counts(20, FACADES_SPLIT)
    assert s.label_maps.shape == (20, 1, 8, 8) and s.label_maps.min() >= 1 and s.label_maps.max() <= 12
    again = facades(tmp_path, size=8, download=False, progress=False)
    assert again.split_hint == s.split_hint  # same seed, same split
    other = facades(tmp_path, size=8, download=False, split_seed=1, progress=False)
    assert other.split_source.startswith("seeded split (seed=1)") and other.split_hint != s.split_hint


# ----------------------------------------------------------------------------- ImageSet, Dataset, transforms


def test_imageset_subset_and_dataset():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    s = ImageSet(images, labels=torch.tensor([0, 1, 0, 1, 0, 1]), class_names=["x", "y"],
                 paths=[Path(f"{i}.jpg") for i in range(6)], split_hint=["train"] * 4 + ["test"] * 2)
    sub = s.subset([5, 0])
    assert torch.equal(sub.images, images[[5, 0]]) and sub.labels.tolist() == [1, 0]
    assert sub.paths == [Path("5.jpg"), Path("0.jpg")] and sub.split_hint == ["test", "train"]
    assert s.hint_indices()["test"].tolist() == [4, 5]
    masked = s.subset(s.labels == 1)
    assert masked.labels.tolist() == [1, 1, 1]
    assert masked.paths == [Path("1.jpg"), Path("3.jpg"), Path("5.jpg")]
    assert "6 images 3x8x8" in repr(s)
    x, y = s.dataset()[2]
    assert x.dtype == torch.float32 and torch.allclose(x * 255, images[2].float()) and y == 0
    with pytest.raises(ValueError, match="labels has 2 entries but there are 6 images"):
        ImageSet(images, labels=torch.tensor([0, 1]))


def test_image_tensor_dataset_validates_and_transforms():
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    ds = ImageTensorDataset(images, transform=lambda t: t * 0 + 0.5)
    assert len(ds) == 3 and torch.all(ds[0] == 0.5)
    with pytest.raises(ValueError, match="uint8"):
        ImageTensorDataset(images.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        ImageTensorDataset(images, labels=torch.zeros(2))


def test_train_transforms_shape_range_and_randomness():
    torch.manual_seed(0)
    x = torch.rand(3, 32, 32)
    t = train_transforms(16, crop_scale=(0.5, 1.0), hflip=True, rotation=15, color_jitter=0.4)
    outs = [t(x) for _ in range(4)]
    assert all(o.shape == (3, 16, 16) and o.min() >= 0 and o.max() <= 1 for o in outs)
    assert not torch.allclose(outs[0], outs[1])  # random
    grey = train_transforms((12, 16), color_jitter=(0.2, 0.2, 0.2, 0.1))(torch.rand(1, 24, 24))
    assert grey.shape == (1, 12, 16)
    plain = train_transforms(32, crop_scale=None, hflip=False)
    assert torch.equal(plain(x), x)  # every step off: nothing changes
    with pytest.raises(ValueError, match="crop_scale"):
        train_transforms(16, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="rotation"):
        train_transforms(16, rotation=-5)
    with pytest.raises(ValueError, match="color_jitter"):
        train_transforms(16, color_jitter=-0.1)


def test_eval_transforms_are_deterministic_and_identity_at_size():
    x = torch.rand(3, 32, 32)
    assert torch.equal(eval_transforms(32)(x), x)
    y = torch.rand(3, 40, 48)
    t = eval_transforms(32)
    assert t(y).shape == (3, 32, 32) and torch.equal(t(y), t(y))


def test_pixel_normalizer_fits_per_channel_and_round_trips():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 5, 6), dtype=torch.uint8, generator=g)
    x = images.double() / 255
    norm = PixelNormalizer.fit(images, batch_size=3)  # several chunks
    assert norm.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    assert norm.std == pytest.approx(x.std(dim=(0, 2, 3), correction=0).tolist())
    assert PixelNormalizer.fit(x.float()).mean == pytest.approx(norm.mean, abs=1e-6)  # floats: no /255
    z = norm(x.float())  # a batch: each channel now has mean 0 and std 1
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-5)
    assert torch.allclose(norm(x[0].float()), z[0])  # one image (C, H, W) the same way
    assert torch.allclose(norm.denormalize(z), x.float(), atol=1e-6)
    again = PixelNormalizer(**{"mean": list(norm.mean), "std": list(norm.std)})  # as stored in a checkpoint
    assert again == norm and isinstance(again.mean, tuple)
    ds = ImageTensorDataset(images, transform=norm)  # usable as a data set transform
    assert torch.allclose(ds[0], z[0], atol=1e-6)


def test_pixel_normalizer_rejects_bad_input():
    with pytest.raises(ValueError, match="std must be positive"):
        PixelNormalizer((0.5,), (0.0,))
    with pytest.raises(ValueError, match="one value per channel"):
        PixelNormalizer((0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match=r"expected images \(\.\.\., 3, H, W\)"):
        PixelNormalizer((0.5,) * 3, (0.2,) * 3)(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="non-empty"):
        PixelNormalizer.fit(torch.zeros(0, 3, 4, 4))


def test_dataset_with_train_transform_from_a_folder(tmp_path):
    image_folder(tmp_path / "a", n=2)
    image_folder(tmp_path / "b", n=2, seed=5)
    s = load_image_folder(tmp_path, 24, by_subfolder=True, progress=False)
    loader = torch.utils.data.DataLoader(s.dataset(train_transforms(16)), batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1]


def test_decode_image_reads_exactly_what_was_written(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    (tmp_path / "x.png").write_bytes(buf.getvalue())
    out = decode_module.decode_image(tmp_path / "x.png")
    assert out.shape == (3, 6, 7) and np.array_equal(out, pixels.transpose(2, 0, 1))
