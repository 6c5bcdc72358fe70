"""Models: the MLP-MAE of lesson 01, the ViT-MAE of the paper, and a classifier on its encoder.

Named configurations follow facebookresearch/mae (``mae_vit_base_patch16`` ...), plus the seed
projects' models and small ones that train on a CPU. ``create_model(name, **overrides)`` builds
any of them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .base import MaskedAutoencoder
from .classifier import MAEClassifier
from .mlp_mae import MaskedAutoencoderMLP
from .pos_embed import interpolate_pos_embed, sincos_2d
from .vit_mae import MaskedAutoencoderViT

# name -> factory. Paper sizes use the official decoder (512 wide, 8 blocks, 16 heads).
MODEL_CONFIGS: dict[str, Callable[..., MaskedAutoencoder]] = {
    # facebookresearch/mae
    "mae_vit_base_patch16": partial(MaskedAutoencoderViT, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                    decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    "mae_vit_large_patch16": partial(MaskedAutoencoderViT, patch_size=16, embed_dim=1024, depth=24,
                                     num_heads=16, decoder_embed_dim=512, decoder_depth=8,
                                     decoder_num_heads=16),
    "mae_vit_huge_patch14": partial(MaskedAutoencoderViT, patch_size=14, embed_dim=1280, depth=32,
                                    num_heads=16, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    # the facade ViT-MAE of lessons 04 and 04b (their gpu preset; the cpu preset narrows it to 64 px, patch 8):
    # 224 px, patch 16, width 256, encoder 12 blocks x 4 heads, decoder 6 x 4
    "mae_vit_facades": partial(MaskedAutoencoderViT, img_size=224, patch_size=16, embed_dim=256, depth=12,
                               num_heads=4, decoder_embed_dim=256, decoder_depth=6, decoder_num_heads=4),
    # IcarusWizard/MAE's CIFAR-10 model: 32 px, patch 2, width 192, 12 x 3 heads / 4 x 3 heads
    "mae_vit_tiny_patch2_32": partial(MaskedAutoencoderViT, img_size=32, patch_size=2, embed_dim=192, depth=12,
                                      num_heads=3, decoder_embed_dim=192, decoder_depth=4, decoder_num_heads=3),
    # small models that train on a laptop CPU
    "mae_vit_micro_patch4_32": partial(MaskedAutoencoderViT, img_size=32, patch_size=4, embed_dim=64, depth=2,
                                       num_heads=4, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4),
    "mae_vit_small_faces64": partial(MaskedAutoencoderViT, img_size=64, patch_size=8, embed_dim=192, depth=6,
                                     num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    # lesson 02's gpu geometry: 256 px, patch 16, width 384, 12 x 6 heads / 256 x 4 x 8 heads
    "mae_vit_small_faces256": partial(MaskedAutoencoderViT, img_size=256, patch_size=16, embed_dim=384, depth=12,
                                      num_heads=6, decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8),
    "mae_mlp_48": partial(MaskedAutoencoderMLP, img_size=48, patch_size=6),
}


def create_model(name: str, **overrides) -> MaskedAutoencoder:
    """Build a named configuration; keyword arguments override its settings."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name](**overrides)


def build_model(architecture: dict) -> MaskedAutoencoder:
    """The model that :meth:`MaskedAutoencoder.architecture` describes (with fresh weights)."""
    classes = {cls.__name__: cls for cls in (MaskedAutoencoderViT, MaskedAutoencoderMLP)}
    name = architecture.get("class") if isinstance(architecture, dict) else None
    if name not in classes:
        raise ValueError(f"cannot rebuild a model from {architecture!r}: expected {{'class': one of "
                         f"{sorted(classes)}, 'kwargs': {{...}}}}")
    return classes[name](**architecture.get("kwargs", {}))


mae_vit_base_patch16 = MODEL_CONFIGS["mae_vit_base_patch16"]
mae_vit_large_patch16 = MODEL_CONFIGS["mae_vit_large_patch16"]
mae_vit_huge_patch14 = MODEL_CONFIGS["mae_vit_huge_patch14"]

__all__ = [
    "MODEL_CONFIGS", "MAEClassifier", "MaskedAutoencoder", "MaskedAutoencoderMLP", "MaskedAutoencoderViT",
    "build_model", "create_model", "interpolate_pos_embed", "mae_vit_base_patch16", "mae_vit_huge_patch14",
    "mae_vit_large_patch16", "sincos_2d",
]
