"""An unconditional DCGAN for benchmark generators: the architecture bench-iqoth was made with.

Generator: z [B, latent] -> linear -> [B, 16w, 4, 4] -> transposed-conv blocks (x2 each, BatchNorm,
ReLU) -> nearest upsampling to the output size -> 3x3 conv -> + a learned output bias image
(initialised to the members' mean image, so training starts from "the average slice") -> tanh:
images [B, 1, size, size] in [-1, 1]. Discriminator: strided 4x4 spectrally normalised convs with
LeakyReLU(0.2) down to 4x4, then a spectrally normalised linear layer: one logit per image.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class DCGANGenerator(nn.Module):
    """z [B, latent] -> images [B, 1, size, size] in [-1, 1]; size a power of two >= 16.

    width: channels of the last transposed-conv block (the first has 16 * width); the blocks stop
    at size / 2 and a nearest upsampling + conv makes the last doubling (cheaper than one more
    transposed conv at full resolution, and without its checkerboard artefacts).
    """

    def __init__(self, size: int = 128, latent: int = 128, width: int = 16,
                 mean_image: torch.Tensor | None = None):
        super().__init__()
        if size < 16 or size & (size - 1):
            raise ValueError(f"DCGAN size must be a power of two >= 16, got {size}")
        self.size, self.latent = size, latent
        n_up = int(math.log2(size // 2)) - 2  # 4x4 -> size/2
        channels = [width * 2 ** (n_up - i) for i in range(n_up + 1)]
        self.project = nn.Linear(latent, channels[0] * 16)
        self.first = channels[0]
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.blocks = nn.Sequential(nn.BatchNorm2d(channels[0]), nn.ReLU(True), *blocks)
        self.to_image = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                      nn.Conv2d(channels[-1], 1, 3, 1, 1))
        bias = torch.zeros(1, 1, size, size) if mean_image is None else mean_image.reshape(1, 1, size, size)
        # tanh-space bias: atanh of the mean image keeps tanh(0 + bias) equal to the mean at the start
        self.output_bias = nn.Parameter(torch.atanh(bias.clamp(-0.98, 0.98)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), self.first, 4, 4)
        return torch.tanh(self.to_image(self.blocks(x)) + self.output_bias)


class DCGANDiscriminator(nn.Module):
    """images [B, 1, size, size] -> logits [B]; spectral norm on every layer (a Lipschitz critic)."""

    def __init__(self, size: int = 128, width: int = 16):
        super().__init__()
        n_down = int(math.log2(size)) - 2  # size -> 4x4
        layers, c_in = [], 1
        for i in range(n_down):
            c_out = width * 2 ** i
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(c_in * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)
