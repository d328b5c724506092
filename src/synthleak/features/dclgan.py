"""DCLGAN critic as a feature space: train (or load) a DCLGAN, read its PatchGAN critic.

The paper trains a DCLGAN between two image domains and reads the feature maps of its PatchGAN
discriminator. Here the "generated domain" A is always synthetic images; domain B is either the
other half of the synthetic images (default: no label use at all) or labelled real_not_used images
(the paper's set-up; the method cross-fits it, see methods/seed_dclgan.py). The critic of domain A
(D_A: "is this a generated image?") is the one read for membership signals. Networks, losses and
the trainer are in models/dclgan.py and models/gan_losses.py.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import cached_model, make_key, model_path
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import SynthleakError
from ..models.checkpoint import load_checkpoint, load_into, save_checkpoint
from ..models.dclgan import (DCLGAN, DCLGANSettings, DCLGANTrainer, PatchGANDiscriminator, PatchMLP,
                             ResnetGenerator, TrainRecord, to_gan_space, to_model_input)
from ..models.gan_losses import feature_matching_loss, histogram_loss, patch_nce_loss, r1_penalty, soft_histogram
from ..models.tensors import autocast
from ..options import option
from .base import FiltersOption, TrainedModelExtractor, TrainingOptions

__all__ = ["DCLGAN", "CriticExtractor", "CriticReadout", "DCLGANSettings", "DCLGANTrainer", "PatchGANDiscriminator",
           "PatchMLP", "ResnetGenerator", "TrainRecord", "TrainedCritic", "activation_maps", "dclgan_settings",
           "feature_matching_loss", "histogram_loss", "patch_nce_loss", "r1_penalty", "read_critic",
           "soft_histogram", "split_halves", "to_model_input", "train_or_load"]

#: bump when the architecture or training loop changes, so cached models are not reused
VERSION = 1


@dataclass(frozen=True)
class DCLGANOptions(TrainingOptions, FiltersOption):
    resnet_blocks: int = option(6, "ResNet blocks of the generator")
    lr_g: float = option(1e-4, "generator learning rate (TTUR)")
    lr_d: float = option(4e-4, "discriminator learning rate (TTUR)")
    nce_t: float = option(0.05, "PatchNCE temperature")
    nce_patches: int = option(256, "patches sampled per layer for PatchNCE")
    lambda_gan: float = option(1.0, "weight of the adversarial loss")
    lambda_nce: float = option(1.0, "weight of the PatchNCE loss")
    lambda_fm: float = option(1.0, "weight of the feature-matching loss")
    lambda_hist: float = option(1.0, "weight of the histogram (HU) loss")
    hist_bins: int = option(64, "bins of the soft histogram loss")
    r1_gamma: float = option(1.0, "R1 gradient-penalty weight")
    r1_every: int = option(4, "apply the gradient penalty every N discriminator steps")
    amp: int = option(1, "mixed precision on CUDA (1) or not (0)", minimum=0)
    train_minutes: float = option(0.0, "wall-clock cap on training in minutes (0 = none)")


def dclgan_settings(cfg: MethodConfig) -> DCLGANSettings:
    """The DCLGAN the audit's options ask for (--image-size, --base-filters, --epochs, --batch-size, --set keys)."""
    opts = DCLGANOptions.read(cfg.options)
    return DCLGANSettings(
        image_size=opts.image_size or 256,
        base_filters=opts.base_filters or 64,
        epochs=opts.epochs if opts.epochs is not None else 200,
        batch_size=opts.batch_size or 8,
        resnet_blocks=opts.resnet_blocks, lr_g=opts.lr_g, lr_d=opts.lr_d, nce_t=opts.nce_t,
        nce_patches=opts.nce_patches, lambda_gan=opts.lambda_gan, lambda_nce=opts.lambda_nce,
        lambda_fm=opts.lambda_fm, lambda_hist=opts.lambda_hist, hist_bins=opts.hist_bins, r1_gamma=opts.r1_gamma,
        r1_every=opts.r1_every, amp=bool(opts.amp), train_minutes=opts.train_minutes,
    ).check()


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

    def load(p) -> TrainedCritic:
        model = DCLGAN(settings)
        state, meta = load_checkpoint(p)
        load_into(model, state, p)
        return TrainedCritic(model.to(cfg.device).eval(), key, settings, meta)

    return cached_model(path, load, lambda: _train_dclgan(domain_a, domain_b, settings, cfg, key, path), "dclgan")


def _train_dclgan(domain_a: ImageSet, domain_b: ImageSet, settings: DCLGANSettings, cfg: MethodConfig, key: str,
                  path) -> TrainedCritic:
    a = to_model_input(domain_a.pixels, settings.image_size)
    b = to_model_input(domain_b.pixels, settings.image_size)
    trainer = DCLGANTrainer(settings, cfg.device, cfg.seed)
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


def _autocast(device: str, enabled: bool):
    return autocast(device) if enabled else nullcontext()


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
        x = to_gan_space(to_model_input(images.pixels[start:start + batch_size], settings.image_size), device)
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
    x = to_gan_space(to_model_input(images.pixels, settings.image_size), device)
    with _autocast(device, settings.amp):
        _, acts = critic.forward_with_activations(x)
    return acts[layer].float().cpu().numpy()


# ------------------------------------------------------------------------------ feature space
class CriticExtractor(TrainedModelExtractor):
    """'dclgan-critic': pooled activations (channel mean and std) of the generated-domain critic.

    As a generic feature space it trains label-free: domain A and B are two seeded halves of the
    synthetic training images (no reals are seen).
    """

    name = "dclgan-critic"
    version = VERSION
    scale = True

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = dclgan_settings(cfg)
        self.model: TrainedCritic | None = None

    def train_model(self, synthetic: ImageSet, description: str = "") -> tuple[TrainedCritic, dict]:
        a, b = split_halves(synthetic, self.cfg.seed)
        trained = train_or_load(a, b, self.settings, self.cfg, tag="halves")
        return trained, trained.meta

    def model_digest(self) -> str:
        return self.model.key

    @property
    def trained(self) -> TrainedCritic | None:
        """The trained DCLGAN and its critic."""
        return self.model

    def _require(self) -> TrainedCritic:
        return self._require_model()

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
