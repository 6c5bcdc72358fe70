"""The student release (issue 19): ``maelib lessons release`` runs nbgrader's ``generate_assignment``.

The student versions keep every lesson cell and every autograded test, lose every solution and
output, and their autograded tests fail until the student writes the solutions: executed cell by
cell (under the smoke preset, as CI runs the lessons), every test cell raises, while the lessons
with their solutions pass the same tests (the notebook run, ``pytest notebooks/``, checks that).
"""

import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from maelib import course

LESSONS = course.lesson_paths()
GRADED = [p for p in LESSONS if course.nbgrader_cells(nbformat.read(p, as_version=4))["tests"]]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    lines = []
    students = course.release_lessons(out_dir=out, echo=lines.append)
    return out, students, lines


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def test_release_writes_a_student_version_of_every_lesson_without_solutions_or_outputs(release):
    out, students, lines = release
    assert [s.name for s in students] == [p.name for p in LESSONS]
    assert all(s == out / "release" / s.stem / s.name for s in students)
    for lesson, student in zip(LESSONS, students, strict=True):
        given, released = nbformat.read(lesson, as_version=4), nbformat.read(student, as_version=4)
        assert len(given.cells) == len(released.cells), student.name
        assert BEGIN not in student.read_text(), f"{student.name} still holds a solution"
        for before, after in zip(given.cells, released.cells, strict=True):
            meta = nbgrader(before)
            assert not after.get("outputs"), f"{student.name}: outputs are cleared"
            if meta.get("solution") and before.cell_type == "code":  # the answer is gone, what surrounds it is kept
                head, tail = before.source.split(BEGIN)[0], before.source.split(END)[-1]
                assert after.source.startswith(head.rstrip()) and after.source.endswith(tail.rstrip() or "")
                assert "raise NotImplementedError()" in after.source
                answer = before.source.split(BEGIN)[1].split(END)[0].strip().splitlines()
                assert not any(line.strip() and line in after.source.splitlines() for line in answer), after.source
            elif meta.get("solution"):  # a written answer: the answer region (or the whole cell) is replaced
                head, tail = (before.source.split(BEGIN)[0], before.source.split(END)[-1]) if BEGIN in before.source \
                    else ("", "")
                assert after.source == head + "YOUR ANSWER HERE" + tail or \
                    after.source.strip() == (head.strip() + "\nYOUR ANSWER HERE\n" + tail.strip()).strip(), after.source
            else:  # lesson cells and autograded tests reach the student unchanged
                assert after.source == before.source
            if meta.get("grade") and not meta.get("solution"):
                assert nbgrader(after)["locked"] and nbgrader(after)["checksum"], "tests are locked and checksummed"
    assert (out / "nbgrader_config.py").exists() and (out / "source" / LESSONS[0].stem / LESSONS[0].name).exists()
    assert len(lines) == len(LESSONS) and all("autograded tests" in line for line in lines)


def test_the_gradebook_knows_every_lessons_points(release):
    from nbgrader.api import Gradebook

    out, _, _ = release
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gradebook:
        for lesson in LESSONS:
            cells = course.nbgrader_cells(nbformat.read(lesson, as_version=4))
            points = sum(c.metadata["nbgrader"]["points"] for c in cells["tests"] + cells["answers"])
            assert gradebook.find_assignment(lesson.stem).max_score == points, lesson.name


def test_release_is_one_documented_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "maelib", "lessons", "release", "00", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "release" / LESSONS[0].stem / LESSONS[0].name).exists()
    assert "release" in subprocess.run([sys.executable, "-m", "maelib", "lessons", "--help"], capture_output=True,
                                       text=True).stdout


def test_a_lesson_nbgrader_rejects_is_an_error_naming_it(tmp_path):
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    nb = nbformat.v4.new_notebook()
    twice = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": "00-ex1-test",
                          "schema_version": 3}}
    nb.cells = [nbformat.v4.new_code_cell("assert True", metadata=twice),
                nbformat.v4.new_code_cell("assert True", metadata=twice)]  # the same grade id twice
    nbformat.write(nb, lessons / "00_broken.ipynb")
    with pytest.raises(course.ReleaseFailed, match="00_broken.ipynb"):
        course.release_lessons(out_dir=tmp_path / "out", folder=lessons, echo=lambda line: None)


@pytest.mark.parametrize("lesson", GRADED, ids=[p.stem for p in GRADED])
def test_in_the_student_version_every_autograded_test_fails_until_the_solutions_are_written(release, lesson):
    from conftest import missing_lesson_data

    if missing := missing_lesson_data():
        pytest.skip(f"the lessons' images are not in the data root ({', '.join(missing)}); set MAELIB_DATA_DIR")
    out, _, _ = release
    student = out / "release" / lesson.stem / lesson.name
    nb = nbformat.read(student, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=1800, allow_errors=True,
                   resources={"metadata": {"path": str(student.parent)}}).execute()  # every cell, errors or not

    def error(cell):
        return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)

    first = next(k for k, c in enumerate(nb.cells) if nbgrader(c))
    broken = [(k, error(c)["ename"]) for k, c in enumerate(nb.cells[:first]) if error(c)]
    assert not broken, f"{lesson.name}: lesson cells before the first exercise failed: {broken}"
    for cell in nb.cells:
        meta = nbgrader(cell)
        if meta.get("solution") and cell.cell_type == "code":  # raises at once, or defines a function that will
            assert not error(cell) or error(cell)["ename"] == "NotImplementedError", meta["grade_id"]
        elif meta.get("grade") and not meta.get("solution"):
            assert error(cell), f"{lesson.name}: test {meta['grade_id']} passes without its solution"
            assert error(cell)["ename"] not in ("SyntaxError", "IndentationError"), meta["grade_id"]


@pytest.mark.filterwarnings("ignore:Object of type <Submitted")  # nbgrader's gradebook, on its own sessions
def test_nbgrader_autograde_gives_a_solved_lesson_every_point_and_an_untouched_one_none(release):
    """The grading path of docs/TEACHING.md, on lesson 03 (quick: it trains nothing)."""
    import shutil

    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    from conftest import missing_lesson_data

    if missing := missing_lesson_data():
        pytest.skip(f"the lessons' images are not in the data root ({', '.join(missing)}); set MAELIB_DATA_DIR")
    out, _, _ = release
    [lesson] = course.lesson_paths(["03"])
    for student, notebook in [("solved", lesson), ("untouched", out / "release" / lesson.stem / lesson.name)]:
        (out / "submitted" / student / lesson.stem).mkdir(parents=True)
        shutil.copyfile(notebook, out / "submitted" / student / lesson.stem / lesson.name)
    config = Config()
    config.CourseDirectory.root = str(out)
    api = NbGraderAPI(config=config)
    tests = course.nbgrader_cells(nbformat.read(lesson, as_version=4))["tests"]
    for student, expected in [("solved", sum(c.metadata["nbgrader"]["points"] for c in tests)), ("untouched", 0)]:
        result = api.autograde(lesson.stem, student)
        assert result["success"], result.get("error")
        with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gradebook:
            grades = gradebook.find_submission(lesson.stem, student).notebooks[0].grades
            autograded = sum(g.score for g in grades if g.name.endswith("-test"))
        assert autograded == expected, (student, [(g.name, g.score) for g in grades])
