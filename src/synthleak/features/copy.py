"""Copy-detection feature space (`--feature-space copy`): a contrastive encoder trained on the synthetic images.

After Dar et al. (2024, memorization-ldm): a ResNet trained self-supervised with NT-Xent so that an
image and a near-copy of it (flipped, rotated a few degrees, shifted, slightly re-windowed, blurred
or noisy: models/augment.copy_augment) embed together and all other images apart. Distances in that
space are what the copy finder (synthleak.leakage.find_copies) thresholds. The network and the loss
are models/contrastive.py; this file sizes, caches and reads it out.

Trained on the synthetic images only (training_synthetic(): never on reals), seeded, resumable
(`<model>.partial` in the cache after every epoch), and cached by (settings, image content, seed).
Features: the backbone's pooled output, L2-normalised, so Euclidean distance d and cosine
similarity s satisfy s = 1 - d^2 / 2, the similarity leakage.py reports.

Defaults (CPU-sized): 64 px, MONAI ResNet-10 layout (one basic block per stage) with widths
16-32-64-128 (128-d features; resnet18 trained 1.5-2x slower and was no better in copy-space.md),
batch 128, AdamW lr 1e-3 with cosine decay, temperature 0.1, and as many epochs as it takes to show
the encoder TRAIN_IMAGES (30,000) augmented pairs (10 epochs of 3,000 images, 30 of 1,000; at most
MAX_AUTO_EPOCHS): a fixed budget of optimiser steps, so a small synthetic set is not under-trained and
a large one does not blow the CPU budget. Options: --image-size,
--base-filters, --epochs, --batch-size, --max-train-images, --weights (a checkpoint written by this
extractor), `--set copy_depth=resnet10|resnet18 copy_temperature=T copy_lr=LR copy_projection=D`.
Measured training time: benchmarks/results/copy-space.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..cache import cached_model, make_key, model_path
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, SynthleakError
from ..models.augment import copy_augment
from ..models.checkpoint import load_checkpoint, load_into
from ..models.contrastive import DEPTHS, CopyEncoder, embed_images, train_contrastive
from ..models.engine import TrainResult
from ..models.tensors import resize_u8
from ..options import option
from ..runtime import seed_everything
from .base import FiltersOption, TrainedModelExtractor, TrainingOptions, WeightsOption

ARCH = "copy-encoder"
#: bump when the architecture, augmentation or training loop changes, so cached models are retrained
VERSION = 1
#: augmented pairs shown to the encoder when --epochs is not given (epochs = ceil(TRAIN_IMAGES / n))
TRAIN_IMAGES = 30_000
MAX_AUTO_EPOCHS = 200


@dataclass(frozen=True)
class CopyOptions(TrainingOptions, FiltersOption, WeightsOption):
    copy_depth: str = option("resnet10", "depth of the copy encoder", choices=tuple(DEPTHS))
    copy_projection: int = option(64, "width of the contrastive projection head", minimum=1)
    copy_lr: float = option(1e-3, "learning rate of the contrastive training")
    copy_temperature: float = option(0.1, "NT-Xent temperature")


@dataclass(frozen=True)
class CopySettings:
    """Everything that defines a trained copy encoder besides its training images and seed."""

    image_size: int = 64
    base_filters: int = 16
    depth: str = "resnet10"
    projection_dim: int = 64
    epochs: int | None = None  #: None: ceil(TRAIN_IMAGES / training images), see epochs_for
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.1

    @staticmethod
    def from_config(cfg: MethodConfig) -> "CopySettings":
        opts = CopyOptions.read(cfg.options)
        s = CopySettings(
            image_size=opts.image_size or 64,
            base_filters=opts.base_filters or 16,
            depth=opts.copy_depth,
            projection_dim=opts.copy_projection,
            epochs=opts.epochs,
            batch_size=opts.batch_size or 128,
            lr=opts.copy_lr,
            temperature=opts.copy_temperature,
        )
        if s.image_size < 32:
            raise SynthleakError(f"--image-size {s.image_size}: the copy encoder needs at least 32 pixels")
        if s.depth not in DEPTHS:
            raise SynthleakError(f"--set copy_depth={s.depth}: choose from {', '.join(DEPTHS)}")
        if (s.epochs is not None and s.epochs < 0) or s.batch_size < 2 or s.base_filters < 1 or s.projection_dim < 1:
            raise SynthleakError("copy: --epochs must be >= 0, --batch-size >= 2 (pairs need negatives), "
                                 "--base-filters and copy_projection >= 1")
        if s.lr <= 0 or s.temperature <= 0:
            raise SynthleakError("copy: copy_lr and copy_temperature must be positive")
        return s

    def epochs_for(self, n_images: int) -> int:
        """The epochs to train on n_images: --epochs, else enough to show TRAIN_IMAGES pairs."""
        if self.epochs is not None:
            return self.epochs
        return int(min(MAX_AUTO_EPOCHS, max(1, -(-TRAIN_IMAGES // max(n_images, 1)))))

    def architecture(self) -> dict:
        return {"image_size": self.image_size, "base_filters": self.base_filters, "depth": self.depth,
                "projection_dim": self.projection_dim}


def train_copy_encoder(images: ImageSet, cfg: MethodConfig, settings: CopySettings | None = None,
                       description: str = "") -> tuple[CopyEncoder, dict]:
    """Train (or load from the cache) a copy encoder on these synthetic images. Returns (model, meta).

    Cache key: (settings, image content, seed). An interrupted run resumes from `<model>.partial` at
    the next epoch and ends with the weights of an uninterrupted one (the engine seeds each epoch's
    shuffle and augmentation from (seed, epoch)).
    """
    settings = settings or CopySettings.from_config(cfg)
    key = make_key(ARCH, VERSION, asdict(settings), images.content_key(), cfg.seed)
    path = model_path(cfg.cache_dir, ARCH, key)
    return cached_model(path, lambda p: load_copy_encoder(p, cfg.device),
                        lambda: _train_copy_encoder(images, settings, cfg, key, path, description), "copy")


def _train_copy_encoder(images: ImageSet, settings: CopySettings, cfg: MethodConfig, key: str, path: Path | None,
                        description: str) -> tuple[CopyEncoder, dict]:
    seed_everything(cfg.seed)
    model = CopyEncoder(**settings.architecture())
    epochs = settings.epochs_for(len(images))

    def meta(result: TrainResult) -> dict:
        last = result.history[-1] if result.history else {}
        return {"arch": ARCH, "version": VERSION, **asdict(settings), "epochs": epochs, "seed": cfg.seed, "key": key,
                "trained_on": description or f"{len(images)} images", "n_images": len(images),
                "final_nt_xent": last.get("nt_xent", float("nan")),
                "final_pair_acc": last.get("pair_acc", float("nan")),
                "seconds_per_epoch": result.seconds_per_epoch}

    result = train_contrastive(
        model, resize_u8(images.pixels, settings.image_size), copy_augment, lr=settings.lr,
        batch_size=settings.batch_size, temperature=settings.temperature, epochs=epochs, seed=cfg.seed,
        device=cfg.device, state_path=Path(f"{path}.partial") if path is not None else None, fingerprint=key,
        last_path=path, meta=meta, label="copy")
    return model, meta(result)


def load_copy_encoder(path: str | Path, device: str = "cpu") -> tuple[CopyEncoder, dict]:
    """A trained copy encoder from a safetensors checkpoint written by train_copy_encoder."""
    state, meta = load_checkpoint(path)
    if meta.get("arch") != ARCH:
        raise CheckpointError(f"{path}: not a {ARCH} checkpoint (arch={meta.get('arch')!r})")
    try:
        arch = {k: int(meta[k]) for k in ("image_size", "base_filters", "projection_dim")}
        arch["depth"] = str(meta["depth"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: checkpoint config lacks image_size/base_filters/depth/projection_dim") from None
    if arch["depth"] not in DEPTHS:
        raise CheckpointError(f"{path}: unknown encoder depth {arch['depth']!r}")
    model = CopyEncoder(**arch)
    load_into(model, state, path)
    model.to(device).eval()
    return model, meta


class CopyExtractor(TrainedModelExtractor):
    """L2-normalised embeddings of a contrastive copy-detection encoder trained on the synthetic images."""

    name = "copy"
    version = VERSION
    loads_weights = True
    scale = False  # unit vectors: z-scoring would break s = 1 - d^2 / 2

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = CopySettings.from_config(cfg)
        self.model: CopyEncoder | None = None

    def train_model(self, synthetic: ImageSet, description: str) -> tuple[CopyEncoder, dict]:
        return train_copy_encoder(synthetic, self.cfg, self.settings, description)

    def load_model(self, path: str) -> tuple[CopyEncoder, dict]:
        return load_copy_encoder(path, self.cfg.device)

    def feature_names(self) -> list[str]:
        dim = self.model.out_dim if self.model is not None else 8 * self.settings.base_filters
        return [f"copy_{i}" for i in range(dim)]

    def transform(self, images: ImageSet) -> np.ndarray:
        return embed_images(self._require_model(), images.pixels, self.cfg.device)
