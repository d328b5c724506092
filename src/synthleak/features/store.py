"""The feature store: features of a streamed image set, float32 on disk, memory-mapped when used.

`image_features(extractor, images, cfg)` is the one way to get an image set's features in a space: a
file-backed (lazy) set goes through the store below, an in-memory set through the extractor's content-hash
cache (`FeatureExtractor.extract`, cache.cached_array); the audit's embeddings (features/embedding.py)
are made with it.

Only features are kept of the synthetic images: `image_features` streams a `LazyImageSet` chunk by
chunk through an extractor's `transform` (decoding on the local engine's threads, or on a Ray
cluster with `--engine ray`) and writes each chunk into `<cache>/features/<space>/<key>.npy`, a
plain .npy file that is then opened memory-mapped (read-only); passes over it read rows from the
file (synthleak.mapped), so the map's pages do not pile up in the process's memory. The key is the extractor's identity
and the set's content key (file hashes, see data/stream.py), so a second audit of the same files
reuses the store without decoding an image. Chunks are written with positioned writes, not through
a writable memory map, so building a store does not grow the process's resident memory.

The store is built under `<key>.npy.partial` with a progress file beside it: an interrupted build
resumes from its last checkpoint (local engine), and only a complete store is ever renamed to
`<key>.npy`. A lock file keeps two processes from building one store at the same time.
With `--cache-dir none` the store lives in a temporary folder removed when the process exits (it
still serves every method of the one audit); it is then keyed by the files' names, sizes and
modification times instead of their content, since no later audit can reuse it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..cache import cache_root, make_key
from ..config import MethodConfig
from ..data.stream import DEFAULT_CHUNK, PROGRESS_EVERY_S, ImageSource, LazyImageSet
from ..errors import SynthleakError
from ..runtime import Progress, format_seconds, log
from .base import FeatureExtractor

ENGINES = ("local", "ray")
#: seconds between checkpoints of a store being built
CHECKPOINT_EVERY_S = 30.0

_session_dir: tempfile.TemporaryDirectory | None = None


def store_root(cache_dir: str | None) -> Path:
    """The cache folder, or (caching off) a temporary folder that lives as long as the process."""
    root = cache_root(cache_dir)
    if root is not None:
        return root
    global _session_dir
    if _session_dir is None:
        _session_dir = tempfile.TemporaryDirectory(prefix="synthleak-store-")  # removed at exit
    return Path(_session_dir.name)


def image_features(extractor: FeatureExtractor, images: ImageSource, cfg: MethodConfig) -> np.ndarray:
    """float32 [n, d] features of an image set.

    In-memory ImageSets go through `extractor.extract` (an array in memory, cached as before);
    file-backed LazyImageSets through the store (a read-only memory map of the file).
    """
    if not isinstance(images, LazyImageSet):
        return extractor.extract(images)
    if cfg.engine not in ENGINES:
        raise SynthleakError(f"--engine {cfg.engine!r}: choose from {', '.join(ENGINES)}")
    # caching off: the store lives as long as this process, so the files' identity keys it (see identity_key)
    content = images.content_key() if cache_root(cfg.cache_dir) is not None else images.identity_key()
    key = make_key(extractor.cache_key(), content)
    path = store_root(cfg.cache_dir) / "features" / extractor.name / f"{key}.npy"
    with _build_lock(path):
        feats = open_store(path, len(images))
        if feats is None:
            _build(path, extractor, images, cfg)
            feats = open_store(path, len(images))
            if feats is None:  # pragma: no cover - a store written just now must open
                raise SynthleakError(f"{path}: feature store could not be read back")
        else:
            log(f"[{extractor.name} features] {len(images)} images from the store {path.name}")
    return feats


def open_store(path: Path, n: int) -> np.ndarray | None:
    """The complete store at `path` as a read-only memory map, or None (absent or damaged: rebuilt)."""
    if not path.exists():
        return None
    try:
        feats = np.load(path, mmap_mode="r", allow_pickle=False)
        if feats.ndim == 2 and len(feats) == n and feats.dtype == np.float32:
            return feats
    except (OSError, ValueError):
        pass
    path.unlink(missing_ok=True)  # a damaged store is rebuilt, never trusted
    return None


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class StoreWriter:
    """Rows of a float32 [n, d] .npy file written in place (positioned writes; nothing mapped)."""

    def __init__(self, path: Path, n: int, dim: int, create: bool):
        self.path, self.n, self.dim = path, n, dim
        if create:
            header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
            del header  # a sparse file of the full size with its .npy header
        self.offset = np.load(path, mmap_mode="r").offset
        self.fd = os.open(path, os.O_RDWR)

    def write(self, where: int | np.ndarray, feats: np.ndarray) -> None:
        """Write feature rows at row `where` onwards, or at the rows listed in `where` (any order)."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if np.isscalar(where) and feats.ndim == 2 and feats.shape[1] == self.dim and 0 <= where <= self.n - len(feats):
            os.pwrite(self.fd, memoryview(feats).cast("B"), self.offset + int(where) * self.dim * 4)
            return
        rows = np.arange(where, where + len(feats)) if np.isscalar(where) else np.asarray(where, np.int64)
        if feats.ndim != 2 or feats.shape[1] != self.dim or len(rows) != len(feats) or (
                len(rows) and (rows.min() < 0 or rows.max() >= self.n)):
            raise RuntimeError(f"feature rows of shape {feats.shape} do not fit the store [{self.n}, {self.dim}]")
        order = np.argsort(rows, kind="stable")
        rows, feats = rows[order], feats[order]
        # one write per run of consecutive rows
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            if hi > lo:
                os.pwrite(self.fd, memoryview(feats[lo:hi]).cast("B"), self.offset + int(rows[lo]) * self.dim * 4)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _resume_point(partial: Path, progress: Path, n: int) -> tuple[int, int | None]:
    """(rows already written, feature dimension) of an interrupted build, or (0, None)."""
    try:
        state = json.loads(progress.read_text())
        shape = np.load(partial, mmap_mode="r").shape
        if shape == (n, int(state["dim"])) and 0 < int(state["rows"]) <= n:
            return int(state["rows"]), int(state["dim"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    partial.unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    return 0, None


def _build(path: Path, extractor: FeatureExtractor, images: LazyImageSet, cfg: MethodConfig) -> None:
    n = len(images)
    partial, progress_file = Path(f"{path}.partial"), Path(f"{path}.progress")
    start, dim = _resume_point(partial, progress_file, n)
    label = f"{extractor.name} features"
    if start:
        log(f"[{label}] resuming an interrupted build at image {start} of {n}")
    if cfg.engine == "ray":
        from ..engines.ray_engine import ray_feature_batches

        batches = ray_feature_batches(extractor, images, cfg, start)
        checkpoints = False  # Ray returns batches in any order: no prefix to resume from
    else:
        batches = ((s, extractor.transform(chunk)) for s, chunk in images.iter_chunks(DEFAULT_CHUNK, start))
        checkpoints = True
    writer: StoreWriter | None = None if dim is None else StoreWriter(partial, n, dim, create=False)
    progress = Progress(f"{label} of {n} images", n - start, every=PROGRESS_EVERY_S)
    done, last_checkpoint = 0, time.perf_counter()
    try:
        for where, feats in batches:
            feats = np.asarray(feats, dtype=np.float32)
            if writer is None:
                writer = StoreWriter(partial, n, feats.shape[1], create=True)
            writer.write(where, feats)
            done += len(feats)
            progress.update(done, "images decoded and embedded")
            now = time.perf_counter()
            if checkpoints and now - last_checkpoint >= CHECKPOINT_EVERY_S:
                writer.sync()
                progress_file.write_text(json.dumps({"rows": start + done, "dim": writer.dim}))
                last_checkpoint = now
        if writer is None or done != n - start:
            raise RuntimeError(f"{label}: the engine returned {done} of {n - start} rows")
        writer.sync()
    finally:
        if writer is not None:
            writer.close()
    os.replace(partial, path)
    progress_file.unlink(missing_ok=True)
    elapsed = progress.elapsed
    log(f"[{label}] {done} images in {format_seconds(elapsed)} ({done / max(elapsed, 1e-9):.0f} images/s) -> "
        f"{path.name}")


__all__ = ["ENGINES", "StoreWriter", "image_features", "open_store", "store_root"]
