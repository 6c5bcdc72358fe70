"""Every lesson opens and closes the same way, and its exercises are in nbgrader's format (issue 19).

Opening (the first cell, Markdown): ``# Lesson NN — Title``, the Colab badge, a short introduction, then
three bold-labelled parts in this order: **You will learn** (a bullet list), **Before you start**
(earlier lessons, PyTorch ideas) and **Time** (reading, and running on the cpu and the gpu preset).
Closing (the last cell, Markdown): ``## What to remember`` with bullets, ending with a line
``**Next:** [Lesson NN — Title](NN_name.ipynb)`` that links the following lesson by its own title (the
last lesson says what to do next instead).

Exercises: solution cells hold their answer between ``### BEGIN SOLUTION`` / ``### END SOLUTION``,
autograded test cells carry points, and every grade id is ``<lesson>-ex<k>`` plus ``-test`` (the
autograded test of that exercise) or ``-answer`` (a written answer, graded by hand).
"""

import re

import nbformat
import pytest

from maelib import course

LESSONS = course.lesson_paths()
TITLE = re.compile(r"^# Lesson (\d\d[a-z]?) — (\S.*)$")
NEXT = re.compile(r"^\*\*Next:\*\* (.+)$")
LINK = re.compile(r"\[(Lesson \d\d[a-z]? — [^\]]+)\]\(([\w.-]+\.ipynb)\)")


def lesson_params():
    return [pytest.param(p, id=p.stem) for p in LESSONS]


def number(path) -> str:
    return path.name.split("_")[0]


def title(path) -> str:
    """``Lesson NN — Title``, from the lesson's first line."""
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    return first.removeprefix("# ")


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


@pytest.mark.parametrize("path", lesson_params())
def test_a_lesson_opens_with_title_badge_objectives_prerequisites_and_time(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown", f"{path.name}: the first cell must be Markdown"
    lines = first.source.splitlines()
    match = TITLE.match(lines[0])
    assert match and match.group(1) == number(path), f"{path.name}: first line {lines[0]!r}, want '# Lesson " \
                                                     f"{number(path)} — Title'"
    assert course.colab_url(path.name, course.repository_url()) in first.source, f"{path.name}: no Colab badge"
    text = first.source
    parts = ["You will learn", "Before you start", "Time"]
    found = [re.search(rf"^\*\*{p}:?\*\*", text, re.M) for p in parts]  # **Time** or **Time:**
    where = [m.start() if m else -1 for m in found]
    assert all(w > 0 for w in where) and where == sorted(where), \
        f"{path.name}: needs **{'**, **'.join(parts)}** in this order in its first cell (found at {where})"
    badge = text.find("colab-badge.svg")
    intro = text[text.find(")", text.find(")", badge) + 1) + 1:where[0]].strip()
    assert len(intro.split()) >= 15, f"{path.name}: a short introduction goes between the badge and the objectives"
    learn = text[where[0]:where[1]]
    assert len(re.findall(r"^\s*[-*] \S", learn, re.M)) >= 2, f"{path.name}: objectives as a bullet list"
    before = text[where[1]:where[2]]
    assert re.search(r"[Ll]esson|[Nn]o earlier", before) and re.search(r"PyTorch|tensor", before), \
        f"{path.name}: Before you start names the lessons and the PyTorch ideas it assumes"
    time = text[where[2]:]
    for preset in ("cpu", "gpu"):
        assert re.search(rf"{preset} preset[^.;]*?\d[\d.]* min", time), \
            f"{path.name}: Time gives minutes for the {preset} preset"
    assert re.search(r"read", time, re.I), f"{path.name}: Time says how long the reading takes"


@pytest.mark.parametrize("path", lesson_params())
def test_a_lesson_closes_with_what_to_remember_and_the_next_lesson(path):
    nb = nbformat.read(path, as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## What to remember"), \
        f"{path.name}: the last cell must be Markdown starting with '## What to remember'"
    lines = last.source.rstrip().splitlines()
    assert len([line for line in lines if re.match(r"^\s*[-*] \S", line)]) >= 2, f"{path.name}: bullets to remember"
    match = NEXT.match(lines[-1])
    assert match, f"{path.name}: the last line must be '**Next:** ...', got {lines[-1]!r}"
    later = LESSONS[LESSONS.index(path) + 1:]
    link = LINK.search(match.group(1))
    if later:
        assert link, f"{path.name}: **Next:** must link the next lesson as [Lesson NN — Title](NN_name.ipynb)"
        assert link.group(2) == later[0].name, f"{path.name}: links {link.group(2)}, the next lesson is {later[0].name}"
        assert link.group(1) == title(later[0]), f"{path.name}: calls the next lesson {link.group(1)!r}, " \
                                                 f"its own title is {title(later[0])!r}"
    else:
        assert len(match.group(1).split()) >= 5, f"{path.name}: the last lesson says what to do next"


@pytest.mark.parametrize("path", lesson_params())
def test_a_lessons_exercises_are_nbgrader_cells_with_solutions_and_tests(path):
    nb = nbformat.read(path, as_version=4)
    lesson = number(path)
    cells = [(k, c, nbgrader(c)) for k, c in enumerate(nb.cells) if nbgrader(c)]
    has_exercises = any(c.cell_type == "markdown" and re.search(r"^#+ Exercise", c.source, re.M) for c in nb.cells)
    assert not has_exercises or any(m.get("solution") and c.cell_type == "code" for _, c, m in cells), \
        f"{path.name} has exercises but no solution cells"
    ids = [m.get("grade_id") for _, _, m in cells]
    assert len(ids) == len(set(ids)), f"{path.name}: grade ids repeat: {ids}"
    solutions = {}
    for k, cell, meta in cells:
        gid = meta.get("grade_id", "")
        assert meta.get("schema_version") == 3, f"{path.name} {gid}: nbgrader schema_version 3"
        assert re.fullmatch(rf"{lesson}-ex\d+(-test|-answer)?", gid), f"{path.name}: grade id {gid!r} is not " \
                                                                     f"{lesson}-ex<k>[-test|-answer]"
        if meta.get("solution") and cell.cell_type == "code":  # the student writes code here
            assert not meta.get("grade") and not meta.get("locked") and not gid.endswith(("-test", "-answer"))
            begin, end = cell.source.count("### BEGIN SOLUTION"), cell.source.count("### END SOLUTION")
            assert begin == end >= 1 and cell.source.index("### BEGIN SOLUTION") < cell.source.index(
                "### END SOLUTION"), f"{path.name} {gid}: the answer goes between BEGIN and END SOLUTION"
            solutions[gid] = k
        elif meta.get("solution"):  # a written answer, graded by hand
            assert cell.cell_type == "markdown" and meta.get("grade") and meta.get("points", 0) > 0, gid
            assert gid.endswith("-answer"), f"{path.name}: a written answer's id ends in -answer, got {gid}"
        else:  # an autograded test
            assert cell.cell_type == "code" and meta.get("grade") and meta.get("locked"), gid
            assert meta.get("points", 0) > 0, f"{path.name} {gid}: an autograded test carries points"
            assert gid.endswith("-test") and "### BEGIN SOLUTION" not in cell.source, gid
            exercise = gid.removesuffix("-test")
            assert exercise in solutions and solutions[exercise] < k, \
                f"{path.name}: test {gid} must follow its exercise's solution cell {exercise}"
            assert re.search(r"\bassert\b|raise\b", cell.source), f"{path.name} {gid}: a test asserts something"
