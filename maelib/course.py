"""Running the lessons from the command line, and keeping their links true.

``python -m maelib lessons list``            the lessons in ``notebooks/``
``python -m maelib lessons run 00 01``       execute lessons top to bottom into rendered copies
``python -m maelib lessons sync-urls``       rewrite Colab badges and install cells from pyproject
``python -m maelib lessons release``         student versions without solutions (nbgrader), into release/

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


def shown_path(path: str | os.PathLike) -> str:
    """A path as a lesson prints it: relative to the repository (``checkpoints/x.pt``) or to the home folder
    (``~/.cache/...``) when it lies there, so that rendered notebooks show no one machine's folders."""
    path = Path(path).expanduser()
    for base, prefix in ((REPO_ROOT, ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def repository_url(root: Path = REPO_ROOT) -> str:
    """The course repository, from ``pyproject.toml`` (e.g. ``https://github.com/owner/name``)."""
    with open(root / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["urls"]["Repository"].rstrip("/")


def colab_url(notebook: str, repo_url: str) -> str:
    """The Colab address of a notebook of a GitHub repository (branch main)."""
    slug = repo_url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook}"


def lesson_paths(selection: list[str] | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """Lessons ``NN_name.ipynb`` (and companions ``NNb_name.ipynb``) in order; ``selection`` picks by
    number (``"01"``, ``"04b"``) or name."""
    lessons = sorted(p for p in folder.glob("[0-9][0-9]*_*.ipynb") if re.fullmatch(r"\d\d[a-z]?", p.name.split("_")[0]))
    if not selection:
        return lessons
    chosen = [p for p in lessons if any(p.name.split("_")[0] == s or p.stem == s for s in selection)]
    if not chosen:
        raise ValueError(f"no lesson matches {selection}; lessons are {[p.stem for p in lessons]}")
    return chosen


HEADLINE_TAG = "headline"  # a cell tagged so prints the lesson's headline result; `lessons run` repeats it at the end
PROGRESS = re.compile(r"^(epoch \d+/\d+ .*|trained .*|loaded .*)$")  # fit's and runs.train_or_load's lines


class LessonFailed(RuntimeError):
    """A lesson stopped at a cell; the message says which, why, and where the details were saved."""


def _lesson_client(nb, path: Path, timeout: int, echo):
    """An nbclient NotebookClient that reports as it goes: a line per code cell, training progress lines."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):  # every output message of the kernel
            if msg["msg_type"] == "stream":
                for line in msg["content"].get("text", "").splitlines():
                    if PROGRESS.match(line.strip()):
                        echo(f"      {line.strip()}")
            return super().output(outs, msg, display_id, cell_index)

    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]

    def started(cell, cell_index, **_):
        if cell.cell_type != "code":
            return
        first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
        echo(f"  cell {code.index(cell_index) + 1}/{len(code)}: {first[:70]}")

    # --log-level=ERROR: the kernel's start-up warnings (about its local TCP ports) are not the lesson's
    return Client(nb, kernel_name="python3", timeout=timeout, on_cell_start=started,
                  extra_arguments=["--log-level=ERROR"], resources={"metadata": {"path": str(path.parent)}})


def headlines(nb) -> list[str]:
    """The text that cells tagged ``headline`` printed (stream text, or a Markdown/plain result)."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code" or HEADLINE_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                out.append(o["text"].rstrip())
            elif o.get("output_type") in ("execute_result", "display_data"):
                data = o.get("data", {})
                if any(kind.startswith("image/") for kind in data):
                    continue  # a figure: its text/plain is only "<Figure ...>"
                text = data.get("text/markdown") or data.get("text/plain")
                if text:
                    out.append(text.rstrip())
    return out


def run_lessons(selection: list[str] | None = None, *, preset: str | None = None, out_dir: Path | None = None,
                inplace: bool = False, timeout: int = 3600, echo=print,
                folder: Path = NOTEBOOKS) -> list[tuple[Path, float]]:
    """Execute lessons top to bottom; write each rendered copy to ``out_dir`` (or over the original).

    Reports as it goes (``echo``): a line per code cell, the training progress lines of long cells,
    and at the end each lesson's headline results (cells tagged ``headline``). Returns
    ``[(rendered_path, seconds)]``. The kernel inherits this process's environment plus
    ``MAELIB_PRESET`` when ``preset`` is given.

    Raises :class:`LessonFailed` when a cell fails: its message names the cell and the error, and
    says where the partly executed notebook and the full traceback were saved.
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError

    if preset is not None:
        os.environ["MAELIB_PRESET"] = preset
    out_dir = Path(out_dir or REPO_ROOT / "runs" / "notebooks")
    results = []
    for path in lesson_paths(selection, folder):
        nb = nbformat.read(path, as_version=4)
        echo(f"running {path.name} (preset {os.environ.get('MAELIB_PRESET', 'default')}) ...")
        start = time.perf_counter()
        target = path if inplace else out_dir / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _lesson_client(nb, path, timeout, echo).execute()
        except CellExecutionError as err:
            partial = out_dir / f"{path.stem}.failed.ipynb"
            partial.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, partial)
            traceback = partial.with_suffix(".traceback.txt")
            traceback.write_text(str(err))
            code = [c for c in nb.cells if c.cell_type == "code"]
            failed = next((k for k, c in enumerate(code, 1) if any(o.get("output_type") == "error"
                                                                     for o in c.get("outputs", []))), None)
            reason = f"{err.ename}: {err.evalue}" if getattr(err, "ename", None) else str(err).splitlines()[-1]
            raise LessonFailed(f"{path.name} failed at cell {failed}/{len(code)}: {reason}\n"
                               f"  the partly executed notebook: {partial}\n"
                               f"  the full traceback: {traceback}") from None
        seconds = time.perf_counter() - start
        nbformat.write(nb, target)
        echo(f"  done in {seconds / 60:.1f} min -> {target}")
        for text in headlines(nb):
            echo("\n".join(f"    {line}" for line in text.splitlines()))
        results.append((target, seconds))
    return results


RELEASE = REPO_ROOT / "release"  # the student versions: not committed (.gitignore)
NBGRADER_CONFIG = '''\
# nbgrader's settings for this course folder, written by `python -m maelib lessons release`.
# Run nbgrader here (cd into this folder): the gradebook is gradebook.db, the lessons with solutions are
# in source/, the student versions in release/, the students' work goes to submitted/<student>/<lesson>/.
c = get_config()  # noqa: F821 (nbgrader's config files get this function from traitlets)
c.Execute.timeout = 3600  # seconds per cell when autograding: some lessons train for minutes
'''


class ReleaseFailed(RuntimeError):
    """nbgrader could not make a lesson's student version; the message says which lesson and why."""


def nbgrader_cells(nb) -> dict[str, list]:
    """A lesson's nbgrader cells: ``{"solutions": [...], "tests": [...], "answers": [...]}``.

    ``solutions``: code cells whose answer sits between ``### BEGIN SOLUTION`` / ``### END SOLUTION``;
    ``tests``: autograded test cells (with points); ``answers``: written answers graded by hand.
    """
    found: dict[str, list] = {"solutions": [], "tests": [], "answers": []}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            found["solutions"].append(cell)
        elif meta.get("solution"):
            found["answers"].append(cell)
        elif meta.get("grade"):
            found["tests"].append(cell)
    return found


def release_lessons(selection: list[str] | None = None, *, out_dir: str | os.PathLike | None = None,
                    folder: Path = NOTEBOOKS, echo=print) -> list[Path]:
    """Build the student versions of lessons with nbgrader's own ``generate_assignment``.

    ``out_dir`` (default ``release/``) becomes an nbgrader course folder: ``source/<lesson>/`` holds a
    copy of each lesson as committed (with its solutions), ``release/<lesson>/`` the student version
    (each solution replaced by ``raise NotImplementedError()``, written answers by "YOUR ANSWER HERE",
    every output cleared, test cells locked and checksummed), ``gradebook.db`` what ``nbgrader
    autograde`` grades against, and ``nbgrader_config.py`` its settings. Returns the student notebooks.

    Raises :class:`ReleaseFailed` naming the lesson when nbgrader rejects it.
    """
    import shutil

    import nbformat
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    out = Path(out_dir or RELEASE).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "nbgrader_config.py").exists():
        (out / "nbgrader_config.py").write_text(NBGRADER_CONFIG)
    config = Config()
    config.CourseDirectory.root = str(out)
    api = NbGraderAPI(config=config)
    released = []
    for path in lesson_paths(selection, folder):
        source = out / "source" / path.stem / path.name
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source)
        result = api.generate_assignment(path.stem, force=True, create=True)
        student = out / "release" / path.stem / path.name
        if not result.get("success") or not student.exists():
            why = (result.get("error") or result.get("log") or "no message").strip().splitlines()[-1]
            raise ReleaseFailed(f"nbgrader could not release {path.name}: {why}\n"
                                f"  check the nbgrader metadata of its exercise cells; the copy it read: {source}")
        cells = nbgrader_cells(nbformat.read(source, as_version=4))
        points = sum(c.metadata["nbgrader"].get("points", 0) for c in cells["tests"] + cells["answers"])
        echo(f"{path.name}: {len(cells['solutions'])} solutions and {len(cells['answers'])} written answers "
             f"cleared, {len(cells['tests'])} autograded tests, {points:g} points -> {shown_path(student)}")
        released.append(student)
    return released


BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+?/blob/main/notebooks/([\w.-]+\.ipynb)")
REPO_LINE = re.compile(r'^(\s*REPO = )"[^"]*"', re.M)
CLONE = re.compile(r"^(git clone )\S+", re.M)  # README's set-up command


def sync_urls(root: Path = REPO_ROOT) -> list[Path]:
    """Rewrite badges (README and notebooks), README's ``git clone`` line and notebooks' ``REPO = "..."``
    lines from pyproject."""
    url = repository_url(root)
    changed = []
    files = [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]
    for path in files:
        text = path.read_text()
        new = BADGE.sub(lambda m: colab_url(m.group(1), url), text)
        new = REPO_LINE.sub(lambda m: f'{m.group(1)}"{url}"', new) if path.suffix == ".ipynb" else \
            CLONE.sub(lambda m: f"{m.group(1)}{url}", new)
        if path.suffix == ".ipynb":  # inside the JSON the line is a string: quotes are escaped
            new = re.sub(r'(REPO = )\\"[^"\\]*\\"', lambda m: f'{m.group(1)}\\"{url}\\"', new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed
