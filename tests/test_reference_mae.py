"""maelib's ViT-MAE against a reference MAE in plain torch (``helpers.reference_mae``).

The reference is written from the paper's algorithm and facebookresearch/mae's ``models_mae.py``, without
maelib's model code: patchify, random masking by sorting per-sample noise, the encoder on the visible
patches with a cls token, the decoder with mask tokens, and the loss on the masked patches. It reads the
model's weights by their official names and computes in float64, so the comparisons below measure only
maelib's float32 rounding. Both count the kept patches alike at the sizes used here (maelib rounds
the masked count, facebookresearch/mae truncates the kept one; they differ only at rounding edges).
"""

import pytest
import torch
from helpers import ref_patchify, ref_sincos_pos_embed, reference_mae

from maelib.models import MaskedAutoencoderViT
from maelib.models.attention import use_attention

HEADS = dict(num_heads=4, decoder_num_heads=4)
TOL = dict(atol=1e-5, rtol=1e-5)  # float32 against float64


def tiny_vit(img_size=32, norm_pix_loss=False, nudge=True):
    """A small ViT-MAE: 2 encoder blocks of 64 x 4 heads, 1 decoder block of 32 x 4 heads, patch 8.

    ``nudge``: every weight moved off its initial value, where biases are 0, norms 1 and the cls token's
    position embedding 0, so that a forgotten bias, a swapped norm or a missing position would not show.
    """
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(img_size=img_size, patch_size=8, embed_dim=64, depth=2, decoder_embed_dim=32,
                                 decoder_depth=1, norm_pix_loss=norm_pix_loss, **HEADS)
    if nudge:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, *model.img_size, generator=g), torch.rand(3, model.num_patches, generator=g)


def reference(model, imgs, noise, weights=None):
    """The reference's ``(loss, pred, mask)`` in float64, with the model's weights (or ``weights``)."""
    weights = model.state_dict() if weights is None else weights
    return reference_mae(weights, imgs.double(), noise, patch_size=model.patch_size,
                         norm_pix_loss=model.norm_pix_loss, **HEADS)


@pytest.mark.parametrize("img_size", [32, (32, 48)], ids=["32x32", "32x48"])
def test_patches_and_position_embeddings_are_the_papers(img_size):
    model = tiny_vit(img_size, nudge=False)
    rows, cols = model.grid_size
    imgs = inputs(model)[0]
    torch.testing.assert_close(model.patchify(imgs), ref_patchify(imgs, 8), atol=0, rtol=0)
    for name, dim in (("pos_embed", 64), ("decoder_pos_embed", 32)):
        torch.testing.assert_close(getattr(model, name)[0].double(), ref_sincos_pos_embed(dim, rows, cols),
                                   atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
@pytest.mark.parametrize("norm_pix_loss", [False, True], ids=["pixels", "norm_pix"])
@pytest.mark.parametrize("img_size", [32, (32, 48)], ids=["32x32", "32x48"])
def test_forward_returns_the_reference_loss_pred_and_mask(img_size, norm_pix_loss, attention):
    model = tiny_vit(img_size, norm_pix_loss)
    imgs, noise = inputs(model)
    with torch.no_grad(), use_attention(attention):
        loss, pred, mask = model(imgs, noise=noise)
    ref_loss, ref_pred, ref_mask = reference(model, imgs, noise)
    assert mask.sum(1).tolist() == [0.75 * model.num_patches] * 3
    assert torch.equal(mask, ref_mask.float())
    torch.testing.assert_close(pred.double(), ref_pred, **TOL)
    torch.testing.assert_close(loss.double(), ref_loss, **TOL)

    # the comparison can tell: another noise masks other patches, and the loss moves by far more than TOL
    other = torch.rand(noise.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), use_attention(attention):
        other_loss, _, other_mask = model(imgs, noise=other)
    assert not torch.equal(other_mask, ref_mask.float())
    assert not torch.allclose(other_loss.double(), ref_loss, atol=1e-3, rtol=1e-3)
    assert not torch.equal(reference(model, imgs, other)[2], ref_mask)


@pytest.mark.parametrize("norm_pix_loss", [False, True], ids=["pixels", "norm_pix"])
def test_gradients_are_the_references(norm_pix_loss):
    model = tiny_vit((32, 48), norm_pix_loss)
    imgs, noise = inputs(model)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(model(imgs, noise=noise)[0], list(params.values()))
    ref_grads = torch.autograd.grad(reference(model, imgs, noise, dict(model.named_parameters()))[0],
                                    list(params.values()))
    for name, grad, ref_grad in zip(params, grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=1e-7, rtol=1e-5, msg=name)
