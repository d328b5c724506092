"""Encoder + linear head for supervised pre-training (`synthleak pretrain`), and reading its checkpoints.

`EncoderClassifier(encoder, n_classes)`: any encoder mapping float [B, 1, S, S] in [0, 1] to
[B, encoder.out_dim] features, plus Linear(out_dim -> n_classes); state_dict keys `encoder.*` and
`head.*` (the layout of a `synthleak pretrain` checkpoint).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .augment import augment
from .checkpoint import load_checkpoint
from .engine import StepFn, TrainingEngine
from .tensors import autocast, batches, to_tensor


class EncoderClassifier(nn.Module):
    """Encoder + linear head: [B, 1, S, S] -> logits [B, n_classes]."""

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.out_dim), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def classification_step(pixels: np.ndarray, labels: np.ndarray, augment_mode: str,
                        module: str = "model") -> StepFn:
    """Engine step over index batches: augmented images (engine.generator), cross-entropy, one update."""

    def step(idx: np.ndarray, engine: TrainingEngine) -> dict:
        x = augment(to_tensor(pixels[idx], engine.device), augment_mode, engine.generator)
        y = torch.from_numpy(labels[idx]).to(engine.device)
        with engine.autocast():
            logits = engine.modules[module](x)
        loss = F.cross_entropy(logits.float(), y)
        engine.optimize(loss)
        return {"train_loss": loss, "train_accuracy": int((logits.argmax(1) == y).sum()) / len(idx)}

    return step


def evaluate(model: nn.Module, pixels: np.ndarray, labels: np.ndarray, batch_size: int,
             device: str) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) without augmentation; (nan, nan) for an empty split."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for idx in batches(len(labels), batch_size):
            x = to_tensor(pixels[idx], device)
            y = torch.from_numpy(labels[idx]).to(device)
            with autocast(device):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(labels), correct / len(labels)


def load_pretrained_encoder(path: str | Path, expected_arch: str) -> tuple[dict, dict]:
    """(encoder state_dict without the `encoder.` prefix, checkpoint meta) of a `synthleak pretrain` file.

    Raises CheckpointError (one line naming the file) when the file is unreadable, was not written
    by `synthleak pretrain`, or was pre-trained for another architecture. `meta["encoder_meta"]` holds
    what the architecture needs to rebuild a matching encoder.
    """
    state, meta = load_checkpoint(path)
    arch = meta.get("arch")
    if arch is None:
        raise CheckpointError(f"{path}: not a `synthleak pretrain` checkpoint (no architecture in its metadata)")
    if arch != expected_arch:
        raise CheckpointError(f"{path}: encoder was pre-trained for --arch {arch}, expected {expected_arch}")
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder:
        raise CheckpointError(f"{path}: checkpoint has no encoder.* weights")
    return encoder, meta
