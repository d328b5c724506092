"""Procedural synthetic sets of any size for the scale benchmarks (bench_scale.py, bench_knn_index.py).

Rendering a phantom slice costs ~3 ms, so large sets are made of rendered base slices and shifted
copies of them (np.roll by up to +-6 pixels and a small intensity offset): every image is distinct,
neighbouring images are as close as in a generator's output, and 200,000 images take minutes, not
an hour. "Members" are other shifts of base slices whose copies are in the synthetic set (their
nearest synthetic image is a near-copy), "non-members" are slices of patients never rendered into it.
"""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from synthleak.bench.phantoms import make_patient, render_slice

SLICES = 8
#: shifted copies per rendered base slice
COPIES = 8


def _bases(n: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    made = 0
    while made < n:
        patient = make_patient(rng)
        for z in np.linspace(0.1, 0.9, SLICES):
            if made == n:
                return
            yield render_slice(patient, float(z), rng)
            made += 1


def _shifted(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dx, dy = rng.integers(-6, 7, 2)
    out = np.roll(base, (int(dy), int(dx)), axis=(0, 1)).astype(np.int16) + int(rng.integers(-4, 5))
    return np.clip(out, 0, 255).astype(np.uint8)


def synthetic_images(n: int, seed: int = 0, batch: int = 512) -> Iterator[np.ndarray]:
    """n distinct uint8 [256, 256] images in batches [<= batch, 256, 256], deterministic for (n, seed)."""
    rng = np.random.default_rng([seed, 1])
    out: list[np.ndarray] = []
    made = 0
    for base in _bases(-(-n // COPIES), seed):
        for _ in range(COPIES):
            if made == n:
                break
            out.append(_shifted(base, rng))
            made += 1
            if len(out) == batch:
                yield np.stack(out)
                out = []
    if out:
        yield np.stack(out)


def real_images(n: int, n_synthetic: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n real images, 1 = member): members are fresh shifts of bases in the synthetic set of that seed."""
    n_members = n // 2
    rng = np.random.default_rng([seed, 2])
    n_bases = -(-n_synthetic // COPIES)
    wanted = set(np.linspace(0, n_bases - 1, n_members).astype(int).tolist())
    members = [_shifted(b, rng) for i, b in enumerate(_bases(n_bases, seed)) if i in wanted]
    others = list(_bases(n - len(members), seed + 10_000))
    images = np.stack(members + others)
    return images, np.r_[np.ones(len(members), int), np.zeros(len(others), int)]


def pixel_features(images: np.ndarray, side: int = 64) -> np.ndarray:
    """The `pixels` feature space (features/pixels.py) of a batch, without a MethodConfig."""
    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA).reshape(-1)
                     for im in images]).astype(np.float32) / 255.0
