"""Loading and validating image folders into 8-bit gray arrays."""
from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .dicom import DICOM_SUFFIXES, Window, has_dicom_magic, parse_window, read_frames, read_header

IMAGE_SIZE = 256
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES
# Files that commonly sit beside images and are not data (DICOMDIR indexes a DICOM folder).
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "dicomdir"}


def strip_image_suffix(name: str) -> str:
    """`x.png` -> `x`; ids with other dots (`IMG.0001`) are kept whole."""
    p = Path(name)
    return p.stem if p.suffix.lower() in IMAGE_SUFFIXES else name


def natural_key(text: str) -> tuple:
    """Sort key so that img2 < img10 (the run-file row order); ties (img01 / img1, A / a) break by text.

    Digit runs compare by value without int(), so that any digit (`\\d` matches every Unicode decimal
    digit) and any length of run sorts without error.
    """
    parts = re.split(r"(\d+)", text)
    key = []
    for i, part in enumerate(parts):
        if i % 2:
            digits = "".join(str(unicodedata.decimal(c)) for c in part).lstrip("0")
            key.append((len(digits), digits))
        else:
            key.append(part.lower())
    return tuple(key), text


@dataclass
class ImageSet:
    """Images of one folder: ids (file stem), file names, uint8 pixels [n, 256, 256] and content hashes.

    A frame of a multi-frame DICOM file has the id `<stem>_f0001` (1-based) and the name
    `<id><suffix>`; `patients` maps the id of each DICOM image with a PatientID to it.
    """

    ids: list[str]
    names: list[str]
    pixels: np.ndarray
    hashes: list[str]
    folder: Path | None = None
    resized: int = 0
    converted: dict[str, int] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def content_key(self) -> str:
        """One hash for the whole set (order-sensitive), for caching features and models."""
        h = hashlib.sha256()
        for x in self.hashes:
            h.update(x.encode())
        return h.hexdigest()[:24]

    @staticmethod
    def from_arrays(pixels: np.ndarray, ids: list[str] | None = None) -> "ImageSet":
        """Wrap in-memory uint8 images (used by the demo, the benchmark builder and tests)."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.ndim != 3:
            raise ValueError("pixels must be [n, H, W]")
        ids = ids or [f"img_{i:05d}" for i in range(len(pixels))]
        return ImageSet(ids=list(ids), names=[f"{i}.png" for i in ids], pixels=pixels, hashes=pixel_hashes(pixels))

    def subset(self, index) -> "ImageSet":
        index = np.asarray(index, dtype=int)
        return ImageSet(
            ids=[self.ids[i] for i in index],
            names=[self.names[i] for i in index],
            pixels=self.pixels[index],
            hashes=[self.hashes[i] for i in index],
            folder=self.folder,
            patients={self.ids[i]: self.patients[self.ids[i]] for i in index if self.ids[i] in self.patients},
        )

    # The image-source interface, shared with data.stream.LazyImageSet (images read from their files
    # on demand), so that code which streams a synthetic set serves in-memory sets unchanged.
    def iter_chunks(self, chunk_size: int = 512, start: int = 0) -> Iterator[tuple[int, "ImageSet"]]:
        """(first row, ImageSet of up to chunk_size consecutive images) from row `start` on."""
        for s in range(start, len(self), chunk_size):
            e = min(s + chunk_size, len(self))
            yield s, ImageSet(ids=self.ids[s:e], names=self.names[s:e], pixels=self.pixels[s:e],
                              hashes=self.hashes[s:e], folder=self.folder)

    def read(self, indices) -> np.ndarray:
        """uint8 pixels [len(indices), H, W] of a few images (report tiles)."""
        return self.pixels[np.asarray(indices, dtype=int)]

    def materialise(self, indices=None) -> "ImageSet":
        """The images (all, or `indices`) in memory: the set itself, or a subset."""
        return self if indices is None else self.subset(indices)

    @staticmethod
    def concat(sets: list["ImageSet"]) -> "ImageSet":
        sets = [s for s in sets if s is not None and len(s)]
        if not sets:
            raise ValueError("nothing to concatenate")
        return ImageSet(
            ids=[i for s in sets for i in s.ids],
            names=[n for s in sets for n in s.names],
            pixels=np.concatenate([s.pixels for s in sets]),
            hashes=[h for s in sets for h in s.hashes],
            patients={k: v for s in sets for k, v in s.patients.items()},
        )


def to_gray_u8(img: Image.Image, path: Path) -> tuple[np.ndarray, str | None]:
    """Convert any PIL mode we accept to 8-bit gray; returns (array, original mode if converted)."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8), None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path}: image has non-finite pixel values (NaN or infinity)")
        if mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            if mode == "I" and lo >= 0 and hi <= 65535 and hi > 255:
                arr = arr / 65535.0 * 255.0
            elif hi > 255 or lo < 0:
                arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode
    if mode in ("P", "PA", "RGBA", "LA", "RGB", "CMYK", "YCbCr", "1", "LAB", "HSV", "RGBX"):
        try:
            if mode in ("LA", "PA", "RGBA"):
                # Alpha is dropped, not composited: medical images carry no meaningful transparency.
                img = img.convert("RGBA" if mode != "LA" else "LA")
                img = img.convert("L") if mode == "LA" else img.convert("RGB").convert("L")
            else:
                img = img.convert("L")
        except ValueError:  # PIL has no path to gray for some modes (LAB)
            raise DataError(f"{path}: image mode {mode!r} cannot be converted to gray") from None
        return np.asarray(img, dtype=np.uint8), mode
    raise DataError(f"{path}: unsupported image mode {mode!r}")


