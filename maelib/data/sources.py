"""Fetch a missing data set from its official source into the data root's layout.

Each ``fetch_*`` function downloads into ``$MAELIB_CACHE_DIR/downloads/`` (on the local disk even
when the data root is a network or Google Drive folder), rearranges the files into a temporary
folder next to the target, renames that folder into place only when it is complete, adds the new
files to ``<root>/MANIFEST.tsv`` (with the source's split where it has one), and then deletes the
raw download. A target folder that already exists is never downloaded again.

Every file comes through :func:`maelib.download.fetch_remote`: from its official address, or from
the mirror named by ``MAELIB_DOWNLOAD_MIRROR`` at ``<mirror>/<data set>/<file name>`` (the
``mirror_path`` of each :class:`~maelib.download.RemoteFile` below).

What each one produces (the same layout as the course's shared data, but the source's own files):

* ``cats_dogs/{cats,dogs}/``: the Oxford-IIIT Pet data set (Parkhi et al. 2012, CC BY-SA 4.0):
  ``images.tar.gz`` and ``annotations.tar.gz`` from the authors' site, md5-pinned as torchvision
  pins them. All 7,349 annotated photos, sorted by species (about 2,400 cats and 4,900 dogs;
  originals, not resized). split_hint: the official ``trainval`` -> ``train``, ``test`` -> ``test``.
  :func:`maelib.data.cats_dogs` then takes its balanced subset. (The shared copy instead holds
  2,000 + 2,000 Kaggle "Dogs vs. Cats" photos, which have no official download.)
* ``faces/lfw_gray/``: LFW (UMass Amherst) ``lfw.tgz`` from the figshare mirror that
  ``sklearn.datasets.fetch_lfw_people`` uses, with the sha256 scikit-learn pins. torchvision's
  ``LFWPeople`` no longer downloads (its UMass address is gone). As in the shared copy: the first
  photo of each person, 2,000 people drawn with ``random.Random(0).sample``, converted to greyscale
  and resized from 250 x 250 to 128 x 128 (Lanczos, JPEG quality 90). No split.
* ``faces/celeba/``: CelebA aligned crops: ``img_align_celeba.zip`` and ``list_eval_partition.txt``
  from the authors' Google Drive (fetched with gdown; md5-pinned as torchvision pins them);
  images 000001-005000 are copied (178 x 218 originals; the shared copy is half size).
  split_hint from the official ``list_eval_partition.txt`` (all 5,000 are in ``train``).
* ``facades/``: the CMP Facade Database base set (``CMP_facade_DB_base.zip``, 378 photos + label
  maps) from the authors' site. CMP publishes no checksum, so the archive is verified by its
  contents: exactly 378 ``base/cmp_b*.jpg`` and 378 ``base/cmp_b*.png``. Photos go to ``images/``
  and label maps to ``labels/`` unchanged (up to 1024 px; the shared copy is reduced to 256).
  No split: ``facades()`` then makes a seeded one of the same sizes and says so.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from .. import cache
from ..download import DownloadError, RemoteFile, fetch_remote
from .manifest import manifest_row, update_manifest

OXFORD_PETS_PAGE = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
OXFORD_PETS_LICENCE = ("CC BY-SA 4.0 (Oxford-IIIT Pet Dataset, Parkhi, Vedaldi, Zisserman & Jawahar, "
                       "CVPR 2012)")
# the md5s that torchvision.datasets.OxfordIIITPet pins
PETS_IMAGES = RemoteFile("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                         "oxford-iiit-pet/images.tar.gz", md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
                         expected=["images"])
PETS_ANNOTATIONS = RemoteFile("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                              "oxford-iiit-pet/annotations.tar.gz", md5="95a8c909bbe2e81eed6a22bccdf3f68f",
                              expected=["annotations/trainval.txt", "annotations/test.txt"])

LFW_TGZ = RemoteFile("https://ndownloader.figshare.com/files/5976018",  # as in sklearn.datasets.fetch_lfw_people
                     "lfw/lfw.tgz", sha256="055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0",
                     expected={"lfw/*/*.jpg": 13233})  # 13,233 photos of 5,749 people; sha256 pinned by scikit-learn
LFW_LICENCE = ("no explicit licence; published for research by UMass Amherst (Huang et al. 2007); "
               "copyright in the photos stays with their photographers")
LFW_PEOPLE = 2000

CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_LICENCE = ("CelebA agreement: non-commercial research only; do not redistribute "
                  "(MMLAB, The Chinese University of Hong Kong)")
CELEBA_IMAGES = 5000
# the authors' Google Drive files and the md5s that torchvision.datasets.CelebA pins
CELEBA_ZIP = RemoteFile("https://drive.google.com/uc?id=0B7EVK8r0v71pZjFTYXZWM3FlRnM", "celeba/img_align_celeba.zip",
                        md5="00d2c5bc6d35e252742224ab0c1e8fcb",
                        expected=[f"img_align_celeba/{i:06d}.jpg" for i in range(1, CELEBA_IMAGES + 1)])
CELEBA_PARTITION = RemoteFile("https://drive.google.com/uc?id=0B7EVK8r0v71pY0NSMzRuSXJEVkk",
                              "celeba/list_eval_partition.txt", md5="d32c9cbf5e040fd4025c592c306e6668")

CMP_ZIP = RemoteFile("https://cmp.felk.cvut.cz/~tylecr1/facade/CMP_facade_DB_base.zip",
                     "facades/CMP_facade_DB_base.zip", expected={"base/cmp_b*.jpg": 378, "base/cmp_b*.png": 378})
CMP_LICENCE = ("research use with citation: Tylecek & Sara, 'Spatial Pattern Templates for Recognition of "
               "Objects with Regular Structure', GCPR 2013 (no explicit licence)")
# CMP's class list (facades/label_names.txt): id, name, z-order. Written when the archive lacks it.
CMP_LABEL_NAMES = [(1, "background", 1), (2, "facade", 2), (3, "window", 10), (4, "door", 5),
                   (5, "cornice", 11), (6, "sill", 3), (7, "balcony", 4), (8, "blind", 6), (9, "deco", 8),
                   (10, "molding", 7), (11, "pillar", 12), (12, "shop", 9)]


def _fetch_staged(files: dict[str, RemoteFile], *, licence: str, progress: bool,
                  by_hand: str | None = None) -> list[Path]:
    """Fetch each remote file into the download cache under its name there (``{name: remote}``): the
    extracted folders or files, in order, for a fetcher to lay out under the data root."""
    staging = cache.cache_dir("downloads")
    return [fetch_remote(remote, staging / name, licence=licence, progress=progress, by_hand=by_hand)
            for name, remote in files.items()]


def fetch_cats_dogs(root: Path, progress: bool = True) -> Path:
    """Make ``root/cats_dogs/{cats,dogs}/`` from the Oxford-IIIT Pet data set; return the folder."""
    target = _prepare(root, "cats_dogs")
    by_hand = (f"download images.tar.gz and annotations.tar.gz from {OXFORD_PETS_PAGE} (or any cat and dog "
               f"photos) and put cat photos in {target / 'cats'} and dog photos in {target / 'dogs'}")
    images, notes = _fetch_staged({"oxford-iiit-pet-images": PETS_IMAGES,
                                   "oxford-iiit-pet-annotations": PETS_ANNOTATIONS},
                                  licence=OXFORD_PETS_LICENCE, by_hand=by_hand, progress=progress)

    def build(tmp: Path) -> list[tuple[str, str]]:
        placed = []
        for split, hint in (("trainval", "train"), ("test", "test")):
            # annotations/<split>.txt: "<image name> <class id> <species: 1 cat, 2 dog> <breed id>"
            for line in (notes / "annotations" / f"{split}.txt").read_text().splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                name, _class_id, species, *_ = line.split()
                sub = "cats" if species == "1" else "dogs"
                src = images / "images" / f"{name}.jpg"
                if not src.is_file():
                    raise DownloadError(f"{src} is listed in annotations/{split}.txt but not in images.tar.gz; "
                                        f"delete {src.parent.parent} to download it again")
                (tmp / sub).mkdir(exist_ok=True)
                shutil.copyfile(src, tmp / sub / src.name)
                placed.append((f"{sub}/{src.name}", hint))
        return placed

    _build_into_place(root, target, build, progress)
    shutil.rmtree(images, ignore_errors=True)  # ~770 MB of raw download, no longer needed
    shutil.rmtree(notes, ignore_errors=True)
    return target


def fetch_lfw_gray(root: Path, progress: bool = True) -> Path:
    """Make ``root/faces/lfw_gray/`` (2,000 greyscale 128 x 128 LFW faces); return the folder."""
    target = _prepare(root, "faces/lfw_gray")
    [raw] = _fetch_staged({"lfw": LFW_TGZ}, licence=LFW_LICENCE, progress=progress)
    people = sorted(p for p in (raw / "lfw").iterdir() if p.is_dir())
    firsts = [sorted(person.glob("*.jpg"))[0] for person in people]
    chosen = sorted(random.Random(0).sample(firsts, LFW_PEOPLE), key=lambda p: p.name)

    def build(tmp: Path) -> list[tuple[str, str]]:
        for src in tqdm(chosen, desc="lfw_gray", disable=not progress, leave=False):
            with Image.open(src) as img:
                img.convert("L").resize((128, 128), Image.Resampling.LANCZOS).save(tmp / src.name, quality=90)
        return [(p.name, "") for p in chosen]

    _build_into_place(root, target, build, progress)
    shutil.rmtree(raw, ignore_errors=True)
    return target


def fetch_celeba(root: Path, progress: bool = True) -> Path:
    """Make ``root/faces/celeba/`` (CelebA aligned crops 000001-005000); return the folder."""
    target = _prepare(root, "faces/celeba")
    by_hand = (f"accept the agreement on {CELEBA_PAGE}, download img_align_celeba.zip, and put (some of) its "
               f"jpg files in {target}")
    images, listing = _fetch_staged({"celeba-images": CELEBA_ZIP, "celeba-list_eval_partition.txt": CELEBA_PARTITION},
                                    licence=CELEBA_LICENCE, by_hand=by_hand, progress=progress)
    partition = {}  # list_eval_partition.txt: "<file> <0 train | 1 val | 2 test>"
    for line in listing.read_text().splitlines():
        if line.strip():
            name, part = line.split()
            partition[name] = ("train", "val", "test")[int(part)]
    chosen = [images / "img_align_celeba" / f"{i:06d}.jpg" for i in range(1, CELEBA_IMAGES + 1)]

    def build(tmp: Path) -> list[tuple[str, str]]:
        for src in chosen:
            shutil.copyfile(src, tmp / src.name)
        return [(p.name, partition.get(p.name, "")) for p in chosen]

    _build_into_place(root, target, build, progress)
    shutil.rmtree(images, ignore_errors=True)  # 1.4 GB of raw download, no longer needed
    listing.unlink(missing_ok=True)
    return target


def fetch_facades(root: Path, progress: bool = True) -> Path:
    """Make ``root/facades/{images,labels}/`` from the CMP Facade Database base set; return the folder."""
    target = _prepare(root, "facades")
    by_hand = (f"download {CMP_ZIP.url}, unzip it, and copy its photos base/cmp_bNNNN.jpg to "
               f"{target / 'images'}/cmp_bNNNN.jpg and its label maps base/cmp_bNNNN.png to "
               f"{target / 'labels'}/cmp_bNNNN.png, then run this again")
    [raw] = _fetch_staged({"CMP_facade_DB_base": CMP_ZIP}, licence=CMP_LICENCE, by_hand=by_hand, progress=progress)

    def build(tmp: Path) -> list[tuple[str, str]]:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        placed = []
        for src in sorted((raw / "base").glob("cmp_b*.jpg")):
            shutil.copyfile(src, tmp / "images" / src.name)
            shutil.copyfile(src.with_suffix(".png"), tmp / "labels" / f"{src.stem}.png")
            placed += [(f"images/{src.name}", ""), (f"labels/{src.stem}.png", "")]
        names = next(raw.rglob("label_names.txt"), None)
        if names is not None:
            shutil.copyfile(names, tmp / "label_names.txt")
        else:
            (tmp / "label_names.txt").write_text("".join(f"{i} {n} {z}\n" for i, n, z in CMP_LABEL_NAMES))
        return placed

    _build_into_place(root, target, build, progress)
    shutil.rmtree(raw, ignore_errors=True)
    return target


def _prepare(root: Path, relative: str) -> Path:
    """Check that ``root/relative`` can be created; return it."""
    target = root / relative
    if target.exists():
        raise FileExistsError(f"{target} exists but does not hold the expected images; "
                              f"fill it by hand or delete it so that it can be downloaded again")
    if not os.access(root, os.W_OK):
        raise PermissionError(f"cannot download into the data root {root}: it is not writable; "
                              f"set MAELIB_DATA_DIR (or pass root=) to a writable folder")
    return target


def _build_into_place(root: Path, target: Path, build: Callable[[Path], list[tuple[str, str]]],
                      progress: bool) -> None:
    """Run ``build(tmp)`` in a temporary folder next to ``target``, rename it to ``target``, and add
    the files it reports as ``(path relative to target, split_hint)`` to the manifest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        placed = build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes the folder private
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [manifest_row(root, target / rel, hint)
            for rel, hint in tqdm(placed, desc="MANIFEST.tsv", disable=not progress, leave=False)]
    update_manifest(root, rows)
