"""Random training-time augmentation of image batches, drawn from a CPU generator (same on every device)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import SynthleakError


def _uniform(n: int, lo: float, hi: float, gen):
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def augment(x, strength: str, gen):
    """Random affine (rotation +-10 deg, scale 0.9-1.1, shift +-6%) and intensity jitter; 'strong' adds
    Gaussian blur and random erasing. x: float [B, 1, S, S] in [0, 1]; random draws come from the CPU
    generator `gen` so that a seed gives the same augmentations on every device."""
    if strength not in ("light", "strong", "none"):
        raise SynthleakError(f"unknown augmentation {strength!r} (light, strong or none)")
    if strength == "none":
        return x
    b = x.shape[0]
    angle = _uniform(b, -10, 10, gen) * math.pi / 180
    scale = _uniform(b, 0.9, 1.1, gen)
    shift = _uniform(2 * b, -0.12, 0.12, gen).view(b, 2)  # grid units span 2, so 0.12 = 6% of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = _uniform(b, 0.85, 1.15, gen).to(x.device).view(b, 1, 1, 1)
    brightness = _uniform(b, -0.08, 0.08, gen).to(x.device).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp_(0, 1)
    if strength == "strong":
        x = _random_blur(x, gen)
        x = _random_erase(x, gen)
    return x


def _random_blur(x, gen, p: float = 0.5):
    """Per-image Gaussian blur (sigma 0.1-1.5 px, probability p) as one grouped convolution."""
    b = x.shape[0]
    sigma = _uniform(b, 0.1, 1.5, gen)
    apply = torch.rand(b, generator=gen) < p
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1).to(x.device, x.dtype)  # [B, 1, k, k]
    blurred = F.conv2d(F.pad(x.transpose(0, 1), (radius,) * 4, mode="reflect"), k2, groups=b).transpose(0, 1)
    mask = apply.to(x.device).view(b, 1, 1, 1)
    return torch.where(mask, blurred, x)


def _random_erase(x, gen, p: float = 0.5):
    """Per-image random erasing: a rectangle of 2-20% of the area (aspect 0.3-3.3) set to a random gray."""
    b, _, h, w = x.shape
    area = _uniform(b, 0.02, 0.2, gen) * h * w
    aspect = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), gen))
    eh = torch.sqrt(area * aspect).clamp(1, h).floor()
    ew = torch.sqrt(area / aspect).clamp(1, w).floor()
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).floor()
    fill = torch.rand(b, generator=gen)
    apply = torch.rand(b, generator=gen) < p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
           & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & apply.view(b, 1, 1))
    box = box.unsqueeze(1).to(x.device)
    return torch.where(box, fill.to(x.device, x.dtype).view(b, 1, 1, 1), x)
