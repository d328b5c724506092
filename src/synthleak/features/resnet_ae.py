"""ResNet autoencoder (seed paper, method 3): model, resumable cached training, and its feature space.

Encoder: four stride-2 3x3 convs (32, 64, 128, 256 filters), each followed by a residual block
(two 3x3 conv + BatchNorm + LeakyReLU(0.1), identity shortcut), global average pooling and a dense
layer to a 512-d latent. Decoder: dense to (S/8)x(S/8)x128 (16x16 at the default S=128), three
stride-2 transposed convs (128, 64, 32) each with a residual block, and a final transposed conv to
one channel with a sigmoid. Trained with L1 (mean absolute error), Adam lr 1e-4, batch 32, on
synthetic images only.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..cache import cached_array, make_key, model_path
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, SynthleakError
from ..fsutil import save_training_state
from ..models.checkpoint import load_checkpoint, load_into, save_checkpoint, state_digest
from ..runtime import Progress, log, seed_everything, torch_generator
from .base import FeatureExtractor

ARCH = "resnet-ae"
#: bump when the architecture or training loop changes, so cached models are retrained
VERSION = 1
LEAK = 0.1


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
        s = ResNetAESettings(
            image_size=cfg.image_size or 128,
            base_filters=cfg.base_filters or 32,
            latent_dim=cfg.option("latent_dim", 512, int),
            epochs=cfg.epochs if cfg.epochs is not None else 50,
            batch_size=cfg.batch_size or 32,
            lr=cfg.option("lr", 1e-4, float),
        )
        if s.image_size % 8 or s.image_size < 16:
            raise SynthleakError(f"--image-size {s.image_size}: the ResNet autoencoder needs a multiple of 8, >= 16")
        if s.epochs < 0 or s.batch_size < 1 or s.latent_dim < 1 or s.base_filters < 1:
            raise SynthleakError("resnet-ae: epochs must be >= 0 and batch size, latent_dim, base filters >= 1")
        return s

    def architecture(self) -> dict:
        return {"image_size": self.image_size, "base_filters": self.base_filters, "latent_dim": self.latent_dim}


class ResidualBlock(nn.Module):
    """conv-BN-LeakyReLU-conv-BN plus the identity, then LeakyReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.LeakyReLU(LEAK),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(LEAK), ResidualBlock(cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    # kernel 3, stride 2, output_padding 1: exactly doubles the side.
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(LEAK), ResidualBlock(cout))


