"""ResNet autoencoder feature space (seed paper, method 3): resumable cached training and read-out.

The network is models/resnet_ae.py. It is trained through the shared engine with L1 (mean absolute
error), Adam lr 1e-4, batch 32, on synthetic images only; features are its 512-d latent.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..cache import cached_model, make_key, model_path
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, SynthleakError
from ..models.autoencoder import l1_reconstruction, train_reconstruction
from ..models.checkpoint import load_checkpoint, load_into
from ..models.engine import TrainResult
from ..models.resnet_ae import ResNetAE
from ..models.tensors import autocast, to_tensor
from ..options import option
from ..runtime import seed_everything
from .base import AutoencoderExtractor, FiltersOption, TrainingOptions, WeightsOption

ARCH = "resnet-ae"
#: bump when the architecture or training loop changes, so cached models are retrained
VERSION = 1


@dataclass(frozen=True)
class ResNetAEOptions(TrainingOptions, FiltersOption, WeightsOption):
    latent_dim: int = option(512, "width of the autoencoder's latent")
    lr: float = option(1e-4, "Adam learning rate of the autoencoder")


@dataclass(frozen=True)
class ResNetAESettings:
    """Everything that defines a trained model besides its training images and seed."""

    image_size: int = 128
    base_filters: int = 32
    latent_dim: int = 512
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-4

    @staticmethod
    def from_config(cfg: MethodConfig) -> "ResNetAESettings":
        opts = ResNetAEOptions.read(cfg.options)
        s = ResNetAESettings(
            image_size=opts.image_size or 128,
            base_filters=opts.base_filters or 32,
            latent_dim=opts.latent_dim,
            epochs=opts.epochs if opts.epochs is not None else 50,
            batch_size=opts.batch_size or 32,
            lr=opts.lr,
        )
        if s.image_size % 8 or s.image_size < 16:
            raise SynthleakError(f"--image-size {s.image_size}: the ResNet autoencoder needs a multiple of 8, >= 16")
        if s.epochs < 0 or s.batch_size < 1 or s.latent_dim < 1 or s.base_filters < 1:
            raise SynthleakError("resnet-ae: epochs must be >= 0 and batch size, latent_dim, base filters >= 1")
        return s

    def architecture(self) -> dict:
        return {"image_size": self.image_size, "base_filters": self.base_filters, "latent_dim": self.latent_dim}


# ---------------------------------------------------------------------------------------------
# data


def resize_images(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, 256, 256] -> uint8 [n, size, size] (area interpolation, done once before training)."""
    if pixels.shape[1:] == (size, size):
        return np.ascontiguousarray(pixels)
    return np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels])


def train_resnet_ae(images: ImageSet, cfg: MethodConfig, settings: ResNetAESettings | None = None,
                    description: str = "") -> tuple[ResNetAE, dict]:
    """Train (or load from the cache) a ResNet AE on these synthetic images. Returns (model, meta).

    The cache key is (settings, image content, seed): a second audit with the same inputs reuses the
    model. After every epoch model + optimiser are saved to `<model path>.partial`, so an interrupted
    run resumes where it stopped; each epoch's shuffle is seeded from (seed, epoch) so a resumed run
    follows the same sample order as an uninterrupted one.
    """
    settings = settings or ResNetAESettings.from_config(cfg)
    key = make_key(ARCH, VERSION, asdict(settings), images.content_key(), cfg.seed)
    path = model_path(cfg.cache_dir, ARCH, key)
    return cached_model(path, lambda p: load_resnet_ae(p, cfg.device),
                        lambda: _train_resnet_ae(images, settings, cfg, key, path, description), ARCH)


