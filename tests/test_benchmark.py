"""benchmarks/train_step.py runs end to end on a tiny configuration (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_step.py"
MODELS = ("maelib", "HF", "torch.nn", "maelib bf16")


def test_benchmark_reports_every_model_with_equal_parameter_counts(tmp_path):
    out_json = tmp_path / "result.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--configs", "micro", "--steps", "2", "--warmup", "1",
                          "--no-compile", "--profile", "never", "--loader-seconds", "0.2", "--json", str(out_json)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "img/s" in out and "parameters (all / trainable)" in out and "-> equal" in out
    for name in MODELS:
        assert any(line.strip().startswith(name + " ") for line in out.splitlines()), f"no row for {name}"

    result = json.loads(out_json.read_text())["results"][0]
    assert result["config"] == "micro"
    assert len(set(result["params"].values())) == 1 and len(set(result["trainable_params"].values())) == 1
    for name in MODELS:
        model = result["models"][name]
        assert model["images_per_s"] > 0 and model["gflops"] > 0
        assert model["params"] == result["params"]["maelib"]
    # the same weights, images and masks: the fp32 models start from the same loss
    for name in ("HF", "torch.nn"):
        assert result["models"][name]["step0_rel_diff"] < 1e-5
    assert result["loader"]["images_per_s"] > 0
