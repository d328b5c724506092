"""ResNet autoencoder (seed paper, method 3).

Encoder: four stride-2 3x3 convs (32, 64, 128, 256 filters at base_filters=32), each followed by a
residual block (two 3x3 conv + BatchNorm + LeakyReLU(0.1), identity shortcut), global average
pooling and a dense layer to a `latent_dim` latent (512). Decoder: dense to (S/8)x(S/8)x128 (16x16
at the default S=128), three stride-2 transposed convs (128, 64, 32) each with a residual block,
and a final transposed conv to one channel with a sigmoid.

Shapes: input and output float [B, 1, S, S] in [0, 1] (S a multiple of 8, >= 16); `encode` gives
[B, latent_dim].
"""
from __future__ import annotations

import torch
from torch import nn

LEAK = 0.1


class ResidualBlock(nn.Module):
    """conv-BN-LeakyReLU-conv-BN plus the identity, then LeakyReLU; [B, C, H, W] -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.LeakyReLU(LEAK),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(LEAK), ResidualBlock(cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    # kernel 3, stride 2, output_padding 1: exactly doubles the side.
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(LEAK), ResidualBlock(cout))


class ResNetAE(nn.Module):
    """Input and output: float [B, 1, S, S] in [0, 1]; `encode` gives the [B, latent_dim] latent."""

    def __init__(self, image_size: int = 128, base_filters: int = 32, latent_dim: int = 512):
        super().__init__()
        widths = [base_filters * m for m in (1, 2, 4, 8)]
        dec = [base_filters * m for m in (4, 2, 1)]  # 128, 64, 32 at the default width
        self.image_size, self.latent_dim = image_size, latent_dim
        self.start = image_size // 8
        self.encoder = nn.Sequential(*[_down(cin, cout) for cin, cout in zip([1] + widths[:-1], widths)])
        self.to_latent = nn.Linear(widths[-1], latent_dim)
        self.from_latent = nn.Linear(latent_dim, dec[0] * self.start * self.start)
        self.decoder = nn.Sequential(_up(dec[0], dec[0]), _up(dec[0], dec[1]), _up(dec[1], dec[2]),
                                     nn.ConvTranspose2d(dec[2], 1, 3, padding=1), nn.Sigmoid())
        self.dec_channels = dec[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x).mean(dim=(2, 3)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.from_latent(z), LEAK)
        return self.decoder(h.view(-1, self.dec_channels, self.start, self.start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
