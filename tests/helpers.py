"""Helpers shared by several test files (pytest puts tests/ on sys.path: ``from helpers import ...``)."""

import contextlib
import math
import socket
import threading
from functools import partial
from http.server import ThreadingHTTPServer

import torch
import torch.nn.functional as F


def fair_layout(embed_dim, depth, dec_dim, dec_depth, patch, chans, n, mlp_ratio=4):
    """Key names and shapes of facebookresearch/mae's MaskedAutoencoderViT state dict."""
    def block(prefix, d):
        h = int(d * mlp_ratio)
        return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
                f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
                f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                f"{prefix}.mlp.fc1.weight": (h, d), f"{prefix}.mlp.fc1.bias": (h,),
                f"{prefix}.mlp.fc2.weight": (d, h), f"{prefix}.mlp.fc2.bias": (d,)}
    layout = {"cls_token": (1, 1, embed_dim), "pos_embed": (1, n + 1, embed_dim),
              "patch_embed.proj.weight": (embed_dim, chans, patch, patch), "patch_embed.proj.bias": (embed_dim,),
              "norm.weight": (embed_dim,), "norm.bias": (embed_dim,),
              "mask_token": (1, 1, dec_dim), "decoder_pos_embed": (1, n + 1, dec_dim),
              "decoder_embed.weight": (dec_dim, embed_dim), "decoder_embed.bias": (dec_dim,),
              "decoder_norm.weight": (dec_dim,), "decoder_norm.bias": (dec_dim,),
              "decoder_pred.weight": (patch * patch * chans, dec_dim), "decoder_pred.bias": (patch * patch * chans,)}
    for i in range(depth):
        layout.update(block(f"blocks.{i}", embed_dim))
    for i in range(dec_depth):
        layout.update(block(f"decoder_blocks.{i}", dec_dim))
    return layout


@contextlib.contextmanager
def serve_folder(folder, handler):
    """Serve ``folder`` on 127.0.0.1 with ``handler`` (a SimpleHTTPRequestHandler subclass); yield the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port_url(path=""):
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# --------------------------------------------------------------------------- a reference MAE in plain torch
# He et al. (2021), written from the paper and facebookresearch/mae's models_mae.py, with nothing from maelib:
# test_reference_mae.py holds maelib's MaskedAutoencoderViT to it. It reads its weights by the official names
# (a state dict, or dict(model.named_parameters()) to follow gradients) and computes in ``imgs``' dtype.

def ref_patchify(imgs, p):
    """``(B, C, H, W)`` -> ``(B, N, p*p*C)``: patches left to right, top to bottom; (row, col, channel) inside."""
    b, c, h, w = imgs.shape
    patches = [imgs[:, :, i:i + p, j:j + p].permute(0, 2, 3, 1).reshape(b, p * p * c)
               for i in range(0, h, p) for j in range(0, w, p)]
    return torch.stack(patches, dim=1)


def ref_sincos_pos_embed(dim, rows, cols):
    """``(1 + rows*cols, dim)`` float64: a zero row for the cls token, then per patch sin-cos codes of its
    column (first half of the dimensions) and of its row (second half), at frequencies 1 / 10000^(k / (dim/4))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def code(pos):
        angles = pos.double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    row, col = torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.cat([code(col), code(row)], dim=1)])


def ref_random_masking(noise, mask_ratio):
    """Keep the ``int(N * (1 - mask_ratio))`` lowest-noise patches: ``ids_keep, ids_restore, mask`` (1 = masked)."""
    b, n = noise.shape
    keep = int(n * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # lowest noise first: those are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, n, dtype=noise.dtype)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)


def ref_block(x, w, prefix, heads):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""
    b, n, d = x.shape

    def norm(t, name):
        return F.layer_norm(t, (d,), w[f"{prefix}.{name}.weight"], w[f"{prefix}.{name}.bias"], eps=1e-6)

    def linear(t, name):
        return F.linear(t, w[f"{prefix}.{name}.weight"], w[f"{prefix}.{name}.bias"])

    q, k, v = linear(norm(x, "norm1"), "attn.qkv").reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)  # (B, heads, N, N)
    x = x + linear((weights @ v).transpose(1, 2).reshape(b, n, d), "attn.proj")
    return x + linear(F.gelu(linear(norm(x, "norm2"), "mlp.fc1")), "mlp.fc2")


def reference_mae(weights, imgs, noise, *, patch_size, num_heads, decoder_num_heads, mask_ratio=0.75,
                  norm_pix_loss=False):
    """The MAE forward pass: images ``(B, C, H, W)`` and noise ``(B, N)`` -> ``(loss, pred (B, N, p*p*C), mask)``."""
    w = {k: v.to(imgs.dtype) for k, v in weights.items()}
    p = patch_size
    depth = sum(1 for k in w if k.startswith("blocks.") and k.endswith(".norm1.weight"))
    decoder_depth = sum(1 for k in w if k.startswith("decoder_blocks.") and k.endswith(".norm1.weight"))

    # encoder: embed every patch (a convolution with kernel = stride = p), add positions, keep the visible ones
    x = F.conv2d(imgs, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=p)  # (B, D, H/p, W/p)
    x = x.flatten(2).transpose(1, 2) + w["pos_embed"][:, 1:]
    ids_keep, ids_restore, mask = ref_random_masking(noise, mask_ratio)
    x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[2]))
    cls = (w["cls_token"] + w["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for i in range(depth):
        x = ref_block(x, w, f"blocks.{i}", num_heads)
    x = F.layer_norm(x, x.shape[-1:], w["norm.weight"], w["norm.bias"], eps=1e-6)

    # decoder: narrower tokens, a mask token in every masked place, patches back in their order, positions again
    x = F.linear(x, w["decoder_embed.weight"], w["decoder_embed.bias"])
    b, n = noise.shape
    tokens = torch.cat([x[:, 1:], w["mask_token"].expand(b, n - (x.shape[1] - 1), -1)], dim=1)
    tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
    x = torch.cat([x[:, :1], tokens], dim=1) + w["decoder_pos_embed"]
    for i in range(decoder_depth):
        x = ref_block(x, w, f"decoder_blocks.{i}", decoder_num_heads)
    x = F.layer_norm(x, x.shape[-1:], w["decoder_norm.weight"], w["decoder_norm.bias"], eps=1e-6)
    pred = F.linear(x, w["decoder_pred.weight"], w["decoder_pred.bias"])[:, 1:]  # drop the cls token

    # loss: the mean over masked patches of each patch's mean squared error
    target = ref_patchify(imgs, p)
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum(), pred, mask
