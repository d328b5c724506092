"""Image sets read from their files on demand: the synthetic images of an audit, which may be millions.

A release of synthetic images can hold millions of 256x256 images (1,000,000 = 65 GB of pixels), so
the synthetic set is never decoded into one array. `LazyImageSet` lists a folder (ids, names, the
file and DICOM frame of each image; the same checks as `load_folder`: non-image files, duplicate
ids, DICOM headers) and reads pixels only when asked:

- `iter_chunks(n)`: consecutive chunks, decoded by a bounded pool of threads, one chunk decoded
  ahead of the one being used (at most two chunks of pixels in memory);
- `read(indices)`: a few images (report tiles, copy evidence);
- `materialise(indices)`: an in-memory `ImageSet` (the training subset of a seed method).

`ImageSet` offers the same three calls, so code written against them serves in-memory sets (tests,
the demo, the benchmark builder) and streamed ones alike.

Content hashes: each image is keyed by the SHA-1 of its file's bytes (plus the frame number for a
multi-frame DICOM file), not of its decoded pixels. Hashing bytes costs about 0.1 ms per 40 kB PNG
against 1.4 ms to decode it, so a second audit of the same files finds its cached features without
decoding a single image. Bytes are still content: a copied or renamed file keeps its key, an edited
one changes it. What bytes do not capture is the decoding itself, so the set's key also holds the
image size, the CT window (when DICOM files are present) and DECODE_VERSION, bumped whenever the way
a file becomes pixels changes. (A re-encoded PNG with identical pixels gets a new key: a cache miss,
never a wrong hit.) `materialise` hashes decoded pixels like `load_folder`, so models trained on a
materialised subset keep the cache keys they had when every image was in memory.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import DataError, UnreadableInputError
from ..runtime import Progress
from .dicom import Window, parse_window
from .images import (IMAGE_SIZE, ImageEntry, ImageSet, decode_file, list_entries, pixel_hashes,
                     warn_dicom_notes)

#: bump when the way a file becomes pixels changes (conversion, windowing, resizing)
DECODE_VERSION = 1
#: images per chunk: 512 x 64 kB = 32 MB of pixels, large enough to batch feature extraction
DEFAULT_CHUNK = 512
#: decode threads (PIL releases the GIL while it decodes)
DEFAULT_WORKERS = 4
#: seconds between progress lines of long passes
PROGRESS_EVERY_S = 10.0

Decoded = tuple[list[np.ndarray], str | None, int]


class LazyImageSet:
    """Images of one or more folders, listed now and decoded chunk by chunk when used.

    Has the identity attributes of an `ImageSet` (ids, names, hashes, patients, folder, len,
    content_key, subset, concat) but no `pixels`: use `iter_chunks`, `read` or `materialise`.
    `resized` and `converted` (PIL modes) are known after a full pass; DICOM counts at once.
    """

    def __init__(self, entries: Sequence[ImageEntry], window: Window | None = None, size: int = IMAGE_SIZE,
                 folder: Path | None = None, workers: int = DEFAULT_WORKERS,
                 file_hashes: dict[Path, str] | None = None, notes: dict[Path, str] | None = None):
        self.entries = list(entries)
        self.window = parse_window(window)
        self.size = size
        self.folder = folder
        self.workers = max(1, int(workers))
        # shared with subsets and concatenations: a file is hashed (and its DICOM notes kept) once
        self._file_hashes = file_hashes if file_hashes is not None else {}
        self.notes = notes if notes is not None else {}
        self.resized = 0
        self._pass: dict[Path, tuple[str | None, int, int]] = {}  # file -> (converted, frames, resized)
        self._notes_warned = len(self.notes)

    @staticmethod
    def from_folder(folder: Path, window: Window | str | None = None, size: int = IMAGE_SIZE,
                    workers: int = DEFAULT_WORKERS) -> "LazyImageSet":
        """List a folder (validated like load_folder) without decoding any image."""
        notes: dict[Path, str] = {}
        entries = list_entries(Path(folder), notes)
        if notes:
            warn_dicom_notes(Path(folder), notes, len({e.path for e in entries if e.dicom}))
        return LazyImageSet(entries, parse_window(window), size, Path(folder), workers, notes=notes)

    # --- identity --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @cached_property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @cached_property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @cached_property
    def patients(self) -> dict[str, str]:
        return {e.id: e.patient_id for e in self.entries if e.patient_id is not None}

    @property
    def converted(self) -> dict[str, int]:
        """Images converted from each PIL mode (after a full pass) or from DICOM (always known)."""
        out: dict[str, int] = {}
        n_dicom = sum(e.dicom for e in self.entries)
        if n_dicom:
            out["DICOM"] = n_dicom
        for conv, frames, _ in self._pass.values():
            if conv and conv != "DICOM":
                out[conv] = out.get(conv, 0) + frames
        return out

    @property
    def hashes(self) -> list[str]:
        """Per-image content hash: SHA-1 of the file's bytes (+ ':frame' for a frame of a multi-frame file)."""
        self._hash_files()
        return [self._file_hashes[e.path] + (f":{e.frame}" if e.name != e.path.name else "") for e in self.entries]

    def content_key(self) -> str:
        """One hash for the whole set (order-sensitive) and the way its files are decoded."""
        h = hashlib.sha256()
        dicom_window = str(self.window) if any(e.dicom for e in self.entries) else None
        h.update(repr(("files", DECODE_VERSION, self.size, dicom_window)).encode())
        for x in self.hashes:
            h.update(x.encode())
        return h.hexdigest()[:24]

    def identity_key(self) -> str:
        """A key from the files' names, sizes and modification times, without reading them.

        For stores that live only as long as this process (caching off): nothing is reused across
        audits then, so reading every file to hash it would buy nothing."""
        h = hashlib.sha256()
        dicom_window = str(self.window) if any(e.dicom for e in self.entries) else None
        h.update(repr(("identity", DECODE_VERSION, self.size, dicom_window)).encode())
        stats: dict[Path, tuple[int, int]] = {}
        for e in self.entries:
            if e.path not in stats:
                try:
                    st = e.path.stat()
                except OSError as exc:
                    raise UnreadableInputError(f"{e.path}: cannot read file ({exc.strerror or exc})") from None
                stats[e.path] = (st.st_size, st.st_mtime_ns)
            h.update(repr((str(e.path), e.frame, stats[e.path])).encode())
        return h.hexdigest()[:24]

    def _chunk_hashes(self) -> list[str]:
        """Hashes handed to chunks: the content hashes when computed already, else file and frame
        (chunks go to extractors' transform, which never caches by them)."""
        if all(e.path in self._file_hashes for e in self.entries):
            return self.hashes
        return [f"{e.path}#{e.frame}" for e in self.entries]

    def _hash_files(self) -> None:
        todo = list(dict.fromkeys(e.path for e in self.entries if e.path not in self._file_hashes))
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:  # hashlib releases the GIL
            self._file_hashes.update(zip(todo, pool.map(_file_sha1, todo)))

    def subset(self, index) -> "LazyImageSet":
        index = np.asarray(index, dtype=int)
        return LazyImageSet([self.entries[i] for i in index], self.window, self.size, self.folder, self.workers,
                            self._file_hashes, self.notes)

    @staticmethod
    def concat(sets: list["LazyImageSet"]) -> "LazyImageSet":
        sets = [s for s in sets if s is not None and len(s)]
        if not sets:
            raise ValueError("nothing to concatenate")
        first = sets[0]
        if any(s.window != first.window or s.size != first.size for s in sets):
            raise ValueError("image sets read with different windows or sizes cannot be pooled")
        folders = {s.folder for s in sets}
        hashes = {k: v for s in sets for k, v in s._file_hashes.items()}
        notes = {k: v for s in sets for k, v in s.notes.items()}
        return LazyImageSet([e for s in sets for e in s.entries], first.window, first.size,
                            folders.pop() if len(folders) == 1 else None, first.workers, hashes, notes)

    # --- pixels ----------------------------------------------------------------------------------
    @property
    def pixels(self) -> np.ndarray:
        raise AttributeError("synthetic images are read from their files on demand: use iter_chunks(), read(indices) "
                             "or materialise() (all of them in memory) instead of .pixels")

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK, start: int = 0) -> Iterator[tuple[int, ImageSet]]:
        """(first row, ImageSet of up to chunk_size consecutive images) from row `start` on.

        The next chunk is decoding in the pool while the caller works on this one. A file that
        cannot be read stops the stream with UnreadableInputError naming it (the pool is cancelled).
        """
        n = len(self)
        bounds = [(s, min(s + chunk_size, n)) for s in range(start, n, max(1, chunk_size))]
        hashes = self._chunk_hashes()
        pool = ThreadPoolExecutor(max_workers=self.workers)
        ahead: deque[tuple[int, int, dict[Path, Future]]] = deque()
        last: dict[Path, Decoded] = {}  # a multi-frame file spanning two chunks is decoded once
        try:
            for i, (s, e) in enumerate(bounds):
                ahead.append((s, e, self._submit(pool, s, e)))
                if len(ahead) < 2 and i + 1 < len(bounds):
                    continue
                s0, e0, jobs = ahead.popleft()
                yield s0, self._chunk(s0, e0, jobs, last, hashes)
            while ahead:
                s0, e0, jobs = ahead.popleft()
                yield s0, self._chunk(s0, e0, jobs, last, hashes)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if start == 0:
            self._after_full_pass()

    def read(self, indices) -> np.ndarray:
        """uint8 pixels [len(indices), size, size] of a few images, decoded from their files now."""
        idx = np.asarray(indices, dtype=int).ravel()
        out = np.empty((len(idx), self.size, self.size), dtype=np.uint8)
        decoded: dict[Path, Decoded] = {}
        for row, i in enumerate(idx):
            entry = self.entries[i]
            if entry.path not in decoded:
                decoded[entry.path] = self._decode(entry.path, entry.dicom)
            out[row] = self._frame(entry, decoded[entry.path])
        return out

    def materialise(self, indices=None) -> ImageSet:
        """The images (all, or `indices`) decoded into an in-memory ImageSet, keyed by pixel hashes."""
        part = self if indices is None else self.subset(indices)
        pixels = np.empty((len(part), self.size, self.size), dtype=np.uint8)
        progress = Progress(f"decoding {len(part)} synthetic images", len(part), every=PROGRESS_EVERY_S)
        for s, chunk in part.iter_chunks():
            pixels[s:s + len(chunk)] = chunk.pixels
            progress.update(s + len(chunk), "images")
        return ImageSet(ids=part.ids, names=part.names, pixels=pixels, hashes=pixel_hashes(pixels),
                        folder=self.folder, resized=part.resized, converted=part.converted, patients=part.patients)

    # --- decoding --------------------------------------------------------------------------------
    @cached_property
    def _frames_per_file(self) -> Counter:
        return Counter(e.path for e in self.entries)

    def _decode(self, path: Path, dicom: bool) -> Decoded:
        try:
            return decode_file(path, dicom, self.size, self.window, self.notes if dicom else None)
        except UnreadableInputError:
            raise
        except DataError as exc:
            raise UnreadableInputError(str(exc)) from None

    def _submit(self, pool: ThreadPoolExecutor, s: int, e: int) -> dict[Path, Future]:
        # PNG/JPEG files decode in the pool; DICOM files in the caller's thread (_chunk), because
        # pydicom's warnings are captured per file and no PIL warning of another thread may join them
        files = dict.fromkeys(x.path for x in self.entries[s:e] if not x.dicom)
        return {p: pool.submit(self._decode, p, False) for p in files}

    def _chunk(self, s: int, e: int, jobs: dict[Path, Future], last: dict[Path, Decoded],
               hashes: list[str]) -> ImageSet:
        decoded = {p: f.result() for p, f in jobs.items()}
        for entry in self.entries[s:e]:
            if entry.dicom and entry.path not in decoded:
                if entry.path not in last:
                    last.clear()
                    last[entry.path] = self._decode(entry.path, True)
                decoded[entry.path] = last[entry.path]
        pixels = np.empty((e - s, self.size, self.size), dtype=np.uint8)
        for row, entry in enumerate(self.entries[s:e]):
            pixels[row] = self._frame(entry, decoded[entry.path])
        for path, (frames, conv, resized) in decoded.items():
            self._pass[path] = (conv, len(frames), resized)
        return ImageSet(ids=self.ids[s:e], names=self.names[s:e], pixels=pixels, hashes=hashes[s:e],
                        folder=self.folder)

    def _frame(self, entry: ImageEntry, decoded: Decoded) -> np.ndarray:
        frames = decoded[0]
        if not entry.dicom:
            return frames[0]
        expected = self._frames_per_file[entry.path] if entry.name != entry.path.name else 1
        if len(frames) < max(expected, entry.frame + 1):
            raise UnreadableInputError(f"{entry.path}: DICOM pixel data has {len(frames)} frames, its header "
                                       f"{max(expected, entry.frame + 1)}")
        return frames[entry.frame]

    def _after_full_pass(self) -> None:
        """Warn once, as load_folder does, about resized images and pydicom's complaints."""
        resized = sum(r for _, _, r in self._pass.values())
        where = self.folder or Path("synthetic images")
        if resized and not self.resized:
            warnings.warn(f"{where}: {resized} of {len(self)} images were not {self.size}x{self.size} and were "
                          "resized", stacklevel=3)
        self.resized = resized
        if len(self.notes) > self._notes_warned:  # pydicom complained about pixel data while decoding
            warn_dicom_notes(where, self.notes, len({e.path for e in self.entries if e.dicom}), stacklevel=3)
            self._notes_warned = len(self.notes)


def _file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as exc:
        raise UnreadableInputError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return h.hexdigest()


ImageSource = ImageSet | LazyImageSet


def concat_images(sets: list[ImageSource | None]) -> ImageSource:
    """Pool image sets of one kind: all in memory (an ImageSet) or all read from files (a LazyImageSet)."""
    present = [s for s in sets if s is not None and len(s)]
    if present and all(isinstance(s, LazyImageSet) for s in present):
        return LazyImageSet.concat(present)
    if any(isinstance(s, LazyImageSet) for s in present):
        raise TypeError("cannot pool in-memory and file-backed image sets")
    return ImageSet.concat(present)
