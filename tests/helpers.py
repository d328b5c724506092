"""Small helpers for tests: image folders on disk, interrupted training runs."""
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


def interrupt_training(monkeypatch, at_call: int) -> list[int]:
    """Make the training engine raise KeyboardInterrupt at its `at_call`-th epoch (counting from 1), as
    if the process were killed mid-run. Returns the list of the 0-based epoch of every epoch started
    (the patch stays: later runs keep recording, so a resumed run shows which epochs it repeated)."""
    from synthleak.models.engine import TrainingEngine

    real_epoch = TrainingEngine._train_epoch
    calls: list[int] = []

    def epoch_or_crash(engine):
        calls.append(engine.epoch)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return real_epoch(engine)

    monkeypatch.setattr(TrainingEngine, "_train_epoch", epoch_or_crash)
    return calls
