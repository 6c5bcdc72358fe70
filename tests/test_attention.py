"""Attention: every implementation computes the same thing; the rule picks by device, dtype and length;
the decoder's attention weights come from the model; the patch embedding is the convolution it replaces."""

import math

import pytest
import torch

from maelib.models import MaskedAutoencoderViT
from maelib.models.attention import EXPLICIT_MAX_TOKENS, attention, choose, use_attention
from maelib.models.transformer import Attention, PatchEmbed


def textbook(q, k, v):
    """softmax(q k^T / sqrt(d)) v in float64: the reference every implementation is held to."""
    q, k, v = (t.double() for t in (q, k, v))
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


def qkv(tokens, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2, tokens, 16, generator=g).to(dtype).requires_grad_() for _ in range(3)]


# float32 within float32 rounding; bfloat16 within its 8-bit mantissa (the output and the gradients
# are sums over up to 200 terms rounded to bf16, hence the looser tolerance)
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [17, 65, 197])
def test_every_implementation_computes_the_same_attention_and_gradients(dtype, tokens):
    grad_out = torch.randn(3, 2, tokens, 16, generator=torch.Generator().manual_seed(9)).to(dtype)
    ref_inputs = [t.detach().double().requires_grad_() for t in qkv(tokens, dtype)]
    ref = textbook(*ref_inputs)
    ref.backward(grad_out.double())
    for implementation in ("sdpa", "explicit"):
        inputs = qkv(tokens, dtype)
        with use_attention(implementation):
            out, weights = attention(*inputs)
        assert weights is None and out.dtype == dtype
        out.backward(grad_out)
        torch.testing.assert_close(out.double(), ref, **TOL[dtype], msg=f"{implementation} output")
        for got, want, name in zip(inputs, ref_inputs, "qkv", strict=True):
            torch.testing.assert_close(got.grad.double(), want.grad, **TOL[dtype],
                                       msg=f"{implementation} gradient of {name}")


def test_the_rule_picks_explicit_products_for_short_sequences_on_the_cpu_and_sdpa_elsewhere():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert choose(cpu, torch.float32, 17) == choose(cpu, torch.float32, 65) == "explicit"
    assert choose(cpu, torch.float32, 197) == "sdpa"  # SDPA's flash kernel wins at this length in float32
    assert choose(cpu, torch.bfloat16, 197) == choose(cpu, torch.bfloat16, 257) == "explicit"
    assert choose(cpu, torch.bfloat16, EXPLICIT_MAX_TOKENS[torch.bfloat16] + 1) == "sdpa"  # not measured
    assert choose(cpu, torch.float16, 17) == "sdpa"
    assert choose(cuda, torch.bfloat16, 17) == choose(mps, torch.float32, 17) == "sdpa"
    with use_attention("sdpa"):
        assert choose(cpu, torch.float32, 17) == "sdpa"
    assert choose(cpu, torch.float32, 17) == "explicit"  # the override ends with the block
    with pytest.raises(ValueError, match="'flash'"), use_attention("flash"):
        pass


def test_attention_weights_on_request_whatever_the_rule_and_equal_to_the_formula():
    q, k, v = (t.detach() for t in qkv(197, torch.float32))  # 197 tokens: the rule says SDPA
    out, weights = attention(q, k, v, need_weights=True)
    expected = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(out, weights @ v)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 197))


def test_the_module_keeps_its_weights_only_when_asked():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=2)
    x = torch.randn(2, 5, 32)
    plain = attn(x)
    assert attn.weights is None
    attn.keep_weights = True
    torch.testing.assert_close(attn(x), plain, atol=1e-6, rtol=1e-5)
    assert attn.weights.shape == (2, 2, 5, 5) and not attn.weights.requires_grad


def test_decoder_attention_reads_every_block_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                 decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)
    imgs = torch.rand(3, 3, 32, 32)
    mask = model.make_mask(imgs, generator=torch.Generator().manual_seed(0))
    maps = model.decoder_attention(imgs, mask)
    assert maps.shape == (2, 3, 4, 17, 17)  # blocks, images, heads, 1 + 16 tokens, 1 + 16 tokens
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 4, 17))
    assert model.training and all(b.attn.weights is None and not b.attn.keep_weights for b in model.decoder_blocks)
    # the first block's map is the formula applied to that block's own input
    captured = {}
    hook = model.decoder_blocks[0].norm1.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    model.eval()
    with torch.no_grad():
        model.predict(imgs, mask)
    hook.remove()
    attn = model.decoder_blocks[0].attn
    q, k, _ = attn.qkv(captured["x"]).reshape(3, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(maps[0], torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1))


@pytest.mark.parametrize("img_size,patch", [((32, 48), 8), ((64, 64), 16)])
def test_patch_embedding_equals_the_convolution_it_is_stored_as(img_size, patch):
    torch.manual_seed(0)
    embed = PatchEmbed(img_size, patch, 3, 24)
    x = torch.rand(2, 3, *img_size)
    conv = embed.proj(x).flatten(2).transpose(1, 2)  # the convolution, as timm and facebookresearch/mae run it
    torch.testing.assert_close(embed(x), conv, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(embed(x).square().sum(), [embed.proj.weight, embed.proj.bias])
    conv_grads = torch.autograd.grad(conv.square().sum(), [embed.proj.weight, embed.proj.bias])
    for got, want in zip(grads, conv_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
