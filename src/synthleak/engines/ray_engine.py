"""`--engine ray`: decode synthetic images and extract their features with Ray Data.

For users whose synthetic set outgrows one machine: Ray Data reads the image files
(`ray.data.read_binary_files`, so the files must be visible to every node, e.g. on shared
storage), tasks fused with the reads turn each file into its images exactly as the local engine
does (`data.images.decode_file`: same validation, conversion, CT window and resizing), and a pool of
extractor actors runs the fitted extractor's `transform` with `map_batches`, on a GPU each when the
cluster has GPUs. The driver receives (row, features) batches and writes them into the same feature
store as the local engine (features/store.py), so the two engines' stores are interchangeable.

Ray is an optional extra (`pip install 'synthleak[ray]'`). `synthleak audit` joins the cluster named
by RAY_ADDRESS, or a Ray instance already started in this process, or starts a local one.
A file that cannot be read stops the run with the same one-line error as the local engine.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import MethodConfig
from ..data.images import ImageSet, decode_file
from ..data.stream import DEFAULT_CHUNK, LazyImageSet
from ..errors import DataError, SynthleakError, UnreadableInputError
from ..runtime import LOGGER, is_quiet

INSTALL_HINT = "pip install 'synthleak[ray]'"


class FittedExtractor(Protocol):
    """What the actors need of a fitted feature extractor (features.base.FeatureExtractor is one); a
    protocol, so that the engine does not import the feature layer that calls it."""

    cfg: MethodConfig

    def transform(self, images: ImageSet) -> np.ndarray: ...


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra of ray
    except ImportError:
        raise SynthleakError(f"--engine ray needs Ray Data ({INSTALL_HINT})") from None
    return ray


def _connect(ray, cfg: MethodConfig) -> None:
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=not is_quiet())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not is_quiet()
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = not is_quiet()


def _file_table(images: LazyImageSet, start: int) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """Absolute file path -> (rows of the set, frame of each row, is DICOM), for rows from `start` on."""
    table: dict[str, tuple[list[int], list[int], bool]] = {}
    for row in range(start, len(images)):
        e = images.entries[row]
        rows, frames, _ = table.setdefault(os.path.abspath(e.path), ([], [], e.dicom))
        rows.append(row)
        frames.append(e.frame)
    return {p: (np.array(r, np.int64), np.array(f, np.int64), d) for p, (r, f, d) in table.items()}


_tables: dict[str, dict] = {}  # per worker process: the file table, fetched once per run


def decode_files(batch: dict[str, np.ndarray], table_ref, size: int, window) -> dict[str, np.ndarray]:
    """Ray Data task: file bytes -> rows {row, pixels} (one row per image; several for a multi-frame file).

    A task, not an actor, so that Ray fuses it with the read and frees its CPU between files."""
    import ray

    key = table_ref.hex()
    if key not in _tables:
        _tables.clear()
        _tables[key] = ray.get(table_ref)
    table = _tables[key]
    rows, pixels = [], []
    for path, data in zip(batch["path"], batch["bytes"]):
        name = os.path.abspath(str(path))
        want_rows, frames_wanted, dicom = table[name]
        try:
            frames, _, _ = decode_file(Path(name), dicom, size, window, None, bytes(data))
        except SynthleakError as exc:
            raise UnreadableInputError(str(exc)) from None
        if len(frames) <= int(frames_wanted.max()):
            raise UnreadableInputError(f"{name}: DICOM pixel data has {len(frames)} frames, its header "
                                       f"{int(frames_wanted.max()) + 1}")
        rows.extend(want_rows.tolist())
        pixels.extend(frames[f] for f in frames_wanted)
    return {"row": np.asarray(rows, np.int64),
            "pixels": np.stack(pixels) if pixels else np.zeros((0, size, size), np.uint8)}


class EmbedImages:
    """Ray Data actor: rows {row, pixels} -> rows {row, features} with the fitted extractor."""

    def __init__(self, extractor: FittedExtractor):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU when Ray gave this actor one
        extractor.cfg = replace(extractor.cfg, device=device)
        LOGGER.setLevel(logging.WARNING)  # an actor's lines would interleave with the driver's progress
        for value in vars(extractor).values():
            if isinstance(value, torch.nn.Module):
                value.to(device)
        self.extractor = extractor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = np.ascontiguousarray(batch["pixels"], dtype=np.uint8)
        ids = [str(r) for r in batch["row"]]
        chunk = ImageSet(ids=ids, names=ids, pixels=pixels, hashes=[""] * len(ids))
        feats = np.asarray(self.extractor.transform(chunk), dtype=np.float32)
        return {"row": batch["row"], "features": feats}


def _user_error(exc: BaseException) -> SynthleakError | None:
    """The synthleak error a Ray task raised: in the chain of Ray's wrapping exceptions, or (Ray Data
    keeps only the text of a failed UDF's exception) in the remote traceback's last line about it."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SynthleakError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    found = re.findall(r"synthleak\.errors\.(UnreadableInputError|DataError|SynthleakError): ([^\n]+)", str(exc))
    if found:
        kind, message = found[-1]
        return {"UnreadableInputError": UnreadableInputError, "DataError": DataError}.get(kind, SynthleakError)(
            message.strip())
    return None


def ray_feature_batches(extractor: FittedExtractor, images: LazyImageSet, cfg: MethodConfig, start: int = 0
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, float32 features) batches of images[start:], in whatever order the cluster finishes them."""
    ray = _ray()
    _connect(ray, cfg)
    table = _file_table(images, start)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.read_binary_files(list(table), include_paths=True)
    ds = ds.map_batches(decode_files, fn_kwargs={"table_ref": ray.put(table), "size": images.size,
                                                 "window": images.window}, batch_size=64, batch_format="numpy")
    # extractor actors: one per GPU when the cluster has GPUs, else up to half the CPUs (the other
    # half reads and decodes; actors holding every CPU would starve the reading tasks)
    ds = ds.map_batches(EmbedImages, fn_constructor_args=(extractor,), batch_size=DEFAULT_CHUNK,
                        batch_format="numpy", num_gpus=1 if gpus else 0,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=gpus or max(1, cpus // 2)))
    try:
        for batch in ds.iter_batches(batch_size=DEFAULT_CHUNK, batch_format="numpy"):
            yield np.asarray(batch["row"], np.int64), np.asarray(batch["features"], np.float32)
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        raise type(err)(str(err)) from None
