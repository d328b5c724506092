"""Loading and validating image folders into 8-bit gray arrays."""
from __future__ import annotations

import hashlib
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_SIZE = 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Files that commonly sit beside images and are not data.
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def strip_image_suffix(name: str) -> str:
    """`x.png` -> `x`; ids with other dots (`IMG.0001`) are kept whole."""
    p = Path(name)
    return p.stem if p.suffix.lower() in IMAGE_SUFFIXES else name


def natural_key(text: str) -> list:
    """Sort key so that img2 < img10 (the run-file row order)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


@dataclass
class ImageSet:
    """Images of one folder: ids (file stem), file names, uint8 pixels [n, 256, 256] and content hashes."""

    ids: list[str]
    names: list[str]
    pixels: np.ndarray
    hashes: list[str]
    folder: Path | None = None
    resized: int = 0
    converted: dict[str, int] = field(default_factory=dict)

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
        hashes = [hashlib.sha1(p.tobytes()).hexdigest() for p in pixels]
        return ImageSet(ids=list(ids), names=[f"{i}.png" for i in ids], pixels=pixels, hashes=hashes)

    def subset(self, index) -> "ImageSet":
        index = np.asarray(index, dtype=int)
        return ImageSet(
            ids=[self.ids[i] for i in index],
            names=[self.names[i] for i in index],
            pixels=self.pixels[index],
            hashes=[self.hashes[i] for i in index],
            folder=self.folder,
        )

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
        )


def to_gray_u8(img: Image.Image, path: Path) -> tuple[np.ndarray, str | None]:
    """Convert any PIL mode we accept to 8-bit gray; returns (array, original mode if converted)."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8), None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            if mode == "I" and lo >= 0 and hi <= 65535 and hi > 255:
                arr = arr / 65535.0 * 255.0
            elif hi > 255 or lo < 0:
                arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode
    if mode in ("P", "PA", "RGBA", "LA", "RGB", "CMYK", "YCbCr", "1", "LAB", "HSV"):
        if mode in ("LA", "PA", "RGBA"):
            # Alpha is dropped, not composited: medical images carry no meaningful transparency.
            img = img.convert("RGBA" if mode != "LA" else "LA")
            img = img.convert("L") if mode == "LA" else img.convert("RGB").convert("L")
        else:
            img = img.convert("L")
        return np.asarray(img, dtype=np.uint8), mode
    raise DataError(f"{path}: unsupported image mode {mode!r}")


def load_image(path: Path, size: int = IMAGE_SIZE) -> tuple[np.ndarray, str | None, bool]:
    """Read one image as uint8 [size, size]; returns (pixels, converted-from mode or None, resized?)."""
    try:
        with Image.open(path) as img:
            img.load()
            arr, converted = to_gray_u8(img, path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt or unknown format)") from None
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{path}: image has no pixels or an unexpected shape {arr.shape}")
    resized = arr.shape != (size, size)
    if resized:
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return arr, converted, resized


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order; non-image files are an error, not silently skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = []
    for p in folder.iterdir():
        if p.name.startswith(".") or p.name.lower() in IGNORED_NAMES:
            continue
        if p.is_dir():
            raise DataError(f"{p}: unexpected subfolder inside an image folder")
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{p}: not an image file (expected .png, .jpg or .jpeg)")
        files.append(p)
    if not files:
        raise DataError(f"{folder}: folder has no images")
    files.sort(key=lambda p: natural_key(p.name))
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise DataError(f"{p}: duplicate image id {p.stem!r} (also {seen[p.stem].name})")
        seen[p.stem] = p
    return files


def load_folder(folder: Path, size: int = IMAGE_SIZE, workers: int = 4, warn: bool = True) -> ImageSet:
    """Load every image of a folder (threaded decode), validated and converted to 8-bit gray."""
    files = list_images(folder)
    pixels = np.empty((len(files), size, size), dtype=np.uint8)
    converted: dict[str, int] = {}
    resized = 0

    def one(i: int):
        return i, load_image(files[i], size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, (arr, conv, res) in pool.map(one, range(len(files))):
            pixels[i] = arr
            if conv:
                converted[conv] = converted.get(conv, 0) + 1
            resized += int(res)
    if warn and resized:
        warnings.warn(f"{folder}: {resized} of {len(files)} images were not {size}x{size} and were resized", stacklevel=2)
    hashes = [hashlib.sha1(p.tobytes()).hexdigest() for p in pixels]
    return ImageSet(
        ids=[p.stem for p in files],
        names=[p.name for p in files],
        pixels=pixels,
        hashes=hashes,
        folder=Path(folder),
        resized=resized,
        converted=converted,
    )
