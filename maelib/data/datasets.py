"""The course's data sets, decoded into an :class:`ImageSet` in one call.

    cats = cats_dogs(size=48)                 # 4000 x 3 x 48 x 48 uint8, labels 0 = cat, 1 = dog (2000 each)
    faces_ = faces(size=64)                   # CelebA colour crops
    gray = faces(size=64, variant="lfw_gray") # LFW, 1 channel
    fac = facades(size=128, with_labels=True) # CMP facades + label maps of class ids 1..12

Each reads ``<data root>/<layout>`` (see ``maelib.data.root``) and, when the folder is missing and
``download=True``, fetches it first from the official source (``maelib.data.sources``).
``split_hint`` comes from ``<root>/MANIFEST.tsv`` where it has one.

What a lesson prints and checks must not depend on where the images came from (the course's copy
or the official download), so each data set has a fixed size on every source: 2,000 cats + 2,000
dogs (a balanced subset, :func:`balanced_choice`), 5,000 CelebA crops, 2,000 LFW faces, 378 facades
split 302 / 37 / 39.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import sources
from .decode import check_choice, load_images
from .folders import load_image_folder
from .imageset import ImageSet
from .manifest import manifest_split_hints
from .root import data_root
from .splits import split_counts, split_indices

CATS_DOGS_PER_CLASS = 2000  # the course's copy holds exactly this many; Oxford-IIIT Pet about 2,400 + 4,900
FACES_VARIANTS = ("celeba", "lfw_gray")
# The source's facade split (302 / 37 / 39 of 378), used as proportions when a root has none.
FACADES_SPLIT = (302 / 378, 37 / 378, 39 / 378)

PathLike = str | os.PathLike


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def _ensure(folders: Sequence[Path], download: bool, fetch, base: Path, progress: bool) -> None:
    """Fetch the data set when any of ``folders`` is missing or empty (or explain how to get it)."""
    missing = [f for f in folders if not _has_files(f)]
    if not missing:
        return
    if not download:
        raise FileNotFoundError(f"{', '.join(map(str, missing))} missing or empty in the data root {base}; "
                                f"pass download=True to fetch it, or point root= / MAELIB_DATA_DIR at a root "
                                f"that has it")
    fetch(base, progress=progress)


def _hints(base: Path, paths: list[Path]) -> tuple[list[str] | None, str]:
    hints = manifest_split_hints(base, paths)
    if hints is None:
        return None, f"no split_hint for these files in {base / 'MANIFEST.tsv'}; use split_indices(...)"
    return hints, f"split_hint column of {base / 'MANIFEST.tsv'}"


def cats_dogs(root: PathLike | None = None, size: int | Sequence[int] = 48, *, channels: int = 3,
              fit: str = "crop", per_class: int | None = CATS_DOGS_PER_CLASS, download: bool = True,
              progress: bool = True, cache: bool = True) -> ImageSet:
    """Cats and dogs: ``images (N, channels, H, W) uint8``, ``labels`` 0 = cat, 1 = dog.

    Reads ``<root>/cats_dogs/cats/`` and ``<root>/cats_dogs/dogs/``, and takes ``per_class`` photos of
    each (``None``: all of them) by :func:`balanced_choice`: the same rule on every source, so the
    course's copy (exactly 1,000 + 1,000 per class in its train and test hints) gives all its photos
    and Oxford-IIIT Pet gives 2,000 + 2,000 too. ``split_hint`` is the source's train/test split
    when MANIFEST.tsv has it (the shared data: 1000 + 1000 per split).
    """
    base = data_root(root)
    folder = base / "cats_dogs"
    _ensure([folder / "cats", folder / "dogs"], download, sources.fetch_cats_dogs, base, progress)

    def choose(files: list[Path]) -> list[Path]:
        if per_class is None:
            return files
        return balanced_choice(files, per_class, manifest_split_hints(base, files), what=str(files[0].parent))

    s = load_image_folder(folder, size, channels=channels, fit=fit, by_subfolder=True, classes=("cats", "dogs"),
                          choose=choose, progress=progress, cache=cache)
    s.class_names = ["cat", "dog"]
    s.split_hint, s.split_source = _hints(base, s.paths)
    return s


def balanced_choice(files: Sequence[Path], n: int, hints: Sequence[str] | None = None, *,
                    what: str = "these files") -> list[Path]:
    """``n`` of ``files``, chosen the same way from any folder: spread evenly over the split hints
    (``hints[i]`` is the hint of ``files[i]``; e.g. 1,000 ``train`` + 1,000 ``test`` of 2,000), and
    within each hint the files that come first when ordered by the sha256 of their names (a fixed
    shuffle that does not depend on which other files are there). Returned sorted by path.

    Raises ValueError naming ``what`` when a hint has fewer files than its share.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of files, got {n}")
    groups: dict[str, list[Path]] = {}
    for path, hint in zip(files, hints if hints is not None else [""] * len(files), strict=True):
        groups.setdefault(hint, []).append(Path(path))
    names = sorted(groups)
    chosen: list[Path] = []
    for hint, share in zip(names, split_counts(n, [1 / len(names)] * len(names)), strict=True):
        group = groups[hint]
        if len(group) < share:
            part = f"its {hint!r} split has" if hint else "it has"
            raise ValueError(f"{what}: {part} {len(group)} files, fewer than the {share} that a balanced set of "
                             f"{n} takes; add photos, or pass per_class=None (all photos) or a smaller per_class")
        chosen += sorted(group, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())[:share]
    return sorted(chosen)


