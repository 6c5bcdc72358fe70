"""The gpu preset without a GPU: run every lesson at its real shapes under the step cap, and predict a T4's time.

``python -m maelib lessons predict`` runs the lessons with :func:`run_capped` (what CI's
``tests/test_gpu_preset.py`` runs) and prints :func:`prediction_table`; ``--rendered`` reads the
copies a run left in ``runs/notebooks-gpu-capped/``; ``--memory`` prints :func:`memory_table`.

**How a lesson's time is predicted.** Under the step cap, every :func:`maelib.train.fit` of the
lesson counts the FLOPs and ATen operations of its first step, times two batches of its loader,
and prints what the whole run would do: epochs x steps per epoch x FLOPs per step, and the
validation images x FLOPs per image (:func:`maelib.costs.planned_work`). On a T4 a step takes
the data loading measured here (``num_workers=0``: it runs between the steps), plus the larger of
its FLOPs at :data:`T4_UTILISATION` x :data:`T4_PEAK_TFLOPS` and its operations at
:data:`SECONDS_PER_OP` each (:func:`predict_t4`). Added to that: what the lesson scores on the CPU
(:data:`SCORING`, timed here at the gpu preset's image size). CPU work is measured as CPU time of
one thread here; a Colab VM's CPU may be slower or faster. Trainings in the exercises' worked
solutions count (a teacher's copy runs them); downloads and the first decoding of the images do not.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .costs import GIB, PLANNED, step_memory, training_mask
from .course import REPO_ROOT
from .presets import MAX_STEPS_ENV

RENDERED = REPO_ROOT / "runs" / "notebooks-gpu-capped"
CAP = 2  # training steps per fit in the capped runs

# The assumptions (README states them): NVIDIA's T4 datasheet gives 65 TFLOPS of fp16 on its tensor
# cores (mixed precision, which amp="auto" picks on a T4); eager PyTorch on models this small reaches
# a fraction of it. The range is printed with the prediction.
T4_PEAK_TFLOPS = 65.0
T4_UTILISATION = 0.25  # assumed: 16 TFLOPS realised
UTILISATIONS = (0.40, T4_UTILISATION, 0.15)  # optimistic, assumed, pessimistic
SECONDS_PER_OP = 10e-6  # assumed: every ATen operation costs at least ~10 us to launch (eager PyTorch)

# What a lesson scores on the CPU after training (the classical baselines and SSIM run on the CPU on any
# device): lesson -> (the recipe whose test images are scored, masks per test image, model rows in its table).
SCORING: dict[str, tuple[str, int, int]] = {
    "02": ("lesson02_vit_faces", 1, 1),
    "04": ("lesson04_facades_block", 4, 4),  # random, block, combined, patch 4
    "04b": ("lesson04b_facades_finetune", 4, 6),  # lesson 04's block model, five pre-trained / control rows
    "05": ("lesson05_finetune_facades", 4, 4),
}


# --------------------------------------------------------------------------- capped runs
def remove_capped_runs(steps: int = CAP) -> None:
    """Delete the checkpoints and progress folders capped runs wrote (``*-max<steps>steps*``), nothing else."""
    for base in (REPO_ROOT / "checkpoints", REPO_ROOT / "runs"):
        for path in sorted(base.rglob(f"*-max{steps}steps*"), reverse=True) if base.is_dir() else ():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def run_capped(selection: list[str] | None = None, *, steps: int = CAP, out_dir: Path = RENDERED,
               echo: Callable[[str], None] = print) -> list[Path]:
    """Execute lessons under the gpu preset and the step cap into ``out_dir``; return the rendered copies.

    Each lesson runs alone, as on a fresh Colab VM: the capped checkpoints of the lessons before it are
    removed first. The exercises' autograded cells (nbgrader ``"grade": true``) are left out: they check
    what a trained model scores, which a model trained for ``steps`` steps cannot (the smoke run has them).
    Raises :class:`maelib.course.LessonFailed` when a cell fails. Sets ``MAELIB_PRESET`` and
    ``MAELIB_MAX_STEPS`` in this process (the kernels inherit them).
    """
    import tempfile

    import nbformat

    from . import course

    os.environ["MAELIB_PRESET"], os.environ[MAX_STEPS_ENV] = "gpu", str(steps)
    rendered = []
    for lesson in course.lesson_paths(selection):
        remove_capped_runs(steps)
        nb = nbformat.read(lesson, as_version=4)
        nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get("nbgrader", {}).get("grade")]
        with tempfile.TemporaryDirectory() as folder:
            nbformat.write(nb, Path(folder) / lesson.name)
            course.run_lessons([lesson.name.split("_")[0]], out_dir=out_dir, folder=Path(folder), echo=echo)
        rendered.append(Path(out_dir) / lesson.name)
    remove_capped_runs(steps)
    return rendered


# --------------------------------------------------------------------------- the prediction
def planned_runs(nb: Any) -> list[dict[str, Any]]:
    """The :func:`~maelib.costs.planned_work` records a capped lesson printed, one per training."""
    import json

    records = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else ():
            for line in out.get("text", "").splitlines() if out.get("output_type") == "stream" else ():
                if line.startswith(PLANNED):
                    records.append(json.loads(line[len(PLANNED):]))
    return records


def predict_t4(record: dict[str, Any], utilisation: float = T4_UTILISATION) -> float:
    """Seconds a T4 would take for the training one record describes (see the module's docstring)."""
    rate = T4_PEAK_TFLOPS * 1e12 * utilisation
    step = record["data_seconds_per_step"] + max(record["train_flops_per_step"] / rate,
                                                 record["train_ops_per_step"] * SECONDS_PER_OP)
    val = record["val_images"] * record["val_flops_per_image"] / rate
    return record["epochs"] * (record["steps_per_epoch"] * step + val)


def scoring_seconds(lesson: str, images: int = 4) -> float:
    """Seconds this CPU takes for what ``lesson`` scores at the gpu preset (:data:`SCORING`): the recipe's test
    images, masked as in training, against the classical baselines; timed on ``images`` random images."""
    from . import configs, runs
    from .metrics import evaluate_reconstructions
    from .patches import patch_mask_to_pixels

    if lesson not in SCORING:
        return 0.0
    name, masks_per_image, models = SCORING[lesson]
    run = configs.recipe(name, "gpu")
    tested = len(runs.load_data(run, progress=False).test)
    imgs = torch.rand(images, 3, run.img_size, run.img_size, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        patch = runs.build_model(run).patch_size
    pixel_mask = patch_mask_to_pixels(training_mask(run, images).mask, patch)
    start = time.process_time()  # CPU time: other programs on a shared machine do not count
    evaluate_reconstructions(imgs, pixel_mask, {f"model {k}": imgs for k in range(models)})
    return (time.process_time() - start) / images * tested * masks_per_image


def predict_lesson(nb: Any, lesson: str, *, with_scoring: bool = True) -> dict[str, Any]:
    """A lesson's prediction from its capped run: counted PFLOP, data loading, scoring, minutes per utilisation."""
    records = planned_runs(nb)
    flops = sum(r["epochs"] * (r["steps_per_epoch"] * r["train_flops_per_step"]
                               + r["val_images"] * r["val_flops_per_image"]) for r in records)
    data = sum(r["epochs"] * r["steps_per_epoch"] * r["data_seconds_per_step"] for r in records)
    scoring = scoring_seconds(lesson) if with_scoring else 0.0
    return {"lesson": lesson, "trainings": len(records), "pflop": flops / 1e15, "data_min": data / 60,
            "scoring_min": scoring / 60,
            "minutes": {u: (sum(predict_t4(r, u) for r in records) + scoring) / 60 for u in UTILISATIONS}}


def prediction_table(rows: list[dict[str, Any]]) -> str:
    """The README's Colab column, with what it is made of, as a Markdown table."""
    fast, assumed, slow = UTILISATIONS
    lines = ["| lesson | trainings | PFLOP (training + validation, counted) | data loading, min | CPU scoring, min | "
             f"predicted T4 min at {assumed:.0%} of {T4_PEAK_TFLOPS:g} TFLOPS (at {fast:.0%} - {slow:.0%}) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        m = r["minutes"]
        lines.append(f"| {r['lesson']} | {r['trainings']} | {r['pflop']:.2f} | {r['data_min']:.1f} | "
                     f"{r['scoring_min']:.1f} | {m[assumed]:.0f} ({m[fast]:.0f} - {m[slow]:.0f}) |")
    return "\n".join(lines)


def predict_lessons(selection: list[str] | None = None, *, rendered: bool = False,
                    echo: Callable[[str], None] = print) -> str:
    """Run the lessons capped (or read the copies of the last run, ``rendered=True``) and return the table."""
    import nbformat

    from . import course

    if not rendered:
        run_capped(selection, echo=echo)
    rows = []
    for lesson in course.lesson_paths(selection):
        copy = RENDERED / lesson.name
        if not copy.exists():
            raise FileNotFoundError(f"no capped run of {lesson.name} in {RENDERED}: run `python -m maelib lessons "
                                    "predict` without --rendered (or pytest tests/test_gpu_preset.py) first")
        rows.append(predict_lesson(nbformat.read(copy, as_version=4), lesson.name.split("_")[0]))
    return prediction_table(rows)


# Steps the lessons take besides their recipes' training: what, recipe, changes (counted, not budgeted)
OTHER_STEPS = (
    ("lesson 02's timing cell: the encoder on all patches", "lesson02_vit_faces",
     {"batch_size": 64, "masking": {"mask_ratio": 0.0}}),
    ("lesson 05's quick faces model (without lesson 02's)", "lesson02_vit_faces", {"img_size": 224}),
)


def memory_table(amps: tuple[str, ...] = ("fp16", "fp32")) -> str:
    """Every budgeted recipe's gpu-preset training step (and :data:`OTHER_STEPS`): peak GiB per precision, budget."""
    from . import configs

    rows = [(f"`{name}`", configs.recipe(name, "gpu"), f"{budget:g}")
            for name, budget in configs.GPU_MEMORY_BUDGET_GIB.items()]
    rows += [(what, configs.replace(configs.recipe(name, "gpu"), **changes), "-")
             for what, name, changes in OTHER_STEPS]
    lines = ["| step | batch x px | " + " | ".join(f"peak GiB, {a}" for a in amps) + " | budget GiB |",
             "|---|---|" + "---|" * len(amps) + "---|"]
    for what, run, budget in rows:
        peaks = [step_memory(run, amp=a).peak / GIB for a in amps]
        lines.append(f"| {what} | {run.batch_size} x {run.img_size} | " + " | ".join(f"{p:.2f}" for p in peaks)
                     + f" | {budget} |")
    return "\n".join(lines)


__all__ = ["CAP", "OTHER_STEPS", "RENDERED", "SCORING", "SECONDS_PER_OP", "T4_PEAK_TFLOPS", "T4_UTILISATION",
           "UTILISATIONS", "memory_table", "planned_runs", "predict_lesson", "predict_lessons", "predict_t4",
           "prediction_table", "remove_capped_runs", "run_capped", "scoring_seconds"]
