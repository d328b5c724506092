"""Residual convolutional autoencoder (`conv-res-ae`), the feature model of the paper's method 2.

Encoder: 4 residual blocks with 32, 64, 128, 256 filters; each block is Conv3x3-BN-ReLU-Dropout-
Conv3x3-BN plus a 1x1 projection shortcut, ReLU, then 2x2 max pooling (S -> S/16). Decoder: 4
residual blocks with 256, 128, 64, 32 filters, each preceded by 2x upsampling, and a 1x1 conv +
sigmoid back to one channel at the input size. The feature vector of an image is the global
average of the encoder's last map (256-d; `--set pool=avgmax` adds the global max, 512-d).

The network is models/conv_res_ae.py. It is trained through the shared engine with L1
reconstruction loss and Adam on generated images only
(default 100 epochs, 128x128 inputs: `--epochs`, `--image-size`, `--batch-size`, `--set lr=`,
`--set dropout=`). Its encoder starts from scratch or from a `synthleak pretrain --arch conv-res`
checkpoint (`--encoder FILE`). Trained models are cached by (settings, encoder file, image content,
seed); training resumes from `<cached model>.partial` after an interruption.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cache import cached_model, make_key, model_path
from ..config import MethodConfig, PretrainConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, SynthleakError
from ..models.autoencoder import l1_reconstruction, train_reconstruction
from ..models.checkpoint import file_digest, load_checkpoint, load_into
from ..models.classifier import load_pretrained_encoder
from ..models.conv_res_ae import DEFAULT_DROPOUT, FILTERS, ConvResAE, ConvResDecoder, ConvResEncoder
from ..models.tensors import autocast, batches, resize_u8, to_tensor
from ..options import Options, option
from ..runtime import seed_everything
from .base import EncoderOption, EncoderSpec, TrainedModelExtractor, TrainingOptions

__all__ = ["ConvResAE", "ConvResAEExtractor", "ConvResDecoder", "ConvResEncoder", "build_pretrain_encoder"]

ARCH = "conv-res"
DEFAULT_IMAGE_SIZE = 128
DEFAULT_EPOCHS = 100
#: bump when the model or its training changes, so cached models are not reused
MODEL_VERSION = 1


@dataclass(frozen=True)
class DropoutOption(Options):
    """The encoder's only setting that `synthleak pretrain --arch conv-res` reads."""

    dropout: float = option(DEFAULT_DROPOUT, "dropout in the encoder, in [0, 1)")


@dataclass(frozen=True)
class ConvResAEOptions(TrainingOptions, EncoderOption, DropoutOption):
    lr: float = option(1e-3, "Adam learning rate of the autoencoder")
    pool: str = option("avg", "pooling of the encoder's last map (avgmax adds the global max: 512-d)")


# ----------------------------------------------------------------------------- pretrain contract


