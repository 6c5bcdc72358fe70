"""download_and_extract and the data-set fetchers, against a local HTTP server on 127.0.0.1.

No test reaches another host: the server runs in a thread and serves archives built in tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import zipfile
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import closed_port_url as closed_port_url_on
from helpers import serve_folder
from PIL import Image

from maelib.data import DownloadError, download_and_extract, facades, faces, read_manifest, sources

LICENCE = "CC-TEST-1.0 (made up for this test)"


class Handler(SimpleHTTPRequestHandler):
    """Serves files from a folder; ``/truncated.zip`` announces 100000 bytes and sends 1000."""

    def do_GET(self):  # noqa: N802 - the name http.server wants
        if self.path == "/truncated.zip":
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK" + b"\0" * 998)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # A proxy from the environment must not see requests to 127.0.0.1.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own cache, outside tmp_path; downloads are staged in its downloads/."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MAELIB_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def server(tmp_path):
    """``(base_url, folder)``: files written into ``folder`` are served at ``base_url/<name>``."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serve_folder(folder, Handler) as url:
        yield url, folder


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    return closed_port_url_on("/data.zip")


def make_zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tar_gz(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def temp_leftovers(name: str) -> list[str]:
    return [p for p in Path(tempfile.gettempdir()).iterdir() if name in p.name]


FILES = {"pack/a.txt": b"alpha", "pack/sub/b.txt": b"beta"}


def test_zip_is_extracted_verified_and_cached(server, tmp_path, closed_port_url):
    base, served = server
    sha = make_zip(served / "pack.zip", FILES)
    dest = tmp_path / "out" / "pack_dest"
    got = download_and_extract(f"{base}/pack.zip", dest, sha256=sha, expected=list(FILES), licence=LICENCE,
                               progress=False)
    assert got == dest
    assert (dest / "pack" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "pack" / "sub" / "b.txt").read_bytes() == b"beta"
    assert leftovers(dest.parent) == ["pack_dest"]  # no .part file, no extraction folder, no archive
    # A complete destination is not downloaded again: an unreachable URL still succeeds.
    assert download_and_extract(closed_port_url, dest, expected=list(FILES), progress=False) == dest


def test_tar_gz_with_glob_counts(server, tmp_path):
    base, served = server
    files = {f"data/{i}.txt": str(i).encode() for i in range(3)}
    sha = make_tar_gz(served / "d.tar.gz", files)
    dest = tmp_path / "d"
    download_and_extract(f"{base}/d.tar.gz", dest, sha256=sha, expected={"data/*.txt": 3}, progress=False)
    assert sorted(p.name for p in (dest / "data").iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert leftovers(tmp_path) == ["d", "served"]


def test_plain_file_such_as_weights(server, tmp_path, closed_port_url):
    base, served = server
    payload = bytes(range(256)) * 100
    (served / "model.pth").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "weights" / "model.pth"
    assert download_and_extract(f"{base}/model.pth", dest, sha256=sha, progress=False) == dest
    assert dest.read_bytes() == payload
    assert leftovers(dest.parent) == ["model.pth"]
    offline_url = closed_port_url.replace("data.zip", "model.pth")
    assert download_and_extract(offline_url, dest, sha256=sha, progress=False) == dest  # cached


def test_wrong_sha256_fails_and_leaves_nothing(server, tmp_path):
    base, served = server
    make_zip(served / "pack.zip", FILES)
    dest = tmp_path / "out" / "pack_dest"
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        download_and_extract(f"{base}/pack.zip", dest, sha256="0" * 64, licence=LICENCE, progress=False)
    assert "0" * 64 in str(err.value) and LICENCE in str(err.value)
    assert leftovers(dest.parent) == []
    assert temp_leftovers("pack_dest") == []


def test_unexpected_archive_contents_fail_and_leave_nothing(server, tmp_path):
    base, served = server
    make_zip(served / "pack.zip", FILES)
    dest = tmp_path / "out" / "pack_dest"
    with pytest.raises(DownloadError, match=r"1 files match 'pack/\*\.txt', expected 2"):
        download_and_extract(f"{base}/pack.zip", dest, expected={"pack/*.txt": 2}, progress=False)
    assert leftovers(dest.parent) == []


def test_truncated_transfer_fails_and_leaves_nothing(server, tmp_path):
    base, _ = server
    dest = tmp_path / "out" / "trunc"
    # Our own length check, or (on Pythons whose http.client raises IncompleteRead) the "broke off" path.
    expected = "truncated: received 1000 of 100000 bytes|broke off after 1000"
    with pytest.raises(DownloadError, match=expected) as err:
        download_and_extract(f"{base}/truncated.zip", dest, licence=LICENCE, progress=False)
    assert f"{base}/truncated.zip" in str(err.value)
    assert leftovers(dest.parent) == []
    assert temp_leftovers("trunc") == []


def test_offline_error_names_url_folder_and_licence(tmp_path, closed_port_url):
    dest = tmp_path / "out" / "facades_raw"
    with pytest.raises(DownloadError) as err:
        download_and_extract(closed_port_url, dest, licence=LICENCE, progress=False)
    message = str(err.value)
    assert closed_port_url in message
    assert str(dest) in message
    assert LICENCE in message
    assert "by hand" in message and "offline" in message
    assert leftovers(dest.parent) == []


def test_a_failed_download_leaves_no_staging_folder(server, tmp_path, closed_port_url):
    base, served = server
    make_zip(served / "pack.zip", FILES)
    failures = [(closed_port_url, {}), (f"{base}/missing.zip", {}), (f"{base}/pack.zip", {"sha256": "0" * 64})]
    for url, kwargs in failures:  # offline, 404, wrong checksum
        with pytest.raises(DownloadError):
            download_and_extract(url, tmp_path / ".downloads" / "sub" / "pack", progress=False, **kwargs)
        assert leftovers(tmp_path) == ["served"]  # neither .downloads/sub/ nor .downloads/
    (tmp_path / ".downloads").mkdir()  # a folder that was there before stays
    with pytest.raises(DownloadError):
        download_and_extract(closed_port_url, tmp_path / ".downloads" / "pack", progress=False)
    assert leftovers(tmp_path) == [".downloads", "served"]


def test_http_error_is_reported(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="404"):
        download_and_extract(f"{base}/missing.zip", tmp_path / "x", progress=False)
    assert leftovers(tmp_path) == ["served"]


def test_unsafe_zip_member_is_refused(server, tmp_path):
    base, served = server
    make_zip(served / "evil.zip", {"../evil.txt": b"x", "ok.txt": b"y"})
    dest = tmp_path / "out" / "evil"
    with pytest.raises(DownloadError, match="unsafe"):
        download_and_extract(f"{base}/evil.zip", dest, progress=False)
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert leftovers(dest.parent) == []


def test_incomplete_existing_folder_is_an_error(tmp_path, closed_port_url):
    dest = tmp_path / "half"
    (dest / "pack").mkdir(parents=True)
    with pytest.raises(DownloadError, match="incomplete"):
        download_and_extract(closed_port_url, dest, expected=list(FILES), progress=False)


def test_malformed_sha256_argument(tmp_path):
    with pytest.raises(ValueError, match="64 hex digits"):
        download_and_extract("http://127.0.0.1:9/x.zip", tmp_path / "x", sha256="abc")


# ----------------------------------------------------------------------------- fetchers -> layout


def jpeg_bytes(rng: np.random.Generator, size=(12, 10), mode="RGB") -> bytes:
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def palette_png(rng: np.random.Generator, size=(12, 10)) -> bytes:
    img = Image.fromarray(rng.integers(1, 13, (size[1], size[0]), dtype=np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_facades_download_builds_the_layout(server, tmp_path, monkeypatch, cache):
    """A fake CMP archive (378 photos + label maps under base/) becomes facades/{images,labels}/."""
    base, served = server
    rng = np.random.default_rng(0)
    files = {}
    for i in range(1, 379):
        files[f"base/cmp_b{i:04d}.jpg"] = jpeg_bytes(rng)
        files[f"base/cmp_b{i:04d}.png"] = palette_png(rng)
    make_zip(served / "CMP_facade_DB_base.zip", files)
    monkeypatch.setattr(sources, "CMP_ZIP", replace(sources.CMP_ZIP, url=f"{base}/CMP_facade_DB_base.zip"))
    root = tmp_path / "root"
    root.mkdir()

    s = facades(root, size=8, with_labels=True, progress=False)
    assert s.images.shape == (378, 3, 8, 8) and s.label_maps.shape == (378, 1, 8, 8)
    assert set(s.label_maps.unique().tolist()) <= set(range(1, 13))
    assert [s.split_hint.count(k) for k in ("train", "val", "test")] == [302, 37, 39]
    assert s.split_source.startswith("seeded split (seed=0), train/val/test 302/37/39")
    assert len(list((root / "facades" / "images").glob("cmp_b*.jpg"))) == 378
    assert len(list((root / "facades" / "labels").glob("cmp_b*.png"))) == 378
    assert s.label_map_names[3] == "window"
    assert leftovers(cache / "downloads") == []  # raw download removed
    assert leftovers(root) == ["MANIFEST.tsv", "facades"]
    assert "facades/images/cmp_b0001.jpg" in read_manifest(root)
    # Present now: a second call neither downloads nor needs the server.
    monkeypatch.setattr(sources, "CMP_ZIP", replace(sources.CMP_ZIP, url="http://127.0.0.1:9/unreachable.zip"))
    assert len(facades(root, size=8, progress=False)) == 378


def test_a_failed_facades_download_says_where_the_files_go(tmp_path, monkeypatch, closed_port_url):
    monkeypatch.setattr(sources, "CMP_ZIP", replace(sources.CMP_ZIP, url=closed_port_url))
    with pytest.raises(DownloadError, match="offline") as err:
        facades(tmp_path, size=8, progress=False)
    message = str(err.value)
    assert f"{tmp_path}/facades/images/cmp_bNNNN.jpg" in message  # the documented layout
    assert f"{tmp_path}/facades/labels/cmp_bNNNN.png" in message
    assert "downloads" not in message  # not the staging folder
    assert sources.CMP_LICENCE in message
    assert leftovers(tmp_path) == []


def test_lfw_download_makes_greyscale_128(server, tmp_path, monkeypatch):
    base, served = server
    rng = np.random.default_rng(1)
    files = {f"lfw/Person_{k:02d}/Person_{k:02d}_{j:04d}.jpg": jpeg_bytes(rng, (30, 30))
             for k in range(8) for j in (1, 2)}
    sha = make_tar_gz(served / "lfw.tgz", files)
    monkeypatch.setattr(sources, "LFW_TGZ", replace(sources.LFW_TGZ, url=f"{base}/lfw.tgz", sha256=sha,
                                                    expected={"lfw/*/*.jpg": 16}))
    monkeypatch.setattr(sources, "LFW_PEOPLE", 5)
    root = tmp_path / "root"
    root.mkdir()

    s = faces(root, size=16, variant="lfw_gray", progress=False)
    written = sorted((root / "faces" / "lfw_gray").iterdir())
    assert len(written) == 5 and all(p.name.endswith("_0001.jpg") for p in written)
    with Image.open(written[0]) as img:
        assert img.mode == "L" and img.size == (128, 128)
    assert s.images.shape == (5, 1, 16, 16)


def pets_archives(served: Path, rows: dict[str, list[str]], missing: str = "") -> None:
    """Oxford-IIIT Pet's two archives: images/<name>.jpg and annotations/{trainval,test}.txt."""
    rng = np.random.default_rng(2)
    names = [line.split()[0] for lines in rows.values() for line in lines]
    make_tar_gz(served / "images.tar.gz", {f"images/{n}.jpg": jpeg_bytes(rng) for n in names if n != missing})
    make_tar_gz(served / "annotations.tar.gz",
                {f"annotations/{split}.txt": ("\n".join(lines) + "\n").encode() for split, lines in rows.items()})


PETS_ROWS = {"trainval": ["Abyssinian_1 1 1 1", "beagle_1 2 2 1", "beagle_2 2 2 1"],
             "test": ["Bengal_1 6 1 2", "pug_1 26 2 20"]}


@pytest.fixture
def pets_urls(server, monkeypatch):
    base, served = server
    for name in ("PETS_IMAGES", "PETS_ANNOTATIONS"):
        remote = getattr(sources, name)
        monkeypatch.setattr(sources, name, replace(remote, url=f"{base}/{remote.url.rsplit('/', 1)[1]}", md5=None))
    return served


def test_cats_dogs_download_sorts_by_species(pets_urls, tmp_path, cache):
    pets_archives(pets_urls, PETS_ROWS)
    from maelib.data import cats_dogs

    s = cats_dogs(tmp_path, size=8, per_class=None, progress=False)
    cats = sorted(p.name for p in (tmp_path / "cats_dogs" / "cats").iterdir())
    assert cats == ["Abyssinian_1.jpg", "Bengal_1.jpg"]
    assert len(list((tmp_path / "cats_dogs" / "dogs").iterdir())) == 3
    assert s.labels.tolist() == [0, 0, 1, 1, 1] and s.class_names == ["cat", "dog"]
    hint = dict(zip([p.name for p in s.paths], s.split_hint, strict=True))
    assert hint["Bengal_1.jpg"] == "test" and hint["beagle_2.jpg"] == "train"
    assert leftovers(cache / "downloads") == []  # raw downloads removed
    # the balanced set: one cat and one dog from each split
    two = cats_dogs(tmp_path, size=8, per_class=2, progress=False)
    assert torch.bincount(two.labels).tolist() == [2, 2] and sorted(two.split_hint) == ["test"] * 2 + ["train"] * 2
    with pytest.raises(ValueError, match=r"cats_dogs/cats: its 'test' split has 1 files, fewer than the 2"):
        cats_dogs(tmp_path, size=8, per_class=4, progress=False)


def test_an_annotated_photo_missing_from_the_archive_is_an_error(pets_urls, tmp_path):
    pets_archives(pets_urls, PETS_ROWS, missing="pug_1")
    from maelib.data import cats_dogs

    with pytest.raises(DownloadError, match=r"pug_1.jpg is listed in annotations/test.txt but not in images.tar.gz"):
        cats_dogs(tmp_path, size=8, progress=False)
    assert not (tmp_path / "cats_dogs").exists()


def test_failed_pets_download_explains_what_to_do(tmp_path, monkeypatch, closed_port_url):
    monkeypatch.setattr(sources, "PETS_IMAGES", replace(sources.PETS_IMAGES, url=closed_port_url))
    from maelib.data import cats_dogs

    with pytest.raises(DownloadError) as err:
        cats_dogs(tmp_path, size=8, progress=False)
    message = str(err.value)
    assert str(tmp_path / "cats_dogs" / "cats") in message and "CC BY-SA 4.0" in message
    assert "images.tar.gz and annotations.tar.gz" in message and "offline" in message
    assert leftovers(tmp_path) == []


def test_an_md5_is_checked_like_a_sha256(server, tmp_path):
    base, served = server
    make_zip(served / "pack.zip", FILES)
    md5 = hashlib.md5((served / "pack.zip").read_bytes()).hexdigest()
    assert download_and_extract(f"{base}/pack.zip", tmp_path / "ok", md5=md5, progress=False) == tmp_path / "ok"
    with pytest.raises(DownloadError, match=f"md5 mismatch for {base}/pack.zip: expected {'0' * 32}, got {md5}"):
        download_and_extract(f"{base}/pack.zip", tmp_path / "bad", md5="0" * 32, progress=False)
    assert leftovers(tmp_path) == ["ok", "served"]
    with pytest.raises(ValueError, match="md5 must be 32 hex digits"):
        download_and_extract(f"{base}/pack.zip", tmp_path / "x", md5="abc")
