"""Runs and checkpoints: one self-contained checkpoint format that loads back into a ready model however it
was trained (fit, save_checkpoint, `maelib train`, the lessons' older files); the recipe's test split; and
clear errors for damaged or unsafe files."""

import argparse
import dataclasses
import datetime
import math

import numpy as np
import pytest
import torch

from maelib import configs, runs
from maelib.__main__ import main
from maelib.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from maelib.data import ImageSet, PixelNormalizer
from maelib.models import MaskedAutoencoderMLP, MaskedAutoencoderViT, build_model, create_model
from maelib.pretrained import add_encoder_blocks
from maelib.train import TrainConfig, fit, make_loader

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
            decoder_num_heads=2)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


@pytest.mark.parametrize("make", [
    lambda: MaskedAutoencoderViT(**TINY, norm_pix_loss=True),
    lambda: MaskedAutoencoderViT(img_size=(16, 24), patch_size=8, embed_dim=32, depth=1, num_heads=4,
                                 decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=4, mlp_ratio=2.0),
    lambda: MaskedAutoencoderMLP(img_size=12, patch_size=6, hidden_dim=32, latent_dim=8, decoder_hidden_dim=16),
])
def test_the_architecture_rebuilds_the_same_model(make):
    torch.manual_seed(0)
    model = make()
    again = build_model(model.architecture())
    again.load_state_dict(model.state_dict(), strict=True)  # same names, same shapes
    assert again.architecture() == model.architecture()
    imgs = torch.rand(2, model.in_chans, *model.img_size)
    noise = torch.rand(2, model.num_patches)
    torch.testing.assert_close(again(imgs, noise=noise)[0], model(imgs, noise=noise)[0])


def test_the_architecture_follows_resized_positions_and_added_blocks():
    model = MaskedAutoencoderViT(**TINY)
    model.resize_pos_embed(24)
    add_encoder_blocks(model, 1)
    kwargs = model.architecture()["kwargs"]
    assert kwargs["img_size"] == (24, 24) and kwargs["depth"] == 3
    build_model(model.architecture()).load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(ValueError, match="cannot rebuild a model"):
        build_model({"class": "Transformer", "kwargs": {}})


def test_fits_last_checkpoint_alone_gives_back_the_model_and_its_normaliser(tmp_path):
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(**TINY)
    images = torch.rand(16, 3, 16, 16)
    norm = PixelNormalizer.fit(images)
    recipe = {"name": "tiny", "preset": "smoke", "overrides": {"epochs": 2}}
    history = fit(model, make_loader(norm(images), 8), config=TrainConfig(epochs=2, progress=False, amp="off",
                                                                          checkpoint_dir=tmp_path), device="cpu",
                  normalizer=norm, recipe=recipe)
    for source in (tmp_path, tmp_path / "last.pt"):  # the run folder or the file
        loaded = runs.load_run(source)
        assert same_weights(loaded.model, model) and not loaded.model.training
        assert loaded.normalizer == norm and loaded.recipe == recipe and loaded.epoch == 2
        assert loaded.history["train_loss"] == history["train_loss"]
    assert read_checkpoint(tmp_path / "last.pt", "cpu")["format"] == 2


def test_a_saved_checkpoint_keeps_metrics_and_the_lessons_older_files_still_load(tmp_path):
    model = create_model("mae_vit_small_faces64", depth=1, decoder_depth=1)
    save_checkpoint(tmp_path / "new.pt", model, epoch=3, metrics={"masked_psnr": 17.5})
    loaded = runs.load_run(tmp_path / "new.pt")
    assert same_weights(loaded.model, model) and loaded.metrics == {"masked_psnr": 17.5} and loaded.normalizer is None
    # a lesson checkpoint rendered before the architecture was stored: model_config and normalizer entries
    old = {"epoch": 1, "model": model.state_dict(), "model_config": {"name": "mae_vit_small_faces64", "depth": 1,
                                                                     "decoder_depth": 1},
           "normalizer": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}
    torch.save(old, tmp_path / "old.pt")
    loaded = runs.load_run(tmp_path / "old.pt")
    assert same_weights(loaded.model, model) and loaded.normalizer == PixelNormalizer((0.5, 0.4, 0.3), (0.2,) * 3)
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="does not say which model"):
        runs.load_run(tmp_path / "bare.pt")
    with pytest.raises(FileNotFoundError, match="has no last.pt"):
        runs.load_run(tmp_path)


