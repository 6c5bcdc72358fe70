"""The simplest masked autoencoder: multilayer perceptrons, no attention (lesson 01).

The encoder gets the visible patches, each in its own slot of one long vector (so its position
is where it sits), with the masked slots set to zero and flagged. Three Linear + ReLU layers
compress that into a code; a light decoder MLP predicts every patch from the code.
Like the ViT-MAE it takes images standardised per channel with the training set's statistics
(a :class:`~maelib.normalize.PixelNormalizer`, the recipe's ``normalize_inputs``) and predicts
standardised pixels; ``model.reconstruct(imgs, mask, normalizer=...)`` maps them back.
An MLP has no notion of which patches are neighbours: it must learn every spatial relation
separately, which is what the ViT of lesson 02 fixes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..masking import Mask
from .base import MaskedAutoencoder


class MaskedAutoencoderMLP(MaskedAutoencoder):
    """MLP-MAE. Images ``(B, C, H, W)`` -> ``(loss, pred (B, N, p*p*C), mask (B, N))``."""

    def __init__(self, img_size: int | tuple[int, int] = 48, patch_size: int = 6, in_chans: int = 3,
                 hidden_dim: int = 1024, latent_dim: int = 512, decoder_hidden_dim: int = 1024,
                 norm_pix_loss: bool = False):
        super().__init__()
        self._init_geometry(img_size, patch_size, in_chans)
        self.norm_pix_loss = norm_pix_loss
        patch_dim = patch_size**2 * in_chans
        n = self.num_patches
        # input: N slots of patch_dim pixels (zeros where masked) + N flags (1 = masked)
        self.encoder = nn.Sequential(
            nn.Linear(n * patch_dim + n, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, latent_dim), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, decoder_hidden_dim), nn.ReLU(),
            nn.Linear(decoder_hidden_dim, n * patch_dim),
        )

    def _constructor_kwargs(self) -> dict:
        return dict(img_size=self.img_size, patch_size=self.patch_size, in_chans=self.in_chans,
                    hidden_dim=self.encoder[0].out_features, latent_dim=self.encoder[4].out_features,
                    decoder_hidden_dim=self.decoder[0].out_features, norm_pix_loss=self.norm_pix_loss)

    def forward_encoder(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, latent_dim)`` from the visible patches only."""
        patches = self.patchify(imgs)  # (B, N, p*p*C), standardised pixels
        visible = patches * (1.0 - mask.mask).unsqueeze(-1).to(patches.dtype)  # masked slots -> 0 (the mean)
        x = torch.cat([visible.flatten(1), mask.mask.to(patches.dtype)], dim=1)
        return self.encoder(x)

    def forward_decoder(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> ``(B, N, p*p*C)``: every patch, masked or not."""
        return self.decoder(latent).reshape(latent.shape[0], self.num_patches, -1)

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, *, mask: Mask | None = None,
                **mask_options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hide most patches, encode the rest, paint every patch, score the hidden ones.

        The same arguments and return value as :meth:`MaskedAutoencoderViT.forward`:
        ``(loss, pred (B, N, p*p*C), mask (B, N) with 1 = hidden)``.
        """
        self.check_inputs(imgs, mask)  # (B, C, H, W) images of this model's size, and a mask made for them
        if mask is None:
            mask = self.make_mask(imgs, mask_ratio=mask_ratio, **mask_options)  # (B, N), 1 = hidden
        latent = self.forward_encoder(imgs, mask)  # (B, latent_dim): one code for the visible patches
        pred = self.forward_decoder(latent)  # (B, N, p*p*C): every patch's pixels
        loss = self.forward_loss(imgs, pred, mask.mask)  # mean squared error on the hidden patches
        return loss, pred, mask.mask

    def predict(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """The predicted patches alone: ``(B, C, H, W)`` -> ``(B, N, p*p*C)``."""
        self.check_inputs(imgs, mask)
        return self.forward_decoder(self.forward_encoder(imgs, mask))
