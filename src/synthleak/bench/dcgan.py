"""DCGAN benchmark generator: hinge loss, spectral-norm discriminator, EMA generator for sampling.

The recipe bench-iqoth was built with (see its SOURCE.md): batch 16, Adam (lr 2e-4, betas 0 / 0.99)
for both networks, no augmentation, EMA decay 0.99, trained at `side` px (members area-downsampled
from 256) and sampled bilinearly upsampled to 256. Training runs through the one training engine,
so it shows progress and, given a `state_path`, resumes after an interruption.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime import log
from .generator import record_training, resize_stack


class DCGANBenchGenerator:
    """fit(members uint8 [n, H, W], epochs) then sample(n) -> uint8 [n, 256, 256]."""

    def __init__(self, side: int = 128, latent: int = 128, width: int = 16, batch_size: int = 16,
                 lr: float = 2e-4, ema_decay: float = 0.99, seed: int = 0, device: str = "cpu",
                 state_path: str | Path | None = None):
        self.side, self.latent, self.width, self.batch_size = side, latent, width, batch_size
        self.lr, self.ema_decay = lr, ema_decay
        self.seed, self.device = seed, device
        self.state_path = state_path

    def fit(self, members: np.ndarray, epochs: int = 150, max_steps: int | None = None,
            steps_per_epoch: int | None = None, keep_state: bool = False) -> "DCGANBenchGenerator":
        """Train `epochs` passes over the members, or to `max_steps` updates (one D + one G update each).

        steps_per_epoch (with max_steps): epochs of exactly that many updates, cycling through fresh
        shuffles (a ladder's rungs then fall on epoch ends, where the state is saved). keep_state: keep
        the state file at the end so a later fit with a larger max_steps continues it.
        """
        import torch
        import torch.nn.functional as F

        from ..models.dcgan import DCGANDiscriminator, DCGANGenerator
        from ..models.engine import IndexBatches, TrainingEngine
        from ..runtime import seed_everything

        seed_everything(self.seed)
        x = torch.from_numpy(resize_stack(members, self.side)).float().div(127.5).sub(1).unsqueeze(1)
        mean_image = x.mean(0)
        generator = DCGANGenerator(self.side, self.latent, self.width, mean_image=mean_image)
        critic = DCGANDiscriminator(self.side, self.width)
        betas = (0.0, 0.99)
        optimizers = {"G": torch.optim.Adam(generator.parameters(), self.lr, betas=betas),
                      "D": torch.optim.Adam(critic.parameters(), self.lr, betas=betas)}

        def step(idx, engine):
            real = x[idx].to(engine.device)
            z = torch.randn(len(real), self.latent, generator=engine.generator).to(engine.device)
            with engine.autocast():
                fake = generator(z)
                loss_d = F.relu(1 - critic(real)).mean() + F.relu(1 + critic(fake.detach())).mean()
            engine.optimize(loss_d, "D")
            with engine.autocast():
                loss_g = -critic(fake).mean()
            engine.optimize(loss_g, "G")
            return {"D": loss_d, "G": loss_g}

        fingerprint = f"dcgan-{self.side}-{self.latent}-{self.width}-{self.batch_size}-{self.lr}-{self.seed}-{len(x)}"
        if steps_per_epoch is not None:
            fingerprint += f"-{steps_per_epoch}"
        engine = TrainingEngine(
            step, modules={"G": generator, "D": critic}, optimizers=optimizers, ema={"G": self.ema_decay},
            batches=IndexBatches(len(x), self.batch_size, drop_last=len(x) >= self.batch_size, min_batch=2,
                                 steps=steps_per_epoch if max_steps is not None else None),
            epochs=epochs if max_steps is None else None, max_steps=max_steps, seed=self.seed,
            device=self.device, state_path=self.state_path, fingerprint=fingerprint, label="dcgan",
            log_every=max(1, epochs // 10) if max_steps is None else 1)
        result = engine.run()
        if not keep_state:
            engine.clear_state()
        self.generator = engine.ema["G"]
        record_training(self, result, generator, self.batch_size, len(x))
        log(f"dcgan: {result.epochs_done} epochs / {result.global_step} steps on {len(x)} members at "
            f"{self.side}px in {result.seconds:.0f}s")
        return self

    def describe(self) -> dict:
        """What SOURCE.json records about this generator."""
        return {"generator_parameters": self.parameters}

    def sample(self, n: int, size: int = 256) -> np.ndarray:
        return resize_stack(self.sample_small(n), size)

    def sample_small(self, n: int) -> np.ndarray:
        """n samples at the training resolution, uint8 [n, side, side]."""
        import torch

        gen = torch.Generator().manual_seed(self.seed + 1)
        out = []
        self.generator.eval()
        with torch.no_grad():
            for i in range(0, n, 256):
                z = torch.randn(min(256, n - i), self.latent, generator=gen).to(self.device)
                out.append(self.generator(z).squeeze(1).float().cpu().numpy())
        return np.clip(np.rint((np.concatenate(out) + 1) * 127.5), 0, 255).astype(np.uint8)