def test_the_command_lines_run_folder_loads_with_its_normaliser_and_recipe(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "images.npy", np.random.default_rng(0).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8))
    out = tmp_path / "run"
    main(["train", "--config", "lesson02_vit_faces", "--preset", "smoke", "--data-folder", str(folder),
          "--img-size", "16", "--patch-size", "4", "--epochs", "1", "--batch-size", "8", "--amp", "off",
          "--device", "cpu", "--out", str(out)])
    loaded = runs.load_run(out)
    assert loaded.recipe["name"] == "lesson02_vit_faces" and loaded.recipe["preset"] == "smoke"
    assert loaded.recipe["overrides"]["img_size"] == 16 and loaded.recipe["overrides"]["dataset"] == "npy"
    assert "batch_size" in loaded.recipe["overrides"] and "name" not in loaded.recipe["overrides"]
    assert isinstance(loaded.normalizer, PixelNormalizer)  # the recipe standardises its inputs
    imgs = torch.rand(2, 3, 16, 16)
    out_imgs = loaded.model.reconstruct(imgs, loaded.model.make_mask(imgs), normalizer=loaded.normalizer)
    assert out_imgs.shape == imgs.shape and torch.isfinite(out_imgs).all()


def test_the_test_split_is_returned_held_out_and_stratified():
    labels = torch.tensor([0] * 60 + [1] * 40)
    images = ImageSet(torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8), labels=labels,
                      paths=[f"{i}.jpg" for i in range(100)])
    run = dataclasses.replace(configs.get_config("tiny", "smoke"), val_fraction=0.1, test_fraction=0.2)
    train, val, test = (images.subset(idx) for idx in runs._split(images, run).values())
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert test.labels.tolist().count(1) == 8  # 40% of the test images, as in the whole set
    seen = {p for part in (train, val) for p in part.paths}
    assert not seen & set(test.paths)  # never trained or validated on
    run = dataclasses.replace(run, test_fraction=0.0)
    assert list(runs._split(images, run)) == ["train", "val"]


def test_recipe_record_names_only_what_differs_from_the_recipe():
    run = configs.replace(configs.get_config("lesson01_mlp_cats_dogs", "cpu"), epochs=3, batch_size=32)
    record = runs.recipe_record(run)
    assert record == {"name": "lesson01_mlp_cats_dogs", "preset": "cpu",
                      "overrides": {"batch_size": 32, "train.epochs": 3}}
    renamed = runs.recipe_record(configs.replace(run, name="my_cats"))  # no longer a named recipe: all of it
    assert renamed["name"] == "my_cats" and renamed["overrides"]["batch_size"] == 32
    assert renamed["overrides"]["train"]["epochs"] == 3


# --------------------------------------------------------------------------- bad files, clear errors
@pytest.fixture
def good(tmp_path):
    return save_checkpoint(tmp_path / "good.pt", MaskedAutoencoderViT(**TINY), epoch=1)


def test_a_truncated_checkpoint_is_called_damaged_and_named(tmp_path, good):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {cut} is damaged.*delete it and resume"):
        read_checkpoint(cut, "cpu")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt is empty"):
        runs.load_run(tmp_path / "empty.pt")


def test_other_files_are_not_checkpoints_and_unsafe_ones_are_refused_without_bad_advice(tmp_path):
    (tmp_path / "notes.pt").write_text("these are my notes")
    with pytest.raises(CheckpointError, match="notes.pt is not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "notes.pt", "cpu")
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1), "when": datetime.date(2021, 11, 11)},
               tmp_path / "obj.pt")  # a class weights_only does not allow
    with pytest.raises(CheckpointError, match="does not load safely") as err:
        read_checkpoint(tmp_path / "obj.pt", "cpu")
    assert "weights_only=False:" not in str(err.value).replace("with weights_only=False", "")


