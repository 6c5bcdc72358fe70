"""The step cap (MAELIB_MAX_STEPS): fit stops after N steps, validates a few images, names its files apart, and
says what the uncapped run would compute; and the T4 prediction made from that."""

import json

import nbformat
import pytest
import torch
from torch import nn

from maelib import costs, predict, presets, runs
from maelib.configs import get_config, replace
from maelib.models import create_model
from maelib.train import TrainConfig, fit, make_loader


@pytest.fixture
def cap(monkeypatch):
    def set_cap(n):
        monkeypatch.setenv("MAELIB_MAX_STEPS", str(n))
        return n

    return set_cap


def test_no_cap_unless_set(monkeypatch):
    monkeypatch.delenv("MAELIB_MAX_STEPS", raising=False)
    assert presets.max_steps() is None
    assert presets.capped(None) is None and presets.capped(64) == 64
    assert presets.capped_path("checkpoints/a.pt").name == "a.pt"


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_cap_that_is_not_a_positive_count_is_an_error(monkeypatch, value):
    monkeypatch.setenv("MAELIB_MAX_STEPS", value)
    with pytest.raises(ValueError, match="MAELIB_MAX_STEPS"):
        presets.max_steps()


def test_capped_counts_and_paths(cap):
    cap(3)
    assert presets.max_steps() == 3
    assert presets.capped(None) == presets.FEW and presets.capped(64) == presets.FEW and presets.capped(5) == 5
    assert presets.capped(10, few=1) == 1
    path = presets.capped_path("checkpoints/lesson02_vit_faces-gpu.pt")
    assert path.name == "lesson02_vit_faces-gpu-max3steps.pt"
    assert presets.capped_path(path) == path  # named apart once
    assert presets.capped_path("runs/05/scratch").name == "scratch-max3steps"
    assert runs.checkpoint_path(get_config("lesson02_vit_faces", "gpu")).name == "lesson02_vit_faces-gpu-max3steps.pt"


def _micro_fit(tmp_path, epochs=5, capsys=None):
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch4_32", img_size=32)
    batches = []
    model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    train = make_loader(torch.rand(112, 3, 32, 32), 16, shuffle=True, seed=0)  # 7 steps an epoch
    val = make_loader(torch.rand(50, 3, 32, 32), 20, shuffle=False)
    config = TrainConfig(epochs=epochs, masking={"mask_ratio": 0.75}, progress=False, checkpoint_dir=tmp_path / "run")
    history = fit(model, train, val, config, device="cpu")
    return model, history, batches


def test_fit_stops_after_the_cap_and_validates_a_few_images(cap, tmp_path, capsys):
    cap(3)
    _, history, batches = _micro_fit(tmp_path)
    assert history["epoch"] == [1]  # 3 steps are within the first of the 5 epochs
    assert batches == [16, 16, 16, presets.FEW]  # three training batches, then FEW validation images
    assert (tmp_path / "run-max3steps" / "last.pt").is_file() and not (tmp_path / "run").exists()
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith(costs.PLANNED)]
    record = json.loads(line[len(costs.PLANNED):])
    assert (record["epochs"], record["steps_per_epoch"], record["val_images"]) == (5, 7, 50)
    assert record["val_flops_per_image"] > 0 and record["data_seconds_per_step"] > 0


def test_a_cap_longer_than_an_epoch_runs_into_the_next(cap, tmp_path):
    cap(9)
    _, history, batches = _micro_fit(tmp_path)
    assert history["epoch"] == [1, 2]  # 7 steps, then 2 more
    assert [b for b in batches if b == 16] == [16] * 9


