"""A denoising diffusion model for benchmark generators: MONAI's `DiffusionModelUNet` and its presets.

Shapes: the UNet maps noisy images [B, 1, S, S] (S = `image_size`, in [-1, 1] before noising) and
integer timesteps [B] in [0, train_timesteps) to its prediction [B, 1, S, S]: the noise (epsilon
prediction, the default), the velocity or the clean image (`prediction`). It halves the resolution len(channels) - 1 times, so S must be a multiple of
2 ** (len(channels) - 1); self-attention runs at the levels flagged in `attention_levels`.

Training uses MONAI's `DDPMScheduler` (linear betas 1e-4 .. 0.02 over `train_timesteps`), sampling
its `DDIMScheduler` with eta = 0 (deterministic given the initial noise) in `sample_steps` steps.

Presets (`DIFFUSION_PRESETS`):
- `cpu`: 32 px, channels 32-64-64, attention at the lowest level only, one res block per level
  (about 1.1M parameters), Adam at 1e-3 (at 3e-4 the samples were still noise after 350 steps; at
  1e-3 body outlines appear by 600 and CT-like slices by 900): about 1.3 training steps/s at batch
  32 on one busy core (torch with 2 threads on 2 cores shared with other jobs was 8x slower).
- `gpu`: 256 px, channels 64-128-256-256-256, attention at the two lowest levels (32 and 16 px),
  two res blocks per level, PyTorch's fused attention (about 36M parameters): meant for one large
  GPU with bf16 autocast.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import SynthleakError


@dataclass(frozen=True)
class DiffusionConfig:
    """Network, noise schedule, optimiser and sampler settings of one diffusion generator."""

    name: str
    image_size: int
    channels: tuple[int, ...]
    attention_levels: tuple[bool, ...]
    num_res_blocks: int
    norm_num_groups: int
    num_head_channels: int
    flash_attention: bool = False
    batch_size: int = 32
    lr: float = 1e-4
    #: EMA decay of the sampling weights; its half-life (log 0.5 / log decay steps) must be short next
    #: to the first rung, or the first rung samples from weights still close to the initialisation
    ema_decay: float = 0.995
    train_timesteps: int = 1000
    #: what the UNet predicts: "epsilon" (the noise), "v_prediction" (Salimans & Ho 2022) or "sample" (x0)
    prediction: str = "epsilon"
    sample_steps: int = 50
    sample_batch: int = 64
    #: training steps of a build without --rungs
    steps: int = 3000
    #: optimiser steps per engine epoch: the resume granularity (state saved after each epoch)
    steps_per_epoch: int = 50

    def as_record(self) -> dict:
        """Plain values for SOURCE.json."""
        out = asdict(self)
        out["channels"], out["attention_levels"] = list(self.channels), list(self.attention_levels)
        return out


DIFFUSION_PRESETS: dict[str, DiffusionConfig] = {
    "cpu": DiffusionConfig(name="cpu", image_size=32, channels=(32, 64, 64), attention_levels=(False, False, True),
                           num_res_blocks=1, norm_num_groups=16, num_head_channels=64, batch_size=32, lr=1e-3,
                           ema_decay=0.995, sample_steps=25, sample_batch=128, steps=3000, steps_per_epoch=50),
    "gpu": DiffusionConfig(name="gpu", image_size=256, channels=(64, 128, 256, 256, 256),
                           attention_levels=(False, False, False, True, True), num_res_blocks=2, norm_num_groups=32,
                           num_head_channels=64, flash_attention=True, batch_size=32, lr=2e-4, ema_decay=0.998,
                           sample_steps=50, sample_batch=64, steps=20000, steps_per_epoch=200),
}


def diffusion_preset(name: str) -> DiffusionConfig:
    if name not in DIFFUSION_PRESETS:
        raise SynthleakError(f"--preset {name!r}: unknown (choose from {', '.join(DIFFUSION_PRESETS)})")
    return DIFFUSION_PRESETS[name]


def check_image_size(config: DiffusionConfig) -> None:
    factor = 2 ** (len(config.channels) - 1)
    if config.image_size < factor or config.image_size % factor:
        raise SynthleakError(f"--image-size {config.image_size}: the {config.name} diffusion preset needs a multiple "
                             f"of {factor} (its UNet halves the resolution {len(config.channels) - 1} times)")


def make_unet(config: DiffusionConfig):
    """The denoiser: noisy images [B, 1, S, S] and timesteps [B] -> predicted noise [B, 1, S, S]."""
    from monai.networks.nets import DiffusionModelUNet

    check_image_size(config)
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=1, out_channels=1, channels=config.channels,
        attention_levels=config.attention_levels, num_res_blocks=config.num_res_blocks,
        norm_num_groups=config.norm_num_groups, num_head_channels=config.num_head_channels,
        use_flash_attention=config.flash_attention)


def training_target(config: DiffusionConfig, scheduler, images, noise, timesteps):
    """What the UNet learns to output for noisy versions of `images` (see `prediction`)."""
    if config.prediction == "epsilon":
        return noise
    if config.prediction == "v_prediction":
        return scheduler.get_velocity(images, noise, timesteps)
    return images


def make_schedulers(config: DiffusionConfig):
    """(DDPM scheduler for training, DDIM scheduler for sampling with `sample_steps` steps)."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(num_train_timesteps=config.train_timesteps, prediction_type=config.prediction)
    sample = DDIMScheduler(num_train_timesteps=config.train_timesteps, prediction_type=config.prediction)
    sample.set_timesteps(config.sample_steps)
    return train, sample