def test_save_checkpoint_refuses_what_it_could_not_load_back(tmp_path):
    model = MaskedAutoencoderViT(**TINY)
    for value in (np.float32(1.5), tmp_path, {"nested": np.int64(3)}):
        with pytest.raises(TypeError, match="could not be loaded back with weights_only=True"):
            save_checkpoint(tmp_path / "x.pt", model, note=value)
    assert not (tmp_path / "x.pt").exists()
    save_checkpoint(tmp_path / "x.pt", model, note={"minutes": 1.5, "path": str(tmp_path), "ids": (1, 2)})
    assert read_checkpoint(tmp_path / "x.pt", "cpu")["note"]["ids"] == (1, 2)


def test_an_interrupted_saves_temp_file_is_removed_by_the_next_save(tmp_path):
    orphan = tmp_path / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.x.tmp"  # another file's: left alone
    other.write_bytes(b"x")
    save_checkpoint(tmp_path / "last.pt", MaskedAutoencoderViT(**TINY))
    assert not orphan.exists() and other.exists() and (tmp_path / "last.pt").exists()


def test_the_nan_stop_says_when_no_checkpoint_was_written(tmp_path):
    model = MaskedAutoencoderViT(**TINY)
    with torch.no_grad():
        model.decoder_pred.bias.fill_(math.nan)
    config = TrainConfig(epochs=1, progress=False, amp="off", checkpoint_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="No checkpoint was written before it"):
        fit(model, make_loader(torch.rand(8, 3, 16, 16), 4), config=config, device="cpu")