def build_pretrain_encoder(cfg: PretrainConfig) -> EncoderSpec:
    """`synthleak pretrain --arch conv-res`: the AE's encoder (256-d pooled features), Adam 1e-3, StepLR."""
    size = int(cfg.image_size or DEFAULT_IMAGE_SIZE)
    if size < 16:
        raise SynthleakError(f"--image-size {size}: conv-res needs at least 16 pixels")
    dropout = _dropout(DropoutOption.read(cfg.options))
    encoder = ConvResEncoder(FILTERS, dropout, "avg")
    return EncoderSpec(
        encoder=encoder, input_size=size,
        meta={"arch": ARCH, "filters": list(FILTERS), "dropout": dropout, "input_size": size},
        lr=1e-3, weight_decay=1e-4, step_size=max(1, cfg.epochs // 3), gamma=0.2, augment="light",
    )


def _dropout(opts: DropoutOption) -> float:
    if not 0 <= opts.dropout < 1:
        raise SynthleakError(f"--set dropout={opts.dropout!r}: expected a number in [0, 1)")
    return opts.dropout


# ----------------------------------------------------------------------------- feature extractor


class ConvResAEExtractor(TrainedModelExtractor):
    """Pooled encoder features of a residual conv AE trained (L1) on the generated images."""

    name = "conv-res-ae"
    version = MODEL_VERSION
    scale = True

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        opts = ConvResAEOptions.read(cfg.options)
        self.image_size = int(opts.image_size or DEFAULT_IMAGE_SIZE)
        self.epochs = int(opts.epochs if opts.epochs is not None else DEFAULT_EPOCHS)
        self.batch_size = int(opts.batch_size or 32)
        self.lr = opts.lr
        self.dropout = _dropout(opts)
        self.pool = opts.pool
        self.encoder_path = Path(opts.encoder) if opts.encoder else None
        if self.encoder_path is not None and not self.encoder_path.is_file():
            raise CheckpointError(f"{self.encoder_path}: --encoder checkpoint file does not exist")
        self._encoder_digest = file_digest(self.encoder_path) if self.encoder_path else None
        if self.image_size < 16:
            raise SynthleakError(f"--image-size {self.image_size}: conv-res-ae needs at least 16 pixels")
        if self.epochs < 1 or self.batch_size < 1:
            raise SynthleakError("--epochs and --batch-size must be at least 1")

    def settings(self) -> dict:
        return {"version": MODEL_VERSION, "image_size": self.image_size, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "dropout": self.dropout, "pool": self.pool,
                "encoder": self._encoder_digest}

    # -- training -------------------------------------------------------------------------------

    def _new_model(self) -> ConvResAE:
        seed_everything(self.cfg.seed)
        model = ConvResAE(self.dropout, self.pool)
        if self.encoder_path is not None:
            state, meta = load_pretrained_encoder(self.encoder_path, ARCH)
            if list(meta.get("encoder_meta", {}).get("filters", FILTERS)) != list(FILTERS):
                raise CheckpointError(f"{self.encoder_path}: encoder filters {meta['encoder_meta']['filters']}"
                                      f" do not match conv-res {list(FILTERS)}")
            load_into(model.encoder, state, self.encoder_path)
        return model.to(self.cfg.device)

    def train_model(self, synthetic: ImageSet, description: str = "") -> tuple[ConvResAE, dict]:
        key = make_key(self.settings(), synthetic.content_key(), self.cfg.seed)
        path = model_path(self.cfg.cache_dir, self.name, key)

        def load(p) -> tuple[ConvResAE, dict]:
            model = self._new_model()
            state, meta = load_checkpoint(p)
            load_into(model, state, p)
            return model, {"history": list(meta.get("history", []))}

        def train() -> tuple[ConvResAE, dict]:
            model = self._new_model()
            return model, {"history": self._train(model, synthetic, key, path)}

        model, meta = cached_model(path, load, train, self.name)
        model.eval()
        return model, meta

    @property
    def history(self) -> list[float]:
        """The training loss (L1) per epoch."""
        return list(self.meta.get("history", []))

    def _train(self, model: ConvResAE, synthetic: ImageSet, key: str, path: Path | None) -> list[float]:
        # A trailing batch of one image is dropped (BatchNorm); resumes from `<cached model>.partial`.
        result = train_reconstruction(
            model, resize_u8(synthetic.pixels, self.image_size), l1_reconstruction, lr=self.lr,
            batch_size=self.batch_size, metric="L1", min_batch=2, epochs=self.epochs, seed=self.cfg.seed,
            device=self.cfg.device, state_path=path.with_name(path.name + ".partial") if path is not None else None,
            fingerprint=key, last_path=path, label=self.name,
            meta=lambda r: {"kind": self.name, "settings": self.settings(), "images": len(synthetic),
                            "history": _losses(r)})
        return _losses(result)

    # -- features -------------------------------------------------------------------------------

    def transform(self, images: ImageSet) -> np.ndarray:
        model = self._require_model()
        model.eval()
        out = np.empty((len(images), model.encoder.out_dim), dtype=np.float32)
        with torch.no_grad():
            for idx in batches(len(images), max(self.batch_size, 64)):
                x = to_tensor(resize_u8(images.pixels[idx], self.image_size), self.cfg.device)
                with autocast(self.cfg.device):
                    feats = model.encoder(x)
                out[idx] = feats.float().cpu().numpy()
        return out

    def reconstruction_error(self, images: ImageSet) -> np.ndarray:
        """Mean absolute reconstruction error per image (lower = better explained by the AE)."""
        model = self._require_model()
        model.eval()
        out = np.empty(len(images), dtype=np.float64)
        with torch.no_grad():
            for idx in batches(len(images), max(self.batch_size, 64)):
                x = to_tensor(resize_u8(images.pixels[idx], self.image_size), self.cfg.device)
                with autocast(self.cfg.device):
                    recon = model(x)
                out[idx] = (recon.float() - x).abs().mean(dim=(1, 2, 3)).cpu().numpy()
        return out

    def feature_names(self) -> list[str]:
        names = [f"conv_res_avg_{i}" for i in range(FILTERS[-1])]
        if self.pool == "avgmax":
            names += [f"conv_res_max_{i}" for i in range(FILTERS[-1])]
        return names

    def cache_key(self) -> str:
        self._require_model()
        # the settings too: the pooling changes the features of the same weights
        return make_key(self.name, self.settings(), self._digest)


def _losses(result) -> list[float]:
    return [epoch.get("L1", 0.0) for epoch in result.history]
