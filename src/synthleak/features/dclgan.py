"""DCLGAN (dual contrastive learning GAN) and its PatchGAN critic as a feature space.

The paper trains a DCLGAN between two image domains and reads the feature maps of its PatchGAN
discriminator. Here the "generated domain" A is always synthetic images; domain B is either the
other half of the synthetic images (default: no label use at all) or labelled real_not_used images
(the paper's set-up; the method cross-fits it, see methods/seed_dclgan.py). The critic of domain A
(D_A: "is this a generated image?") is the one read for membership signals.

Public tensors are [B, 1, S, S] in [0, 1]; the networks themselves work in the GAN's [-1, 1] space
(the generator ends in Tanh and its outputs feed the discriminators directly).

Losses: hinge adversarial, PatchNCE (CUT/DCLGAN, temperature 0.05, MLP heads on sampled patches,
negatives from the same image), feature matching (L1 between batch-mean discriminator activations),
a differentiable soft-histogram loss (Gaussian-kernel histogram, KL over bins; the public code used
torch.histc, which has no gradient), and an R1 gradient penalty on real images (lazy, every
`r1_every` steps). TTUR (G 1e-4, D 4e-4) with cosine annealing per epoch.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..cache import make_key, model_path
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, SynthleakError
from ..fsutil import save_training_state
from ..models.checkpoint import load_checkpoint, load_into, save_checkpoint
from ..runtime import Progress, log, seed_everything, torch_generator
from .base import FeatureExtractor

#: bump when the architecture or training loop changes, so cached models are not reused
VERSION = 1


# --------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class DCLGANSettings:
    """Everything that defines a trained DCLGAN (part of its cache key)."""

    image_size: int = 256
    base_filters: int = 64
    resnet_blocks: int = 6
    epochs: int = 200
    batch_size: int = 8
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    nce_t: float = 0.05
    nce_patches: int = 256
    nce_dim: int = 256
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    lambda_fm: float = 1.0
    lambda_hist: float = 1.0
    hist_bins: int = 64
    r1_gamma: float = 1.0
    r1_every: int = 4
    amp: bool = True
    # Wall-clock cap on training (minutes, 0 = none): stops at an epoch end; for fixed-slot GPU runs.
    train_minutes: float = 0.0

    @staticmethod
    def from_config(cfg: MethodConfig) -> "DCLGANSettings":
        s = DCLGANSettings(
            image_size=cfg.image_size or 256,
            base_filters=cfg.base_filters or 64,
            resnet_blocks=cfg.option("resnet_blocks", 6, int),
            epochs=cfg.epochs if cfg.epochs is not None else 200,
            batch_size=cfg.batch_size or 8,
            lr_g=cfg.option("lr_g", 1e-4, float),
            lr_d=cfg.option("lr_d", 4e-4, float),
            nce_t=cfg.option("nce_t", 0.05, float),
            nce_patches=cfg.option("nce_patches", 256, int),
            lambda_gan=cfg.option("lambda_gan", 1.0, float),
            lambda_nce=cfg.option("lambda_nce", 1.0, float),
            lambda_fm=cfg.option("lambda_fm", 1.0, float),
            lambda_hist=cfg.option("lambda_hist", 1.0, float),
            hist_bins=cfg.option("hist_bins", 64, int),
            r1_gamma=cfg.option("r1_gamma", 1.0, float),
            r1_every=cfg.option("r1_every", 4, int),
            amp=bool(cfg.option("amp", 1, int)),
            train_minutes=cfg.option("train_minutes", 0.0, float),
        )
        checks = [
            (s.image_size >= 32 and s.image_size % 4 == 0, "--image-size must be a multiple of 4 and at least 32"),
            (s.base_filters >= 1, "--base-filters must be at least 1"),
            (s.resnet_blocks >= 1, "--set resnet_blocks=N: N must be at least 1"),
            (s.epochs >= 1, "--epochs must be at least 1"),
            (s.batch_size >= 1, "--batch-size must be at least 1"),
            (s.hist_bins >= 2, "--set hist_bins=N: N must be at least 2"),
            (s.r1_every >= 1, "--set r1_every=N: N must be at least 1"),
            (s.nce_patches >= 2, "--set nce_patches=N: N must be at least 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise SynthleakError(message)
        return s

    def key_dict(self) -> dict:
        d = asdict(self)
        d.pop("amp")  # precision does not define the model for caching purposes
        return d


# ------------------------------------------------------------------------------------ networks
class ResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CUT/DCLGAN ResNet generator for 1-channel images in [-1, 1].

    `forward(x, with_features=True)` also returns the encoder activations PatchNCE compares:
    after the 7x7 stem, after each downsampling and after the first and middle ResNet blocks.
    """

    def __init__(self, base_filters: int = 64, n_blocks: int = 6):
        super().__init__()
        f = base_filters
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(1, f, 7), nn.InstanceNorm2d(f), nn.ReLU(True))
        self.down1 = nn.Sequential(nn.Conv2d(f, 2 * f, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * f), nn.ReLU(True))
        self.down2 = nn.Sequential(nn.Conv2d(2 * f, 4 * f, 3, stride=2, padding=1), nn.InstanceNorm2d(4 * f),
                                   nn.ReLU(True))
        self.blocks = nn.ModuleList(ResnetBlock(4 * f) for _ in range(n_blocks))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * f, 2 * f, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(2 * f),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * f, f, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(f),
            nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(f, 1, 7), nn.Tanh(),
        )
        self._tap_blocks = sorted({0, n_blocks // 2})
        #: channels of the encoder layers returned with `with_features`
        self.feature_channels = [f, 2 * f] + [4 * f] * (1 + len(self._tap_blocks))

    def forward(self, x: torch.Tensor, with_features: bool = False, encode_only: bool = False):
        feats = []
        h = self.stem(x)
        feats.append(h)
        h = self.down1(h)
        feats.append(h)
        h = self.down2(h)
        feats.append(h)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self._tap_blocks:
                feats.append(h)
                if encode_only and i == self._tap_blocks[-1]:
                    return feats  # the decoder is not needed for PatchNCE keys/queries
        out = self.up(h)
        return (out, feats) if with_features else out


class PatchGANDiscriminator(nn.Module):
    """70x70-style PatchGAN: five 4x4 convs (f, 2f, 4f, 8f, 1), spectral norm on every conv.

    Forward hooks on the LeakyReLU after each hidden conv record activations while `capture` is on;
    `activations` maps 'block1'..'block4' to the latest batch's maps. HOOKED names the deepest two,
    the ones read as critic features.
    """

    HOOKED = ("block3", "block4")

    def __init__(self, base_filters: int = 64):
        super().__init__()
        f = base_filters
        chans = [1, f, 2 * f, 4 * f, 8 * f]
        layers: list[nn.Module] = []
        self.block_channels: dict[str, int] = {}
        self._acts_modules: dict[str, nn.Module] = {}
        for i in range(4):
            stride = 2 if i < 3 else 1
            layers.append(spectral_norm(nn.Conv2d(chans[i], chans[i + 1], 4, stride=stride, padding=1)))
            if i > 0:  # pix2pix leaves the first layer unnormalised
                layers.append(nn.InstanceNorm2d(chans[i + 1]))
            act = nn.LeakyReLU(0.2, inplace=False)
            layers.append(act)
            self._acts_modules[f"block{i + 1}"] = act
            self.block_channels[f"block{i + 1}"] = chans[i + 1]
        layers.append(spectral_norm(nn.Conv2d(chans[4], 1, 4, stride=1, padding=1)))
        self.model = nn.Sequential(*layers)
        self.capture = False
        self.activations: dict[str, torch.Tensor] = {}
        for name, module in self._acts_modules.items():
            module.register_forward_hook(self._make_hook(name))

    def _make_hook(self, name: str):
        def hook(_module, _inputs, output):
            if self.capture:
                self.activations[name] = output

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.activations = {}
        return self.model(x)

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Patch logits and every hidden block's activations of this batch (via the hooks)."""
        self.capture = True
        try:
            out = self(x)
            acts = dict(self.activations)
        finally:
            self.capture = False
            self.activations = {}
        return out, acts


class PatchMLP(nn.Module):
    """Per-layer 2-layer MLP projection heads for PatchNCE (one set per domain in DCLGAN)."""

    def __init__(self, channels: list[int], dim: int = 256):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(True), nn.Linear(dim, dim)) for c in channels)

    def forward(self, feats: list[torch.Tensor], patch_ids: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for head, feat, ids in zip(self.heads, feats, patch_ids):
            flat = feat.flatten(2).transpose(1, 2)  # [B, HW, C]
            picked = flat[:, ids, :]  # [B, P, C]
            out.append(F.normalize(head(picked), dim=-1))
        return out


class DCLGAN(nn.Module):
    """Two generators (A->B, B->A), two critics (D_A, D_B) and two projection-head sets."""

    def __init__(self, settings: DCLGANSettings):
        super().__init__()
        self.settings = settings
        f, n = settings.base_filters, settings.resnet_blocks
        self.G_A = ResnetGenerator(f, n)  # A -> B
        self.G_B = ResnetGenerator(f, n)  # B -> A
        self.D_A = PatchGANDiscriminator(f)  # real A (generated images) vs G_B(B)
        self.D_B = PatchGANDiscriminator(f)
        self.F_A = PatchMLP(self.G_A.feature_channels, settings.nce_dim)
        self.F_B = PatchMLP(self.G_B.feature_channels, settings.nce_dim)

    def generator_parameters(self):
        for m in (self.G_A, self.G_B, self.F_A, self.F_B):
            yield from m.parameters()

    def discriminator_parameters(self):
        for m in (self.D_A, self.D_B):
            yield from m.parameters()


# -------------------------------------------------------------------------------------- losses
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


def r1_penalty(disc: PatchGANDiscriminator, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): squared gradient norm of D's mean patch logit at real images."""
    real = real.detach().requires_grad_(True)
    out = disc(real).float().mean(dim=(1, 2, 3)).sum()
    (grad,) = torch.autograd.grad(out, real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def _sample_patch_ids(feats: list[torch.Tensor], n: int, gen: torch.Generator) -> list[torch.Tensor]:
    ids = []
    for feat in feats:
        hw = feat.shape[2] * feat.shape[3]
        perm = torch.randperm(hw, generator=gen)[: min(n, hw)]
        ids.append(perm.to(feat.device))
    return ids


# ------------------------------------------------------------------------------------- training
def to_model_input(pixels: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [n, H, W] -> uint8 tensor [n, 1, size, size] (area-resized); scaled per batch later."""
    if pixels.shape[1] != size:
        pixels = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels])
    return torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)


def _to_gan_space(batch_u8: torch.Tensor, device: str) -> torch.Tensor:
    return batch_u8.to(device).float().div_(127.5).sub_(1.0)


def _autocast(device: str, enabled: bool):
    # bf16 needs no loss scaler; CPU stays float32 (bf16 convs are slow on most CPUs).
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.startswith("cuda"))


@dataclass
class TrainRecord:
    epochs_done: int
    seconds: float
    images_per_s: float
    last_losses: dict


class DCLGANTrainer:
    """Trains a DCLGAN between domain A (generated images) and domain B, resumably."""

    def __init__(self, settings: DCLGANSettings, device: str, seed: int, quiet: bool = False):
        self.s = settings
        self.device = device
        self.seed = seed
        self.quiet = quiet
        seed_everything(seed)
        self.model = DCLGAN(settings).to(device)
        self.opt_g = torch.optim.Adam(self.model.generator_parameters(), lr=settings.lr_g, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.model.discriminator_parameters(), lr=settings.lr_d, betas=(0.5, 0.999))
        self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, T_max=settings.epochs)
        self.sched_d = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_d, T_max=settings.epochs)
        self.epoch = 0
        self.step = 0

    # -- resumable state: tensors and plain numbers only, so torch.load(weights_only=True) reads it
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "epoch": self.epoch, "step": self.step, "rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["rng"])

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, gen: torch.Generator) -> dict:
        m, s = self.model, self.s
        amp = s.amp
        with _autocast(self.device, amp):
            fake_b, feats_real_a = m.G_A(real_a, with_features=True)
            fake_a, feats_real_b = m.G_B(real_b, with_features=True)

        # ---- discriminators (hinge); real activations are kept for the G step's feature matching
        for p in m.discriminator_parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with _autocast(self.device, amp):
            out_ra, acts_ra = m.D_A.forward_with_activations(real_a)
            out_rb, acts_rb = m.D_B.forward_with_activations(real_b)
            loss_d = (F.relu(1 - out_ra.float()).mean() + F.relu(1 + m.D_A(fake_a.detach()).float()).mean()
                      + F.relu(1 - out_rb.float()).mean() + F.relu(1 + m.D_B(fake_b.detach()).float()).mean())
        loss_r1 = torch.zeros((), device=real_a.device)
        if s.r1_gamma > 0 and self.step % s.r1_every == 0:
            # Lazy R1 (StyleGAN2): every r1_every steps, scaled up by the interval. fp32 on purpose.
            loss_r1 = 0.5 * s.r1_gamma * s.r1_every * (r1_penalty(m.D_A, real_a) + r1_penalty(m.D_B, real_b))
        (loss_d + loss_r1).backward()
        self.opt_d.step()

        # ---- generators and projection heads
        for p in m.discriminator_parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with _autocast(self.device, amp):
            out_fa, acts_fa = m.D_A.forward_with_activations(fake_a)
            out_fb, acts_fb = m.D_B.forward_with_activations(fake_b)
            loss_gan = -(out_fa.float().mean() + out_fb.float().mean())
            # Dual PatchNCE: a translated image, encoded by the *other* generator's encoder, must keep
            # the content of its source patch by patch; each domain has its own projection heads.
            q_b = m.G_B(fake_b, encode_only=True)
            ids_a = _sample_patch_ids(feats_real_a, s.nce_patches, gen)
            nce_1 = patch_nce_loss(m.F_B(q_b, ids_a), m.F_A(feats_real_a, ids_a), s.nce_t)
            q_a = m.G_A(fake_a, encode_only=True)
            ids_b = _sample_patch_ids(feats_real_b, s.nce_patches, gen)
            nce_2 = patch_nce_loss(m.F_A(q_a, ids_b), m.F_B(feats_real_b, ids_b), s.nce_t)
            loss_fm = feature_matching_loss(acts_fa, acts_ra) + feature_matching_loss(acts_fb, acts_rb)
        loss_hist = histogram_loss(fake_a, real_a, s.hist_bins) + histogram_loss(fake_b, real_b, s.hist_bins)
        loss_g = (s.lambda_gan * loss_gan + s.lambda_nce * 0.5 * (nce_1 + nce_2)
                  + s.lambda_fm * loss_fm + s.lambda_hist * loss_hist)
        loss_g.backward()
        self.opt_g.step()
        for p in m.discriminator_parameters():
            p.requires_grad_(True)
        self.step += 1
        values = {"D": loss_d, "R1": loss_r1, "G": loss_gan, "NCE": (nce_1 + nce_2) / 2, "FM": loss_fm,
                  "hist": loss_hist}
        return {k: float(v.detach()) for k, v in values.items()}

    def fit(self, domain_a: torch.Tensor, domain_b: torch.Tensor, partial: Path | None = None) -> TrainRecord:
        """Train until settings.epochs (or the wall-clock cap). domain_*: uint8 [n, 1, S, S] tensors.

        One epoch is one pass over domain A in a seeded shuffled order; each A batch is paired with a
        random B batch (unpaired translation). `partial` (optional) holds model + optimiser state after
        every epoch, so an interrupted run resumes where it stopped.
        """
        if partial is not None and partial.exists():
            try:
                self.load_state(torch.load(partial, map_location=self.device, weights_only=True))
                log(f"[dclgan] resuming from {partial} at epoch {self.epoch}", self.quiet)
            except Exception as exc:  # a damaged partial file is discarded, never trusted
                log(f"[dclgan] ignoring unreadable {partial} ({str(exc).splitlines()[0][:100]})", self.quiet)
                self.__init__(self.s, self.device, self.seed, self.quiet)
        s, n_a, n_b = self.s, len(domain_a), len(domain_b)
        bs = min(s.batch_size, n_a, n_b)
        progress = Progress("dclgan", total=s.epochs, quiet=self.quiet)
        start, seen, losses = time.perf_counter(), 0, {}
        self.model.train()
        while self.epoch < s.epochs:
            gen = torch_generator(self.seed * 100_003 + self.epoch)  # same order after a resume
            order_a = torch.randperm(n_a, generator=gen)
            t0 = time.perf_counter()
            for i in range(0, n_a - bs + 1, bs):  # drop the ragged last batch (InstanceNorm is per image anyway)
                idx_b = torch.randint(0, n_b, (bs,), generator=gen)
                real_a = _to_gan_space(domain_a[order_a[i:i + bs]], self.device)
                real_b = _to_gan_space(domain_b[idx_b], self.device)
                losses = self.train_step(real_a, real_b, gen)
                seen += bs
            self.sched_g.step()
            self.sched_d.step()
            self.epoch += 1
            per_epoch = time.perf_counter() - t0
            if partial is not None:
                save_training_state(partial, self.state())
            loss_text = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            progress.update(self.epoch, f"{(n_a // bs) * bs / max(per_epoch, 1e-9):.1f} img/s, "
                                        f"{per_epoch:.1f}s/epoch {loss_text}")
            if s.train_minutes and time.perf_counter() - start > 60 * s.train_minutes and self.epoch < s.epochs:
                log(f"[dclgan] wall-clock cap of {s.train_minutes:g} min reached after {self.epoch} epochs",
                    self.quiet)
                break
        elapsed = time.perf_counter() - start
        return TrainRecord(self.epoch, elapsed, seen / max(elapsed, 1e-9), losses)


# ------------------------------------------------------------------------------ trained models
@dataclass
class TrainedCritic:
    """A trained DCLGAN plus what defines it (for cache keys and the output record)."""

    model: DCLGAN
    key: str
    settings: DCLGANSettings
    meta: dict

    @property
    def critic(self) -> PatchGANDiscriminator:
        return self.model.D_A


def train_or_load(domain_a: ImageSet, domain_b: ImageSet, settings: DCLGANSettings, cfg: MethodConfig,
                  tag: str = "") -> TrainedCritic:
    """Train (or load from the content-hash cache) a DCLGAN between A (generated) and B."""
    key = make_key("dclgan", VERSION, settings.key_dict(), domain_a.content_key(), domain_b.content_key(),
                   cfg.seed, tag)
    path = model_path(cfg.cache_dir, "dclgan", key)
    model = DCLGAN(settings)
    if path is not None and path.exists():
        try:
            state, meta = load_checkpoint(path)
            load_into(model, state, path)
            log(f"[dclgan] loaded cached model {path.name}", cfg.quiet)
            model.to(cfg.device).eval()
            return TrainedCritic(model, key, settings, meta)
        except CheckpointError as exc:
            log(f"[dclgan] retraining: {exc}", cfg.quiet)
    a = to_model_input(domain_a.pixels, settings.image_size)
    b = to_model_input(domain_b.pixels, settings.image_size)
    trainer = DCLGANTrainer(settings, cfg.device, cfg.seed, cfg.quiet)
    partial = path.with_suffix(".partial.pt") if path is not None else None
    record = trainer.fit(a, b, partial)
    meta = {"version": VERSION, "settings": settings.key_dict(), "domain_a": len(domain_a),
            "domain_b": len(domain_b), "epochs_done": record.epochs_done,
            "train_seconds": round(record.seconds, 2), "images_per_s": round(record.images_per_s, 2),
            "final_losses": record.last_losses}
    if path is not None:
        save_checkpoint(path, trainer.model.state_dict(), meta)
        if partial is not None:
            partial.unlink(missing_ok=True)
    trainer.model.eval()
    return TrainedCritic(trainer.model, key, settings, meta)


def split_halves(images: ImageSet, seed: int) -> tuple[ImageSet, ImageSet]:
    """Two disjoint seeded halves of a synthetic set: the label-free DCLGAN domains."""
    if len(images) < 4:
        raise SynthleakError(
            f"the DCLGAN needs at least 4 generated images to split into two domains, got {len(images)}")
    perm = np.random.default_rng(seed).permutation(len(images))
    half = len(images) // 2
    return images.subset(np.sort(perm[:half])), images.subset(np.sort(perm[half:]))


# ---------------------------------------------------------------------------------- read-outs
@dataclass
class CriticReadout:
    """What the critic says about a set of images."""

    logit: np.ndarray  # [n] mean patch logit: high = "looks like a generated image"
    pooled: np.ndarray  # [n, 2 * sum(C)] per-channel mean and std of the hooked layers
    grid: np.ndarray  # [n, sum(C) * g * g] hooked maps average-pooled to g x g (attention-overlap vectors)
    grid_sizes: list[int]  # width of each hooked layer's block of `grid` columns, in HOOKED order
    mean_maps: dict[str, np.ndarray]  # per hooked layer, the mean full-resolution map [C, h, w] of this set


@torch.no_grad()
def read_critic(critic: PatchGANDiscriminator, images: ImageSet, settings: DCLGANSettings, device: str,
                grid: int = 8, batch_size: int = 32, layers: tuple[str, ...] = PatchGANDiscriminator.HOOKED,
                ) -> CriticReadout:
    critic.eval()
    logits, pooled, grids = [], [], []
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(images), batch_size):
        x = _to_gan_space(to_model_input(images.pixels[start:start + batch_size], settings.image_size), device)
        with _autocast(device, settings.amp):
            out, acts = critic.forward_with_activations(x)
        logits.append(out.float().mean(dim=(1, 2, 3)).cpu())
        maps = [acts[name].float() for name in layers]
        pooled.append(torch.cat([torch.cat([a.mean((2, 3)), a.std((2, 3))], 1) for a in maps], 1).cpu())
        grids.append(torch.cat([F.adaptive_avg_pool2d(a, grid).flatten(1) for a in maps], 1).cpu())
        for name, a in zip(layers, maps):
            sums[name] = sums.get(name, 0) + a.sum(0)
    sizes = [critic.block_channels[name] * grid * grid for name in layers]
    mean_maps = {name: (total / max(len(images), 1)).cpu().numpy() for name, total in sums.items()}
    return CriticReadout(torch.cat(logits).numpy(), torch.cat(pooled).numpy().astype(np.float32),
                         torch.cat(grids).numpy().astype(np.float32), sizes, mean_maps)


@torch.no_grad()
def activation_maps(critic: PatchGANDiscriminator, images: ImageSet, settings: DCLGANSettings, device: str,
                    layer: str = "block4") -> np.ndarray:
    """Full-resolution hooked activations [n, C, h, w] of one layer (for the saliency view)."""
    critic.eval()
    x = _to_gan_space(to_model_input(images.pixels, settings.image_size), device)
    with _autocast(device, settings.amp):
        _, acts = critic.forward_with_activations(x)
    return acts[layer].float().cpu().numpy()


# ------------------------------------------------------------------------------ feature space
class CriticExtractor(FeatureExtractor):
    """'dclgan-critic': pooled activations (channel mean and std) of the generated-domain critic.

    As a generic feature space it trains label-free: domain A and B are two seeded halves of the
    synthetic training images (no reals are seen).
    """

    name = "dclgan-critic"
    scale = True
    trainable = True

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = DCLGANSettings.from_config(cfg)
        self.trained: TrainedCritic | None = None

    def fit(self, synthetic: ImageSet) -> "CriticExtractor":
        a, b = split_halves(synthetic, self.cfg.seed)
        self.trained = train_or_load(a, b, self.settings, self.cfg, tag="halves")
        return self

    def _require(self) -> TrainedCritic:
        if self.trained is None:
            raise SynthleakError("dclgan-critic: fit() must run before transform() (the critic is trained)")
        return self.trained

    def transform(self, images: ImageSet) -> np.ndarray:
        trained = self._require()
        return read_critic(trained.critic, images, self.settings, self.cfg.device, grid=1).pooled

    def feature_names(self) -> list[str]:
        c = self._require().critic.block_channels
        names = []
        for layer in PatchGANDiscriminator.HOOKED:
            names += [f"{layer}_mean_{i}" for i in range(c[layer])] + [f"{layer}_std_{i}" for i in range(c[layer])]
        return names

    def cache_key(self) -> str:
        return make_key(self.name, VERSION, self._require().key)