# --------------------------------------------------------------------------- train, or load what was trained
@pytest.fixture
def npy_recipe(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "images.npy", np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    run = configs.get_config("lesson02_vit_faces", "smoke")  # a recipe that standardises its inputs
    return configs.replace(run, dataset="npy", data_folder=str(folder), data_kwargs={}, img_size=16, patch_size=4,
                           batch_size=8, subset=None, epochs=2, amp="off")


def test_train_or_load_trains_saves_then_loads_the_same_recipe(tmp_path, npy_recipe, capsys):
    path = tmp_path / "ckpt" / "faces.pt"
    trained = runs.train_or_load(npy_recipe, path=path, device="cpu", progress=False)
    assert not trained.loaded and trained.epoch == 2 and path.exists() and trained.minutes > 0
    assert (len(trained.data.train), len(trained.data.val), len(trained.data.test)) == (32, 4, 4)
    assert trained.recipe == runs.recipe_record(npy_recipe) and trained.recipe["overrides"]["train.epochs"] == 2
    again = runs.train_or_load(npy_recipe, path=path, device="cpu", progress=False)
    assert again.loaded and same_weights(again.model, trained.model) and again.normalizer == trained.normalizer
    assert again.history == trained.history and again.minutes == pytest.approx(trained.minutes)
    # another recipe at the same path is trained, not loaded, and said so
    other = configs.replace(npy_recipe, epochs=1)
    third = runs.train_or_load(other, path=path, device="cpu", progress=False)
    assert not third.loaded and third.epoch == 1 and "holds another recipe" in capsys.readouterr().out
    # reuse=False trains afresh even where the same recipe is saved: the same seed gives the same weights
    fresh = runs.train_or_load(other, path=path, device="cpu", progress=False, reuse=False)
    assert not fresh.loaded and same_weights(fresh.model, third.model)


def test_an_interrupted_train_or_load_continues_from_its_last_epoch(tmp_path, npy_recipe):
    path = tmp_path / "faces.pt"
    # as if the notebook had stopped after epoch 1: last.pt of epoch 1 in the progress folder, no final file
    first = runs.train_or_load(configs.replace(npy_recipe, epochs=1), path=tmp_path / "one.pt", device="cpu",
                               progress=False)
    (tmp_path / "faces").mkdir()
    last = read_checkpoint(tmp_path / "one" / "last.pt", "cpu")
    last["recipe"], last["config"]["epochs"] = runs.recipe_record(npy_recipe), 2
    torch.save(last, tmp_path / "faces" / "last.pt")
    resumed = runs.train_or_load(npy_recipe, path=path, device="cpu", progress=False)
    assert resumed.history["train_loss"][0] == first.history["train_loss"][0]  # epoch 1 was not trained again
    assert len(resumed.history["epoch"]) == 2 and resumed.epoch == 2 and resumed.path.exists()


def test_checkpoint_paths_follow_the_recipe_and_preset_and_what_changed():
    run = configs.get_config("lesson02_vit_faces", "cpu")
    assert runs.checkpoint_path(configs.get_config("lesson02_vit_faces", "gpu")).name == "lesson02_vit_faces-gpu.pt"
    assert runs.checkpoint_path(run).name == "lesson02_vit_faces-cpu.pt" and runs.checkpoint_path(run).parent.name \
        == "checkpoints"
    shorter, longer = configs.replace(run, epochs=10), configs.replace(run, epochs=20)
    names = {runs.checkpoint_path(r).name for r in (run, shorter, longer, configs.replace(run, epochs=10))}
    assert len(names) == 3 and all(n.startswith("lesson02_vit_faces-cpu") for n in names)
    with pytest.raises(ValueError, match="must name a .pt file"):
        runs.train_or_load(run, path="checkpoints/faces")  # refused before any data is loaded


def test_from_pretrained_rebuilds_a_maelib_checkpoint_by_its_stored_architecture(tmp_path):
    from maelib.pretrained import from_pretrained

    torch.manual_seed(0)
    trained = MaskedAutoencoderViT(**TINY)
    path = save_checkpoint(tmp_path / "faces.pt", trained, epoch=1)
    model = from_pretrained(path)  # no arch=: the file says what it holds
    assert same_weights(model, trained) and model.load_report.decoder_loaded
    bigger = from_pretrained(path, img_size=24)  # and overrides still apply: positions interpolated to 6x6
    assert bigger.img_size == (24, 24) and bigger.pos_embed.shape == (1, 37, 32)
    assert bigger.load_report.interpolated


def test_a_model_the_command_line_trained_is_found_by_train_or_load(tmp_path, npy_recipe):
    from maelib.__main__ import make_parser, resolve_run, train

    folder = npy_recipe.data_folder
    flags = ["train", "--config", "lesson02_vit_faces", "--preset", "smoke", "--data-folder", folder, "--img-size",
             "16", "--patch-size", "4", "--epochs", "2", "--batch-size", "8", "--amp", "off", "--device", "cpu"]
    out = tmp_path / "checkpoints" / "faces"
    model, history = train(make_parser().parse_args([*flags, "--out", str(out)]))
    run = resolve_run(make_parser().parse_args(flags))  # the same recipe, as a lesson would build it
    found = runs.train_or_load(run, path=out.with_suffix(".pt"), device="cpu", progress=False)
    assert found.history == history and found.epoch == 2  # resumed at its end: nothing trained again
    assert same_weights(found.model, model) and out.with_suffix(".pt").exists()


# --------------------------------------------------------------------------- fine-tuning chains, larger decoding
def test_a_fine_tuning_recipe_starts_from_the_trained_model_of_the_recipe_it_names(tmp_path, npy_recipe,
                                                                                  monkeypatch, capsys):
    start_recipe = configs.replace(npy_recipe, name="start_here", epochs=1)
    monkeypatch.setitem(configs.CONFIGS, "start_here", lambda preset: start_recipe)
    monkeypatch.setattr(runs, "REPO_ROOT", tmp_path)  # checkpoints/ of the chain go here
    tuned_recipe = configs.replace(npy_recipe, name="tuned", init_from="start_here", epochs=1, lr=1e-12)
    tuned = runs.train_or_load(tuned_recipe, path=tmp_path / "tuned.pt", device="cpu", progress=False)
    out = capsys.readouterr().out
    assert "trained start_here (smoke preset) for 1 epochs" in out and "with start_here" in out
    start = runs.load_run(tmp_path / "checkpoints" / "start_here-smoke.pt")
    # a learning rate of 1e-12 leaves the weights where they started: at the trained start, not at a new init
    for (name, a), b in zip(tuned.model.state_dict().items(), start.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    scratch = runs.build_model(tuned_recipe, in_chans=3)  # what training from scratch would have started from
    assert not torch.allclose(scratch.state_dict()["blocks.0.attn.qkv.weight"], start.model.state_dict()[
        "blocks.0.attn.qkv.weight"], atol=1e-3)
    assert tuned.total_minutes == pytest.approx(tuned.minutes + float(start.checkpoint["train_minutes"]))
    again = runs.train_or_load(tuned_recipe, path=tmp_path / "tuned.pt", device="cpu", progress=False)
    assert again.loaded and again.total_minutes == pytest.approx(tuned.total_minutes)
    # a checkpoint file works as a start too: here the tuned model, tuned once more
    from_file = configs.replace(tuned_recipe, init_from=str(tmp_path / "tuned.pt"))
    twice = runs.train_or_load(from_file, path=tmp_path / "twice.pt", device="cpu", progress=False)
    assert torch.allclose(twice.model.state_dict()["blocks.0.attn.qkv.weight"],
                          tuned.model.state_dict()["blocks.0.attn.qkv.weight"], atol=1e-6)
    assert twice.total_minutes == pytest.approx(twice.minutes + tuned.total_minutes)


def test_init_from_must_name_a_recipe_or_a_checkpoint(npy_recipe):
    with pytest.raises(ValueError, match="init_from names no recipe and no checkpoint .*: 'lesson99'"):
        configs.replace(npy_recipe, init_from="lesson99")


def test_decode_scale_decodes_the_training_images_larger_and_leaves_the_rest(npy_recipe):
    run = configs.replace(npy_recipe, decode_scale=1.5, augment={"crop_scale": (0.5, 1.0), "hflip": True})
    parts, plain = runs.load_data(run, progress=False), runs.load_data(npy_recipe, progress=False)
    assert parts.train.images.shape[-2:] == (24, 24) and parts.splits["train"].images.shape[-2:] == (16, 16)
    assert tuple(parts.train[0].shape) == (3, 16, 16) and parts.normalizer == plain.normalizer
    assert torch.equal(parts.test.images, plain.test.images)
    with pytest.raises(ValueError, match="decode_scale must be >= 1"):
        configs.replace(npy_recipe, decode_scale=0.5)


def test_the_ssim_loss_adds_its_weighted_term_to_the_masked_mse(npy_recipe):
    from maelib.losses import SSIMLoss
    from maelib.patches import paste_back, patch_mask_to_pixels

    run = configs.replace(npy_recipe, loss="mse+ssim", ssim_weight=4.0)
    parts = runs.load_data(run, progress=False)
    torch.manual_seed(0)
    model = runs.build_model(run, **parts.from_data)
    imgs = torch.stack([parts.val[i] for i in range(4)])
    loss_fn = runs.build_loss(run, model, normalizer=parts.normalizer)
    torch.manual_seed(1)
    total = loss_fn(model, imgs)
    torch.manual_seed(1)
    mse, pred, mask = model(imgs, **run.train.masking)  # the same masks: the same seed
    pixels = parts.normalizer.denormalize
    pm = patch_mask_to_pixels(mask, model.patch_size)
    ssim_term = SSIMLoss()(paste_back(pixels(model.unpatchify(pred)), pixels(imgs), pm), pixels(imgs))
    assert total.item() == pytest.approx(mse.item() + 4.0 * ssim_term.item(), rel=1e-4)
    assert runs.build_loss(configs.replace(run, loss="mse"), model) is None  # the model's own masked MSE


def test_the_command_line_fine_tunes_from_the_checkpoint_it_is_given(tmp_path, npy_recipe):
    from maelib.__main__ import make_parser, train

    folder = npy_recipe.data_folder
    flags = ["train", "--config", "lesson02_vit_faces", "--preset", "smoke", "--data-folder", folder, "--img-size",
             "16", "--patch-size", "4", "--batch-size", "8", "--amp", "off", "--device", "cpu"]
    start, _ = train(make_parser().parse_args([*flags, "--epochs", "1", "--out", str(tmp_path / "start")]))
    tuned, _ = train(make_parser().parse_args([*flags, "--epochs", "1", "--lr", "1e-12", "--init-from",
                                               str(tmp_path / "start" / "last.pt"), "--out", str(tmp_path / "tuned")]))
    for a, b in zip(tuned.state_dict().values(), start.state_dict().values(), strict=True):
        assert torch.allclose(a.cpu(), b.cpu(), atol=1e-6)
    with pytest.raises(SystemExit, match="--init-from names no recipe and no checkpoint .*'nowhere'"):
        train(make_parser().parse_args([*flags, "--init-from", "nowhere", "--out", str(tmp_path / "x")]))
