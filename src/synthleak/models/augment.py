"""Random training-time augmentation of image batches, drawn from a CPU generator (same on every device).

Two recipes: `augment` (light / strong, for supervised pre-training and autoencoders) and
`copy_augment` (the near-copy views of the copy-detection encoder: only changes a copy of a CT slice
plausibly survives, see its docstring). Both are built from the same seeded pieces.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import SynthleakError


def _uniform(n: int, lo: float, hi: float, gen):
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def random_affine(x, gen, degrees: float, scale: tuple[float, float], shift: float):
    """Per-image rotation (+-degrees), isotropic scale (in `scale`) and shift (+-shift of the side),
    bilinear, zero padding. Draw order: angles, scales, shifts (one batch-sized draw each)."""
    b = x.shape[0]
    angle = _uniform(b, -degrees, degrees, gen) * math.pi / 180
    zoom = _uniform(b, scale[0], scale[1], gen)
    offset = _uniform(2 * b, -2 * shift, 2 * shift, gen).view(b, 2)  # grid units span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter_intensity(x, gen, contrast: tuple[float, float], brightness: float):
    """Per-image contrast around the image mean (factor in `contrast`) and brightness (+-brightness),
    clamped to [0, 1]."""
    b = x.shape[0]
    factor = _uniform(b, contrast[0], contrast[1], gen).to(x.device).view(b, 1, 1, 1)
    offset = _uniform(b, -brightness, brightness, gen).to(x.device).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean + offset).clamp_(0, 1)


def augment(x, strength: str, gen):
    """Random affine (rotation +-10 deg, scale 0.9-1.1, shift +-6%) and intensity jitter; 'strong' adds
    Gaussian blur and random erasing. x: float [B, 1, S, S] in [0, 1]; random draws come from the CPU
    generator `gen` so that a seed gives the same augmentations on every device."""
    if strength not in ("light", "strong", "none"):
        raise SynthleakError(f"unknown augmentation {strength!r} (light, strong or none)")
    if strength == "none":
        return x
    x = random_affine(x, gen, degrees=10, scale=(0.9, 1.1), shift=0.06)
    x = jitter_intensity(x, gen, contrast=(0.85, 1.15), brightness=0.08)
    if strength == "strong":
        x = _random_blur(x, gen)
        x = _random_erase(x, gen)
    return x


def copy_augment(x, gen, *, degrees: float = 5.0, shift: float = 0.04, scale: tuple[float, float] = (0.97, 1.03),
                 flip: float = 0.5, contrast: tuple[float, float] = (0.9, 1.1), brightness: float = 0.05,
                 noise: float = 0.04, blur: float = 0.3, blur_sigma: tuple[float, float] = (0.1, 1.0)):
    """A near-copy view of each CT slice, for the copy-detection encoder (Dar et al. 2024's positives).

    Left-right flip (probability `flip`), rotation up to +-`degrees`, shift up to +-`shift` of the
    side, a slight zoom, contrast / brightness jitter, Gaussian blur (probability `blur`, sigma in
    `blur_sigma` pixels at the working resolution) and Gaussian noise (per-image sigma uniform in
    [0, noise]); result in [0, 1]. No erasing or strong crops: a generator that copies a slice keeps
    its anatomy whole, and the encoder should learn to ignore only what a copy may plausibly change.
    x: float [B, 1, S, S] in [0, 1]; every draw comes from the CPU generator `gen`.
    """
    b = x.shape[0]
    mirrored = (torch.rand(b, generator=gen) < flip).to(x.device).view(b, 1, 1, 1)
    x = torch.where(mirrored, x.flip(-1), x)
    x = random_affine(x, gen, degrees=degrees, scale=scale, shift=shift)
    x = jitter_intensity(x, gen, contrast=contrast, brightness=brightness)
    if blur > 0:
        x = _random_blur(x, gen, p=blur, sigma=blur_sigma)
    if noise > 0:
        sigma = _uniform(b, 0.0, noise, gen).view(b, 1, 1, 1)
        x = x + (torch.randn(x.shape, generator=gen) * sigma).to(x.device, x.dtype)
    return x.clamp(0, 1)


def _random_blur(x, gen, p: float = 0.5, sigma: tuple[float, float] = (0.1, 1.5)):
    """Per-image Gaussian blur (sigma in `sigma` px, probability p) as one grouped convolution."""
    b = x.shape[0]
    sigmas = _uniform(b, sigma[0], sigma[1], gen)
    apply = torch.rand(b, generator=gen) < p
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-(t[None, :] ** 2) / (2 * sigmas[:, None] ** 2))
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