class ResNetAE(nn.Module):
    """Input and output: float [B, 1, S, S] in [0, 1]; `encode` gives the [B, latent_dim] latent."""

    def __init__(self, image_size: int = 128, base_filters: int = 32, latent_dim: int = 512):
        super().__init__()
        widths = [base_filters * m for m in (1, 2, 4, 8)]
        dec = [base_filters * m for m in (4, 2, 1)]  # 128, 64, 32 at the default width
        self.image_size, self.latent_dim = image_size, latent_dim
        self.start = image_size // 8
        self.encoder = nn.Sequential(*[_down(cin, cout) for cin, cout in zip([1] + widths[:-1], widths)])
        self.to_latent = nn.Linear(widths[-1], latent_dim)
        self.from_latent = nn.Linear(latent_dim, dec[0] * self.start * self.start)
        self.decoder = nn.Sequential(_up(dec[0], dec[0]), _up(dec[0], dec[1]), _up(dec[1], dec[2]),
                                     nn.ConvTranspose2d(dec[2], 1, 3, padding=1), nn.Sigmoid())
        self.dec_channels = dec[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x).mean(dim=(2, 3)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.from_latent(z), LEAK)
        return self.decoder(h.view(-1, self.dec_channels, self.start, self.start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# ---------------------------------------------------------------------------------------------
# data


def resize_images(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, 256, 256] -> uint8 [n, size, size] (area interpolation, done once before training)."""
    if pixels.shape[1:] == (size, size):
        return np.ascontiguousarray(pixels)
    return np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels])


def to_batch(pixels: np.ndarray, device: str) -> torch.Tensor:
    """uint8 [B, S, S] -> float [B, 1, S, S] in [0, 1] on the device."""
    return torch.from_numpy(pixels).to(device).unsqueeze(1).float().div_(255.0)


def _autocast(device: str):
    # bf16 mixed precision on CUDA; plain float32 on CPU (CPU autocast is slower here).
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ---------------------------------------------------------------------------------------------
# training



def _load_partial(path: Path, model: nn.Module, optimiser: torch.optim.Optimizer, key: str) -> int:
    """Resume from `<model>.partial`: returns the number of finished epochs (0 when none is usable)."""
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != key:
            return 0
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        return int(state["epoch"])
    except Exception as exc:  # a damaged partial file is discarded, never trusted
        log(f"[resnet-ae] ignoring unreadable partial checkpoint {path} ({str(exc).splitlines()[0][:120]})")
        return 0


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
    if path is not None and path.exists():
        try:
            return load_resnet_ae(path, cfg.device)
        except CheckpointError as exc:
            log(f"[resnet-ae] retraining: {exc}", cfg.quiet)
    seed_everything(cfg.seed)
    device = cfg.device
    model = ResNetAE(**settings.architecture()).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    partial = Path(f"{path}.partial") if path is not None else None
    start = _load_partial(partial, model, optimiser, key) if partial is not None else 0
    if start:
        log(f"[resnet-ae] resuming from epoch {start}/{settings.epochs} ({partial})", cfg.quiet)
    data = resize_images(images.pixels, settings.image_size)
    progress = Progress("resnet-ae", total=settings.epochs, quiet=cfg.quiet)
    loss_value, epoch_times = float("nan"), []
    for epoch in range(start, settings.epochs):
        t0 = time.perf_counter()
        loss_value = _train_epoch(model, optimiser, data, settings.batch_size, device, cfg.seed, epoch)
        epoch_times.append(time.perf_counter() - t0)
        rate = len(data) / max(epoch_times[-1], 1e-9)
        progress.update(epoch + 1, f"L1 {loss_value:.4f}, {rate:.1f} images/s")
        if partial is not None:
            save_training_state(partial, {"key": key, "epoch": epoch + 1, "model": model.state_dict(),
                                          "optimiser": optimiser.state_dict()})
    model.eval()
    meta = {"arch": ARCH, "version": VERSION, **asdict(settings), "seed": cfg.seed, "key": key,
            "trained_on": description or f"{len(images)} images", "n_images": len(images),
            "final_l1": loss_value, "seconds_per_epoch": float(np.mean(epoch_times)) if epoch_times else None}
    if path is not None:
        save_checkpoint(path, model.state_dict(), meta)
        partial.unlink(missing_ok=True)
    return model, meta


def _train_epoch(model: ResNetAE, optimiser: torch.optim.Optimizer, data: np.ndarray, batch_size: int,
                 device: str, seed: int, epoch: int) -> float:
    model.train()
    order = torch.randperm(len(data), generator=torch_generator(seed * 100_003 + epoch)).numpy()
    total, seen = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = np.sort(order[start:start + batch_size])
        if len(idx) < 2:  # BatchNorm cannot train on a single image
            continue
        x = to_batch(data[idx], device)
        with _autocast(device):
            loss = nn.functional.l1_loss(model(x).float(), x)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


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
        x = to_batch(data[start:start + batch_size], device)
        with _autocast(device):
            z = model.encode(x)
            recon = model.decode(z)
        latents.append(z.float().cpu().numpy())
        errors.append((recon.float() - x).abs().mean(dim=(1, 2, 3)).cpu().numpy())
    if not latents:
        return np.zeros((0, model.latent_dim), np.float32), np.zeros(0, np.float32)
    return np.concatenate(latents).astype(np.float32), np.concatenate(errors).astype(np.float32)


class ResNetAEExtractor(FeatureExtractor):
    """512-d latent of a ResNet autoencoder trained on the synthetic images (`--weights` loads one)."""

    name = "resnet-ae"
    trainable = True
    scale = False  # one learned space: raw Euclidean / cosine geometry is meaningful

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = ResNetAESettings.from_config(cfg)
        self.model: ResNetAE | None = None
        self.meta: dict = {}
        self._digest = ""

    def fit(self, synthetic: ImageSet, description: str = "") -> "ResNetAEExtractor":
        if self.cfg.weights:
            self.model, self.meta = load_resnet_ae(self.cfg.weights, self.cfg.device)
            log(f"[resnet-ae] using trained weights {self.cfg.weights} (no training)", self.cfg.quiet)
        else:
            self.model, self.meta = train_resnet_ae(synthetic, self.cfg, self.settings, description)
        self._digest = state_digest(self.model)
        return self

    def _require_model(self) -> ResNetAE:
        if self.model is None:
            raise SynthleakError("resnet-ae: fit() must train or load the autoencoder before extracting features")
        return self.model

    def feature_names(self) -> list[str]:
        dim = self.model.latent_dim if self.model is not None else self.settings.latent_dim
        return [f"ae_latent_{i}" for i in range(dim)]

    def cache_key(self) -> str:
        self._require_model()
        return make_key(self.name, VERSION, self._digest)

    def _latent_and_error(self, images: ImageSet) -> np.ndarray:
        """[n, latent_dim + 1]: latent and reconstruction error, cached together (one forward pass)."""
        model = self._require_model()
        key = make_key(self.cache_key(), images.content_key())

        def compute() -> np.ndarray:
            z, err = encode_and_reconstruct(model, images.pixels, self.cfg.device)
            return np.concatenate([z, err[:, None]], axis=1)

        return cached_array(self.cfg.cache_dir, "features/resnet-ae-full", key, compute)

    def transform(self, images: ImageSet) -> np.ndarray:
        return np.asarray(self._latent_and_error(images)[:, :-1], dtype=np.float32)

    def reconstruction_error(self, images: ImageSet) -> np.ndarray:
        """Mean absolute error of each image's reconstruction at the model's input size."""
        return np.asarray(self._latent_and_error(images)[:, -1], dtype=np.float32)