def _train_resnet_ae(images: ImageSet, settings: ResNetAESettings, cfg: MethodConfig, key: str, path: Path | None,
                     description: str) -> tuple[ResNetAE, dict]:
    seed_everything(cfg.seed)
    model = ResNetAE(**settings.architecture())

    def meta(result: TrainResult) -> dict:
        return {"arch": ARCH, "version": VERSION, **asdict(settings), "seed": cfg.seed, "key": key,
                "trained_on": description or f"{len(images)} images", "n_images": len(images),
                "final_l1": result.history[-1].get("l1", 0.0) if result.history else float("nan"),
                "seconds_per_epoch": result.seconds_per_epoch}

    # Batch indices are sorted (contiguous reads); a trailing single image is skipped (BatchNorm).
    result = train_reconstruction(
        model, resize_images(images.pixels, settings.image_size), l1_reconstruction, lr=settings.lr,
        batch_size=settings.batch_size, metric="l1", sort_batches=True, min_batch=2, epochs=settings.epochs,
        seed=cfg.seed, device=cfg.device, state_path=Path(f"{path}.partial") if path is not None else None,
        fingerprint=key, last_path=path, meta=meta, label=ARCH)
    return model, meta(result)


def load_resnet_ae(path: str | Path, device: str = "cpu") -> tuple[ResNetAE, dict]:
    """A trained ResNet AE from a safetensors checkpoint written by train_resnet_ae."""
    state, meta = load_checkpoint(path)
    if meta.get("arch") != ARCH:
        raise CheckpointError(f"{path}: not a {ARCH} checkpoint (arch={meta.get('arch')!r})")
    try:
        arch = {k: int(meta[k]) for k in ("image_size", "base_filters", "latent_dim")}
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: checkpoint config lacks image_size/base_filters/latent_dim") from None
    model = ResNetAE(**arch)
    load_into(model, state, path)
    model.to(device).eval()
    return model, meta


# ---------------------------------------------------------------------------------------------
# inference


@torch.no_grad()
def encode_and_reconstruct(model: ResNetAE, pixels: np.ndarray, device: str, batch_size: int = 64
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(latent float32 [n, latent_dim], per-image mean absolute reconstruction error float32 [n])."""
    model.eval()
    data = resize_images(pixels, model.image_size)
    latents, errors = [], []
    for start in range(0, len(data), batch_size):
        x = to_tensor(data[start:start + batch_size], device)
        with autocast(device):
            z = model.encode(x)
            recon = model.decode(z)
        latents.append(z.float().cpu().numpy())
        errors.append((recon.float() - x).abs().mean(dim=(1, 2, 3)).cpu().numpy())
    if not latents:
        return np.zeros((0, model.latent_dim), np.float32), np.zeros(0, np.float32)
    return np.concatenate(latents).astype(np.float32), np.concatenate(errors).astype(np.float32)


class ResNetAEExtractor(AutoencoderExtractor):
    """512-d latent of a ResNet autoencoder trained on the synthetic images (`--weights` loads one)."""

    name = "resnet-ae"
    version = VERSION
    loads_weights = True
    scale = False  # one learned space: raw Euclidean / cosine geometry is meaningful
    pass_cache = "features/resnet-ae-full"

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = ResNetAESettings.from_config(cfg)
        self.model: ResNetAE | None = None

    def train_model(self, synthetic: ImageSet, description: str) -> tuple[ResNetAE, dict]:
        return train_resnet_ae(synthetic, self.cfg, self.settings, description)

    def load_model(self, path: str) -> tuple[ResNetAE, dict]:
        return load_resnet_ae(path, self.cfg.device)

    def feature_names(self) -> list[str]:
        dim = self.model.latent_dim if self.model is not None else self.settings.latent_dim
        return [f"ae_latent_{i}" for i in range(dim)]

    def encode_pass(self, model: ResNetAE, images: ImageSet) -> np.ndarray:
        # the error: mean absolute error of the image's reconstruction at the model's input size
        z, err = encode_and_reconstruct(model, images.pixels, self.cfg.device)
        return np.concatenate([z, err[:, None]], axis=1)
