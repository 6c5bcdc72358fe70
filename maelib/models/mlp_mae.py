"""The simplest masked autoencoder: multilayer perceptrons, no attention (lesson 01).

The encoder gets the visible patches, each in its own slot of one long vector (so its position
is where it sits), with the masked slots set to zero and flagged. Three Linear + ReLU layers
compress that into a code; a light decoder MLP predicts every patch from the code.
Pixels are standardised on the way in (``(x - pixel_mean) / pixel_std``, per channel) and the
prediction is mapped back on the way out, so the network works with numbers around zero while
its predictions, and the loss, stay in pixel units.
An MLP has no notion of which patches are neighbours: it must learn every spatial relation
separately, which is what the ViT of lesson 02 fixes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..masking import Mask
from .base import MaskedAutoencoder


class MaskedAutoencoderMLP(MaskedAutoencoder):
    """MLP-MAE. Images ``(B, C, H, W)`` -> ``(loss, pred (B, N, p*p*C), mask (B, N))``."""

    def __init__(self, img_size: int | tuple[int, int] = 48, patch_size: int = 6, in_chans: int = 3,
                 hidden_dim: int = 1024, latent_dim: int = 512, decoder_hidden_dim: int = 1024,
                 pixel_mean: float | Sequence[float] = 0.5, pixel_std: float | Sequence[float] = 0.25,
                 norm_pix_loss: bool = False):
        super().__init__()
        self._init_geometry(img_size, patch_size, in_chans)
        self.norm_pix_loss = norm_pix_loss
        patch_dim = patch_size**2 * in_chans
        n = self.num_patches
        # per-channel statistics, laid out like a patch's (row, col, channel) values
        mean = torch.as_tensor(pixel_mean, dtype=torch.float32).expand(in_chans)
        std = torch.as_tensor(pixel_std, dtype=torch.float32).expand(in_chans)
        if (std <= 0).any():
            raise ValueError(f"pixel_std must be positive, got {pixel_std}")
        self.register_buffer("pixel_mean", mean.repeat(patch_size**2))
        self.register_buffer("pixel_std", std.repeat(patch_size**2))
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
        c = self.in_chans  # the buffers repeat the per-channel values in a patch's (row, col, channel) order
        return dict(img_size=self.img_size, patch_size=self.patch_size, in_chans=c,
                    hidden_dim=self.encoder[0].out_features, latent_dim=self.encoder[4].out_features,
                    decoder_hidden_dim=self.decoder[0].out_features, pixel_mean=self.pixel_mean[:c].tolist(),
                    pixel_std=self.pixel_std[:c].tolist(), norm_pix_loss=self.norm_pix_loss)

    def forward_encoder(self, imgs: torch.Tensor, mask: Mask) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, latent_dim)`` from the visible patches only."""
        patches = (self.patchify(imgs) - self.pixel_mean) / self.pixel_std  # (B, N, p*p*C), standardised
        visible = patches * (1.0 - mask.mask).unsqueeze(-1).to(patches.dtype)  # masked slots -> 0
        x = torch.cat([visible.flatten(1), mask.mask.to(patches.dtype)], dim=1)
        return self.encoder(x)

    def forward_decoder(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> ``(B, N, p*p*C)``: every patch, masked or not."""
        out = self.decoder(latent).reshape(latent.shape[0], self.num_patches, -1)
        return out * self.pixel_std + self.pixel_mean  # back to pixel units

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
