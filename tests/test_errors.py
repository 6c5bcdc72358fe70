"""Bad inputs get errors that name the value, flag or file and say what to do: `maelib train`'s flags and
runs, and the images and masks a model is given."""

import re

import numpy as np
import pytest
import torch

from maelib import runs
from maelib.__main__ import make_parser, resolve_run, train
from maelib.models import MaskedAutoencoderMLP, MaskedAutoencoderViT

# 32 images of 16 px: 24 to train on, 8 to validate; the tiny configuration's ViT with 4 px patches
FLAGS = ["train", "--config", "tiny", "--preset", "smoke", "--img-size", "16", "--patch-size", "4",
         "--val-fraction", "0.25", "--batch-size", "8", "--amp", "off", "--device", "cpu"]


@pytest.fixture(scope="module")
def npy_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "images.npy", np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8))
    return folder


def args(*flags):
    return make_parser().parse_args([*FLAGS, *flags])


# --------------------------------------------------------------------------- maelib train
def test_a_batch_larger_than_the_training_set_is_refused(npy_folder, tmp_path):
    data = ["--data-folder", str(npy_folder), "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="--batch-size 1000 is more than the 24 training images: the learning rate "
                                         "would be scaled for 1000 images.*pass --batch-size 24 or less"):
        train(args(*data, "--batch-size", "1000"))
    with pytest.raises(SystemExit, match="= 32 images per optimizer step is more than the 24 training images.*"
                                         "pass fewer --accum-steps"):
        train(args(*data, "--accum-steps", "4"))
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("flag, value, says", [
    ("--epochs", "0", "need --epochs >= 1"),
    ("--warmup-epochs", "-1", "--warmup-epochs >= 0"),
    ("--val-fraction", "1.5", "--val-fraction and --test-fraction must be >= 0 and leave images to train on"),
    ("--blr", "-1", "learning rates must be > 0, got --blr=-1.0"),
    ("--accum-steps", "0", "--accum-steps must be >= 1, got 0"),
    ("--subset", "0", r"--subset must be >= 1, got 0: it is the number of training images kept \(leave it out"),
])
def test_a_refused_value_is_named_by_its_flag(flag, value, says):
    with pytest.raises(SystemExit, match=f"^maelib train: .*{says}") as err:
        resolve_run(args(flag, value))
    field = flag[2:].replace("-", "_")  # the configuration's name for it, e.g. warmup_epochs
    assert not re.search(rf"(?<![-\w]){field}\b", str(err.value)), err.value


def test_an_img_size_the_patches_do_not_divide_is_refused_before_loading_data(npy_folder, monkeypatch):
    monkeypatch.setattr(runs, "load_data", lambda *a, **k: pytest.fail("the data was loaded first"))
    with pytest.raises(SystemExit, match=r"--img-size 18 is not a whole number of patches of --patch-size 4; pass an "
                                         r"--img-size that is a multiple of 4 \(e.g. 16\)"):
        train(args("--data-folder", str(npy_folder), "--img-size", "18"))


def test_resuming_says_when_there_is_nothing_to_do_and_when_the_schedule_is_stretched(npy_folder, tmp_path, capsys):
    flags = ["--data-folder", str(npy_folder), "--out", str(tmp_path)]
    train(args(*flags, "--epochs", "1"))
    with pytest.raises(SystemExit) as done:
        train(args(*flags, "--epochs", "1", "--resume"))
    assert done.value.code == 0
    assert (f"nothing to do: {tmp_path / 'last.pt'} already has 1 of 1 epochs; pass --epochs M with M > 1 to train "
            "longer") in capsys.readouterr().out
    _, history = train(args(*flags, "--epochs", "2", "--resume"))
    assert history["epoch"] == [1, 2]
    assert ("the cosine schedule is stretched to 2 epochs from the current step on, so the result differs from a "
            "run started with --epochs 2") in capsys.readouterr().out


# --------------------------------------------------------------------------- what a model is given
@pytest.mark.parametrize("build", [
    lambda patch: MaskedAutoencoderViT(img_size=16, patch_size=patch, embed_dim=32, depth=1, num_heads=2,
                                       decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2),
    lambda patch: MaskedAutoencoderMLP(img_size=16, patch_size=patch, hidden_dim=16, latent_dim=8,
                                       decoder_hidden_dim=16),
], ids=["vit", "mlp"])
def test_a_model_names_images_and_masks_it_cannot_take(build):
    model, imgs = build(4), torch.rand(2, 3, 16, 16)
    takes = r"takes images of shape \(B, C, H, W\) = \(B, 3, 16, 16\), got "
    with pytest.raises(ValueError, match=takes + r"\(2, 1, 16, 16\): repeat grey images over 3 channels"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=takes + r"\(3, 16, 16\): one image without the batch dimension"):
        model(imgs[0])
    with pytest.raises(ValueError, match=r"the mask has shape \(3, 16\) \(images, patches\), these images need "
                                         r"\(2, 16\)"):
        model(imgs, mask=model.make_mask(torch.rand(3, 3, 16, 16)))
    with pytest.raises(ValueError, match=r"the mask has shape \(2, 4\) .* of the model's 4x4 grid"):
        model.predict(imgs, build(8).make_mask(imgs))  # a mask for 8 px patches
    with pytest.raises(ValueError, match=takes + r"\(2, 1, 16, 16\)"):
        model.predict(torch.rand(2, 1, 16, 16), model.make_mask(imgs))
