"""Residual convolutional autoencoder (`conv-res-ae`), the feature model of the paper's method 2.

Encoder: 4 residual blocks with 32, 64, 128, 256 filters; each block is Conv3x3-BN-ReLU-Dropout-
Conv3x3-BN plus a 1x1 projection shortcut, ReLU, then 2x2 max pooling (S -> S/16). Decoder: 4
residual blocks with 256, 128, 64, 32 filters, each preceded by 2x upsampling, and a 1x1 conv +
sigmoid back to one channel at the input size. The feature vector of an image is the global
average of the encoder's last map (256-d; `--set pool=avgmax` adds the global max, 512-d).

The autoencoder is trained with L1 reconstruction loss and Adam on generated images only
(default 100 epochs, 128x128 inputs: `--epochs`, `--image-size`, `--batch-size`, `--set lr=`,
`--set dropout=`). Its encoder starts from scratch or from a `synthleak pretrain --arch conv-res`
checkpoint (`--encoder FILE`). Trained models are cached by (settings, encoder file, image content,
seed); training resumes from `<cached model>.partial` after an interruption.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..cache import make_key, model_path
from ..config import MethodConfig, PretrainConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, SynthleakError
from ..models.checkpoint import file_digest, load_checkpoint, load_into, save_checkpoint, state_digest
from ..runtime import log, seed_everything
from .base import EncoderSpec, FeatureExtractor
from .pretrain import (autocast, batches, epoch_generator, load_partial, load_pretrained_encoder, resize_u8,
                       save_partial, to_tensor)

ARCH = "conv-res"
FILTERS = (32, 64, 128, 256)
DEFAULT_IMAGE_SIZE = 128
DEFAULT_EPOCHS = 100
DEFAULT_DROPOUT = 0.1
#: bump when the model or its training changes, so cached models are not reused
MODEL_VERSION = 1

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is a hard dependency
    raise


class ResidualBlock(nn.Module):
    """Conv3x3-BN-ReLU-Dropout-Conv3x3-BN + 1x1 projection shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ConvResEncoder(nn.Module):
    """[B, 1, S, S] in [0, 1] -> [B, 256] (or 512 with pool='avgmax'); `feature_map` gives [B, 256, S/16, S/16]."""

    def __init__(self, filters=FILTERS, dropout: float = DEFAULT_DROPOUT, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "avgmax"):
            raise SynthleakError(f"--set pool={pool}: expected avg or avgmax")
        chans = (1, *filters)
        self.blocks = nn.ModuleList(ResidualBlock(a, b, dropout) for a, b in zip(chans[:-1], chans[1:]))
        self.pool = pool
        self.out_dim = filters[-1] * (2 if pool == "avgmax" else 1)

    def feature_map(self, x):
        x = x * 2.0 - 1.0  # inputs arrive in [0, 1]; centre them here so callers need not know
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
        return x

    def forward(self, x):
        m = self.feature_map(x)
        feats = m.mean(dim=(2, 3))
        if self.pool == "avgmax":
            feats = torch.cat([feats, m.amax(dim=(2, 3))], 1)
        return feats


class ConvResDecoder(nn.Module):
    """[B, 256, s, s] -> [B, 1, S, S] in [0, 1]: 4 x (2x upsample + residual block), 1x1 conv, sigmoid."""

    def __init__(self, filters=FILTERS, dropout: float = DEFAULT_DROPOUT):
        super().__init__()
        rev = tuple(reversed(filters))  # 256, 128, 64, 32
        chans = (rev[0], *rev)
        self.blocks = nn.ModuleList(ResidualBlock(a, b, dropout) for a, b in zip(chans[:-1], chans[1:]))
        self.out = nn.Conv2d(rev[-1], 1, 1)

    def forward(self, z, size: int):
        for block in self.blocks:
            z = block(F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False))
        if z.shape[-1] != size:  # input sides not divisible by 16
            z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(z))


class ConvResAE(nn.Module):
    def __init__(self, dropout: float = DEFAULT_DROPOUT, pool: str = "avg"):
        super().__init__()
        self.encoder = ConvResEncoder(FILTERS, dropout, pool)
        self.decoder = ConvResDecoder(FILTERS, dropout)

    def forward(self, x):
        return self.decoder(self.encoder.feature_map(x), x.shape[-1])


# ----------------------------------------------------------------------------- pretrain contract


