"""Helpers shared by several test files (pytest puts tests/ on sys.path: ``from helpers import ...``)."""

import contextlib
import socket
import threading
from functools import partial
from http.server import ThreadingHTTPServer


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
