"""On-disk cache for features and trained models, keyed by content hashes of the inputs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .errors import CheckpointError
from .fsutil import atomic_output
from .runtime import default_cache_dir, log

T = TypeVar("T")


def cache_root(cache_dir: str | None) -> Path | None:
    """None disables caching (cache_dir == 'none')."""
    if cache_dir == "none":
        return None
    root = Path(cache_dir or default_cache_dir())
    root.mkdir(parents=True, exist_ok=True)
    return root


def make_key(*parts) -> str:
    """Stable hash of JSON-serialisable parts (config dicts, content keys, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def cached_array(cache_dir: str | None, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Return the cached array for (kind, key) or compute, store atomically and return it."""
    root = cache_root(cache_dir)
    if root is None:
        return compute()
    path = root / kind / f"{key}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed, never trusted
    value = np.asarray(compute())
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, value, allow_pickle=False)
    return value


def model_path(cache_dir: str | None, kind: str, key: str, suffix: str = ".safetensors") -> Path | None:
    """Where a trained model for (kind, key) lives in the cache (None when caching is off)."""
    root = cache_root(cache_dir)
    if root is None:
        return None
    path = root / "models" / kind / f"{key}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cached_model(path: Path | None, load: Callable[[Path], T], train: Callable[[], T], label: str) -> T:
    """The model cached at `path` (`load(path)`), else `train()` (which writes it there). A damaged or
    foreign cache entry is retrained, never trusted: one place for what every trained feature space does."""
    if path is not None and path.exists():
        try:
            model = load(path)
            log(f"[{label}] reusing cached model {path}")
            return model
        except CheckpointError as exc:
            log(f"[{label}] retraining: {exc}")
    return train()