def build_pretrain_encoder(cfg: PretrainConfig) -> EncoderSpec:
    """`synthleak pretrain --arch conv-res`: the AE's encoder (256-d pooled features), Adam 1e-3, StepLR."""
    size = int(cfg.image_size or DEFAULT_IMAGE_SIZE)
    if size < 16:
        raise SynthleakError(f"--image-size {size}: conv-res needs at least 16 pixels")
    dropout = _dropout(cfg.options)
    encoder = ConvResEncoder(FILTERS, dropout, "avg")
    return EncoderSpec(
        encoder=encoder, input_size=size,
        meta={"arch": ARCH, "filters": list(FILTERS), "dropout": dropout, "input_size": size},
        lr=1e-3, weight_decay=1e-4, step_size=max(1, cfg.epochs // 3), gamma=0.2, augment="light",
    )


def _dropout(options: dict) -> float:
    raw = options.get("dropout", str(DEFAULT_DROPOUT))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise SynthleakError(f"--set dropout={raw!r}: expected a number in [0, 1)")
    return value


# ----------------------------------------------------------------------------- feature extractor


class ConvResAEExtractor(FeatureExtractor):
    """Pooled encoder features of a residual conv AE trained (L1) on the generated images."""

    name = "conv-res-ae"
    scale = True
    trainable = True

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.image_size = int(cfg.image_size or DEFAULT_IMAGE_SIZE)
        self.epochs = int(cfg.epochs if cfg.epochs is not None else DEFAULT_EPOCHS)
        self.batch_size = int(cfg.batch_size or 32)
        self.lr = cfg.option("lr", 1e-3, float)
        self.dropout = _dropout(cfg.options)
        self.pool = cfg.option("pool", "avg", str)
        self.encoder_path = Path(cfg.encoder) if cfg.encoder else None
        if self.encoder_path is not None and not self.encoder_path.is_file():
            raise CheckpointError(f"{self.encoder_path}: --encoder checkpoint file does not exist")
        self._encoder_digest = file_digest(self.encoder_path) if self.encoder_path else None
        if self.image_size < 16:
            raise SynthleakError(f"--image-size {self.image_size}: conv-res-ae needs at least 16 pixels")
        if self.epochs < 1 or self.batch_size < 1:
            raise SynthleakError("--epochs and --batch-size must be at least 1")
        self.model: ConvResAE | None = None
        self.weights_key: str | None = None
        self.history: list[float] = []

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

    def fit(self, synthetic: ImageSet) -> "ConvResAEExtractor":
        key = make_key(self.settings(), synthetic.content_key(), self.cfg.seed)
        path = model_path(self.cfg.cache_dir, self.name, key)
        model = self._new_model()
        if path is not None and path.exists():
            try:
                state, meta = load_checkpoint(path)
                load_into(model, state, path)
                self.history = list(meta.get("history", []))
                log(f"[{self.name}] reusing cached model {path}", self.cfg.quiet)
            except CheckpointError as exc:  # a damaged cache entry is retrained, never trusted
                log(f"[{self.name}] retraining: {exc}", self.cfg.quiet)
                model = self._train(self._new_model(), synthetic, key, path)
        else:
            model = self._train(model, synthetic, key, path)
        model.eval()
        self.model = model
        self.weights_key = state_digest(model)
        return self

    def _train(self, model: ConvResAE, synthetic: ImageSet, key: str, path: Path | None) -> ConvResAE:
        quiet = self.cfg.quiet
        pixels = resize_u8(synthetic.pixels, self.image_size)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        partial = path.with_name(path.name + ".partial") if path is not None else None
        start = 0
        state = load_partial(partial, key, quiet) if partial is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            self.history = list(state["history"])
            start = int(state["epoch"])
            log(f"[{self.name}] resuming from {partial} after epoch {start}", quiet)
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            loss = self._epoch(model, opt, pixels, epoch_generator(self.cfg.seed, epoch))
            self.history.append(loss)
            seconds = time.perf_counter() - t0
            log(f"[{self.name}] epoch {epoch + 1}/{self.epochs} L1 {loss:.4f} | {len(pixels)} images,"
                f" {len(pixels) / max(seconds, 1e-9):.1f} img/s, {seconds:.1f}s", quiet)
            if partial is not None:
                save_partial(partial, {"fingerprint": key, "epoch": epoch + 1, "model": _cpu(model),
                                       "optimizer": opt.state_dict(), "history": self.history})
        if path is not None:
            save_checkpoint(path, model.state_dict(), {"kind": self.name, "settings": self.settings(),
                                                       "images": len(synthetic), "history": self.history})
            if partial.exists():
                os.unlink(partial)
        return model

    def _epoch(self, model: ConvResAE, opt, pixels: np.ndarray, gen) -> float:
        model.train()
        total, seen = 0.0, 0
        for idx in batches(len(pixels), self.batch_size, gen, drop_single=True):
            x = to_tensor(pixels[idx], self.cfg.device)
            with autocast(self.cfg.device):
                recon = model(x)
            loss = F.l1_loss(recon.float(), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        return total / max(seen, 1)

    # -- features -------------------------------------------------------------------------------

    def _require_model(self) -> ConvResAE:
        if self.model is None:
            raise SynthleakError("conv-res-ae: fit() must run before features are extracted")
        return self.model

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
        return make_key(self.name, self.settings(), self.weights_key)


def _cpu(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
