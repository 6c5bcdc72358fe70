"""A mirror of the course's official data sources, made of small synthetic images, and a server for it.

``build_mirror(folder)`` writes, in each source's own archive format and layout, what a first run
downloads (see ``maelib.data.sources``), at ``folder/<data set>/<file name>`` where
``MAELIB_DOWNLOAD_MIRROR`` looks for it, plus ``folder/SHA256SUMS``:

* ``oxford-iiit-pet/images.tar.gz`` (``images/<Breed>_<k>.jpg``) and ``annotations.tar.gz``
  (``annotations/{list,trainval,test}.txt``: ``<name> <class id> <species 1 cat / 2 dog> <breed id>``);
  more than 1,000 photos per species in each split, fewer dogs than the real 4,900 but still
  unbalanced, so the balanced subset has something to do;
* ``lfw/lfw.tgz`` (``lfw/<Name>/<Name>_NNNN.jpg``): 13,233 colour photos of 5,749 people;
* ``celeba/img_align_celeba.zip`` (``img_align_celeba/NNNNNN.jpg``) and ``celeba/list_eval_partition.txt``,
  the two files of CelebA that torchvision's ``CelebA`` keeps in ``celeba/``;
* ``facades/CMP_facade_DB_base.zip`` (``base/cmp_bNNNN.jpg`` + palette ``base/cmp_bNNNN.png`` of class ids 1-12).

The counts are the real ones where maelib checks them, so the lessons print what they print on the
real data. Every image is a few dozen pixels (a colour ramp plus noise): about 8 MB in all, made in
a few seconds. Nothing here is copied from a real data set.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
from helpers import serve_folder
from PIL import Image

CAT_BREEDS = ["Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon",
              "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx"]
DOG_BREEDS = [f"breed{k:02d}" for k in range(25)]  # Oxford-IIIT Pet: cat breeds capitalised, dog breeds not
PETS_PER_BREED = {"cat": (92, 91), "dog": (46, 45)}  # (trainval, test) photos per breed: 1,104 / 1,092 cats
LFW_PEOPLE, LFW_PHOTOS = 5749, 13233
CELEBA_FILES = 5100  # the real zip holds 202,599; maelib takes 000001-005000
FACADES = 378


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass


@contextlib.contextmanager
def serve_mirror(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1; yield its URL (what ``MAELIB_DOWNLOAD_MIRROR`` is set to)."""
    with serve_folder(folder, QuietHandler) as url:
        yield url


def build_mirror(folder: Path, seed: int = 0) -> dict[str, str]:
    """Write the mirror into ``folder``; return ``{<data set>/<file name>: sha256}`` (also in SHA256SUMS)."""
    rng = np.random.default_rng(seed)
    files = {
        **_pets(rng),
        "lfw/lfw.tgz": _tar_gz(_lfw(rng)),
        **_celeba(rng),
        "facades/CMP_facade_DB_base.zip": _zip(_facades(rng)),
    }
    sums = {}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    (folder / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return sums


def photo(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A small JPEG: a random colour ramp with noise."""
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(-120, 120, 3)
    pixels = rng.uniform(40, 215, 3) + ramp + rng.normal(0, 12, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=75)
    return buf.getvalue()


def label_map(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A palette PNG of class ids 1-12 in horizontal bands laid out like a facade's: background (1) at the
    top, then facade, windows, cornices, sills, balconies (2-3, 5-11), and doors and shops (4, 12) in the
    bottom quarter, the ground floor."""
    top, ground = max(1, height // 10), height * 3 // 4
    rows = np.concatenate([np.ones(top, int), rng.choice([2, 3, 3, 5, 6, 7, 8, 9, 10, 11], ground - top),
                           rng.choice([2, 4, 12, 12], height - ground)]).astype(np.uint8)
    img = Image.fromarray(np.repeat(rows[:, None], width, axis=1), mode="P")
    img.putpalette([v for i in range(256) for v in (i * 20 % 256, 255 - i * 20 % 256, i * 7 % 256)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _pets(rng: np.random.Generator) -> dict[str, bytes]:
    images, rows = {}, {"trainval": [], "test": []}
    breeds = [(b, "cat") for b in CAT_BREEDS] + [(b, "dog") for b in DOG_BREEDS]
    for class_id, (breed, species) in enumerate(breeds, start=1):
        n_trainval, n_test = PETS_PER_BREED[species]
        breed_id = (CAT_BREEDS if species == "cat" else DOG_BREEDS).index(breed) + 1
        for k in range(1, n_trainval + n_test + 1):
            name = f"{breed}_{k}"
            images[f"images/{name}.jpg"] = photo(rng, 24, 18)
            split = "trainval" if k <= n_trainval else "test"
            rows[split].append(f"{name} {class_id} {1 if species == 'cat' else 2} {breed_id}")
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
    notes = {f"annotations/{split}.txt": ("\n".join(lines) + "\n").encode() for split, lines in rows.items()}
    notes["annotations/list.txt"] = (header + "\n".join(rows["trainval"] + rows["test"]) + "\n").encode()
    return {"oxford-iiit-pet/images.tar.gz": _tar_gz(images), "oxford-iiit-pet/annotations.tar.gz": _tar_gz(notes)}


def _lfw(rng: np.random.Generator) -> dict[str, bytes]:
    extra = LFW_PHOTOS - LFW_PEOPLE  # photos beyond each person's first
    files = {}
    for k in range(LFW_PEOPLE):
        name = f"Person_{k:04d}"
        count = 1 + min(4, max(0, extra - 4 * k))  # the first people have five photos, the rest one
        for j in range(1, count + 1):
            files[f"lfw/{name}/{name}_{j:04d}.jpg"] = photo(rng, 25, 25)
    assert len(files) == LFW_PHOTOS
    return files


def _celeba(rng: np.random.Generator) -> dict[str, bytes]:
    names = [f"{i:06d}.jpg" for i in range(1, CELEBA_FILES + 1)]
    zipped = _zip({f"img_align_celeba/{name}": photo(rng, 18, 22) for name in names})
    partition = "".join(f"{name} 0\n" for name in names).encode()  # ids 1-162,770 are CelebA's train partition
    return {"celeba/img_align_celeba.zip": zipped, "celeba/list_eval_partition.txt": partition}


def _facades(rng: np.random.Generator) -> dict[str, bytes]:
    files = {}
    for i in range(1, FACADES + 1):
        width, height = (24, 32) if i % 2 else (32, 24)
        files[f"base/cmp_b{i:04d}.jpg"] = photo(rng, width, height)
        files[f"base/cmp_b{i:04d}.png"] = label_map(rng, width, height)
    return files


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
