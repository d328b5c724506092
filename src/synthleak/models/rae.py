"""Regularised autoencoder (RAE, Ghosh et al. 2020), the network of the benchmark's `rae-gmm` generator.

Encoder: three 4x4 stride-2 convs (width, 2 width, 4 width; BatchNorm after the last two,
LeakyReLU 0.2) and a dense layer: float [B, 1, side, side] in [0, 1] -> latent [B, latent].
Decoder: dense to (4 width) x side/8 x side/8, three 4x4 stride-2 transposed convs (BatchNorm +
ReLU between) and a sigmoid: [B, latent] -> [B, 1, side, side] in [0, 1]. `side` is a multiple of 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RAE(nn.Module):
    """`forward(x)` returns (reconstruction, latent)."""

    def __init__(self, side: int = 64, latent: int = 32, width: int = 16):
        super().__init__()
        w, z, s = width, latent, side // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(4 * w * s * s, z),
        )
        self.decoder = nn.Sequential(
            nn.Linear(z, 4 * w * s * s), nn.Unflatten(1, (4 * w, s, s)), nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z


def rae_loss(model: RAE, x: torch.Tensor, latent_penalty: float = 1e-4) -> torch.Tensor:
    """L1 reconstruction + a small latent-norm penalty, which keeps the latent space compact."""
    recon, z = model(x)
    return F.l1_loss(recon, x) + latent_penalty * z.pow(2).sum(1).mean()
