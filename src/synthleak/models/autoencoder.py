"""Reconstruction training shared by every autoencoder: one step kind, one call into the engine."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .engine import IndexBatches, StepFn, TrainingEngine, TrainResult
from .tensors import to_tensor

#: loss(model, x) -> scalar tensor, x float [B, 1, S, S] in [0, 1]
ReconstructionLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def l1_reconstruction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between a [0, 1] image batch and model(x) (also in [0, 1])."""
    return F.l1_loss(model(x).float(), x)


def reconstruction_step(pixels: np.ndarray, loss: ReconstructionLoss, metric: str = "loss",
                        module: str = "ae") -> StepFn:
    """Engine step over index batches into uint8 `pixels` [n, S, S]: one optimiser update on loss."""

    def step(idx: np.ndarray, engine: TrainingEngine) -> dict:
        x = to_tensor(pixels[idx], engine.device)
        with engine.autocast():
            value = loss(engine.modules[module], x)
        engine.optimize(value)
        return {metric: value}

    return step


def train_reconstruction(model: nn.Module, pixels: np.ndarray, loss: ReconstructionLoss, *, lr: float,
                         batch_size: int, weight_decay: float = 0.0, metric: str = "loss",
                         sort_batches: bool = False, min_batch: int = 1, **engine_args) -> TrainResult:
    """Train `model` with Adam on `loss` over shuffled batches of `pixels` through the engine.

    sort_batches / min_batch: see IndexBatches; engine_args go to TrainingEngine (epochs, seed,
    device, state_path, fingerprint, last_path, meta, label, log_every, ...)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    engine = TrainingEngine(reconstruction_step(pixels, loss, metric), modules={"ae": model},
                            optimizers={"ae": optimizer},
                            batches=IndexBatches(len(pixels), batch_size, sort=sort_batches, min_batch=min_batch),
                            **engine_args)
    return engine.run()
