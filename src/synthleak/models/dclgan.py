"""DCLGAN (dual contrastive learning GAN): its networks and its trainer on the shared engine.

Two ResNet generators (A -> B, B -> A), two 70x70 PatchGAN critics with spectral norm (D_A: "is
this a domain-A image?") and two sets of PatchNCE projection heads. Public tensors are uint8
[n, 1, S, S] (`to_model_input`); the networks work in the GAN's [-1, 1] space (`to_gan_space`;
the generators end in Tanh and their outputs feed the critics directly).

Losses (models/gan_losses.py): hinge adversarial, PatchNCE (temperature 0.05, MLP heads on sampled
patches, negatives from the same image), feature matching, a differentiable soft-histogram KL, and
a lazy R1 penalty on real images every `r1_every` steps. TTUR (G 1e-4, D 4e-4, Adam betas 0.5,
0.999) with cosine annealing per epoch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import SynthleakError
from ..runtime import seed_everything
from .engine import TrainingEngine
from .gan_losses import feature_matching_loss, histogram_loss, patch_nce_loss, r1_penalty


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

    def check(self) -> "DCLGANSettings":
        """self, or a one-line user error naming the option that is out of range."""
        s = self
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


def _sample_patch_ids(feats: list[torch.Tensor], n: int, gen: torch.Generator) -> list[torch.Tensor]:
    ids = []
    for feat in feats:
        hw = feat.shape[2] * feat.shape[3]
        perm = torch.randperm(hw, generator=gen)[: min(n, hw)]
        ids.append(perm.to(feat.device))
    return ids


def to_model_input(pixels: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [n, H, W] -> uint8 tensor [n, 1, size, size] (area-resized); scaled per batch later."""
    if pixels.shape[1] != size:
        pixels = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels])
    return torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)


def to_gan_space(batch_u8: torch.Tensor, device: str) -> torch.Tensor:
    return batch_u8.to(device).float().div_(127.5).sub_(1.0)


@dataclass
class TrainRecord:
    epochs_done: int
    seconds: float
    images_per_s: float
    last_losses: dict


class DCLGANTrainer:
    """Trains a DCLGAN between domain A (generated images) and domain B through the engine, resumably."""

    def __init__(self, settings: DCLGANSettings, device: str, seed: int):
        self.s = settings
        self.device = device
        self.seed = seed
        seed_everything(seed)
        self.model = DCLGAN(settings).to(device)
        self.opt_g = torch.optim.Adam(self.model.generator_parameters(), lr=settings.lr_g, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.model.discriminator_parameters(), lr=settings.lr_d, betas=(0.5, 0.999))
        self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, T_max=settings.epochs)
        self.sched_d = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_d, T_max=settings.epochs)

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, engine: TrainingEngine) -> dict:
        """One critic update, then one generator + projection-head update ([-1, 1] batches of A and B)."""
        m, s = self.model, self.s
        with engine.autocast():
            fake_b, feats_real_a = m.G_A(real_a, with_features=True)
            fake_a, feats_real_b = m.G_B(real_b, with_features=True)

        # ---- discriminators (hinge); real activations are kept for the G step's feature matching
        for p in m.discriminator_parameters():
            p.requires_grad_(True)
        with engine.autocast():
            out_ra, acts_ra = m.D_A.forward_with_activations(real_a)
            out_rb, acts_rb = m.D_B.forward_with_activations(real_b)
            loss_d = (F.relu(1 - out_ra.float()).mean() + F.relu(1 + m.D_A(fake_a.detach()).float()).mean()
                      + F.relu(1 - out_rb.float()).mean() + F.relu(1 + m.D_B(fake_b.detach()).float()).mean())
        loss_r1 = torch.zeros((), device=real_a.device)
        if s.r1_gamma > 0 and engine.global_step % s.r1_every == 0:
            # Lazy R1 (StyleGAN2): every r1_every steps, scaled up by the interval. fp32 on purpose.
            loss_r1 = 0.5 * s.r1_gamma * s.r1_every * (r1_penalty(m.D_A, real_a) + r1_penalty(m.D_B, real_b))
        engine.optimize(loss_d + loss_r1, "D")

        # ---- generators and projection heads
        for p in m.discriminator_parameters():
            p.requires_grad_(False)
        gen = engine.generator
        with engine.autocast():
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
        engine.optimize(loss_g, "G")
        for p in m.discriminator_parameters():
            p.requires_grad_(True)
        values = {"D": loss_d, "R1": loss_r1, "G": loss_gan, "NCE": (nce_1 + nce_2) / 2, "FM": loss_fm,
                  "hist": loss_hist}
        return {k: float(v.detach()) for k, v in values.items()}

    def fit(self, domain_a: torch.Tensor, domain_b: torch.Tensor, partial: Path | None = None) -> TrainRecord:
        """Train until settings.epochs (or the wall-clock cap). domain_*: uint8 [n, 1, S, S] tensors.

        One epoch is one pass over domain A in a seeded shuffled order (the ragged last batch is
        dropped); each A batch is paired with a random B batch (unpaired translation). `partial`
        (optional) holds the engine state after every epoch, so an interrupted run resumes exactly.
        """
        s, n_a, n_b = self.s, len(domain_a), len(domain_b)
        bs = min(s.batch_size, n_a, n_b)

        def batches(gen: torch.Generator):
            order_a = torch.randperm(n_a, generator=gen)
            for i in range(0, n_a - bs + 1, bs):
                yield order_a[i:i + bs], torch.randint(0, n_b, (bs,), generator=gen)

        def step(batch, engine: TrainingEngine) -> dict:
            idx_a, idx_b = batch
            return self.train_step(to_gan_space(domain_a[idx_a], self.device),
                                   to_gan_space(domain_b[idx_b], self.device), engine)

        engine = TrainingEngine(
            step, modules={"dclgan": self.model}, optimizers={"G": self.opt_g, "D": self.opt_d},
            schedulers={"G": self.sched_g, "D": self.sched_d}, batches=batches, epochs=s.epochs,
            time_budget_s=60 * s.train_minutes if s.train_minutes else None, seed=self.seed, device=self.device,
            amp=s.amp, state_path=partial, label="dclgan")
        result = engine.run()
        return TrainRecord(result.epochs_done, result.seconds, result.items_per_s, result.last_metrics)
