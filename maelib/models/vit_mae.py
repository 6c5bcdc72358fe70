"""The Masked Autoencoder with a Vision Transformer (He et al. 2021).

Parameter names and shapes are those of facebookresearch/mae's ``MaskedAutoencoderViT``, so its
checkpoints load with ``load_state_dict(..., strict=True)``.

1. Cut the image into patches and embed them; add fixed sin-cos position embeddings.
2. Drop the masked patches: the encoder sees only the visible ones (25% by default), which is
   what makes MAE pre-training cheap.
3. Embed the encoded tokens into the (narrower) decoder, put a shared, learned mask token in
   every masked position, add position embeddings again.
4. The decoder's transformer blocks fill in the mask tokens; a linear head predicts each
   patch's pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..masking import Mask, keep_visible
from .base import MaskedAutoencoder
from .pos_embed import interpolate_pos_embed, sincos_2d
from .transformer import Block, PatchEmbed


class MaskedAutoencoderViT(MaskedAutoencoder):
    """ViT-MAE. Images ``(B, C, H, W)`` -> ``(loss, pred (B, N, p*p*C), mask (B, N))``."""

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, norm_pix_loss: bool = False):
        super().__init__()
        self._init_geometry(img_size, patch_size, in_chans)
        self.norm_pix_loss = norm_pix_loss
        self.embed_dim, self.decoder_embed_dim = embed_dim, decoder_embed_dim
        n = self.num_patches

        # --- encoder ---
        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)  # fixed
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        # --- decoder ---
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)

        self.initialize_weights()

    def initialize_weights(self) -> None:
        """As in the paper: sin-cos positions, xavier-uniform linears, normal(0.02) tokens."""
        self.pos_embed.data.copy_(sincos_2d(self.embed_dim, self.grid_size, cls_token=True).unsqueeze(0))
        self.decoder_pos_embed.data.copy_(
            sincos_2d(self.decoder_embed_dim, self.grid_size, cls_token=True).unsqueeze(0))
        # the patch projection is a linear layer in disguise: initialise it as one
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_module)

    def _constructor_kwargs(self) -> dict:
        first, decoder_first = self.blocks[0], self.decoder_blocks[0]
        return dict(img_size=self.img_size, patch_size=self.patch_size, in_chans=self.in_chans,
                    embed_dim=self.embed_dim, depth=len(self.blocks), num_heads=first.attn.num_heads,
                    decoder_embed_dim=self.decoder_embed_dim, decoder_depth=len(self.decoder_blocks),
                    decoder_num_heads=decoder_first.attn.num_heads,
                    mlp_ratio=first.mlp.fc1.out_features / self.embed_dim, norm_pix_loss=self.norm_pix_loss)

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ encoder
    def forward_encoder(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """Encode the visible patches: ``(B, C, H, W)`` -> ``(B, 1 + N_visible, D)`` (cls first)."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]  # embed every patch, add its position
        x = keep_visible(x, mask.ids_keep)  # the encoder sees only the visible patches
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encode whole images (nothing masked): ``(B, C, H, W)`` -> ``(B, 1 + N, D)``."""
        everything = self.make_mask(imgs, "random", mask_ratio=0.0,
                                    noise=torch.arange(self.num_patches, device=imgs.device)
                                    .float().expand(imgs.shape[0], -1))
        return self.forward_encoder(imgs, everything)

    # ------------------------------------------------------------------ decoder
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N_visible, D)`` latent -> ``(B, N, p*p*C)`` predicted patches."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        # append one mask token per masked patch, then undo the shuffle so every token is in place
        mask_tokens = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]  # drop the cls token

    # ------------------------------------------------------------------ the whole model
    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, *, mask: Mask | None = None,
                **mask_options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hide most patches, encode the rest, paint every patch, score the hidden ones.

        Args:
            imgs: ``(B, C, H, W)`` images.
            mask_ratio: the fraction of patches hidden by random masking.
            mask: a ready :class:`~maelib.masking.Mask` (then none is drawn).
            mask_options: how to draw one (:meth:`make_mask`): ``mask_mode="block"``,
                ``block_ratio=0.5``, ``generator=``, ``noise=``, ...

        Returns ``(loss, pred, mask)`` as facebookresearch/mae: the scalar loss, the predicted
        patches ``(B, N, p*p*C)`` and the mask ``(B, N)`` with 1 = hidden.
        """
        self.check_inputs(imgs, mask)  # (B, C, H, W) images of this model's size, and a mask made for them
        if mask is None:
            mask = self.make_mask(imgs, mask_ratio=mask_ratio, **mask_options)  # (B, N), 1 = hidden
        latent = self.forward_encoder(imgs, mask)  # (B, 1 + N_visible, D): cls + visible patches only
        pred = self.forward_decoder(latent, mask.ids_restore)  # (B, N, p*p*C): every patch's pixels
        loss = self.forward_loss(imgs, pred, mask.mask)  # mean squared error on the hidden patches
        return loss, pred, mask.mask

    def predict(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """The predicted patches alone: ``(B, C, H, W)`` -> ``(B, N, p*p*C)``."""
        self.check_inputs(imgs, mask)
        return self.forward_decoder(self.forward_encoder(imgs, mask), mask.ids_restore)

    @torch.no_grad()
    def decoder_attention(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """The decoder's attention weights: ``(decoder_depth, B, heads, 1 + N, 1 + N)``.

        Row ``1 + i`` of a block's map is what patch ``i``'s token attends to (token 0 is the cls
        token): for a masked patch, which visible patches the decoder reads to fill it in. Runs
        one forward pass in eval mode; the model's mode is restored afterwards.
        """
        was_training = self.training
        attns = [block.attn for block in self.decoder_blocks]
        self.eval()
        try:
            for attn in attns:
                attn.keep_weights = True
            self.predict(imgs, mask)
            return torch.stack([attn.weights.float() for attn in attns])
        finally:
            for attn in attns:
                attn.keep_weights, attn.weights = False, None
            self.train(was_training)

    # ------------------------------------------------------------------ other image sizes
    def resize_pos_embed(self, img_size: int | tuple[int, int]) -> None:
        """Adapt the model to another image size by interpolating both position embeddings."""
        old_grid = self.grid_size
        self._init_geometry(img_size, self.patch_size, self.in_chans)
        self.patch_embed.img_size, self.patch_embed.grid_size = self.img_size, self.grid_size
        self.patch_embed.num_patches = self.num_patches
        for name in ("pos_embed", "decoder_pos_embed"):
            old = getattr(self, name)
            new = interpolate_pos_embed(old.data, old_grid, self.grid_size)
            setattr(self, name, nn.Parameter(new, requires_grad=False))
