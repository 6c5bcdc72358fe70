"""``MANIFEST.tsv`` at the data root: one row per file with its sha256, size and ``split_hint``.

The shared course data ships one; a download writes rows for the files it adds, so a downloaded
root looks the same. Columns: ``relative_path  sha256  width  height  split_hint``.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from ..download import sha256_of

MANIFEST = "MANIFEST.tsv"
COLUMNS = ("relative_path", "sha256", "width", "height", "split_hint")


def relative_to_root(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, with forward slashes (the manifest's key)."""
    return Path(os.path.relpath(Path(path).absolute(), Path(root).absolute())).as_posix()


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """``{relative_path: row}`` from ``root/MANIFEST.tsv``; empty when there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["relative_path"]: row for row in csv.DictReader(f, delimiter="\t")}


def manifest_split_hints(root: Path, paths: Sequence[Path]) -> list[str] | None:
    """The ``split_hint`` of each path ('' where none), or ``None`` if no path has one."""
    rows = read_manifest(root)
    hints = [rows.get(relative_to_root(root, p), {}).get("split_hint", "") or "" for p in paths]
    return hints if any(hints) else None


def manifest_row(root: Path, path: Path, split_hint: str = "") -> dict[str, str]:
    """A manifest row for one file (reads its bytes for the sha256 and its header for the size)."""
    with Image.open(path) as img:
        width, height = img.size
    return {"relative_path": relative_to_root(root, path), "sha256": sha256_of(path),
            "width": str(width), "height": str(height), "split_hint": split_hint}


def update_manifest(root: Path, rows: Iterable[dict[str, str]]) -> None:
    """Add ``rows`` to ``root/MANIFEST.tsv`` (replacing rows with the same path); atomic rewrite."""
    merged = read_manifest(root)
    for row in rows:
        merged[row["relative_path"]] = row
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=root)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            for key in sorted(merged):
                writer.writerow({c: merged[key].get(c, "") for c in COLUMNS})
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a manifest is for everyone to read
        os.replace(tmp, Path(root) / MANIFEST)
    finally:
        Path(tmp).unlink(missing_ok=True)
