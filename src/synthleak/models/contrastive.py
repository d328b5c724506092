"""Copy-detection encoder: a small MONAI ResNet trained self-supervised with NT-Xent (Dar et al. 2024).

Dar et al. (memorization-ldm) find synthetic images that copy training images with a contrastive
encoder: a ResNet whose embeddings put an image and its flipped / slightly rotated copy together and
every other image apart (NT-Xent, SimCLR's loss). Here the backbone is `monai.networks.nets.ResNet`
(2-D, one input channel, basic blocks, narrow widths so it trains on a CPU), followed for training
only by a two-layer projection head (SimCLR: the loss acts on the head's output, the features are
read before it). Views come from `augment.copy_augment`.

Shapes: input float [B, 1, S, S] in [0, 1]; `embed` gives L2-normalised [B, 8 * base_filters];
`forward` gives the (unnormalised) projection [B, projection_dim] the loss uses.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthleakError
from .engine import IndexBatches, StepFn, TrainingEngine, TrainResult
from .tensors import autocast, batches, resize_u8, to_tensor

#: residual blocks per stage of the backbone, by name (ResNet-10 / -18 layouts with basic blocks)
DEPTHS: dict[str, list[int]] = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2]}

#: view(x, generator) -> augmented x; both views of a pair are drawn independently
ViewFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class CopyEncoder(nn.Module):
    """MONAI ResNet backbone (stem conv 7x7 stride 2 + max-pool, four stages, global average pool)
    plus a projection head used only by the training loss."""

    def __init__(self, image_size: int = 64, base_filters: int = 16, depth: str = "resnet18",
                 projection_dim: int = 64):
        super().__init__()
        from monai.networks.nets import ResNet

        if depth not in DEPTHS:
            raise SynthleakError(f"copy encoder depth {depth!r}: choose from {', '.join(DEPTHS)}")
        self.image_size, self.depth = image_size, depth
        self.out_dim = 8 * base_filters
        self.backbone = ResNet("basic", DEPTHS[depth], [base_filters * m for m in (1, 2, 4, 8)], spatial_dims=2,
                               n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, feed_forward=False)
        self.head = nn.Sequential(nn.Linear(self.out_dim, self.out_dim), nn.ReLU(inplace=True),
                                  nn.Linear(self.out_dim, projection_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output [B, out_dim] (pooled, before the head)."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised backbone features: Euclidean distance is then monotone in cosine similarity."""
        return F.normalize(self.features(x).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def nt_xent_logits(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [2B, 2B], targets [2B]) of NT-Xent for rows i and i + B forming the positive pairs.

    logits = cosine similarity / temperature, with each row's similarity to itself set to -inf (it is
    neither a positive nor a negative); the target of row i is its partner's column.
    """
    n = z.shape[0]
    if z.ndim != 2 or n < 2 or n % 2:
        raise SynthleakError(f"NT-Xent needs [2B, d] embeddings of B >= 1 pairs, got shape {tuple(z.shape)}")
    if temperature <= 0:
        raise SynthleakError(f"NT-Xent temperature {temperature:g}: must be positive")
    z = F.normalize(z.float(), dim=1)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    half = n // 2
    targets = torch.cat([torch.arange(half, n), torch.arange(half)]).to(z.device)
    return logits, targets


def nt_xent(z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Normalised-temperature cross-entropy (SimCLR), mean over all 2B rows (both directions of a pair):
    -log( exp(s(i, j) / t) / sum_{k != i} exp(s(i, k) / t) ) with j the partner of i, s cosine similarity."""
    logits, targets = nt_xent_logits(z, temperature)
    return F.cross_entropy(logits, targets)


def contrastive_step(pixels: np.ndarray, view: ViewFn, temperature: float, module: str = "encoder") -> StepFn:
    """Engine step over index batches into uint8 `pixels` [n, S, S]: two views per image (drawn from
    engine.generator), NT-Xent on their projections, one optimiser update. Reports the loss and the
    share of rows whose partner is their most similar other row (instance-retrieval accuracy)."""

    def step(idx: np.ndarray, engine: TrainingEngine) -> dict:
        x = to_tensor(pixels[idx], engine.device)
        views = torch.cat([view(x, engine.generator), view(x, engine.generator)])
        with engine.autocast():
            z = engine.modules[module](views)
        logits, targets = nt_xent_logits(z.float(), temperature)
        loss = F.cross_entropy(logits, targets)
        engine.optimize(loss)
        return {"nt_xent": loss, "pair_acc": int((logits.argmax(1) == targets).sum()) / len(targets)}

    return step


def train_contrastive(model: CopyEncoder, pixels: np.ndarray, view: ViewFn, *, lr: float, batch_size: int,
                      temperature: float, epochs: int, weight_decay: float = 1e-4, **engine_args) -> TrainResult:
    """Train `model` on `pixels` (uint8 [n, S, S] at the model's input size) through the engine:
    AdamW with a cosine learning-rate decay over `epochs` (to lr / 10, per epoch), shuffled batches
    (a trailing single image is skipped: one image has no negatives). engine_args go to
    TrainingEngine (seed, device, state_path, fingerprint, last_path, meta, label, log_every, ...)."""
    if len(pixels) < 2:
        raise SynthleakError(f"copy encoder: {len(pixels)} training image(s); contrastive training needs at least 2")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=lr / 10)
    engine = TrainingEngine(contrastive_step(pixels, view, temperature), modules={"encoder": model},
                            optimizers={"encoder": optimizer}, schedulers={"encoder": schedule},
                            batches=IndexBatches(len(pixels), batch_size, min_batch=2), epochs=epochs, **engine_args)
    return engine.run()


@torch.no_grad()
def embed_images(model: CopyEncoder, pixels: np.ndarray, device: str, batch_size: int = 128) -> np.ndarray:
    """L2-normalised embeddings float32 [n, out_dim] of uint8 images [n, H, W] (resized to the model's size)."""
    model.eval()
    out = np.empty((len(pixels), model.out_dim), dtype=np.float32)
    for idx in batches(len(pixels), batch_size):
        x = to_tensor(resize_u8(pixels[idx], model.image_size), device)
        with autocast(device):
            out[idx] = model.embed(x).cpu().numpy()
    return out
