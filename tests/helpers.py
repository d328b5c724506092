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


def write_dicom(path: Path, pixels: np.ndarray, *, modality: str | None = "CT", slope: float | None = 1.0,
                intercept: float | None = -1024.0, patient_id: str | None = "patient-1",
                photometric: str = "MONOCHROME2", transfer_syntax: str | None = None,
                pixel_data: bytes | None = None, frames: int | None = None) -> Path:
    """Write a DICOM Part 10 file with pydicom: [rows, cols] is one frame, [n, rows, cols] a multi-frame file.

    `transfer_syntax` other than Explicit VR Little Endian writes `pixel_data` (or the raw bytes)
    encapsulated, as a compressed file would carry it; `frames` overrides NumberOfFrames.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, UID, generate_uid

    arr = np.asarray(pixels)
    stack = arr if arr.ndim == 3 else arr[None]
    ts = UID(transfer_syntax or ExplicitVRLittleEndian)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[Path(path).name])
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    if patient_id is not None:
        if not patient_id.isascii():
            ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
        ds.PatientID = patient_id
    ds.Rows, ds.Columns = int(stack.shape[1]), int(stack.shape[2])
    if arr.ndim == 3 or frames is not None:
        ds.NumberOfFrames = frames if frames is not None else len(stack)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = stack.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(stack.dtype.kind == "i")
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    data = pixel_data if pixel_data is not None else stack.astype(stack.dtype.newbyteorder("<")).tobytes()
    if ts.is_compressed:
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = data
        ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)
    return path


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
