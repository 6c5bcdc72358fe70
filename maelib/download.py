"""Download one file or archive, safely: verify it, extract it, and only then move it into place.

``download_and_extract`` serves every download in maelib, data sets and model weights alike:

1. If the destination is already there (and complete), nothing is downloaded.
2. The bytes go to a temporary name next to the destination (``.<name>.XXXX.part``), with a
   progress bar; a transfer that ends before the announced length is an error.
3. The sha256 is checked when one is given (never guessed: pass ``None`` when the source
   publishes none, and rely on step 4).
4. An archive is extracted into a temporary folder next to the destination, its contents are
   checked against ``expected``, and the folder is renamed into place in one step.

Whatever fails, the temporary file and folder are removed, and so are the folders that were
made to hold them: the destination either appears complete or not at all. Without a network the
error names the URL, the licence, and what to download by hand and where to put it.

Files on Google Drive (``https://drive.google.com/...``; CelebA lives there) are fetched with
``gdown``, which gets past Drive's confirmation page; when Drive refuses (its daily quota for a
popular file), the error says so and what to do.

**A mirror.** Each data set's files are :class:`RemoteFile` s: an official address and a path
``<data set>/<file name>``. With the environment variable ``MAELIB_DOWNLOAD_MIRROR=URL`` set,
:func:`fetch_remote` takes every file from ``URL/<data set>/<file name>`` instead (a classroom
server, a local copy, the tests' server on 127.0.0.1). A mirror may publish ``URL/SHA256SUMS``
(lines ``<sha256>  <data set>/<file name>``, as ``sha256sum`` writes them); a file listed there is
verified against that sha256 instead of the official checksum, so a mirror may serve other builds
of the files (the tests serve small synthetic ones). Trust a mirror as you would its files.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20  # read 1 MiB at a time
MIRROR_ENV = "MAELIB_DOWNLOAD_MIRROR"
GOOGLE_DRIVE = "drive.google.com"

# What ``expected`` may be: relative paths that must exist, or glob pattern -> exact file count.
Expected = Sequence[str] | Mapping[str, int] | None


class DownloadError(OSError):
    """A download failed (offline, broken transfer, wrong checksum, unexpected contents).

    Nothing partial is left behind when it is raised.
    """


def is_archive_name(name: str) -> bool:
    """True if ``name`` (a file name or URL path) ends in one of ``ARCHIVE_SUFFIXES``."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file, as 64 lowercase hex digits."""
    return _digest(path, "sha256")


