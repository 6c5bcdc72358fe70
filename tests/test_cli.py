"""`maelib train`: named configurations, flags that override them, gradient accumulation, and a
run killed with SIGKILL that resumes to the very parameters of a run that was never interrupted."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from maelib import configs, runs
from maelib.__main__ import make_parser, resolve_run, train

ROOT = Path(__file__).resolve().parent.parent
# 32 tiny images: 24 to train on, 8 to validate, in one batch of 24 (a larger batch is refused); the tiny
# configuration's 2-block ViT at 16 px
TINY = ["train", "--config", "tiny", "--preset", "smoke", "--img-size", "16", "--patch-size", "4",
        "--val-fraction", "0.25", "--batch-size", "24", "--amp", "off", "--device", "cpu"]


@pytest.fixture(scope="module")
def npy_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(0)
    np.save(folder / "images.npy", rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8))
    return folder


def args_for(*flags: str) -> argparse.Namespace:
    return make_parser().parse_args(list(flags))


def same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_run_resumes_to_the_parameters_of_an_uninterrupted_one(tmp_path, npy_folder):
    # 12 steps per epoch, random masks, random crops and flips: every source of randomness is in play
    flags = [*TINY, "--data-folder", str(npy_folder), "--batch-size", "2", "--epochs", "6", "--blr", "0.128"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as here
    process = subprocess.Popen([sys.executable, "-m", "maelib", *flags, "--out", str(killed)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (killed / "last.pt").exists():  # the first checkpoint: epoch 1 is done
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        time.sleep(0.1)  # into the next epoch
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    done = torch.load(killed / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 6, f"the run was killed after epoch {done} of 6"

    reference, ref_history = train(args_for(*flags, "--out", str(tmp_path / "reference")))
    resumed, history = train(args_for(*flags, "--out", str(killed), "--resume"))
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]
    assert history["train_loss"] == ref_history["train_loss"]
    assert history["val_loss"] == ref_history["val_loss"]
    assert same_params(resumed.state_dict(), reference.state_dict())


def test_gradient_accumulation_equals_one_big_batch(tmp_path, npy_folder):
    # block masks and no augmentation: the batches of 4 are exactly the halves / quarters of the batches of 16
    flags = [*TINY, "--data-folder", str(npy_folder), "--no-augment", "--mask-mode", "block", "--epochs", "2",
             "--lr", "2e-3"]
    big, big_history = train(args_for(*flags, "--batch-size", "16", "--out", str(tmp_path / "big")))
    # 24 images: groups of 4 + 2 batches of 4, i.e. 16 + 8 images, the last group shorter
    small, history = train(args_for(*flags, "--batch-size", "4", "--accum-steps", "4", "--out",
                                    str(tmp_path / "small")))
    record = json.loads((tmp_path / "small" / "run.json").read_text())
    assert (record["accum_steps"], record["global_batch"]) == (4, 16)
    assert history["train_loss"] == pytest.approx(big_history["train_loss"], rel=1e-5)
    assert history["lr"] == pytest.approx(big_history["lr"])
    big_state, state = big.state_dict(), small.state_dict()
    for key in big_state:
        if not key.endswith("attn.qkv.bias"):  # key biases: zero gradient, AdamW noise (see test_distributed)
            torch.testing.assert_close(state[key], big_state[key], rtol=1e-4, atol=1e-6)


def test_every_configuration_builds_in_every_preset():
    for name in configs.CONFIGS:
        for preset in ("smoke", "cpu", "gpu"):
            run = configs.get_config(name, preset)
            assert run.name == name and run.train.epochs >= 1
            if run.model == "mae_vit_base_patch16" and preset != "gpu":
                continue  # 112 M parameters: build it once
            model = runs.build_model(run)
            imgs = torch.zeros(2, 3, run.img_size, run.img_size)
            assert model.make_mask(imgs, **run.train.masking).mask.shape == (2, model.num_patches)
    with pytest.raises(ValueError, match="unknown configuration 'nope'"):
        configs.get_config("nope", "cpu")


def test_learning_rate_follows_the_global_batch():
    lesson01 = configs.get_config("lesson01_mlp_cats_dogs", "cpu")
    assert configs.learning_rate(lesson01, configs.batch_plan(lesson01, 1)[1]) == pytest.approx(5e-3)  # the lesson's
    assert configs.batch_plan(lesson01, 4) == (1, 512)
    assert configs.learning_rate(lesson01, 512) == pytest.approx(2e-2)

    paper = configs.get_config("paper_vit_base", "gpu")
    assert (paper.global_batch, paper.blr, paper.train.weight_decay, paper.train.betas) == (4096, 1.5e-4, 0.05,
                                                                                          (0.9, 0.95))
    assert (paper.train.warmup_epochs, paper.train.epochs, paper.train.masking) == (40, 800, {"mask_ratio": 0.75})
    assert paper.model_kwargs["norm_pix_loss"] is True
    assert configs.batch_plan(paper, 8) == (8, 4096)  # one node of 8 GPUs: 64 x 8 x 8
    assert configs.batch_plan(paper, 16) == (4, 4096)  # two nodes
    assert configs.learning_rate(paper, 4096) == pytest.approx(2.4e-3)
    with pytest.raises(ValueError, match="not a multiple"):
        configs.batch_plan(paper, 3)


def test_flags_override_the_configuration():
    run = resolve_run(args_for("train", "--config", "lesson04_facades_block", "--preset", "cpu",
                               "--block-ratio", "0.25", "--flipped", "--epochs", "7", "--batch-size", "4",
                               "--blr", "0.01", "--no-augment", "--img-size", "64", "--loss", "mse"))
    assert run.train.masking == {"mask_mode": "block", "block_ratio": 0.25, "random_offset": True, "flipped": True}
    assert (run.train.epochs, run.batch_size, run.blr, run.augment, run.img_size, run.loss) == \
        (7, 4, 0.01, None, 64, "mse")
    # another mode drops the configuration's block arguments
    run = resolve_run(args_for("train", "--config", "lesson04_facades_block", "--mask-mode", "random",
                               "--mask-ratio", "0.6"))
    assert run.train.masking == {"mask_mode": "random", "mask_ratio": 0.6}
    # explicit accumulation replaces the paper's global batch; a folder of .npy becomes the data set
    run = resolve_run(args_for("train", "--config", "paper_vit_base", "--accum-steps", "2", "--norm-pix-loss"))
    assert (run.global_batch, run.train.accum_steps, run.model_kwargs["norm_pix_loss"]) == (None, 2, True)
    run = resolve_run(args_for("train", "--config", "tiny", "--data-folder", str(ROOT / "maelib")))
    assert run.dataset == "folder"
    with pytest.raises(SystemExit, match="random only"):
        resolve_run(args_for("train", "--config", "lesson04_facades_block", "--mask-ratio", "0.5"))
    with pytest.raises(SystemExit, match="not both"):
        resolve_run(args_for("train", "--config", "tiny", "--accum-steps", "2", "--global-batch", "64"))
    with pytest.raises(SystemExit):  # argparse: not a configuration
        args_for("train", "--config", "lesson99")


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, npy_folder, capsys):
    (tmp_path / "last.pt").write_bytes(b"a run's checkpoint")
    with pytest.raises(SystemExit, match="--resume"):
        train(args_for(*TINY, "--data-folder", str(npy_folder), "--out", str(tmp_path)))
    with pytest.raises(SystemExit, match="does not work here"):  # 3 of 4 patch rows is not a block of 0.9
        train(args_for(*TINY, "--data-folder", str(npy_folder), "--mask-mode", "block", "--block-ratio", "0.9",
                       "--dry-run", "--out", str(tmp_path / "new")))


def test_every_flag_is_documented(capsys):
    parser = make_parser()
    train_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train"))
    for action in train_parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    with pytest.raises(SystemExit):
        make_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in configs.CONFIGS)
    assert "torchrun --nnodes=2 --node_rank=0 --master_addr=" in text


def test_combined_loss_trains_through_fit(tmp_path, npy_folder, monkeypatch):
    from torch import nn

    from maelib import losses

    calls = []  # per call of the perceptual term: its value, and whether gradients were being recorded

    class Stub(nn.Module):  # stands in for VGG19 (its weights are a 550 MB download)
        def forward(self, pred_imgs, target_imgs):
            value = (pred_imgs - target_imgs).abs().mean()
            calls.append((value.item(), torch.is_grad_enabled()))
            return value

    monkeypatch.setattr(losses, "vgg19_weights_available", lambda *args, **kwargs: True)
    monkeypatch.setattr(losses, "VGGPerceptualLoss", Stub)
    flags = [*TINY, "--data-folder", str(npy_folder), "--mask-mode", "square", "--block-ratio", "0.25",
             "--epochs", "1"]
    _, history = train(args_for(*flags, "--loss", "combined", "--out", str(tmp_path / "combined")))
    assert np.isfinite(history["train_loss"][0]) and np.isfinite(history["val_loss"][0])
    record = json.loads((tmp_path / "combined" / "run.json").read_text())
    assert record["config"]["loss"] == "combined"
    # one training batch (24 images), then one validation batch: the perceptual term is in the loss that is
    # differentiated, and in the validation loss
    assert [grad for _, grad in calls] == [True, False]

    # the same run with the MSE alone sees the same images and masks, and the first step's loss is taken
    # before any update: the combined run's is 0.6 x that MSE + 0.4 x the perceptual term
    _, mse_history = train(args_for(*flags, "--loss", "mse", "--out", str(tmp_path / "mse")))
    assert len(calls) == 2  # the MSE run did not use it
    assert history["train_loss"][0] == pytest.approx(0.6 * mse_history["train_loss"][0] + 0.4 * calls[0][0],
                                                     rel=1e-5)
    assert history["train_loss"][0] != pytest.approx(mse_history["train_loss"][0], rel=1e-3)


def test_normalize_inputs_standardises_with_the_training_images_statistics(tmp_path, npy_folder):
    flags = [*TINY, "--data-folder", str(npy_folder), "--no-augment"]
    plain = runs.load_data(resolve_run(args_for(*flags)), progress=False)
    assert plain.normalizer is None  # the tiny configuration trains on pixels in [0, 1]
    run = resolve_run(args_for(*flags, "--normalize-inputs"))
    parts = runs.load_data(run, progress=False)
    train_set, val_set, normalizer = parts.train, parts.val, parts.normalizer
    train_imgs = torch.stack([train_set[i] for i in range(len(train_set))])  # (24, 3, 16, 16), standardised
    assert torch.allclose(train_imgs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_imgs.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    # validation images get the training images' numbers, and they map back to the original pixels
    assert torch.allclose(normalizer.denormalize(val_set[0]), plain.val[0], atol=1e-6)
    assert not torch.allclose(val_set[0], plain.val[0])

    train(args_for(*flags, "--normalize-inputs", "--epochs", "1", "--out", str(tmp_path)))
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["normalize_inputs"] is True
    assert record["normalizer"] == {"mean": list(normalizer.mean), "std": list(normalizer.std)}
