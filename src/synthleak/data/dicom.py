"""DICOM images: rescale to physical units, window to 8-bit gray, one image per frame.

pydicom is optional (`pip install 'synthleak[dicom]'`) and imported only when a DICOM file is read.

Value rule (the README's data-layout section says the same):
- RescaleSlope / RescaleIntercept are applied when present (1 and 0 otherwise).
- CT (Modality CT): the rescaled values are Hounsfield units and go through the window:
  8-bit value = clip(rint((HU - (L - W/2)) / W * 255), 0, 255). The file's own WindowCenter /
  WindowWidth are ignored, so that every CT image of an audit is seen through the same window.
- Anything else (MR, X-ray, ultrasound, no Modality): 8-bit unsigned data without a rescale is kept
  as it is; other data is stretched min-max per frame to 0..255 (no physical unit to window).
- MONOCHROME1 (higher value = darker) is inverted after that; RGB, YBR and PALETTE COLOR become gray
  by ITU-R 601 luma, as PIL does for colour PNGs.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, one_line

DICOM_SUFFIXES = (".dcm", ".dicom")
INSTALL_HINT = "pip install 'synthleak[dicom]'"
# Decoded pixels of one file above this count are treated as a corrupt header, not allocated.
MAX_PIXELS_PER_FILE = 2**30
_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class Window:
    """A CT display window in Hounsfield units: `width` W around `level` L."""

    width: float
    level: float

    def to_u8(self, hu: np.ndarray) -> np.ndarray:
        scaled = (hu - (self.level - self.width / 2)) / self.width * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    def __str__(self) -> str:
        return f"W{self.width:g} L{self.level:g}"


WINDOWS = {"lung": Window(1500.0, -600.0), "mediastinum": Window(350.0, 50.0)}
DEFAULT_WINDOW = WINDOWS["lung"]


def parse_window(spec: str | Window | None) -> Window:
    """`lung`, `mediastinum` or `WIDTH,LEVEL` (e.g. `1500,-600`); None gives the lung window."""
    if spec is None:
        return DEFAULT_WINDOW
    if isinstance(spec, Window):
        window = spec
    elif spec.strip().lower() in WINDOWS:
        return WINDOWS[spec.strip().lower()]
    else:
        parts = spec.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            window = Window(float(parts[0]), float(parts[1]))
        except ValueError:
            raise DataError(f"--window {spec!r}: expected lung, mediastinum or WIDTH,LEVEL (e.g. 1500,-600)") from None
    if not (np.isfinite(window.width) and np.isfinite(window.level) and window.width > 0):
        raise DataError(f"--window {spec}: width must be a positive number and level a finite one")
    return window


@dataclass(frozen=True)
class DicomHeader:
    frames: int
    patient_id: str | None


def has_dicom_magic(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble (`DICM` at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[_MAGIC_OFFSET:] == b"DICM"


def _pydicom(path: Path):
    try:
        import pydicom
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom ({INSTALL_HINT})") from None
    return pydicom


def _brief(exc: BaseException | Warning) -> str:
    """A third-party exception or warning as a short single line (pydicom's messages can span lines)."""
    text = one_line(" ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# warnings.catch_warnings swaps process-wide state: DICOM reads hold this lock so that two never nest.
_PYDICOM_WARNINGS = threading.Lock()


@contextmanager
def _pydicom_warnings(path: Path, notes: dict[Path, str] | None) -> Iterator[None]:
    """Collect pydicom's warnings about one file (invalid header values it reads anyway) into one line.

    Appended to `notes` (the folder loader reports them once per folder), or warned with the file name.
    """
    with _PYDICOM_WARNINGS, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        more = f" (+{len(caught) - 1} more)" if len(caught) > 1 else ""
        text = f"{_brief(caught[0].message)}{more}"
        if notes is None:
            warnings.warn(f"{path}: pydicom: {text}", stacklevel=4)
        else:
            notes.setdefault(path, text)


def _read(path: Path, stop_before_pixels: bool):
    pydicom = _pydicom(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file (no 'DICM' preamble or file meta)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read DICOM file ({_brief(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input; all mean "corrupt"
        raise DataError(f"{path}: corrupt DICOM file ({_brief(exc)})") from None


def _scalar(ds, keyword: str):
    """The first value of an element (corrupt files may carry several), or None when absent or empty."""
    value = ds.get(keyword, None)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    return None if value is None or value == "" else value


def _int_tag(ds, keyword: str, default: int, path: Path) -> int:
    value = _scalar(ds, keyword)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: invalid DICOM {keyword} {value!r}") from None


def _float_tag(ds, keyword: str, default: float, path: Path) -> float:
    value = _scalar(ds, keyword)
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: invalid DICOM {keyword} {value!r}") from None
    if not np.isfinite(out):
        raise DataError(f"{path}: DICOM {keyword} is not finite ({value!r})")
    return out


def _frame_count(ds, path: Path) -> int:
    frames = _int_tag(ds, "NumberOfFrames", 1, path)
    if frames < 1:
        raise DataError(f"{path}: invalid DICOM NumberOfFrames {frames}")
    # Each frame takes at least one byte of the file: a larger count is a corrupt header.
    if frames > max(os.path.getsize(path), 1):
        raise DataError(f"{path}: DICOM NumberOfFrames {frames} is larger than the file")
    return frames


def read_header(path: Path, notes: dict[Path, str] | None = None) -> DicomHeader:
    """Frame count and PatientID, without reading the pixel data (pydicom's warnings go to `notes`)."""
    path = Path(path)
    with _pydicom_warnings(path, notes):
        return _header(path)


def _header(path: Path) -> DicomHeader:
    ds = _read(path, stop_before_pixels=True)
    try:
        frames = _frame_count(ds, path)
        patient = ds.get("PatientID", None)
        patient = str(patient).strip() if patient is not None else ""
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - lazily parsed elements fail on access when corrupt
        raise DataError(f"{path}: corrupt DICOM file ({_brief(exc)})") from None
    return DicomHeader(frames=frames, patient_id=patient or None)


def _decoder_available(uid) -> bool:
    try:
        from pydicom.pixels.decoders.base import get_decoder  # pydicom >= 3
    except ImportError:  # pydicom 2.x: pixel data handlers
        import pydicom.config

        return any(h.supports_transfer_syntax(uid) and h.is_available() for h in pydicom.config.pixel_data_handlers)
    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError):
        return False


def _decoder_hint(uid: str) -> str:
    if uid.startswith("1.2.840.10008.1.2.4.8"):
        return "pip install pylibjpeg pylibjpeg-libjpeg, or pyjpegls, or python-gdcm"
    if uid.startswith(("1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.4.20")):
        return "pip install pylibjpeg pylibjpeg-openjpeg, or python-gdcm"
    if uid.startswith("1.2.840.10008.1.2.4."):
        return "pip install pylibjpeg pylibjpeg-libjpeg, or python-gdcm"
    if uid == "1.2.840.10008.1.2.5":
        return "pip install pylibjpeg pylibjpeg-rle"
    return "pip install python-gdcm"


def _check_decodable(ds, path: Path) -> bool:
    """Raise the one-line 'missing decoder' error before pixel decoding; returns whether data is compressed."""
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        raise DataError(f"{path}: DICOM file meta has no TransferSyntaxUID")
    try:
        compressed = bool(uid.is_compressed)
    except (ValueError, AttributeError):
        raise DataError(f"{path}: unknown DICOM transfer syntax {str(uid)!r}") from None
    if compressed and not _decoder_available(uid):
        raise DataError(f"{path}: pixel data is compressed as {uid.name} ({uid}) and no installed decoder "
                        f"supports it ({_decoder_hint(str(uid))})")
    return compressed


def _color_lut(arr: np.ndarray, ds) -> np.ndarray:
    try:
        from pydicom.pixels import apply_color_lut  # pydicom >= 3
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_color_lut
    return apply_color_lut(arr, ds)


def _decode(ds, path: Path) -> tuple[np.ndarray, str]:
    """Pixel array as [frames, rows, cols, samples] plus the photometric interpretation."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"{path}: DICOM file has no pixel data (not an image: a DICOMDIR, report or structure set?)")
    frames = _frame_count(ds, path)
    rows, cols = _int_tag(ds, "Rows", 0, path), _int_tag(ds, "Columns", 0, path)
    samples = _int_tag(ds, "SamplesPerPixel", 1, path)
    if rows < 1 or cols < 1 or samples not in (1, 3):
        raise DataError(f"{path}: invalid DICOM image size (Rows {rows}, Columns {cols}, SamplesPerPixel {samples})")
    if frames * rows * cols * samples > MAX_PIXELS_PER_FILE:
        raise DataError(f"{path}: implausible DICOM image size ({frames} frames of {rows}x{cols}x{samples})")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    compressed = _check_decodable(ds, path)
    try:
        arr = np.asarray(ds.pixel_array)
        if photometric == "PALETTE COLOR":
            arr = _color_lut(arr, ds)
            # the LUT gives 8- or 16-bit RGB; bring 16-bit entries to the 0..255 scale
            arr = arr if arr.dtype == np.uint8 else arr.astype(np.float64) / 65535.0 * 255.0
            samples = 3
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
        what = f"cannot decode {ds.file_meta.TransferSyntaxUID.name} pixel data" if compressed else "corrupt DICOM pixel data"
        raise DataError(f"{path}: {what} ({_brief(exc)})") from None
    if arr.size != frames * rows * cols * samples:
        raise DataError(f"{path}: DICOM pixel data has {arr.size} values, the header says "
                        f"{frames} frames of {rows}x{cols}x{samples}")
    return arr.reshape(frames, rows, cols, samples), photometric


def _to_gray(arr: np.ndarray, photometric: str, path: Path) -> np.ndarray:
    if arr.shape[-1] == 1:
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DataError(f"{path}: unsupported DICOM photometric interpretation {photometric!r} for gray data")
        return arr[..., 0].astype(np.float64)
    if photometric.startswith("YBR") and not _decoder_converts_ybr():
        return arr[..., 0].astype(np.float64)  # Y is the luma already
    if not (photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR")):
        raise DataError(f"{path}: unsupported DICOM photometric interpretation {photometric!r}")
    rgb = arr.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _decoder_converts_ybr() -> bool:
    """pydicom 3 returns YBR data as RGB; pydicom 2 returns it as stored."""
    import pydicom

    return int(pydicom.__version__.split(".")[0]) >= 3


def read_frames(path: Path, window: Window | None = None, notes: dict[Path, str] | None = None) -> np.ndarray:
    """Every frame of a DICOM file as uint8 gray [frames, rows, cols] (the module docstring's value rule).

    pydicom's warnings about the file go to `notes` (one line), or are warned with the file name.
    """
    path = Path(path)
    with _pydicom_warnings(path, notes):
        return _frames(path, window or DEFAULT_WINDOW)


def _frames(path: Path, window: Window) -> np.ndarray:
    ds = _read(path, stop_before_pixels=False)
    try:
        arr, photometric = _decode(ds, path)
        slope = _float_tag(ds, "RescaleSlope", 1.0, path)
        intercept = _float_tag(ds, "RescaleIntercept", 0.0, path)
        modality = str(ds.get("Modality", "") or "").strip().upper()
        bits_stored = _int_tag(ds, "BitsStored", 8 if arr.dtype == np.uint8 else 16, path)
        signed = _int_tag(ds, "PixelRepresentation", 0, path) == 1
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - lazily parsed elements fail on access when corrupt
        raise DataError(f"{path}: corrupt DICOM file ({_brief(exc)})") from None
    plain_8bit = bits_stored <= 8 and not signed and slope == 1.0 and intercept == 0.0
    out = np.empty(arr.shape[:3], np.uint8)
    for k, frame in enumerate(arr):  # one frame at a time: float64 copies of a frame, not of the whole file
        values = _to_gray(frame, photometric, path)
        if not np.all(np.isfinite(values)):
            raise DataError(f"{path}: DICOM pixel data has non-finite values")
        if photometric == "PALETTE COLOR" or (modality != "CT" and plain_8bit):
            out[k] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        elif modality == "CT":
            out[k] = window.to_u8(values * slope + intercept)
        else:
            out[k] = _min_max_u8(values * slope + intercept)
    return 255 - out if photometric == "MONOCHROME1" else out


def _min_max_u8(values: np.ndarray) -> np.ndarray:
    """One frame stretched to 0..255 (a constant frame becomes 0)."""
    lo, span = float(values.min()), float(values.max() - values.min())
    scaled = (values - lo) / (span if span > 0 else 1.0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
