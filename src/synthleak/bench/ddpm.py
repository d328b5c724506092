"""Diffusion benchmark generator: a DDPM (MONAI UNet, models/diffusion.py) trained on the members.

Members are area-downsampled from 256 to the preset's `image_size` and scaled to [-1, 1]. Training
runs through the one training engine with epsilon prediction and an MSE loss (DiffusionInferer adds
DDPM noise at uniformly drawn timesteps), in a step budget of short epochs so an interruption loses
at most one epoch. Samples come from the EMA weights by deterministic DDIM (eta 0) from per-image
seeded noise, so sample i depends only on (seed, i) and the weights: the same noise is used at every
rung of a ladder, and asking for more samples never changes the first ones.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..models.diffusion import DiffusionConfig, check_image_size
from ..runtime import log
from .generator import content_digest, record_training, resize_stack

#: stride between the noise seeds of two generator seeds (sample i of seed s uses (s + 1) * stride + i)
NOISE_SEED_STRIDE = 10_000_019


class DDPMBenchGenerator:
    """fit(members uint8 [n, H, W], max_steps) then sample(n) -> uint8 [n, 256, 256].

    `sample_small(n)` gives the samples at the training resolution (what the memorisation meter
    compares with the members). With `state_path`, training resumes after an interruption and a
    later `fit` with a larger `max_steps` continues from where the last one stopped (keep_state).
    """

    def __init__(self, config: DiffusionConfig, seed: int = 0, device: str = "cpu",
                 state_path: str | Path | None = None):
        check_image_size(config)
        self.config, self.side = config, config.image_size
        self.seed, self.device = seed, device
        self.state_path = state_path

    def fit(self, members: np.ndarray, max_steps: int | None = None, steps_per_epoch: int | None = None,
            keep_state: bool = False) -> "DDPMBenchGenerator":
        """Train to `max_steps` optimiser steps in total (default: the config's `steps`).

        steps_per_epoch: the engine's epoch length (default: the config's); the state is saved after
        each epoch. keep_state: keep the state file at the end so a later fit can continue it.
        """
        import torch
        import torch.nn.functional as F
        from monai.inferers import DiffusionInferer

        from ..models.diffusion import make_schedulers, make_unet, training_target
        from ..models.engine import IndexBatches, TrainingEngine
        from ..runtime import seed_everything

        cfg = self.config
        max_steps = cfg.steps if max_steps is None else max_steps
        per_epoch = steps_per_epoch or cfg.steps_per_epoch
        seed_everything(self.seed)
        small = resize_stack(members, self.side)
        x = torch.from_numpy(small).float().div(127.5).sub(1).unsqueeze(1).to(self.device)
        unet = make_unet(cfg)
        train_scheduler, self.sampler = make_schedulers(cfg)
        inferer = DiffusionInferer(train_scheduler)
        optimizer = torch.optim.Adam(unet.parameters(), cfg.lr)

        def step(idx, engine):
            batch = x[torch.from_numpy(idx).to(x.device)]
            noise = torch.randn(batch.shape, generator=engine.generator).to(engine.device)
            t = torch.randint(0, cfg.train_timesteps, (len(batch),), generator=engine.generator).to(engine.device)
            with engine.autocast():
                predicted = inferer(inputs=batch, diffusion_model=unet, noise=noise, timesteps=t)
            loss = F.mse_loss(predicted.float(), training_target(cfg, train_scheduler, batch, noise, t))
            engine.optimize(loss)
            return {"mse": loss}

        settings = {k: v for k, v in cfg.as_record().items() if k not in ("name", "steps", "sample_steps",
                                                                           "sample_batch", "steps_per_epoch")}
        fingerprint = f"ddpm-{settings}-{per_epoch}-{self.seed}-{content_digest(small)}"
        n_epochs = -(-max_steps // per_epoch)
        engine = TrainingEngine(
            step, modules={"unet": unet}, optimizers={"unet": optimizer}, ema={"unet": cfg.ema_decay},
            batches=IndexBatches(len(x), cfg.batch_size, drop_last=len(x) >= cfg.batch_size, steps=per_epoch),
            max_steps=max_steps, seed=self.seed, device=self.device, state_path=self.state_path,
            fingerprint=fingerprint, label="ddpm", log_every=max(1, n_epochs // 20))
        result = engine.run()
        if not keep_state:
            engine.clear_state()
        self.unet = engine.ema["unet"]
        record_training(self, result, unet, cfg.batch_size, len(x))
        log(f"ddpm: {result.global_step} steps on {len(x)} members at {self.side}px "
            f"({self.parameters / 1e6:.2f}M parameters) in {result.seconds:.0f}s "
            f"({self.steps_per_s:.2f} steps/s)")
        return self

    def describe(self) -> dict:
        """What SOURCE.json records about this generator."""
        return {"preset": self.config.name, "generator_config": self.config.as_record(),
                "generator_parameters": self.parameters}

    def _noise(self, start: int, stop: int):
        import torch

        side = self.side
        return torch.stack([torch.randn(1, side, side, generator=torch.Generator().manual_seed(
            (self.seed + 1) * NOISE_SEED_STRIDE + i)) for i in range(start, stop)])

    def sample_small(self, n: int) -> np.ndarray:
        """n samples at the training resolution, uint8 [n, side, side]."""
        import torch
        from monai.inferers import DiffusionInferer

        cfg = self.config
        inferer = DiffusionInferer(self.sampler)
        cuda = str(self.device).startswith("cuda")
        out = np.empty((n, self.side, self.side), np.uint8)
        self.unet.eval()
        t0 = last = time.perf_counter()
        for start in range(0, n, cfg.sample_batch):
            stop = min(n, start + cfg.sample_batch)
            noise = self._noise(start, stop).to(self.device)
            with torch.no_grad(), (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()):
                images = inferer.sample(input_noise=noise, diffusion_model=self.unet, scheduler=self.sampler,
                                        verbose=False)
            out[start:stop] = np.clip(np.rint((images.float().squeeze(1).cpu().numpy() + 1) * 127.5), 0, 255)
            now = time.perf_counter()
            if now - last > 60 or stop == n:
                last = now
                rate = stop * cfg.sample_steps / (now - t0)
                eta = (n - stop) * cfg.sample_steps / rate
                log(f"ddpm: sampled {stop}/{n} ({rate:.0f} image-steps/s, ETA {eta:.0f}s)")
        self.sample_seconds = time.perf_counter() - t0
        return out

    def sample(self, n: int, size: int = 256) -> np.ndarray:
        return resize_stack(self.sample_small(n), size)
