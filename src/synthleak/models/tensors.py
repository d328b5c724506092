"""Image arrays <-> network tensors, shared by every trainer and feature read-out.

Images arrive as uint8 gray arrays [n, H, W]; networks take float [B, 1, S, S] in [0, 1] (NCHW:
`channels_last` crashes strided 1x1 conv backward passes on this CPU build).
"""
from __future__ import annotations

from contextlib import nullcontext

import cv2
import numpy as np
import torch


def resize_u8(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, H, W] -> uint8 [n, size, size] (area averaging when shrinking, bilinear when growing)."""
    if pixels.shape[1:] == (size, size):
        return pixels
    interp = cv2.INTER_AREA if size < pixels.shape[1] else cv2.INTER_LINEAR
    out = np.empty((len(pixels), size, size), dtype=np.uint8)
    for i, img in enumerate(pixels):
        out[i] = cv2.resize(img, (size, size), interpolation=interp)
    return out


def to_tensor(pixels: np.ndarray, device: str) -> torch.Tensor:
    """uint8 [B, S, S] -> float [B, 1, S, S] in [0, 1] on device (NCHW)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(device).unsqueeze(1).float().div_(255.0)


def batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive index batches 0..n-1 for inference (training batches come from engine.IndexBatches)."""
    order = np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def autocast(device: str):
    """bfloat16 mixed precision on CUDA, a no-op elsewhere (for inference; training uses engine.autocast)."""
    if str(device).startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