def _fit(arr: np.ndarray, size: int, path: Path) -> tuple[np.ndarray, bool]:
    """Every image, PNG or DICOM frame, reaches `size` x `size` the same way."""
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{path}: image has no pixels or an unexpected shape {arr.shape}")
    if arr.shape == (size, size):
        return arr, False
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8), True


def _read_pil(path: Path, data: bytes | None = None) -> tuple[np.ndarray, str | None]:
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.load()
            return to_gray_u8(img, path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt or unknown format)") from None
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image dimensions are implausibly large (corrupt header?)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({' '.join(str(exc).split())})") from None


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or (path.suffix.lower() not in PIL_SUFFIXES and has_dicom_magic(path))


def load_image(path: Path, size: int = IMAGE_SIZE, window: Window | str | None = None
               ) -> tuple[np.ndarray, str | None, bool]:
    """Read one image as uint8 [size, size]; returns (pixels, converted-from mode or None, resized?).

    A DICOM file must hold one frame here (`load_folder` gives one image per frame).
    """
    path = Path(path)
    if _is_dicom(path):
        frames = read_frames(path, parse_window(window))
        if len(frames) != 1:
            raise DataError(f"{path}: DICOM file has {len(frames)} frames; put it in an image folder to get one "
                            "image per frame")
        arr, converted = frames[0], "DICOM"
    else:
        arr, converted = _read_pil(path)
    arr, resized = _fit(arr, size, path)
    return arr, converted, resized


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise DataError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")


