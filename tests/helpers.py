"""Small helpers for writing image folders in tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path, n: int, prefix: str = "img", size: int = 256, seed: int = 0, mode: str = "L") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size, size), dtype=np.uint8)
        img = Image.fromarray(arr)
        if mode != "L":
            img = img.convert(mode)
        p = folder / f"{prefix}_{i + 1}.png"
        img.save(p)
        paths.append(p)
    return paths


def make_layout(root: Path, n_gen: int = 6, n_used: int = 4, n_not: int = 4, n_unknown: int = 6,
                size: int = 256) -> Path:
    write_images(root / "generated", n_gen, "gen", size, seed=1)
    write_images(root / "real_used", n_used, "used", size, seed=2)
    write_images(root / "real_not_used", n_not, "notused", size, seed=3)
    write_images(root / "real_unknown", n_unknown, "unk", size, seed=4)
    return root