def test_without_the_cap_fit_runs_every_epoch(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("MAELIB_MAX_STEPS", raising=False)
    _, history, _ = _micro_fit(tmp_path, epochs=2)
    assert history["epoch"] == [1, 2] and (tmp_path / "run" / "last.pt").is_file()
    assert costs.PLANNED not in capsys.readouterr().out


def test_step_cost_counts_a_linear_layers_flops():
    """Forward 2 x B x in x out; backward twice that (gradients of the input and of the weight)."""
    layer, x = nn.Linear(64, 32, bias=False), torch.randn(8, 64, requires_grad=True)
    cost = costs.StepCost()
    with cost.count("train", images=8):
        layer(x).sum().backward()
    assert cost.flops["train"] == 3 * 2 * 8 * 64 * 32
    assert cost.ops["train"] >= 3 and cost.images["train"] == 8


def test_the_planned_flops_are_the_models_own(cap, tmp_path, capsys):
    """fit's count of its first step equals FlopCounterMode around the same forward and backward."""
    cap(1)
    _micro_fit(tmp_path)
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith(costs.PLANNED)]
    counted = json.loads(line[len(costs.PLANNED):])["train_flops_per_step"]
    model = create_model("mae_vit_micro_patch4_32", img_size=32)
    cost = costs.StepCost()
    with cost.count("train"):
        model(torch.rand(16, 3, 32, 32), mask_ratio=0.75)[0].backward()
    assert counted == cost.flops["train"]


def test_t4_prediction_arithmetic():
    record = {"epochs": 10, "steps_per_epoch": 100, "train_flops_per_step": 1.3e12, "train_ops_per_step": 1000,
              "data_seconds_per_step": 0.01, "val_images": 500, "val_flops_per_image": 1.3e9}
    rate = predict.T4_PEAK_TFLOPS * 1e12 * 0.25
    expected = 10 * (100 * (0.01 + 1.3e12 / rate) + 500 * 1.3e9 / rate)
    assert predict.predict_t4(record, 0.25) == pytest.approx(expected)
    tiny = dict(record, train_flops_per_step=1e6)  # launch-bound: 1000 operations x 10 us a step
    assert predict.predict_t4(tiny, 0.25) == pytest.approx(10 * (100 * (0.01 + 1000 * predict.SECONDS_PER_OP)
                                                                 + 500 * 1.3e9 / rate))


def test_planned_runs_are_read_back_from_a_notebook():
    record = {"epochs": 2, "steps_per_epoch": 3, "train_flops_per_step": 10, "train_ops_per_step": 1,
              "data_seconds_per_step": 0.0, "val_images": 0, "val_flops_per_image": 0}
    text = f"epoch 1/2\n{costs.PLANNED}{json.dumps(record)}\n"

    def cell():
        printed = nbformat.v4.new_output("stream", name="stdout", text=text)
        return nbformat.v4.new_code_cell("fit(...)", outputs=[printed])

    nb = nbformat.v4.new_notebook(cells=[cell(), cell()])
    assert predict.planned_runs(nb) == [record, record]
    row = predict.predict_lesson(nb, "99", with_scoring=False)
    assert row["trainings"] == 2 and row["pflop"] == pytest.approx(2 * 2 * 3 * 10 / 1e15)


def test_trained_or_quick_trains_the_recipe_at_the_callers_size(cap, tmp_path, monkeypatch, capsys):
    from maelib.data import data_root

    if not (data_root(must_exist=False) / "cats_dogs" / "cats").is_dir():
        pytest.skip("needs the cats and dogs of the course data (MAELIB_DATA_DIR)")
    cap(1)
    monkeypatch.setattr(runs, "REPO_ROOT", tmp_path)  # checkpoints/ under tmp_path
    path = runs.trained_or_quick("tiny", quick_epochs=2, img_size=16, preset="smoke", progress=False)
    assert "a quick model by the same recipe: 2 epochs at 16 px" in capsys.readouterr().out
    loaded = runs.load_run(path)
    assert loaded.model.img_size == (16, 16) and loaded.recipe["overrides"]["img_size"] == 16
    real = runs.checkpoint_path(get_config("tiny", "smoke"))  # once the recipe's own model is there, it is used
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_bytes(b"")
    assert runs.trained_or_quick("tiny", quick_epochs=2, img_size=16, preset="smoke") == real
    assert replace(get_config("tiny", "smoke"), img_size=16).img_size == 16