def _image_files(folder: Path) -> list[tuple[Path, bool]]:
    """(file, is DICOM) for every image file of a folder; non-image files are an error, not silently skipped."""
    _check_folder(folder)
    files = []
    for p in folder.iterdir():
        if p.name.startswith(".") or p.name.lower() in IGNORED_NAMES:
            continue
        if p.is_dir():
            raise DataError(f"{p}: unexpected subfolder inside an image folder")
        if not p.is_file():
            raise DataError(f"{p}: not a regular file (broken link, pipe or device?)")
        if p.suffix.lower() in PIL_SUFFIXES:
            files.append((p, False))
        elif _is_dicom(p):
            files.append((p, True))
        else:
            raise DataError(f"{p}: not an image file (expected .png, .jpg, .jpeg, .dcm or a DICOM file)")
    if not files:
        raise DataError(f"{folder}: folder has no images")
    return files


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order of name (a multi-frame DICOM file is one file here).

    The same checks as loading the folder: non-image files and duplicate ids are errors.
    """
    files = dict.fromkeys(e.path for e in list_entries(folder))
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class ImageEntry:
    """One image of a folder: a PNG/JPEG file, a single-frame DICOM file or one frame of a multi-frame one."""

    id: str
    name: str
    path: Path
    dicom: bool = False
    frame: int = 0
    patient_id: str | None = None


def _entries_of(path: Path, dicom: bool, notes: dict[Path, str] | None) -> list[ImageEntry]:
    # DICOM files without a known extension keep their whole name as id (`1.2.840.1234` stays whole)
    suffix = path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ""
    base = path.name[: len(path.name) - len(suffix)]
    if not dicom:
        return [ImageEntry(base, path.name, path)]
    header = read_header(path, notes)
    if header.frames == 1:
        return [ImageEntry(base, path.name, path, True, 0, header.patient_id)]
    return [ImageEntry(f"{base}_f{k + 1:04d}", f"{base}_f{k + 1:04d}{suffix}", path, True, k, header.patient_id)
            for k in range(header.frames)]


def list_entries(folder: Path, notes: dict[Path, str] | None = None) -> list[ImageEntry]:
    """Every image of a folder, one per frame for DICOM, in natural order of id; ids must be unique.

    pydicom's warnings about a file go to `notes` (file -> one line), or are warned at once.
    """
    entries = [e for p, dicom in _image_files(Path(folder)) for e in _entries_of(p, dicom, notes)]
    # Order by id, not file name, so the same images as PNG or as DICOM load in the same order.
    entries.sort(key=lambda e: natural_key(e.id))
    seen: dict[str, ImageEntry] = {}
    for e in entries:
        if e.id in seen:
            other = seen[e.id]
            raise DataError(f"{_describe(e)}: duplicate image id {e.id!r} (also {_describe(other, name_only=True)})")
        seen[e.id] = e
    return entries


def _describe(e: ImageEntry, name_only: bool = False) -> str:
    where = e.path.name if name_only else str(e.path)
    return f"{where} frame {e.frame + 1}" if e.name != e.path.name else where


def decode_file(path: Path, dicom: bool, size: int, window: Window, notes: dict[Path, str] | None = None,
                data: bytes | None = None) -> tuple[list[np.ndarray], str | None, int]:
    """All images of one file at `size`: (frames, converted-from mode, how many were resized).

    `data`: the file's bytes when the caller read them already (`path` then only names the file).
    """
    if dicom:
        frames, converted = list(read_frames(path, window, notes, data)), "DICOM"
    else:
        arr, converted = _read_pil(path, data)
        frames = [arr]
    fitted = [_fit(f, size, path) for f in frames]
    return [a for a, _ in fitted], converted, sum(r for _, r in fitted)


def warn_dicom_notes(folder: Path, notes: dict[Path, str], n_dicom: int, stacklevel: int = 2) -> None:
    """One warning per folder for the DICOM files pydicom read despite invalid header values."""
    first, text = next(iter(notes.items()))
    warnings.warn(f"{folder}: pydicom read {len(notes)} of {n_dicom} DICOM files despite invalid values "
                  f"(first: {first.name}: {text})", stacklevel=stacklevel + 1)


def pixel_hashes(pixels: np.ndarray) -> list[str]:
    """Content hash of each decoded image (SHA-1 of its pixels): what keys in-memory images in the cache."""
    return [hashlib.sha1(p.tobytes()).hexdigest() for p in pixels]


def load_folder(folder: Path, size: int = IMAGE_SIZE, workers: int = 4, warn: bool = True,
                window: Window | str | None = None) -> ImageSet:
    """Load every image of a folder (threaded decode), validated and converted to 8-bit gray.

    `window` is the CT window for DICOM CT images (default lung, W1500 L-600).
    """
    window = parse_window(window)
    notes: dict[Path, str] = {}
    entries = list_entries(folder, notes)
    files = list(dict.fromkeys((e.path, e.dicom) for e in entries))
    expected = Counter(e.path for e in entries)
    decoded: dict[Path, tuple[list[np.ndarray], str | None, int]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pil_files = [p for p, dicom in files if not dicom]
        decoded.update(zip(pil_files, pool.map(lambda p: decode_file(p, False, size, window), pil_files)))
    # DICOM files after the pool: pydicom's warnings are captured per file, and no PIL warning from
    # another thread may be caught with them.
    for path in (p for p, dicom in files if dicom):
        decoded[path] = decode_file(path, True, size, window, notes)
    converted: dict[str, int] = {}
    resized = 0
    for path, (frames, conv, res) in decoded.items():
        if len(frames) != expected[path]:
            raise DataError(f"{path}: DICOM pixel data has {len(frames)} frames, its header {expected[path]}")
        if conv:
            converted[conv] = converted.get(conv, 0) + len(frames)
        resized += res
    pixels = np.empty((len(entries), size, size), dtype=np.uint8)
    for i, e in enumerate(entries):
        pixels[i] = decoded[e.path][0][e.frame]
    if warn and resized:
        warnings.warn(f"{folder}: {resized} of {len(entries)} images were not {size}x{size} and were resized",
                      stacklevel=2)
    if warn and notes:
        warn_dicom_notes(folder, notes, sum(dicom for _, dicom in files), stacklevel=3)
    return ImageSet(
        ids=[e.id for e in entries],
        names=[e.name for e in entries],
        pixels=pixels,
        hashes=pixel_hashes(pixels),
        folder=Path(folder),
        resized=resized,
        converted=converted,
        patients={e.id: e.patient_id for e in entries if e.patient_id is not None},
    )
