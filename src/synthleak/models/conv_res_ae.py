"""Residual convolutional autoencoder (`conv-res-ae`, the paper's method 2).

Encoder: 4 residual blocks with 32, 64, 128, 256 filters; each block is Conv3x3-BN-ReLU-Dropout-
Conv3x3-BN plus a 1x1 projection shortcut, ReLU, then 2x2 max pooling (S -> S/16). Decoder: 4
residual blocks with 256, 128, 64, 32 filters, each preceded by 2x upsampling, and a 1x1 conv +
sigmoid back to one channel at the input size.

Shapes: `ConvResAE` maps float [B, 1, S, S] in [0, 1] to the same; `ConvResEncoder` maps it to
[B, 256] pooled features ([B, 512] with pool='avgmax'), `feature_map` to [B, 256, S/16, S/16].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SynthleakError

FILTERS = (32, 64, 128, 256)
DEFAULT_DROPOUT = 0.1


class ResidualBlock(nn.Module):
    """Conv3x3-BN-ReLU-Dropout-Conv3x3-BN + 1x1 projection shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ConvResEncoder(nn.Module):
    """[B, 1, S, S] in [0, 1] -> [B, 256] (or 512 with pool='avgmax'); `feature_map` gives [B, 256, S/16, S/16]."""

    def __init__(self, filters=FILTERS, dropout: float = DEFAULT_DROPOUT, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "avgmax"):
            raise SynthleakError(f"--set pool={pool}: expected avg or avgmax")
        chans = (1, *filters)
        self.blocks = nn.ModuleList(ResidualBlock(a, b, dropout) for a, b in zip(chans[:-1], chans[1:]))
        self.pool = pool
        self.out_dim = filters[-1] * (2 if pool == "avgmax" else 1)

    def feature_map(self, x):
        x = x * 2.0 - 1.0  # inputs arrive in [0, 1]; centre them here so callers need not know
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
        return x

    def forward(self, x):
        m = self.feature_map(x)
        feats = m.mean(dim=(2, 3))
        if self.pool == "avgmax":
            feats = torch.cat([feats, m.amax(dim=(2, 3))], 1)
        return feats


class ConvResDecoder(nn.Module):
    """[B, 256, s, s] -> [B, 1, S, S] in [0, 1]: 4 x (2x upsample + residual block), 1x1 conv, sigmoid."""

    def __init__(self, filters=FILTERS, dropout: float = DEFAULT_DROPOUT):
        super().__init__()
        rev = tuple(reversed(filters))  # 256, 128, 64, 32
        chans = (rev[0], *rev)
        self.blocks = nn.ModuleList(ResidualBlock(a, b, dropout) for a, b in zip(chans[:-1], chans[1:]))
        self.out = nn.Conv2d(rev[-1], 1, 1)

    def forward(self, z, size: int):
        for block in self.blocks:
            z = block(F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False))
        if z.shape[-1] != size:  # input sides not divisible by 16
            z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(z))


class ConvResAE(nn.Module):
    def __init__(self, dropout: float = DEFAULT_DROPOUT, pool: str = "avg"):
        super().__init__()
        self.encoder = ConvResEncoder(FILTERS, dropout, pool)
        self.decoder = ConvResDecoder(FILTERS, dropout)

    def forward(self, x):
        return self.decoder(self.encoder.feature_map(x), x.shape[-1])
