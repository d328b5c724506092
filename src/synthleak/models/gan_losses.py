"""GAN loss terms shared by the GAN trainers (DCLGAN today; the hinge terms live in each step).

- `patch_nce_loss`: InfoNCE over sampled patches (CUT / DCLGAN).
- `feature_matching_loss`: L1 between batch-mean discriminator activations (unpaired FM).
- `soft_histogram` / `histogram_loss`: a differentiable intensity histogram and KL between batches.
- `r1_penalty`: R1 gradient penalty on real images (Mescheder et al. 2018).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

def soft_histogram(x: torch.Tensor, bins: int = 64, lo: float = -1.0, hi: float = 1.0,
                   max_pixels: int = 2048) -> torch.Tensor:
    """Differentiable intensity histogram [B, bins] (rows sum to 1) with Gaussian kernels.

    Each pixel spreads unit mass over bins by a Gaussian of one bin width, so d(hist)/d(pixel) is
    non-zero (torch.histc counts are piecewise constant and carry no gradient). A fixed strided
    subset of at most max_pixels pixels per image bounds the B x pixels x bins kernel matrix; a
    batch of 8 images still gives 16k samples for 64 bins.
    """
    flat = x.float().flatten(1)
    if flat.shape[1] > max_pixels:
        step = math.ceil(flat.shape[1] / max_pixels)
        flat = flat[:, ::step]
    width = (hi - lo) / bins
    centres = torch.linspace(lo + width / 2, hi - width / 2, bins, device=x.device)
    weights = torch.exp(-0.5 * ((flat.unsqueeze(-1) - centres) / width) ** 2)  # [B, P, bins]
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    hist = weights.mean(1)
    return hist


def histogram_loss(fake: torch.Tensor, real: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """KL(real batch histogram || fake batch histogram): intensity (HU-window) distribution match."""
    p = soft_histogram(real.detach(), bins).mean(0) + 1e-6
    q = soft_histogram(fake, bins).mean(0) + 1e-6
    p, q = p / p.sum(), q / q.sum()
    return torch.sum(p * (p.log() - q.log()))


def patch_nce_loss(feat_q: list[torch.Tensor], feat_k: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """InfoNCE over sampled patches: each query patch must match the key patch at the same position.

    Negatives are the other sampled patches of the same image (CUT's default for single-image
    translation); features are already L2-normalised projections [B, P, D].
    """
    losses = []
    for q, k in zip(feat_q, feat_k):
        k = k.detach()
        logits = torch.bmm(q, k.transpose(1, 2)).float() / temperature  # [B, P, P]
        target = torch.arange(q.shape[1], device=q.device).repeat(q.shape[0])
        losses.append(F.cross_entropy(logits.flatten(0, 1), target))
    return torch.stack(losses).mean()


def feature_matching_loss(fake_acts: dict[str, torch.Tensor], real_acts: dict[str, torch.Tensor]) -> torch.Tensor:
    """L1 between batch-mean discriminator activations of fake and real images (unpaired FM)."""
    terms = [F.l1_loss(fake_acts[k].float().mean(0), real_acts[k].detach().float().mean(0)) for k in real_acts]
    return torch.stack(terms).mean()


def r1_penalty(disc: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): squared gradient norm of D's mean patch logit at real images."""
    real = real.detach().requires_grad_(True)
    out = disc(real).float().mean(dim=(1, 2, 3)).sum()
    (grad,) = torch.autograd.grad(out, real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
