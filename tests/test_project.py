"""The project's own promises: one dependency list, README's commands, notebooks' links."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from maelib import course

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = pyproject()["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip_section, "environment.yml must install the package itself"
    assert set(pip_section) - {"-e .[dev]"} == declared


def test_ci_runs_the_test_command_that_readme_gives():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    command = "ruff check . && pytest"
    assert re.search(rf"^{re.escape(command)}$", ci, re.M)
    assert f"\n{command}\n" in readme


def test_repository_url_is_in_one_place_and_badges_follow_it(tmp_path):
    url = course.repository_url()
    for nb in course.lesson_paths():
        text = nb.read_text()
        assert course.colab_url(nb.name, url) in text, f"{nb.name} lacks its Colab badge"
        assert f'REPO = \\"{url}\\"' in text, f"{nb.name}'s Colab cell installs from another URL"
        assert course.colab_url(nb.name, url) in (ROOT / "README.md").read_text()
    # a fork changes pyproject, runs sync-urls, and every link follows
    fork = tmp_path / "fork"
    (fork / "notebooks").mkdir(parents=True)
    (fork / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(url, "https://github.com/me/mine"))
    (fork / "README.md").write_text((ROOT / "README.md").read_text())
    first = course.lesson_paths()[0]
    (fork / "notebooks" / first.name).write_text(first.read_text())
    course.sync_urls(fork)
    assert "https://colab.research.google.com/github/me/mine/blob/main/notebooks/" + first.name in \
        (fork / "README.md").read_text()
    assert 'REPO = \\"https://github.com/me/mine\\"' in (fork / "notebooks" / first.name).read_text()


def test_every_lessons_first_code_cell_sets_up_colab_then_prints_preset_and_device():
    for nb_path in course.lesson_paths():
        first = next(c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code")
        source = "".join(first["source"])
        assert "google.colab" in source and "setup(" in source, nb_path.name
        printed = "".join("".join(o.get("text", "")) for o in first.get("outputs", []))
        assert re.search(r"preset: (cpu|gpu) \| device: ", printed), f"{nb_path.name} was not rendered by a real run"


def test_command_line_lists_lessons():
    out = subprocess.run([sys.executable, "-m", "maelib", "lessons", "list"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [p.name for p in course.lesson_paths()] and out[0].startswith("00_")


def test_lessons_are_numbered_with_companions_and_picked_by_number(tmp_path):
    for name in ("00_a.ipynb", "04_b.ipynb", "04b_c.ipynb", "05_d.ipynb", "notes.ipynb", "04x1_e.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in course.lesson_paths(folder=tmp_path)] == ["00_a.ipynb", "04_b.ipynb", "04b_c.ipynb",
                                                                      "05_d.ipynb"]
    assert [p.name for p in course.lesson_paths(["04"], folder=tmp_path)] == ["04_b.ipynb"]
    assert [p.name for p in course.lesson_paths(["04b", "00"], folder=tmp_path)] == ["00_a.ipynb", "04b_c.ipynb"]
    with pytest.raises(ValueError, match=r"no lesson matches \['4'\]"):
        course.lesson_paths(["4"], folder=tmp_path)


def test_unknown_preset_is_an_error_naming_it(monkeypatch):
    from maelib import presets
    monkeypatch.setenv("MAELIB_PRESET", "laptop")
    with pytest.raises(ValueError, match="'laptop'.*smoke"):
        presets.current_preset()
    monkeypatch.setenv("MAELIB_PRESET", "cpu")
    assert presets.pick(smoke=1, cpu=2, gpu=3) == 2


# The package's floors: what importing a module pulls in. A lesson that only builds a model must not
# wait for OpenCV, scikit-image or torchvision's model zoo, and the lower layers never reach upwards.
LAYERS = {
    "maelib.models": ["maelib.losses", "maelib.data", "maelib.metrics", "torchvision.models", "cv2", "skimage"],
    "maelib.pretrained": ["maelib.data", "maelib.losses", "maelib.metrics", "cv2", "skimage"],
    "maelib.losses": ["maelib.metrics", "maelib.data", "cv2", "skimage"],
    "maelib.masked_loss": ["maelib.models", "torchvision"],
    "maelib.normalize": ["maelib.data", "torchvision"],
}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_a_module_imports_nothing_above_its_floor(module):
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(run.stdout.split())
    assert module in loaded
    assert not (pulled := [m for m in LAYERS[module] if m in loaded]), f"import {module} loads {pulled}"


# Lessons that train a named recipe (maelib.configs) take it by name and train it through maelib.runs, so the
# notebook, the command line and the checkpoint all mean the same run; restating a recipe in a notebook (its
# own TrainConfig or model sizes) is how copies drift apart.
LESSON_RECIPES = {
    "01_mlp_mae_cats_dogs.ipynb": ["lesson01_mlp_cats_dogs"],
    "02_vit_mae_faces.ipynb": ["lesson02_vit_faces"],
    "04_facades_block_masking.ipynb": ["lesson04_facades_random", "lesson04_facades_block",
                                       "lesson04_facades_combined", "lesson04_facades_block_patch4"],
    # the fine-tunings train (or load) what they start from: the two pre-trainings
    "04b_facades_pretrain_finetune.ipynb": ["lesson04b_facades_pretrain", "lesson04b_facades_block_pretrain",
                                            "lesson04b_facades_finetune", "lesson04b_facades_finetune_ssim",
                                            "lesson04b_facades_block_finetune"],
    "06_what_the_encoder_learned.ipynb": ["lesson06_mae_cats_dogs"],
}


@pytest.mark.parametrize("notebook,recipes", sorted(LESSON_RECIPES.items()))
def test_a_lesson_trains_its_named_recipes_and_restates_nothing(notebook, recipes):
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "configs.get_config(" in code and "configs.summary(" in code
    assert "runs.train_or_load(" in code and "runs.load_data(run" in code
    for restated in ("TrainConfig(", "create_model(", "fit(", "save_checkpoint(", "MODEL_CONFIGS"):
        assert restated not in code, f"{notebook} restates its recipe: {restated}"
    printed = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    for recipe in recipes:
        assert f'"{recipe}"' in code, f"{notebook} does not name {recipe}"
        # the committed run trained the recipe itself, unchanged, with a real preset
        assert re.search(rf"recipe {recipe} \((cpu|gpu) preset\)", printed), \
            f"{recipe}: not rendered from a cpu or gpu run"
        assert re.search(rf"trained {recipe} \((cpu|gpu) preset\) for", printed), f"{recipe} was not trained"


def test_lessons_run_reports_progress_headlines_and_a_short_error(tmp_path):
    import nbformat

    from maelib.course import LessonFailed, run_lessons

    def lesson(name, *cells):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell("# a lesson")] + [nbformat.v4.new_code_cell(c) for c in cells]
        nb.cells[-1].metadata["tags"] = ["headline"]
        nbformat.write(nb, tmp_path / name)

    lesson("00_ok.ipynb", "x = 2", "print('epoch 1/2  train 0.5000  val 0.4000')\nprint('noise')",
           "print(f'masked PSNR {x * 8.5:.1f} dB')")
    lesson("01_bad.ipynb", "x = 1", "raise ValueError('the data root /nowhere does not exist')", "print('never')")
    lines = []
    [(path, seconds)] = run_lessons(["00"], out_dir=tmp_path / "out", folder=tmp_path, echo=lines.append)
    text = "\n".join(lines)
    assert "cell 1/3: x = 2" in text and "cell 3/3" in text
    assert "epoch 1/2  train 0.5000" in text and "noise" not in text  # training progress, not every print
    assert lines[-1] == "    masked PSNR 17.0 dB" and path == tmp_path / "out" / "00_ok.ipynb"
    with pytest.raises(LessonFailed) as failed:
        run_lessons(["01"], out_dir=tmp_path / "out", folder=tmp_path, echo=lines.append)
    message = str(failed.value)
    assert message.startswith("01_bad.ipynb failed at cell 2/3: ValueError: the data root /nowhere does not exist")
    assert len(message.splitlines()) == 3 and "Traceback" not in message
    partial = nbformat.read(tmp_path / "out" / "01_bad.failed.ipynb", as_version=4)
    assert partial.cells[2].outputs[0]["ename"] == "ValueError" and not partial.cells[3].outputs
    assert "raise ValueError" in (tmp_path / "out" / "01_bad.failed.traceback.txt").read_text()
