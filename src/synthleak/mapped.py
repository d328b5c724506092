"""Rows of a memory-mapped feature store, read without keeping the store resident.

The feature store (features/store.py) is opened as a read-only memory map. Every page of a map that
numpy touches stays mapped into the process, and mapped file pages count in its resident memory
(RSS) until the map is closed: one pass over a 200,000 x 4,096 float32 store through the map left
3 GiB resident. These helpers read rows with positioned reads from the map's file into ordinary
arrays instead, so a pass holds one block at a time (the kernel's page cache still keeps the file
warm for the next pass, outside the process). Anything that is not a file-backed map is sliced as
usual.
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import numpy as np


def file_position(arr: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset of arr's first element) for a C-contiguous view into a file-backed memory map
    (the map itself, a row slice of it, or an ndarray view such as np.asarray(map)), else None.

    A slice of a numpy memmap keeps its parent's `offset` attribute, and np.asarray drops the memmap
    type, so the position is found from the data pointer's distance to the start of the mapping.
    """
    if not (isinstance(arr, np.ndarray) and arr.flags.c_contiguous and arr.ndim >= 1 and arr.size):
        return None
    owner = arr
    while owner is not None and not (isinstance(owner, np.memmap) and getattr(owner, "_mmap", None) is not None):
        owner = getattr(owner, "base", None)
    if owner is None or not owner.filename:
        return None
    mapped_from = owner.offset - owner.offset % mmap.ALLOCATIONGRANULARITY  # numpy maps from an aligned start
    view = np.frombuffer(owner._mmap, np.uint8)
    try:
        start = arr.ctypes.data - view.ctypes.data
        if not 0 <= start <= len(view) - arr.nbytes:  # pragma: no cover - a view always lies in its map
            return None
        return owner.filename, mapped_from + start
    finally:
        del view  # release the buffer export so the map can still be closed


def _row_bytes(arr: np.ndarray) -> int:
    return arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))


def read_rows(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    """arr[start:stop] as an in-memory array (a file-backed map is read from its file, not through the map)."""
    start, stop = max(0, start), min(stop, len(arr))
    where = file_position(arr)
    if where is None:
        return arr[start:stop]
    row_bytes = _row_bytes(arr)
    out = np.empty((max(0, stop - start), *arr.shape[1:]), arr.dtype)
    if len(out):
        with open(where[0], "rb") as f:
            f.seek(where[1] + start * row_bytes)
            if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise OSError(f"{where[0]}: feature store is shorter than its header says")
    return out


def take_rows(arr: np.ndarray, index: np.ndarray) -> np.ndarray:
    """arr[index] for integer indices of any shape (rows of a file-backed map read with positioned reads)."""
    flat = np.asarray(index, dtype=np.int64).ravel()
    where = file_position(arr)
    if where is None:
        return np.asarray(arr[flat]).reshape(*np.shape(index), *arr.shape[1:])
    if len(flat) and (flat.min() < -len(arr) or flat.max() >= len(arr)):
        raise IndexError(f"row index out of range for {len(arr)} rows")
    flat = np.where(flat < 0, flat + len(arr), flat)
    unique, inverse = np.unique(flat, return_inverse=True)
    row_bytes = _row_bytes(arr)
    found = np.empty((len(unique), *arr.shape[1:]), arr.dtype)
    buffer = memoryview(found).cast("B")
    fd = os.open(where[0], os.O_RDONLY)
    try:
        for j, row in enumerate(unique):
            if os.preadv(fd, [buffer[j * row_bytes:(j + 1) * row_bytes]], where[1] + int(row) * row_bytes) != row_bytes:
                raise OSError(f"{where[0]}: feature store is shorter than its header says")
    finally:
        os.close(fd)
    if len(unique) == len(flat) and np.array_equal(unique, flat):
        # sorted distinct rows (an index's training sample): no second, reordered copy
        return found.reshape(*np.shape(index), *arr.shape[1:])
    return found[inverse].reshape(*np.shape(index), *arr.shape[1:])


def row_blocks(arr: np.ndarray, block_bytes: int = 64 << 20) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) over consecutive blocks of about block_bytes each, read as by `read_rows`."""
    step = max(1, block_bytes // max(1, _row_bytes(arr)))
    for start in range(0, len(arr), step):
        yield start, read_rows(arr, start, start + step)
