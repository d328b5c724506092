"""ViT autoencoder (paper method 1): a MONAI ViT encoder, optionally CT-pre-trained, and a conv decoder.

The networks are models/vit_ae.py (MONAI ViT encoder -> Linear to the latent -> conv decoder to
256x256 in [-1, 1]); the latent (default 512) is the feature space "vit-ae".

Weights
- `--weights FILE`: pre-trained ViT weights from a local safetensors / weights-only torch file, in timm
  (`patch_embed.proj`, `blocks.N.attn.qkv`, ...), torchvision (`conv_proj`,
  `encoder.layers.encoder_layer_N`, ...) or MONAI / synthleak key layout, mapped onto MONAI's names.
- `--encoder FILE`: a `synthleak pretrain --arch vit` checkpoint (CT pre-training); it overrides
  `--weights` (the pre-training already started from them).

Training (autoencoder, generated images only, through the shared engine): MSE, Adam (1e-4, weight
decay 1e-5), 10 epochs by default, mixed precision on CUDA, a resumable `<model>.partial` file after
every epoch, the finished model cached by (config, image content, seed).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..cache import cached_model, make_key, model_path
from ..config import MethodConfig, PretrainConfig
from ..data.images import IMAGE_SIZE, ImageSet
from ..errors import SynthleakError
from ..models.autoencoder import train_reconstruction
from ..models.checkpoint import file_digest, load_checkpoint, load_into, save_checkpoint
from ..models.tensors import autocast, batches, to_tensor
from ..models.vit_ae import (DEFAULT_VIT_INPUT, PATCH, VIT_SIZES, ViTAutoencoder, ViTDecoder, ViTEncoder,
                             check_vit_input, check_vit_size, tanh_space_mse)
from ..models.vit_weights import (detect_layout, load_pretrained_vit_encoder, load_vit_weights,
                                  resample_position_embeddings, vit_state_from_file)
from ..options import option
from ..runtime import Progress, log, seed_everything
from .base import AutoencoderExtractor, EncoderOption, EncoderSpec, TrainingOptions, WeightsOption

__all__ = ["VIT_SIZES", "ViTAEExtractor", "ViTAESettings", "ViTAutoencoder", "ViTDecoder", "ViTEncoder",
           "build_autoencoder", "build_pretrain_encoder", "detect_layout", "fit_autoencoder", "load_vit_weights",
           "resample_position_embeddings", "train_autoencoder", "vit_state_from_file"]

MODEL_VERSION = 1  # bump when the architecture or training loop changes (invalidates cached models)


# ------------------------------------------------------------------------------------ pretraining
def build_pretrain_encoder(cfg: PretrainConfig) -> EncoderSpec:
    """The ViT encoder for `synthleak pretrain --arch vit` (CT classification pre-training).

    Inputs are the audit's 256x256 images (input_size 256); the model resizes them to the ViT input
    (cfg.image_size, default 224) itself, exactly as the autoencoder will.
    """
    vit_input = check_vit_input(cfg.image_size or DEFAULT_VIT_INPUT)
    encoder = ViTEncoder(cfg.vit_size, vit_input)
    meta = {"arch": "vit", "vit_size": cfg.vit_size, "vit_input": vit_input, "patch": PATCH,
            "out_dim": encoder.out_dim, "init": "random"}
    if cfg.weights:
        layout = load_vit_weights(encoder, cfg.weights)
        meta["init"] = f"{Path(cfg.weights).name} ({layout} layout)"
    return EncoderSpec(encoder=encoder, input_size=IMAGE_SIZE, meta=meta, lr=1e-4, weight_decay=1e-5,
                       step_size=10, gamma=0.9, augment="strong")


# ------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class ViTAEOptions(TrainingOptions, WeightsOption, EncoderOption):
    vit_size: str = option("base", "ViT size of the encoder (--vit-size)", choices=("tiny", "small", "base"))
    latent: int = option(512, "width of the Linear 768 -> latent head on the ViT encoder")
    lr: float = option(1e-4, "Adam learning rate of the autoencoder")
    weight_decay: float = option(1e-5, "Adam weight decay of the autoencoder")


@dataclass(frozen=True)
class ViTAESettings:
    """Everything that determines the trained autoencoder (its cache key is built from this)."""

    vit_size: str
    vit_input: int
    latent: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    weights: str | None
    weights_digest: str | None
    encoder: str | None
    encoder_digest: str | None

    @staticmethod
    def from_config(cfg: MethodConfig) -> "ViTAESettings":
        opts = ViTAEOptions.read(cfg.options)
        check_vit_size(opts.vit_size)
        latent = opts.latent
        if latent < 1:
            raise SynthleakError("--set latent=N: N must be at least 1")
        epochs = 10 if opts.epochs is None else opts.epochs
        if epochs < 0:
            raise SynthleakError("--epochs must be at least 0")
        return ViTAESettings(
            vit_size=opts.vit_size,
            vit_input=check_vit_input(opts.image_size or DEFAULT_VIT_INPUT),
            latent=latent,
            epochs=epochs,
            batch_size=opts.batch_size or 32,
            lr=opts.lr,
            weight_decay=opts.weight_decay,
            weights=opts.weights,
            weights_digest=file_digest(opts.weights),
            encoder=opts.encoder,
            encoder_digest=file_digest(opts.encoder),
        )

    def key_parts(self) -> dict:
        """Settings that change the model: file contents count, file names do not."""
        parts = asdict(self)
        parts.pop("weights")
        parts.pop("encoder")
        return {"model": "vit-ae", "version": MODEL_VERSION, **parts}


def build_autoencoder(settings: ViTAESettings) -> tuple[ViTAutoencoder, str]:
    """A fresh autoencoder with its encoder initialised as configured; returns (model, init description)."""
    model = ViTAutoencoder(settings.vit_size, settings.latent, settings.vit_input)
    init = "random"
    if settings.weights:
        layout = load_vit_weights(model.encoder, settings.weights)
        init = f"{Path(settings.weights).name} ({layout} layout)"
    if settings.encoder:
        meta = load_pretrained_vit_encoder(model.encoder, settings.encoder)
        accuracy = meta.get("test_accuracy")
        init = (f"synthleak pretrain checkpoint {Path(settings.encoder).name} (pre-trained on {meta.get('data', '?')}"
                f"{f', test accuracy {accuracy:.3f}' if isinstance(accuracy, float) else ''})")
    log(f"[vit-ae] encoder ViT-{settings.vit_size}/16 at {settings.vit_input}px, init: {init}")
    return model, init


def train_autoencoder(model: ViTAutoencoder, images: ImageSet, settings: ViTAESettings, cfg: MethodConfig,
                      partial: Path | None = None) -> list[float]:
    """MSE training on `images` through the engine; resumes from / writes `partial` each epoch.
    Returns per-epoch losses. Epoch e shuffles with seed * 1000 + e (sorted batches, none dropped)."""
    result = train_reconstruction(
        model, images.pixels, tanh_space_mse, lr=settings.lr, weight_decay=settings.weight_decay,
        batch_size=settings.batch_size, metric="mse", sort_batches=True, epochs=settings.epochs, seed=cfg.seed,
        epoch_seed=lambda epoch: cfg.seed * 1000 + epoch, device=cfg.device, state_path=partial,
        label="vit-ae")
    return [epoch.get("mse", 0.0) for epoch in result.history]


def fit_autoencoder(images: ImageSet, cfg: MethodConfig, settings: ViTAESettings
                    ) -> tuple[ViTAutoencoder, str, dict]:
    """Train (or load from the cache) the autoencoder on synthetic `images`.

    Returns (model in eval mode on cfg.device, model key, record of how it was made).
    """
    key = make_key(settings.key_parts(), images.content_key(), cfg.seed)
    path = model_path(cfg.cache_dir, "vit-ae", key)
    model, init = build_autoencoder(settings)
    record = {"encoder init": init, "epochs": settings.epochs}

    def load(p) -> ViTAutoencoder:
        state, meta = load_checkpoint(p)
        load_into(model, state, p)
        record["losses"] = meta.get("losses")
        return model.to(cfg.device).eval()

    def train() -> ViTAutoencoder:
        # after a failed load the network may hold part of that checkpoint: start from a fresh one
        fresh = build_autoencoder(settings, True)[0] if path is not None and path.exists() else model
        seed_everything(cfg.seed)
        partial = path.with_name(path.name + ".partial") if path is not None else None
        record["losses"] = train_autoencoder(fresh, images, settings, cfg, partial)
        if path is not None:
            save_checkpoint(path, fresh.state_dict(), {"settings": settings.key_parts(), "losses": record["losses"],
                                                       "images": images.content_key(), "seed": cfg.seed, "init": init})
            partial.unlink(missing_ok=True)
        return fresh.eval()

    return cached_model(path, load, train, "vit-ae"), key, record


@torch.no_grad()
def encode_images(model: ViTAutoencoder, images: ImageSet, device: str, batch_size: int = 32) -> np.ndarray:
    """[n, latent + 1]: latent features and, in the last column, the per-image reconstruction MSE."""
    model.eval().to(device)
    out = np.empty((len(images), model.to_latent.out_features + 1), dtype=np.float32)
    progress = Progress("vit-ae encode", len(images))
    for i, idx in enumerate(batches(len(images), batch_size)):
        batch = to_tensor(images.pixels[idx], device)
        with autocast(device):
            recon, z = model(batch)
        out[idx, :-1] = z.float().cpu().numpy()
        out[idx, -1] = ((recon.float() - (batch * 2.0 - 1.0)) ** 2).mean(dim=(1, 2, 3)).cpu().numpy()
        if idx[-1] + 1 == len(images) or (i + 1) % 20 == 0:
            progress.update(int(idx[-1]) + 1)
    return out


class ViTAEExtractor(AutoencoderExtractor):
    """Latent (default 512-d) of the ViT autoencoder trained on the generated images (`--weights`: the ViT
    encoder's initialisation, not a trained autoencoder)."""

    name = "vit-ae"
    scale = True
    pass_cache = "features/vit-ae-full"
    error_dtype = np.float64

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = ViTAESettings.from_config(cfg)
        self.model: ViTAutoencoder | None = None

    def train_model(self, synthetic: ImageSet, description: str = "") -> tuple[ViTAutoencoder, dict]:
        model, key, record = fit_autoencoder(synthetic, self.cfg, self.settings)
        return model, {**record, "key": key}

    def model_digest(self) -> str:
        # the model key covers settings, training images and seed: the same key = the same weights
        return self.meta["key"]

    @property
    def record(self) -> dict:
        """How the autoencoder was made: encoder init, epochs, losses."""
        return self.meta

    def encode_pass(self, model: ViTAutoencoder, images: ImageSet) -> np.ndarray:
        return encode_images(model, images, self.cfg.device, self.settings.batch_size)

    def feature_names(self) -> list[str]:
        return [f"vit_latent_{i}" for i in range(self.settings.latent)]

    def cache_key(self) -> str:
        self._require_model()
        return make_key(self.name, self._digest)
