"""Pretrained weights: official and maelib checkpoints, URLs, reports, freezing and new blocks.

The checkpoint files are built here, tiny, with the key names and shapes of facebookresearch/mae
(``fair_layout``); downloads come from a local HTTP server on 127.0.0.1. No real weights are fetched.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from functools import partial
from http.server import SimpleHTTPRequestHandler
from types import SimpleNamespace

import pytest
import torch
from helpers import closed_port_url, fair_layout, reference_mae, serve_folder
from torch.utils.data import TensorDataset

from maelib.checkpoint import save_checkpoint
from maelib.data import DownloadError
from maelib.models import MODEL_CONFIGS, MaskedAutoencoderViT, interpolate_pos_embed
from maelib.pretrained import (
    DECODER_MISSING,
    OFFICIAL_WEIGHTS,
    OfficialWeights,
    add_encoder_blocks,
    count_parameters,
    freeze_pretrained_weights,
    from_pretrained,
    load_pretrained,
    weights_dir,
)
from maelib.train import TrainConfig, fit, make_loader, param_groups

CFG = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16, decoder_depth=1,
           decoder_num_heads=4)
ENCODER = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")  # the official encoder-only keys


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return MaskedAutoencoderViT(**{**CFG, **kw})


def official_state(seed=1, *, decoder=True, embed_dim=32, depth=2, decoder_depth=1, grid=4):
    """Random tensors named and shaped like a facebookresearch/mae checkpoint of the tiny model."""
    g = torch.Generator().manual_seed(seed)
    layout = fair_layout(embed_dim, depth, 16, decoder_depth, 8, 3, grid * grid)
    state = {k: torch.randn(shape, generator=g) for k, shape in layout.items()}
    return state if decoder else {k: v for k, v in state.items() if k.startswith(ENCODER)}


def save_official(path, state, **extra):
    torch.save({"model": state, **extra}, path)
    return path


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    # downloads land in tmp_path; a proxy from the environment must not see requests to 127.0.0.1
    monkeypatch.setenv("MAELIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server(tmp_path):
    """Serves the files in ``.folder`` at ``.url``; ``.hits`` lists the paths requested."""
    folder, hits = tmp_path / "served", []
    folder.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server wants
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    with serve_folder(folder, Handler) as url:
        yield SimpleNamespace(url=url, folder=folder, hits=hits)


@pytest.fixture
def closed_port():
    return closed_port_url()


# --------------------------------------------------------------------------- the official list
def test_official_weights_point_at_facebookresearch_files_and_maelib_configs():
    assert {"mae_pretrain_vit_base", "mae_pretrain_vit_large", "mae_pretrain_vit_huge", "mae_visualize_vit_large",
            "mae_visualize_vit_large_ganloss"} <= set(OFFICIAL_WEIGHTS)
    for name, w in OFFICIAL_WEIGHTS.items():
        kind = "visualize" if w.decoder else "pretrain"
        assert w.url == f"https://dl.fbaipublicfiles.com/mae/{kind}/{name}.pth"
        assert w.arch in MODEL_CONFIGS and "CC BY-NC 4.0" in w.licence
    assert OFFICIAL_WEIGHTS["mae_pretrain_vit_huge"].arch == "mae_vit_huge_patch14"


# --------------------------------------------------------------------------- files
def test_encoder_only_checkpoint_loads_the_encoder_and_says_the_decoder_is_missing(tmp_path):
    state = official_state(decoder=False)
    model = tiny(seed=0)
    before = snapshot(model)
    report = load_pretrained(model, save_official(tmp_path / "mae_pretrain_tiny.pth", state))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # the file's encoder
    assert all(torch.equal(after[k], before[k]) for k in after if k not in state)  # the decoder as it was
    assert set(report.loaded) == set(state)
    assert set(report.missing) == set(after) - set(state) and "decoder_blocks.0.mlp.fc2.weight" in report.missing
    assert report.unexpected == [] and report.interpolated == [] and not report.decoder_loaded
    assert DECODER_MISSING in report.notes and DECODER_MISSING in str(report)
    assert model.pretrained_depth == 2


def test_visualisation_checkpoint_loads_strictly_and_reproduces_the_reference_model(tmp_path):
    state = official_state(decoder=True)
    model = tiny(seed=6)
    report = load_pretrained(model, save_official(tmp_path / "mae_visualize_tiny.pth", state))
    assert report.missing == [] and report.unexpected == [] and report.decoder_loaded
    g = torch.Generator().manual_seed(0)
    imgs, noise = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 16, generator=g)
    with torch.no_grad():
        loss, pred, mask = model(imgs, noise=noise)
    # the file's weights run through the plain-torch MAE of the paper (helpers.reference_mae), in float64;
    # the weights are standard normal, so activations reach tens: a float32 tolerance relative to that
    expected_loss, expected, expected_mask = reference_mae(state, imgs.double(), noise, patch_size=8, num_heads=4,
                                                           decoder_num_heads=4)
    assert torch.equal(mask, expected_mask.float())
    torch.testing.assert_close(pred.double(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(loss.double(), expected_loss, atol=1e-4, rtol=1e-4)


def test_checkpoint_written_by_the_official_training_script_loads_without_running_code(tmp_path):
    # misc.save_model stores the argparse arguments next to the weights; weights_only must accept them
    path = save_official(tmp_path / "checkpoint-799.pth", official_state(), epoch=799, scaler={},
                         optimizer={"state": {}, "param_groups": []},
                         args=argparse.Namespace(model="mae_vit_large_patch16", norm_pix_loss=False))
    assert load_pretrained(tiny(), path).decoder_loaded


def test_maelib_checkpoints_and_bare_state_dicts_load(tmp_path):
    trained = tiny(seed=3)
    save_checkpoint(tmp_path / "last.pt", trained, epoch=2, history={"train_loss": [1.0, 0.5]},
                    config=TrainConfig(epochs=2))
    compiled_names = {f"_orig_mod.{k}": v for k, v in trained.state_dict().items()}  # as torch.compile saves them
    torch.save(compiled_names, tmp_path / "bare.pt")
    for name in ("last.pt", "bare.pt"):
        model = tiny(seed=4)
        assert not torch.equal(model.blocks[0].attn.qkv.weight, trained.blocks[0].attn.qkv.weight)
        report = load_pretrained(model, tmp_path / name)
        assert report.missing == [] and report.unexpected == [] and report.decoder_loaded
        assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())


def test_other_image_size_interpolates_position_embeddings_and_says_so(tmp_path):
    state = official_state(grid=4)  # trained on 32 x 32 images: a 4 x 4 grid
    model = tiny(img_size=(32, 48))  # 4 x 6
    report = load_pretrained(model, save_official(tmp_path / "w.pth", state))
    assert report.interpolated == ["pos_embed", "decoder_pos_embed"] and report.missing == []
    assert "4x4" in str(report) and "4x6" in str(report)
    assert torch.equal(model.pos_embed, interpolate_pos_embed(state["pos_embed"], (4, 4), (4, 6)))
    assert torch.equal(model.decoder_pos_embed, interpolate_pos_embed(state["decoder_pos_embed"], (4, 4), (4, 6)))
    assert torch.equal(model.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])
    assert model(torch.rand(1, 3, 32, 48))[1].shape == (1, 24, 192)


def test_shape_mismatch_names_the_key_and_both_shapes_and_loads_nothing(tmp_path):
    model = tiny()
    before = snapshot(model)
    path = save_official(tmp_path / "wide.pth", official_state(embed_dim=48))
    with pytest.raises(ValueError, match=r"'cls_token'.*\(1, 1, 48\).*\(1, 1, 32\)"):
        load_pretrained(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_fine_tuned_checkpoint_keys_are_reported_not_fatal(tmp_path):
    # facebookresearch/mae fine-tunes with global pooling: fc_norm replaces norm, head is the classifier
    state = {k: v for k, v in official_state(decoder=False).items() if not k.startswith("norm.")}
    state |= {"fc_norm.weight": torch.ones(32), "fc_norm.bias": torch.zeros(32),
              "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    model = tiny()
    report = load_pretrained(model, save_official(tmp_path / "mae_finetuned_tiny.pth", state))
    assert sorted(report.unexpected) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert {"norm.weight", "norm.bias"} <= set(report.missing)
    assert "fine-tuned" in str(report) and "fc_norm, head: the classifier" in str(report)
    assert torch.equal(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_checkpoints_that_do_not_fit_are_errors_unless_strict_encoder_is_off(tmp_path):
    path = save_official(tmp_path / "w.pth", official_state(decoder=False))
    model = add_encoder_blocks(tiny(), 1)  # blocks added before loading: 3 blocks, the file has 2
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"blocks\.2.*depth=2, load, then add_encoder_blocks\(model, 1\)"):
        load_pretrained(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    report = load_pretrained(model, path, strict_encoder=False)
    assert "blocks.2.attn.qkv.weight" in report.missing and "fresh initialisation" in str(report)
    assert torch.equal(model.blocks[2].attn.qkv.weight, before["blocks.2.attn.qkv.weight"])
    # a decoder of another depth would be dropped in part: an error too
    deep_decoder = save_official(tmp_path / "d.pth", official_state(decoder_depth=2))
    with pytest.raises(ValueError, match="decoder.*2 decoder blocks, the model 1"):
        load_pretrained(tiny(), deep_decoder)


# --------------------------------------------------------------------------- URLs
def test_url_is_downloaded_once_into_the_weights_cache(server, tmp_path):
    path = save_official(server.folder / "vis.pth", official_state())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    url = f"{server.url}/vis.pth"
    assert load_pretrained(tiny(), url, progress=False).decoder_loaded
    assert weights_dir() == tmp_path / "cache" / "weights" and (weights_dir() / "vis.pth").is_file()
    assert server.hits == ["/vis.pth"]
    report = load_pretrained(tiny(seed=1), url, sha256=digest, progress=False)  # cached: no request
    assert server.hits == ["/vis.pth"] and report.decoder_loaded and url in report.source


def test_wrong_sha256_fails_and_leaves_no_file(server):
    save_official(server.folder / "w.pth", official_state())
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        load_pretrained(tiny(), f"{server.url}/w.pth", sha256="0" * 64, progress=False)
    assert not weights_dir().exists()  # neither the file nor a partial download, nor the folder made for them


def test_unreachable_url_gives_the_offline_error_naming_url_folder_and_licence(closed_port, monkeypatch):
    url = f"{closed_port}/w.pth"
    with pytest.raises(DownloadError) as err:
        load_pretrained(tiny(), url, progress=False)
    assert url in str(err.value) and str(weights_dir() / "w.pth") in str(err.value)
    official = OfficialWeights(f"{closed_port}/mae_pretrain_vit_base.pth", "mae_vit_base_patch16", decoder=False)
    monkeypatch.setitem(OFFICIAL_WEIGHTS, "mae_pretrain_vit_base", official)
    with pytest.raises(DownloadError, match=r"could not reach.*CC BY-NC 4\.0"):
        load_pretrained(tiny(), "mae_pretrain_vit_base", progress=False)


def test_from_pretrained_builds_the_official_architecture_by_name(server, monkeypatch, tmp_path):
    monkeypatch.setitem(MODEL_CONFIGS, "mae_vit_tiny_test", partial(MaskedAutoencoderViT, **CFG))
    monkeypatch.setitem(OFFICIAL_WEIGHTS, "mae_visualize_vit_base", OfficialWeights(
        f"{server.url}/mae_visualize_vit_base.pth", "mae_vit_tiny_test", decoder=True))
    state = official_state()
    save_official(server.folder / "mae_visualize_vit_base.pth", state)
    model = from_pretrained("mae_visualize_vit_base", img_size=48, progress=False)
    assert model.img_size == (48, 48) and model.load_report.decoder_loaded
    assert model.load_report.interpolated == ["pos_embed", "decoder_pos_embed"]
    assert torch.equal(model.decoder_pred.weight, state["decoder_pred.weight"])
    local = save_official(tmp_path / "mine.pth", state)
    with pytest.raises(ValueError, match="arch="):
        from_pretrained(local)
    assert from_pretrained(local, arch="mae_vit_tiny_test").load_report.missing == []


# --------------------------------------------------------------------------- freezing and new blocks
def test_frozen_weights_stay_bit_identical_while_new_blocks_train(tmp_path):
    state = official_state(decoder=False)
    model = tiny(seed=0)
    load_pretrained(model, save_official(tmp_path / "w.pth", state))
    imgs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    everything = model.make_mask(imgs, mask_ratio=0.0)
    latent = model.forward_encoder(imgs, everything).detach()

    add_encoder_blocks(model, 2)
    freeze_pretrained_weights(model)
    assert len(model.blocks) == 4 and model.pretrained_depth == 2
    assert not torch.allclose(model.forward_encoder(imgs, everything), latent)  # the forward pass uses them
    new = model.blocks[2]  # like the other blocks: xavier-uniform linears, zero biases, LayerNorms at identity
    assert new.attn.qkv.weight.shape == (96, 32) and new.mlp.fc1.weight.shape == (128, 32)
    assert new.attn.qkv.weight.abs().max() <= math.sqrt(6 / (32 + 96)) and new.attn.qkv.weight.std() > 0.05
    assert torch.all(new.mlp.fc2.bias == 0) and torch.all(new.norm1.weight == 1)
    assert not torch.equal(model.blocks[2].attn.qkv.weight, model.blocks[3].attn.qkv.weight)

    # counted from the official layout, independently of maelib
    layout = fair_layout(32, 4, 16, 1, 8, 3, 16)
    frozen_keys = [k for k in layout if k.startswith(("patch_embed.", "blocks.0.", "blocks.1.")) or
                   k in ("cls_token", "pos_embed", "decoder_pos_embed")]
    n_frozen, total = sum(math.prod(layout[k]) for k in frozen_keys), sum(math.prod(s) for s in layout.values())
    assert count_parameters(model) == {"trainable": total - n_frozen, "frozen": n_frozen, "total": total}
    in_optimizer = {id(p) for group in param_groups(model, 0.05) for p in group["params"]}
    assert in_optimizer == {id(p) for n, p in model.named_parameters() if n not in frozen_keys}

    before = snapshot(model)
    data = TensorDataset(torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    fit(model, make_loader(data, 8), config=TrainConfig(epochs=1, lr=1e-3, progress=False, amp="off"), device="cpu")
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in frozen_keys)
    added = [k for k in after if k.startswith(("blocks.2.", "blocks.3."))]
    assert len(added) == 24 and all(not torch.equal(after[k], before[k]) for k in added)
    assert not torch.equal(after["decoder_pred.weight"], before["decoder_pred.weight"])

    freeze_pretrained_weights(model, norm=True)
    assert count_parameters(model)["frozen"] == n_frozen + 2 * 32
    with pytest.raises(ValueError, match="num_blocks"):
        freeze_pretrained_weights(model, num_blocks=5)
    fresh = add_encoder_blocks(freeze_pretrained_weights(tiny()), 1)  # frozen first, then a block added
    assert all(p.requires_grad for p in fresh.blocks[2].parameters()) and fresh.pretrained_depth == 2
