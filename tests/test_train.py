"""The fit loop: it learns, resumes exactly, saves atomically, stops on NaN, and logs."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from maelib import checkpoint as ckpt_module
from maelib.checkpoint import load_checkpoint, load_model, save_checkpoint
from maelib.data import data_root
from maelib.loggers import TensorBoardLogger, WandbLogger
from maelib.models import MaskedAutoencoderViT
from maelib.train import (
    TrainConfig,
    cpu_has_native_bf16,
    describe_amp,
    evaluate,
    fit,
    lr_factor,
    make_loader,
    make_optimizer,
    param_groups,
    resolve_amp,
)

# the real images: in the data root ($MAELIB_DATA_DIR, set by CI, else data/ in this repository), else in the
# course's shared data beside the repository
DATA_DIRS = [data_root(must_exist=False), Path(__file__).resolve().parents[2] / "shared" / "data"]
CATS = next((d / "cats_dogs/cats" for d in DATA_DIRS if (d / "cats_dogs/cats").is_dir()), None)


def tiny_vit(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
               decoder_depth=1, decoder_num_heads=4)
    return MaskedAutoencoderViT(**{**cfg, **kw})


def quiet(**kw):
    return TrainConfig(**{"progress": False, "amp": "off", **kw})


def toy_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 2, (n,), generator=g))


def fixed_noise(batch=8, n=16):
    return torch.rand(batch, n, generator=torch.Generator().manual_seed(1))


def same_params(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_overfits_one_batch_of_real_images():
    if CATS is None:
        pytest.skip(f"no cats_dogs/cats in {' or '.join(map(str, DATA_DIRS))}")
    from PIL import Image

    files = sorted(CATS.glob("*.jpg"))[:8]
    imgs = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((32, 32))))
                        .permute(2, 0, 1).float() / 255 for f in files])
    model = tiny_vit()
    # 200 epochs of one batch = 200 steps, always the same mask
    history = fit(model, [imgs], config=quiet(epochs=200, lr=1e-3, schedule="constant", weight_decay=0.0,
                                              masking={"noise": fixed_noise()}), device="cpu")
    assert len(history["train_loss"]) == 200
    assert history["train_loss"][-1] < history["train_loss"][0] / 10, (history["train_loss"][0],
                                                                       history["train_loss"][-1])


def test_resume_after_a_finished_shorter_run_is_exact(tmp_path):
    data, val = toy_data(), toy_data(8, seed=1)
    # "constant" with warmup: the schedule of the first epochs does not depend on the total length
    cfg = dict(lr=1e-3, schedule="constant", warmup_epochs=1, grad_clip=1.0, masking={"mask_ratio": 0.5})
    ref_model = tiny_vit()
    ref = fit(ref_model, make_loader(data, 8, seed=3), DataLoader(val, 4), quiet(epochs=3, **cfg),
              device="cpu")

    ckdir = tmp_path / "run"
    first = fit(tiny_vit(), make_loader(data, 8, seed=3), DataLoader(val, 4),
                quiet(epochs=2, checkpoint_dir=ckdir, **cfg), device="cpu")
    assert first["train_loss"] == ref["train_loss"][:2]
    model = tiny_vit(seed=123)  # a fresh process: other initial weights, all overwritten by the checkpoint
    resumed = fit(model, make_loader(data, 8, seed=3), DataLoader(val, 4),
                  quiet(epochs=3, checkpoint_dir=ckdir, resume=True, **cfg), device="cpu")
    assert resumed["epoch"] == [1, 2, 3]
    assert resumed["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-6)
    assert resumed["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert same_params(model, ref_model)


def test_resume_after_a_crash_inside_an_epoch_is_exact(tmp_path):
    data, val = toy_data(), toy_data(8, seed=1)
    cfg = dict(lr=2e-3, schedule="cosine", warmup_epochs=0.5)  # the schedule spans all 3 epochs
    loader = lambda: DataLoader(data, batch_size=8, shuffle=True)  # a plain loader: global RNG, reseeded

    ref_model = tiny_vit()
    ref = fit(ref_model, loader(), DataLoader(val, 4), quiet(epochs=3, **cfg), device="cpu")

    calls = 0

    def crash_in_epoch_3(model, imgs):
        nonlocal calls
        calls += model.training  # count training steps, not validation batches
        if calls == 2 * 3 + 2:  # 3 steps per epoch: the 2nd step of epoch 3
            raise RuntimeError("simulated crash")
        return model(imgs)[0]

    ckdir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tiny_vit(), loader(), DataLoader(val, 4), quiet(epochs=3, checkpoint_dir=ckdir, **cfg),
            loss_fn=crash_in_epoch_3, device="cpu")
    assert torch.load(ckdir / "last.pt", weights_only=True)["epoch"] == 2

    model = tiny_vit(seed=123)
    resumed = fit(model, loader(), DataLoader(val, 4),
                  quiet(epochs=3, checkpoint_dir=ckdir, resume=True, **cfg), device="cpu")
    assert resumed["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-6)
    assert resumed["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert resumed["lr"] == pytest.approx(ref["lr"])
    assert same_params(model, ref_model)


def test_checkpoint_round_trip_reproduces_outputs(tmp_path):
    model = tiny_vit()
    fit(model, make_loader(toy_data(16), 8), config=quiet(epochs=1, checkpoint_dir=tmp_path), device="cpu")
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)  # plain data only
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["epochs"] == 1
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "scaler", "history", "rng"}

    loaded = load_model(tmp_path / "last.pt", tiny_vit(seed=5))
    model.eval(), loaded.eval()
    imgs = toy_data(8, seed=2).tensors[0]
    with torch.no_grad():
        _, pred, _ = model(imgs, noise=fixed_noise())
        _, pred2, _ = loaded(imgs, noise=fixed_noise())
    assert torch.equal(pred, pred2)

    # the optimizer comes back too
    other = tiny_vit(seed=5)
    opt = torch.optim.AdamW(param_groups(other, 0.05))
    info = load_checkpoint(tmp_path / "last.pt", other, opt)
    assert info["history"]["epoch"] == [1]
    assert all(len(opt.state[p]) > 0 for g in opt.param_groups for p in g["params"])


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    real_save, saves = torch.save, []

    def failing_save(obj, f, *args, **kw):
        saves.append(obj["epoch"])
        if len(saves) == 2:
            f.write(b"half a checkpoint")  # the crash happens mid-write
            raise OSError("disk full")
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    model = tiny_vit()
    with pytest.raises(OSError, match="disk full"):
        fit(model, make_loader(toy_data(16), 8), config=quiet(epochs=3, checkpoint_dir=tmp_path),
            device="cpu")
    assert saves == [1, 2]
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind
    survivor = torch.load(tmp_path / "last.pt", weights_only=True)
    assert survivor["epoch"] == 1 and len(survivor["history"]["train_loss"]) == 1
    load_model(tmp_path / "last.pt", tiny_vit())


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    calls = 0

    def nan_at_step_3(model, imgs):
        nonlocal calls
        calls += model.training
        loss = model(imgs)[0]
        return loss * math.nan if calls == 3 else loss

    with pytest.raises(FloatingPointError, match=r"epoch 1, global step 3 \("):
        fit(tiny_vit(), make_loader(toy_data(40), 8), config=quiet(epochs=2, checkpoint_dir=tmp_path),
            loss_fn=nan_at_step_3, device="cpu")
    assert not (tmp_path / "last.pt").exists()  # the broken epoch was not saved


def test_weight_decay_groups_skip_biases_norms_tokens_and_frozen():
    model = tiny_vit()
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "mask_token", "norm.weight", "decoder_pred.bias", "blocks.1.norm1.weight"} <= skipped
    assert {"decoder_pred.weight", "blocks.1.attn.qkv.weight", "patch_embed.proj.weight"} <= decayed
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert not any(n.startswith("blocks.0.") or "pos_embed" in n for n in decayed | skipped)  # frozen


def test_frozen_parameters_stay_unchanged():
    model = tiny_vit()
    model(toy_data(8).tensors[0])[0].backward()  # frozen after some training: stale .grad everywhere
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("blocks.0.")}
    head = model.decoder_pred.weight.clone()
    fit(model, make_loader(toy_data(16), 8), config=quiet(epochs=1), device="cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())
    assert not torch.equal(model.decoder_pred.weight, head)


def test_validation_masks_are_fixed_and_leave_the_rng_alone():
    model, loader = tiny_vit(), DataLoader(toy_data(16), 8)
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first = evaluate(model, loader, quiet(val_mask_seed=4))
    assert torch.equal(torch.rand(3), expected_next)
    assert evaluate(model, loader, quiet(val_mask_seed=4)) == first
    assert evaluate(model, loader, quiet(val_mask_seed=5)) != first


def test_schedules():
    total, warmup = 100, 10
    cosine = [lr_factor(s, total, warmup, "cosine") for s in range(total)]
    assert cosine[0] == pytest.approx(0.1) and cosine[warmup] == 1.0 and cosine[-1] < 0.01
    assert all(a >= b for a, b in zip(cosine[warmup:-1], cosine[warmup + 1:], strict=True))
    onecycle = [lr_factor(s, total, 0, "onecycle") for s in range(total)]
    assert onecycle[0] == pytest.approx(1 / 25) and max(onecycle) == onecycle[30] == 1.0
    assert onecycle[-1] == pytest.approx(1 / 25e4)
    assert [lr_factor(s, total, warmup, "constant") for s in (5, 50, 99)] == [0.6, 1.0, 1.0]


def test_amp_rules(monkeypatch):
    assert resolve_amp("off", "cpu") is None
    assert resolve_amp("bf16", "cpu") is torch.bfloat16
    assert resolve_amp("fp16", "cpu") is torch.float16
    assert resolve_amp("auto", "cpu") == (torch.bfloat16 if cpu_has_native_bf16() else None)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_BF16")
    assert resolve_amp("auto", "cpu") is torch.bfloat16
    assert describe_amp("auto", "cpu") == "precision: bf16 autocast (amp='auto': native bf16 on this CPU)"
    assert resolve_amp("auto", "mps") is None and "float32 on mps" in describe_amp("auto", "mps")
    with pytest.raises(ValueError, match="'fp8'"):
        TrainConfig(amp="fp8")
    history = fit(tiny_vit(), make_loader(toy_data(16), 8), config=quiet(epochs=1, amp="bf16"), device="cpu")
    assert math.isfinite(history["train_loss"][0])


def test_cpu_without_native_bf16_trains_in_float32(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not cpu_has_native_bf16() and resolve_amp("auto", "cpu") is None
    assert describe_amp("auto", "cpu") == "precision: float32 (amp='auto': no native bf16 on this CPU)"


@pytest.mark.parametrize("capability,dtype,why", [
    ((7, 5), torch.float16, "compute capability 7.5: no native bf16, so fp16"),  # T4: bf16 only emulated
    ((7, 0), torch.float16, "compute capability 7.0: no native bf16, so fp16"),  # V100
    ((8, 0), torch.bfloat16, "compute capability 8.0: native bf16"),  # A100
    ((8, 9), torch.bfloat16, "compute capability 8.9: native bf16"),  # L4
])
def test_amp_auto_on_gpus_follows_the_compute_capability(monkeypatch, capability, dtype, why):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on a T4 too
    assert resolve_amp("auto", "cuda") is dtype
    assert describe_amp("auto", "cuda:0").endswith(f"(amp='auto': {why})")
    assert resolve_amp("bf16", "cuda") is torch.bfloat16  # forcing it is the user's choice


def test_fit_says_which_precision_it_trains_in(capsys):
    fit(tiny_vit(), make_loader(toy_data(8), 8), config=quiet(epochs=1, progress=True), device="cpu")
    assert "precision: float32 (amp='off')" in capsys.readouterr().out


@pytest.mark.parametrize("epochs,print_every,printed", [(5, 2, [1, 2, 4, 5]), (60, None, [1, *range(3, 61, 3)]),
                                                          (3, None, [1, 2, 3])])
def test_fit_prints_every_kth_epoch_and_keeps_every_epoch_in_its_history(capsys, epochs, print_every, printed):
    history = fit(tiny_vit(), make_loader(toy_data(4), 4), config=quiet(epochs=epochs, progress=True,
                                                                      print_every=print_every), device="cpu")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [int(line.split()[1].split("/")[0]) for line in lines] == printed
    assert history["epoch"] == list(range(1, epochs + 1))
    with pytest.raises(ValueError, match="print_every must be None .* got 0"):
        quiet(print_every=0)


def test_make_logger_builds_the_tracker_it_names(tmp_path):
    from maelib.loggers import Logger, make_logger

    assert type(make_logger("none", "run")) is Logger
    with make_logger("tensorboard", "run", {"epochs": 3, "name": "x", "amp": True}, folder=tmp_path) as logger:
        assert isinstance(logger, TensorBoardLogger) and logger.log_dir == str(tmp_path / "tensorboard" / "run")
    with pytest.raises(ValueError, match="tracking must be one of .* got 'tensorbord'"):
        make_logger("tensorbord", "run")


def test_make_optimizer_takes_the_fused_adamw_and_updates_like_the_plain_one():
    fused_model, plain_model = tiny_vit(), tiny_vit()
    fused = make_optimizer(fused_model, 1e-2)
    plain = torch.optim.AdamW(param_groups(plain_model, 0.05), lr=1e-2, betas=(0.9, 0.95))
    assert fused.defaults["fused"] and fused.param_groups[0]["weight_decay"] == 0.05
    assert fused.defaults["betas"] == (0.9, 0.95) and fused.param_groups[1]["weight_decay"] == 0.0
    imgs, noise = torch.rand(4, 3, 32, 32), fixed_noise(4)
    for model, opt in ((fused_model, fused), (plain_model, plain)):
        for _ in range(3):
            model(imgs, noise=noise)[0].backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters(), strict=True):
        if not name.endswith("attn.qkv.bias"):  # key biases: zero gradient, AdamW noise (see test_distributed)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert not same_params(fused_model, tiny_vit())  # and they did move


def test_tensorboard_logger_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TensorBoardLogger(tmp_path) as logger:
        fit(tiny_vit(), make_loader(toy_data(16), 8), DataLoader(toy_data(8), 8),
            quiet(epochs=2, log_every=1), device="cpu", logger=logger)
        logger.log_images("recon", torch.rand(4, 3, 32, 32), step=4)
    assert list(tmp_path.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"train/loss", "lr", "val/loss", "train/epoch_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert events.Tags()["images"] == ["recon"]


def test_wandb_logger_without_wandb_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install wandb"):
        WandbLogger("maelib-test")


def test_load_model_names_key_and_shapes(tmp_path):
    save_checkpoint(tmp_path / "small.pt", tiny_vit(), epoch=1)
    shapes = r"'mask_token': \(1, 1, 32\) in the checkpoint, \(1, 1, 48\) in the model"
    with pytest.raises(ValueError, match=shapes):
        load_model(tmp_path / "small.pt", tiny_vit(decoder_embed_dim=48))
    torch.save({"model": {k: v for k, v in tiny_vit().state_dict().items() if k != "mask_token"}},
               tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing from the checkpoint: 'mask_token'"):
        load_model(tmp_path / "partial.pt", tiny_vit())
    assert load_model(tmp_path / "partial.pt", tiny_vit(), strict=False) is not None


def test_atomic_save_cleans_up_when_replace_fails(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last.pt", tiny_vit(), epoch=1)
    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(ckpt_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(tmp_path / "last.pt", tiny_vit(seed=1), epoch=2)
    assert os.listdir(tmp_path) == ["last.pt"]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_fp16_trains_on_the_cpu_with_an_enabled_gradient_scaler(monkeypatch):
    scalers = []

    class RecordingScaler(torch.amp.GradScaler):  # fit's scaler, counting the losses it scales
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaled = 0
            scalers.append(self)

        def scale(self, outputs):
            self.scaled += 1
            return super().scale(outputs)

    monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)
    model, reference = tiny_vit(), tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dict(epochs=2, masking={"noise": fixed_noise()})
    history = fit(model, make_loader(toy_data(16), 8), config=quiet(amp="fp16", **cfg), device="cpu")
    [scaler] = scalers
    assert scaler.is_enabled() and scaler.scaled == 4  # 2 epochs of 2 batches: every loss scaled up
    assert all(math.isfinite(loss) for loss in history["train_loss"])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert {k for k, p in model.named_parameters() if p.requires_grad} <= changed
    # the same run in float32 (no scaler): fp16 rounding shows in the losses, and only to fp16's precision
    scalers.clear()
    fp32 = fit(reference, make_loader(toy_data(16), 8), config=quiet(**cfg), device="cpu")
    assert not scalers[0].is_enabled()
    assert history["train_loss"][0] != fp32["train_loss"][0]  # the first step, before any update
    assert history["train_loss"] == pytest.approx(fp32["train_loss"], rel=1e-3)


def test_compiled_model_trains_like_the_eager_one():
    from torch._dynamo.utils import counters

    # inductor draws its own random numbers: the masks are given, so both runs see the same ones
    cfg = dict(epochs=1, masking={"noise": fixed_noise()})
    val = DataLoader(toy_data(8, seed=1), 8)
    eager = fit(tiny_vit(), make_loader(toy_data(16), 8), val, quiet(**cfg), device="cpu")
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = fit(tiny_vit(), make_loader(toy_data(16), 8), val, quiet(compile=True, **cfg), device="cpu")
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()  # drop the compiled code
    assert graphs >= 1  # the training steps ran through torch.compile
    assert math.isfinite(compiled["train_loss"][0])
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)  # after the same updates