def _digest(path: str | os.PathLike, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_and_extract(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    expected: Expected = None,
    licence: str = "not stated",
    extract: bool | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    by_hand: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest`` (a folder for archives, else a file).

    Args:
        url: http(s) address of a file or of a .zip / .tar(.gz|.bz2|.xz) archive (a Google Drive
            address is fetched with ``gdown``).
        dest: for an archive, the folder that receives its contents; otherwise the file path.
        sha256: expected sha256 of the downloaded bytes (the archive itself), or ``None``.
        md5: expected md5 of the downloaded bytes, for sources that publish only an md5 (checked
            like ``sha256``; give either or both).
        expected: what a complete archive contains: a list of relative paths that must exist,
            or a mapping ``{glob pattern: exact number of files}``, e.g. ``{"base/*.jpg": 378}``.
            Checked after extraction and on every cached call; unused for a single file (whose
            sha256, when given, is re-checked on every cached call instead).
        licence: the licence or terms of the data, repeated in every error message.
        extract: whether to extract; ``None`` decides from the URL's file name suffix.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server before giving up.
        by_hand: what the error messages tell the user to do by hand, e.g. "download URL and put
            its photos in FOLDER" when ``dest`` is only a staging folder (default: download ``url``
            and extract it into, or save it as, ``dest``). The licence is added to it.

    Raises:
        DownloadError: offline, HTTP error, truncated transfer, checksum mismatch, or an
            archive without the expected contents. Nothing partial is kept.
    """
    dest = Path(dest)
    if extract is None:
        extract = is_archive_name(urlparse(url).path)
    for name, value, digits in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is not None and (len(value) != digits or any(c not in "0123456789abcdef" for c in value.lower())):
            raise ValueError(f"{name} must be {digits} hex digits, got {value!r}")
    manual = _manual_hint(url, dest, licence, extract, by_hand)

    # 1. Cached: a complete destination is never downloaded again.
    if extract and dest.is_dir():
        problems = check_expected(dest, expected)
        if problems:
            raise DownloadError(
                f"{dest} exists but is incomplete ({'; '.join(problems)}). Delete it to download "
                f"again. {manual}"
            )
        return dest
    if not extract and dest.is_file():
        if sha256 is not None and sha256_of(dest) != sha256.lower():
            raise DownloadError(f"{dest} exists but its sha256 is not {sha256}. Delete it to download again.")
        return dest
    if dest.exists():
        kind = "a file" if dest.is_file() else "a folder"
        raise DownloadError(f"{dest} is {kind}, which is not what downloading {url} makes; move it away.")

    made = list(takewhile(lambda folder: not folder.exists(), dest.parents))  # made below, deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    part = Path(part_name)
    unpacked: Path | None = None
    try:
        # 2. Fetch into the temporary file.
        if urlparse(url).hostname == GOOGLE_DRIVE:
            _fetch_google_drive(url, part, progress=progress, manual=manual)
        else:
            _fetch(url, part, dest, progress=progress, timeout=timeout, manual=manual)

        # 3. Verify the checksums, when the source publishes them.
        for name, wanted in (("sha256", sha256), ("md5", md5)):
            got = _digest(part, name) if wanted is not None else None
            if got is not None and got != wanted.lower():
                raise DownloadError(
                    f"{name} mismatch for {url}: expected {wanted.lower()}, got {got}; "
                    f"the file was deleted. {manual}"
                )

        if not extract:
            os.chmod(part, 0o644)  # mkstemp makes files private; a download is for everyone to read
            os.replace(part, dest)
            return dest

        # 4. Extract next to the destination, check, then move into place in one rename.
        unpacked = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extract", dir=dest.parent))
        try:
            _extract(part, unpacked, url)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
            raise DownloadError(
                f"the archive from {url} is damaged ({err}); nothing was kept. {manual}"
            ) from err
        problems = check_expected(unpacked, expected)
        if problems:
            raise DownloadError(
                f"the archive from {url} does not have the expected contents ({'; '.join(problems)}); "
                f"nothing was kept. {manual}"
            )
        os.chmod(unpacked, 0o755)  # likewise for mkdtemp's folder
        try:
            os.replace(unpacked, dest)
        except OSError:
            if not dest.is_dir():  # not a concurrent download that finished first
                raise
        return dest
    finally:
        part.unlink(missing_ok=True)
        if unpacked is not None and unpacked.exists():
            shutil.rmtree(unpacked, ignore_errors=True)
        if not dest.exists():  # failed: the folders made for it go too, unless something else is in them now
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official source, as :func:`fetch_remote` fetches it.

    Attributes:
        url: the official address (an http(s) URL; a Google Drive one is fetched with gdown).
        mirror_path: where a mirror keeps it: ``<data set>/<file name>``, e.g. ``lfw/lfw.tgz``.
        sha256 / md5: the official checksums (``None`` where the source publishes none).
        expected: what the extracted archive holds (see :func:`download_and_extract`).
    """

    url: str
    mirror_path: str
    sha256: str | None = None
    md5: str | None = None
    expected: Expected = None


def download_mirror() -> str | None:
    """The mirror in force: ``$MAELIB_DOWNLOAD_MIRROR`` without a trailing slash, else ``None``."""
    value = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    if value and urlparse(value).scheme not in ("http", "https", "file"):
        raise ValueError(f"{MIRROR_ENV}={value!r} is not an http(s) or file URL; set it to e.g. "
                         f"http://server/maelib-data, or unset it to use the official sources")
    return value or None


def mirror_checksums(mirror: str, timeout: float = 60.0) -> dict[str, str]:
    """``{<data set>/<file name>: sha256}`` from ``mirror/SHA256SUMS``; empty when the mirror has none."""
    try:
        with urlopen(Request(f"{mirror}/SHA256SUMS"), timeout=timeout) as response:
            text = response.read().decode()
    except HTTPError as err:
        if err.code == 404:
            return {}
        raise DownloadError(f"the mirror {mirror} ({MIRROR_ENV}) answered {err.code} for SHA256SUMS") from err
    except URLError as err:
        if isinstance(err.reason, FileNotFoundError):  # a file:// mirror without the list
            return {}
        raise DownloadError(f"could not reach the mirror {mirror} set by {MIRROR_ENV} ({err.reason}); fix or "
                            f"unset {MIRROR_ENV}") from err
    except OSError as err:
        raise DownloadError(f"could not reach the mirror {mirror} set by {MIRROR_ENV} ({err}); fix or unset "
                            f"{MIRROR_ENV}") from err
    sums = {}
    for line in filter(str.strip, text.splitlines()):
        digest, _, name = line.strip().partition(" ")
        if len(digest) != 64 or not name.strip():
            raise DownloadError(f"{mirror}/SHA256SUMS has a line that is not '<sha256>  <data set>/<file name>': "
                                f"{line!r}")
        sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def fetch_remote(remote: RemoteFile, dest: str | os.PathLike, *, licence: str = "not stated",
                 progress: bool = True, by_hand: str | None = None) -> Path:
    """Download ``remote`` to ``dest`` (extracted when it is an archive) from its official address, or
    from the mirror that ``MAELIB_DOWNLOAD_MIRROR`` names; see :func:`download_and_extract`."""
    url, sha256, md5 = remote.url, remote.sha256, remote.md5
    mirror = download_mirror()
    if mirror is not None:
        url = f"{mirror}/{remote.mirror_path}"
        listed = mirror_checksums(mirror).get(remote.mirror_path)
        if listed is not None:  # the mirror's own build of the file
            sha256, md5 = listed, None
    return download_and_extract(url, dest, sha256=sha256, md5=md5, expected=remote.expected, licence=licence,
                                extract=is_archive_name(remote.mirror_path), progress=progress, by_hand=by_hand)


def check_expected(folder: Path, expected: Expected) -> list[str]:
    """Return what is wrong with ``folder`` compared with ``expected`` (empty list: all good)."""
    if expected is None:
        return []
    problems = []
    if isinstance(expected, Mapping):
        for pattern, count in expected.items():
            found = sum(1 for p in folder.glob(pattern) if p.is_file())
            if found != count:
                problems.append(f"{found} files match {pattern!r}, expected {count}")
    else:
        missing = [rel for rel in expected if not (folder / rel).exists()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problems.append(f"missing {shown}")
    return problems


def _manual_hint(url: str, dest: Path, licence: str, extract: bool, by_hand: str | None = None) -> str:
    where = f"extract it so that its contents are in {dest}" if extract else f"save it as {dest}"
    how = by_hand or f"download {url}, {where}, and run this again"
    return f"To do it by hand: {how}. Licence/terms: {licence}."


def _fetch(url: str, part: Path, dest: Path, *, progress: bool, timeout: float, manual: str) -> None:
    """Stream ``url`` into ``part``; raise DownloadError on failure."""
    request = Request(url, headers={"User-Agent": "maelib (python urllib)"})
    received, total = 0, None
    try:
        with urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except HTTPError as err:
        raise DownloadError(f"the server answered {err.code} {err.reason} for {url}. {manual}") from err
    except URLError as err:
        # No connection at all: offline, DNS failure, connection refused, firewall.
        raise DownloadError(
            f"could not reach {url} ({err.reason}); are you offline? {manual}"
        ) from err
    except (http.client.HTTPException, OSError) as err:
        # Connected, but the transfer broke off (reset, timeout, incomplete read).
        raise DownloadError(
            f"the download of {url} broke off after {received} bytes ({err!r}); nothing was kept. {manual}"
        ) from err
    # urllib does not complain when the server closes early; compare with the announced length.
    if total is not None and received != total:
        raise DownloadError(
            f"the download of {url} is truncated: received {received} of {total} bytes; "
            f"nothing was kept. {manual}"
        )


def _fetch_google_drive(url: str, part: Path, *, progress: bool, manual: str) -> None:
    """Fetch a Google Drive file into ``part`` with gdown; raise DownloadError on failure."""
    try:
        import gdown
        import requests
    except ImportError as err:
        raise DownloadError(f"{url} is on Google Drive, which needs the package gdown (a dependency of "
                            f"maelib: pip install gdown). {manual}") from err
    try:
        with open(part, "wb") as out:
            gdown.download(url, out, quiet=not progress)
    except gdown.exceptions.FileURLRetrievalError as err:
        reason = " ".join(str(err).split())
        raise DownloadError(
            f"Google Drive refused {url}. For a popular file that usually means its daily download quota "
            f"is used up: try again in a day. Drive said: {reason[:300]} {manual}"
        ) from err
    except (requests.RequestException, OSError) as err:
        raise DownloadError(f"could not fetch {url} from Google Drive ({err!r}); are you offline? {manual}") from err


def _extract(archive: Path, into: Path, url: str) -> None:
    """Extract a zip or tar archive (format found from its content) into ``into``, refusing paths
    that would escape the folder."""
    root = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (into / name).resolve()
                if not target.is_relative_to(root):
                    raise DownloadError(f"the archive from {url} has an unsafe path {name!r}; not extracted")
            zf.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: the safe filter
                tf.extractall(into, filter="data")
            else:  # pragma: no cover - older Pythons
                for member in tf.getmembers():
                    target = (into / member.name).resolve()
                    if not target.is_relative_to(root) or member.issym() or member.islnk():
                        raise DownloadError(f"the archive from {url} has an unsafe member {member.name!r}")
                tf.extractall(into)
    else:
        raise DownloadError(f"the file from {url} is neither a zip nor a tar archive; nothing was kept")
