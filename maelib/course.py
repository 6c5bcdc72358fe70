"""Running the lessons from the command line, and keeping their links true.

``python -m maelib lessons list``            the lessons in ``notebooks/``
``python -m maelib lessons run 00 01``       execute lessons top to bottom into rendered copies
``python -m maelib lessons sync-urls``       rewrite Colab badges and install cells from pyproject

The repository URL stands in one place, ``[project.urls] Repository`` in ``pyproject.toml``;
every notebook's "Open in Colab" badge and Colab install cell, and README's lesson table, are
derived from it by ``sync-urls`` (a test checks they agree).
"""

from __future__ import annotations

import os
import re
import time
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"


def repository_url(root: Path = REPO_ROOT) -> str:
    """The course repository, from ``pyproject.toml`` (e.g. ``https://github.com/owner/name``)."""
    with open(root / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["urls"]["Repository"].rstrip("/")


def colab_url(notebook: str, repo_url: str) -> str:
    """The Colab address of a notebook of a GitHub repository (branch main)."""
    slug = repo_url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook}"


def lesson_paths(selection: list[str] | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """Lessons ``NN_name.ipynb`` in order; ``selection`` picks by number (``"01"``) or name."""
    lessons = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return lessons
    chosen = [p for p in lessons if any(p.name.startswith(s) or p.stem == s for s in selection)]
    if not chosen:
        raise ValueError(f"no lesson matches {selection}; lessons are {[p.stem for p in lessons]}")
    return chosen


def run_lessons(selection: list[str] | None = None, *, preset: str | None = None, out_dir: Path | None = None,
                inplace: bool = False, timeout: int = 3600) -> list[tuple[Path, float]]:
    """Execute lessons top to bottom; write each rendered copy to ``out_dir`` (or over the original).

    Returns ``[(rendered_path, seconds)]``. The kernel inherits this process's environment plus
    ``MAELIB_PRESET`` when ``preset`` is given.
    """
    import nbformat
    from nbclient import NotebookClient

    if preset is not None:
        os.environ["MAELIB_PRESET"] = preset
    out_dir = Path(out_dir or REPO_ROOT / "runs" / "notebooks")
    results = []
    for path in lesson_paths(selection):
        nb = nbformat.read(path, as_version=4)
        print(f"running {path.name} (preset {os.environ.get('MAELIB_PRESET', 'default')}) ...", flush=True)
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - start
        target = path if inplace else out_dir / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        print(f"  done in {seconds / 60:.1f} min -> {target}", flush=True)
        results.append((target, seconds))
    return results


BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+?/blob/main/notebooks/([\w.-]+\.ipynb)")
REPO_LINE = re.compile(r'^(\s*REPO = )"[^"]*"', re.M)


def sync_urls(root: Path = REPO_ROOT) -> list[Path]:
    """Rewrite badges (README and notebooks) and notebooks' ``REPO = "..."`` lines from pyproject."""
    url = repository_url(root)
    changed = []
    files = [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]
    for path in files:
        text = path.read_text()
        new = BADGE.sub(lambda m: colab_url(m.group(1), url), text)
        new = REPO_LINE.sub(lambda m: f'{m.group(1)}"{url}"', new) if path.suffix == ".ipynb" else new
        if path.suffix == ".ipynb":  # inside the JSON the line is a string: quotes are escaped
            new = re.sub(r'(REPO = )\\"[^"\\]*\\"', lambda m: f'{m.group(1)}\\"{url}\\"', new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed
