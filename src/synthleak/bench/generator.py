"""Small generators trained on a known member set, for ground-truth benchmarks and the demo.

`RAEGenerator` is a regularised autoencoder with an ex-post Gaussian-mixture density on its latent
space (Ghosh et al., 2020, "From variational to deterministic autoencoders"): a real generative model
that trains in about a minute on a CPU and, like small GANs trained on few images, over-fits its
training set enough for membership to be detectable. `NoisyCopyGenerator` is an instant stand-in for
tests: blurred, shifted, noisy mixtures of member images (maximal leakage by construction).
"""
from __future__ import annotations

import hashlib
import time

import cv2
import numpy as np

from ..models.autoencoder import train_reconstruction
from ..models.rae import RAE, rae_loss
from ..models.tensors import to_tensor
from ..runtime import log, seed_everything


def resize_stack(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 [n, H, W] -> [n, side, side]: area-averaged when shrinking, bilinear when enlarging."""
    interp = cv2.INTER_AREA if side < images.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (side, side), interpolation=interp) for im in images])


def content_digest(images: np.ndarray) -> str:
    """Short digest of an image stack: the training data in a resume fingerprint."""
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def count_parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def record_training(generator, result, network, batch_size: int, n_members: int) -> None:
    """Keep what SOURCE.json and the ladder report about a step-trained generator's engine run."""
    generator.steps_trained, generator.epochs_trained = result.global_step, result.epochs_done
    generator.seconds = result.seconds
    generator.parameters = count_parameters(network)
    generator.steps_per_s = result.items_per_s / min(batch_size, n_members)  # one batch per optimiser step


class RAEGenerator:
    """Conv autoencoder (64x64, models/rae.py) + GMM on latents; samples decoded and upsampled to 256x256."""

    def __init__(self, side: int = 64, latent: int = 32, width: int = 16, seed: int = 0,
                 device: str = "cpu"):
        self.side, self.latent, self.width = side, latent, width
        self.seed, self.device = seed, device

    def fit(self, members: np.ndarray, epochs: int = 150, batch_size: int = 16) -> "RAEGenerator":
        """Train a fixed number of epochs (a time budget would make the output machine-dependent),
        then fit the latent mixture."""
        import torch
        from sklearn.mixture import GaussianMixture

        seed_everything(self.seed)
        small = resize_stack(members, self.side)
        model = RAE(self.side, self.latent, self.width).to(self.device)
        self.enc, self.dec = model.encoder, model.decoder
        start = time.perf_counter()
        # One shuffle stream for the whole run (epoch_seed=None), float32 throughout (amp off).
        result = train_reconstruction(model, small, rae_loss, lr=2e-3, batch_size=batch_size, metric="L1",
                                      epochs=epochs, seed=self.seed, epoch_seed=None, device=self.device,
                                      amp=False, label="generator", log_every=25)
        self.epochs_trained = result.epochs_done
        with torch.no_grad():
            z = self.enc(to_tensor(small, self.device)).cpu().numpy().astype(np.float64)
        n_comp = int(min(len(z), max(2, len(z) // 2)))
        self.gmm = GaussianMixture(n_comp, covariance_type="diag", reg_covar=1e-3, random_state=self.seed).fit(z)
        log(f"generator: trained {self.epochs_trained} epochs on {len(small)} member images in "
            f"{time.perf_counter() - start:.0f}s; latent mixture of {n_comp} components")
        return self

    def sample(self, n: int, size: int = 256) -> np.ndarray:
        import torch

        z, _ = self.gmm.sample(n)
        rng = np.random.default_rng(self.seed + 1)
        z = z[rng.permutation(n)]  # GMM.sample returns samples grouped by component
        out = []
        with torch.no_grad():
            for i in range(0, n, 256):
                zb = torch.from_numpy(z[i:i + 256]).float().to(self.device)
                out.append(self.dec(zb).squeeze(1).cpu().numpy())
        small = np.clip(np.concatenate(out) * 255, 0, 255).astype(np.uint8)
        return resize_stack(small, size)


class NoisyCopyGenerator:
    """Instant stand-in generator for tests: each sample is a perturbed member image."""

    def __init__(self, seed: int = 0, noise: float = 12.0, shift: int = 6):
        self.seed, self.noise, self.shift = seed, noise, shift

    def fit(self, members: np.ndarray, **_) -> "NoisyCopyGenerator":
        self.members = members
        return self

    def sample(self, n: int, size: int = 256) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        out = np.empty((n, size, size), np.uint8)
        for i in range(n):
            a = self.members[rng.integers(len(self.members))].astype(np.float32)
            b = self.members[rng.integers(len(self.members))].astype(np.float32)
            img = 0.85 * a + 0.15 * b
            dx, dy = rng.integers(-self.shift, self.shift + 1, 2)
            img = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), img.shape[::-1],
                                 borderMode=cv2.BORDER_REFLECT)
            img = cv2.GaussianBlur(img, (0, 0), 1.5) + rng.normal(0, self.noise, img.shape)
            out[i] = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (size, size))
        return out