def faces(root: PathLike | None = None, size: int | Sequence[int] = 64, variant: str = "celeba", *,
          channels: int | None = None, fit: str = "crop", download: bool = True, progress: bool = True,
          cache: bool = True) -> ImageSet:
    """Face crops, unlabelled: ``images (N, channels, H, W) uint8``.

    ``variant="celeba"`` reads ``<root>/faces/celeba/`` (colour, 3 channels by default);
    ``variant="lfw_gray"`` reads ``<root>/faces/lfw_gray/`` (greyscale, 1 channel by default).
    CelebA's 89 x 109 crops become square by the centre crop of ``fit="crop"``.
    """
    check_choice("variant", variant, FACES_VARIANTS)
    if channels is None:
        channels = 3 if variant == "celeba" else 1
    base = data_root(root)
    folder = base / "faces" / variant
    fetch = sources.fetch_celeba if variant == "celeba" else sources.fetch_lfw_gray
    _ensure([folder], download, fetch, base, progress)
    s = load_image_folder(folder, size, channels=channels, fit=fit, progress=progress, cache=cache)
    s.split_hint, s.split_source = _hints(base, s.paths)
    return s


def facades(root: PathLike | None = None, size: int | Sequence[int] = 128, *, channels: int = 3,
            fit: str = "crop", download: bool = True, with_labels: bool = False, split_seed: int = 0,
            progress: bool = True, cache: bool = True) -> ImageSet:
    """CMP facades: ``images (N, channels, H, W) uint8``; with ``with_labels=True`` also ``label_maps``
    ``(N, 1, H, W) uint8`` of class ids 1..12 (names in ``label_map_names``), cropped like the photos.

    ``split_hint`` is train/val/test (302/37/39) from MANIFEST.tsv. A root without those hints (e.g.
    freshly downloaded: CMP defines no split) gets a seeded split of the same sizes, made by
    ``split_indices(n, FACADES_SPLIT, seed=split_seed)``; ``split_source`` says so.
    """
    base = data_root(root)
    folder = base / "facades"
    wanted = [folder / "images"] + ([folder / "labels"] if with_labels else [])
    _ensure(wanted, download, sources.fetch_facades, base, progress)
    s = load_image_folder(folder / "images", size, channels=channels, fit=fit, progress=progress, cache=cache)

    if with_labels:
        label_files = [folder / "labels" / f"{p.stem}.png" for p in s.paths]
        missing = [str(p) for p in label_files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} facade photos have no label map, e.g. {missing[0]}")
        decoded = load_images(label_files, size, fit=fit, kind="label_map", what=f"folder {folder / 'labels'}",
                              progress=progress, cache=cache)
        if len(decoded.paths) != len(label_files):  # drop the photos whose label map did not decode
            kept = set(decoded.paths)
            s = s.subset([i for i, p in enumerate(label_files) if p in kept])
            s.skipped += [p for p, _ in decoded.skipped]
        s.label_maps = decoded.images
        s.label_map_names = _label_names(folder / "label_names.txt")

    s.split_hint, s.split_source = _hints(base, s.paths)
    if s.split_hint is None:
        parts = split_indices(len(s), FACADES_SPLIT, seed=split_seed)
        hints = np.empty(len(s), dtype=object)
        for name, idx in zip(("train", "val", "test"), parts, strict=True):
            hints[idx] = name
        s.split_hint = hints.tolist()
        counts = "/".join(map(str, split_counts(len(s), FACADES_SPLIT)))
        s.split_source = (f"seeded split (seed={split_seed}), train/val/test {counts}, in the proportions "
                          f"of the source's 302/37/39: {base / 'MANIFEST.tsv'} has no split_hint for "
                          f"these files")
    return s


def _label_names(path: Path) -> dict[int, str]:
    """``{id: name}`` from CMP's ``label_names.txt`` (lines ``id name z-order``), else the built-in list."""
    if path.is_file():
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        return {int(r[0]): r[1] for r in rows}
    return {i: name for i, name, _ in sources.CMP_LABEL_NAMES}

