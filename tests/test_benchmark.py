"""benchmarks/train_step.py runs end to end on a tiny configuration (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_step.py"
MODELS = ("maelib", "HF", "torch.nn", "maelib bf16", "maelib bf16 SDPA")


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
    # maelib bf16 with its attention rule and with SDPA forced: the same function, compared with fp32 by round
    for name in ("maelib bf16", "maelib bf16 SDPA"):
        assert result["models"][name]["vs_fp32"] > 0 and result["models"][name]["precision"] == "bf16"
    parts = {(row["part"], row["dtype"]) for row in result["attention"]}
    assert ("encoder", "float32") in parts and ("decoder", "float32") in parts
    attention = [row for row in result["attention"] if row["part"] != "patch embedding"]
    assert all(row["chosen"] in ("sdpa", "explicit") and row["sdpa_ms"] > 0 for row in attention)
    embedding = [row for row in result["attention"] if row["part"] == "patch embedding"]
    assert embedding and all(row["conv_ms"] > 0 < row["linear_ms"] for row in embedding)
    assert "maelib uses" in out and "=== goals" in out


def test_attention_only_table_covers_every_configuration(tmp_path):
    out_json = tmp_path / "attention.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--configs", "micro,faces64", "--attention-only",
                          "--attention-reps", "1", "--batch", "2", "--json", str(out_json)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out_json.read_text())["attention"]
    # faces64: 16 visible patches + cls in the encoder, 64 patches + cls in the decoder
    assert {(r["part"], r.get("tokens")) for r in rows["faces64"]} == {("encoder", 17), ("decoder", 65),
                                                                       ("patch embedding", None)}
    assert "img/s" not in run.stdout  # no training steps
