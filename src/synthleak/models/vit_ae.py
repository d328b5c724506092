"""ViT autoencoder (paper method 1): a MONAI ViT encoder and a conv decoder.

- Encoder (`ViTEncoder`): gray [B, 1, S, S] in [0, 1] -> normalised to [-1, 1] -> resized to the ViT
  input size (224 by default) -> 1x1 conv to 3 channels -> `monai.networks.nets.ViT` (patch 16,
  tiny / small / base) -> class token after the final LayerNorm ([B, hidden], `out_dim`).
- `ViTAutoencoder.to_latent`: Linear(hidden -> latent) in place of the classification head; the
  latent (default 512) is the feature space "vit-ae".
- Decoder (`ViTDecoder`): Linear(latent -> 256x8x8), then five (transposed conv x2 + residual block)
  stages up to 256x256, a 3x3 conv to one channel and Tanh: [B, latent] -> [B, 1, 256, 256] in
  [-1, 1] (the input mapped to [-1, 1] is the target, see `tanh_space_mse`).
Pre-trained weights in timm / torchvision / MONAI layouts load through models/vit_weights.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import IMAGE_SIZE
from ..errors import SynthleakError

PATCH = 16
DEFAULT_VIT_INPUT = 224
#: name -> (hidden size, depth, heads); MLP width is 4 x hidden as in ViT-Ti/S/B
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}
DECODER_SEED_SIDE = 8
DECODER_CHANNELS = (256, 128, 64, 32, 16, 8)  # 8 -> 16 -> 32 -> 64 -> 128 -> 256


def check_vit_size(vit_size: str) -> tuple[int, int, int]:
    if vit_size not in VIT_SIZES:
        raise SynthleakError(f"--vit-size {vit_size}: unknown size (choose from {', '.join(VIT_SIZES)})")
    return VIT_SIZES[vit_size]


def check_vit_input(side: int) -> int:
    if side < PATCH or side % PATCH:
        raise SynthleakError(f"--image-size {side}: the ViT input side must be a multiple of {PATCH} (default 224)")
    return side


class ViTEncoder(nn.Module):
    """Gray images [B, 1, S, S] in [0, 1] -> ViT class-token features [B, hidden] (`out_dim`)."""

    def __init__(self, vit_size: str = "base", vit_input: int = DEFAULT_VIT_INPUT):
        super().__init__()
        from monai.networks.nets import ViT

        hidden, depth, heads = check_vit_size(vit_size)
        self.vit_size = vit_size
        self.vit_input = check_vit_input(vit_input)
        self.out_dim = hidden
        # Gray -> 3 channels, initialised to copy the gray value into each channel so that ImageNet
        # weights see the gray image they expect; it then learns its own mix.
        self.to_rgb = nn.Conv2d(1, 3, kernel_size=1)
        nn.init.constant_(self.to_rgb.weight, 1.0)
        nn.init.zeros_(self.to_rgb.bias)
        # qkv_bias and LayerNorm eps 1e-6 match timm / torchvision ViTs, so their weights give the
        # same function here.
        self.vit = ViT(in_channels=3, img_size=vit_input, patch_size=PATCH, hidden_size=hidden,
                       mlp_dim=4 * hidden, num_layers=depth, num_heads=heads, classification=True,
                       spatial_dims=2, qkv_bias=True, post_activation="none")
        self.vit.classification_head = nn.Identity()  # replaced by the caller's head / latent layer
        for module in self.vit.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = 1e-6
        for block in self.vit.blocks:
            # torch's fused scaled_dot_product_attention: same maths, less memory, faster on GPU.
            block.attn.use_flash_attention = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2.0 - 1.0
        if x.shape[-1] != self.vit_input or x.shape[-2] != self.vit_input:
            x = F.interpolate(x, size=(self.vit_input, self.vit_input), mode="bilinear",
                              align_corners=False, antialias=True)
        features, _ = self.vit(self.to_rgb(x))
        return features


class ResidualBlock(nn.Module):
    """conv3-BN-LeakyReLU(0.1)-conv3-BN plus a 1x1 conv skip, then LeakyReLU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        self.skip = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ViTDecoder(nn.Module):
    """Latent [B, latent] -> image [B, 1, 256, 256] in [-1, 1]."""

    def __init__(self, latent: int, out_side: int = IMAGE_SIZE):
        super().__init__()
        stages = int(round(math.log2(out_side / DECODER_SEED_SIDE)))
        if DECODER_SEED_SIDE * 2**stages != out_side or stages > len(DECODER_CHANNELS) - 1:
            raise SynthleakError(f"decoder output side {out_side} must be 8 x a power of two, at most 256")
        channels = DECODER_CHANNELS[: stages + 1]
        self.seed = nn.Linear(latent, channels[0] * DECODER_SEED_SIDE**2)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.1, inplace=True),
                ResidualBlock(c_out, c_out),
            ]
        layers += [nn.Conv2d(channels[-1], 1, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.seed_channels = channels[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.seed(z).view(-1, self.seed_channels, DECODER_SEED_SIDE, DECODER_SEED_SIDE)
        return self.body(x)


class ViTAutoencoder(nn.Module):
    """ViT encoder + Linear(hidden -> latent) + conv decoder; forward returns (reconstruction, latent)."""

    def __init__(self, vit_size: str = "base", latent: int = 512, vit_input: int = DEFAULT_VIT_INPUT,
                 out_side: int = IMAGE_SIZE):
        super().__init__()
        self.encoder = ViTEncoder(vit_size, vit_input)
        self.to_latent = nn.Linear(self.encoder.out_dim, latent)
        self.decoder = ViTDecoder(latent, out_side)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decoder(z), z


def tanh_space_mse(model: ViTAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss: MSE between the decoder's [-1, 1] output and the [0, 1] input mapped to [-1, 1]."""
    recon, _ = model(x)
    return F.mse_loss(recon.float(), x * 2.0 - 1.0)
