import math

import pytest
import torch
from helpers import fair_layout

from maelib.data import PixelNormalizer
from maelib.masking import random_masking
from maelib.models import (
    MAEClassifier,
    MaskedAutoencoderMLP,
    MaskedAutoencoderViT,
    create_model,
    interpolate_pos_embed,
    sincos_2d,
)
from maelib.models.transformer import Attention


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
               decoder_depth=1, decoder_num_heads=4)
    return MaskedAutoencoderViT(**{**cfg, **kw})


def test_state_dict_has_facebookresearch_names_and_shapes_and_loads_strictly():
    model = create_model("mae_vit_base_patch16")
    layout = fair_layout(768, 12, 512, 8, 16, 3, 196)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == layout
    foreign = {k: torch.randn(shape) for k, shape in layout.items()}
    model.load_state_dict(foreign, strict=True)
    assert torch.equal(model.blocks[3].attn.qkv.weight, foreign["blocks.3.attn.qkv.weight"])
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = {"pos_embed", "decoder_pos_embed"}  # sin-cos, not trained
    assert n_params == sum(math.prod(s) for k, s in layout.items() if k not in fixed) == 111_655_680


def test_attention_matches_the_textbook_formula():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2)
    x = torch.randn(3, 5, 16)
    q, k, v = attn.qkv(x).reshape(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_sincos_embedding_follows_the_formula():
    emb = sincos_2d(8, (3, 4), cls_token=True)
    assert emb.shape == (13, 8) and emb[0].abs().sum() == 0
    row, col = 2, 3
    token = emb[1 + row * 4 + col]
    omega = [1.0, 1.0 / 100]  # 1 / 10000 ** (k / 2) for k in 0, 1
    expected = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega] + \
               [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
    torch.testing.assert_close(token, torch.tensor(expected), atol=1e-6, rtol=0)


def test_interpolating_pos_embed_to_the_same_grid_is_identity_and_other_grids_have_right_shape():
    pe = sincos_2d(16, (4, 4), cls_token=True).unsqueeze(0)
    assert torch.equal(interpolate_pos_embed(pe, (4, 4), (4, 4)), pe)
    out = interpolate_pos_embed(pe, (4, 4), (6, 8))
    assert out.shape == (1, 49, 16) and torch.equal(out[:, 0], pe[:, 0])


def test_forward_returns_loss_pred_mask_like_the_official_model():
    model = tiny_vit()
    imgs = torch.rand(2, 3, 32, 32)
    loss, pred, mask = model(imgs, mask_ratio=0.75)
    assert loss.ndim == 0 and pred.shape == (2, 16, 192) and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [12.0, 12.0]


def test_encoder_sees_only_visible_patches():
    torch.manual_seed(0)
    model = tiny_vit().eval()
    imgs = torch.rand(2, 3, 32, 32)
    m = random_masking(2, (4, 4), 0.75, generator=torch.Generator().manual_seed(0))
    latent = model.forward_encoder(imgs, m)
    assert latent.shape == (2, 1 + 4, 64)
    # scribble over the masked pixels: the encoding must not change
    pix = model.unpatchify(m.mask.unsqueeze(-1).expand(-1, -1, 192)).bool()
    changed = torch.where(pix, torch.rand_like(imgs), imgs)
    torch.testing.assert_close(model.forward_encoder(changed, m), latent)
    # but it must react to the visible ones
    assert not torch.allclose(model.forward_encoder(torch.where(pix, imgs, torch.rand_like(imgs)), m), latent)


def test_mlp_mae_sees_only_visible_patches_and_predicts_every_patch():
    torch.manual_seed(0)
    model = MaskedAutoencoderMLP(img_size=12, patch_size=6, hidden_dim=32, latent_dim=16, decoder_hidden_dim=32)
    imgs = torch.rand(3, 3, 12, 12)
    m = random_masking(3, (2, 2), 0.5, generator=torch.Generator().manual_seed(0))
    pred = model.predict(imgs, m)
    assert pred.shape == (3, 4, 108)
    pix = model.unpatchify(m.mask.unsqueeze(-1).expand(-1, -1, 108)).bool()
    torch.testing.assert_close(model.predict(torch.where(pix, torch.rand_like(imgs), imgs), m), pred)


@pytest.mark.parametrize("mode,kwargs,masked", [("block", {"block_ratio": 0.5}, 8), ("grid", {}, 12),
                                                ("combined", {"block_ratio": 0.25, "random_ratio": 0.5}, 10)])
def test_mask_strategy_is_an_argument_of_forward(mode, kwargs, masked):
    _, _, mask = tiny_vit()(torch.rand(2, 3, 32, 32), mask_mode=mode, **kwargs)
    assert mask.sum(1).tolist() == [float(masked)] * 2


def test_given_mask_or_generator_makes_forward_reproducible():
    model = tiny_vit().eval()
    imgs = torch.rand(2, 3, 32, 32)
    a = model(imgs, generator=torch.Generator().manual_seed(5))
    b = model(imgs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    # a ready mask is used as it is: the one the generator drew gives the same output again
    m = random_masking(2, model.grid_size, 0.75, generator=torch.Generator().manual_seed(5))
    given = model(imgs, mask=m)
    assert torch.equal(given[2], m.mask) and torch.equal(given[2], a[2])
    assert torch.equal(given[0], a[0]) and torch.equal(given[1], a[1])
    # and another seed draws another mask, so another prediction
    c = model(imgs, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(c[2], a[2]) and not torch.allclose(c[1], a[1])


def test_reconstruct_is_the_unpatchified_prediction_in_batches_and_in_pixels():
    torch.manual_seed(0)
    model = tiny_vit()  # in training mode: reconstruct must switch to eval and back
    imgs = torch.rand(5, 3, 32, 32)
    mask = random_masking(5, model.grid_size, 0.75, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.unpatchify(model.eval()(imgs, mask=mask)[1])
    model.train()
    got = model.reconstruct(imgs, mask, batch_size=2)  # batches of 2, 2 and 1
    assert model.training and got.shape == (5, 3, 32, 32)
    assert torch.allclose(got, expected, atol=1e-6)
    norm = PixelNormalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    with torch.no_grad():
        in_pixels = norm.denormalize(model.eval().unpatchify(model(norm(imgs), mask=mask)[1]))
    assert torch.allclose(model.reconstruct(imgs, mask, normalizer=norm), in_pixels, atol=1e-6)
    assert torch.equal(mask[1:3].mask, mask.mask[1:3]) and torch.equal(mask[4].ids_keep, mask.ids_keep[4:])


def test_norm_pix_loss_changes_the_target():
    model = tiny_vit()
    imgs = torch.rand(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    plain = model(imgs, noise=noise)[0]
    model.norm_pix_loss = True
    assert not torch.allclose(model(imgs, noise=noise)[0], plain)


def test_resize_pos_embed_lets_the_model_run_on_other_sizes():
    model = tiny_vit()
    model.resize_pos_embed(48)
    loss, pred, mask = model(torch.rand(1, 3, 48, 48))
    assert pred.shape == (1, 36, 192) and model.pos_embed.shape == (1, 37, 64)
    with pytest.raises(ValueError, match="built for 48x48 images, got 32x32"):
        model(torch.rand(1, 3, 32, 32))


def test_classifier_on_encoder_and_linear_probe_freezes_encoder():
    mae = tiny_vit()
    clf = MAEClassifier(mae, num_classes=2, pool="mean", linear_probe=True)
    assert clf(torch.rand(4, 3, 32, 32)).shape == (4, 2)
    assert all(not p.requires_grad for p in mae.parameters())
    assert MAEClassifier(tiny_vit(), 5, pool="cls")(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_mlp_mae_takes_standardised_images_and_reconstructs_pixels_with_the_normaliser():
    torch.manual_seed(0)
    model = MaskedAutoencoderMLP(img_size=12, patch_size=6, hidden_dim=32, latent_dim=16, decoder_hidden_dim=32)
    assert not list(model.buffers())  # no statistics of its own: the PixelNormalizer holds them
    for layer in (model.decoder[-1],):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    norm = PixelNormalizer((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    imgs = torch.rand(2, 3, 12, 12)
    out = model.reconstruct(imgs, random_masking(2, (2, 2), 0.5), normalizer=norm)
    # a decoder that outputs 0 (the standardised mean) paints every pixel in the per-channel mean colour
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]).expand(2, 3))
