"""DICOM input: HU windowing, frames, files without extension, groups from PatientID, errors in one line.

Every DICOM file here is written by pydicom itself (tests/helpers.py write_dicom); the expected
8-bit values are computed in the tests from the windowing formula, never with synthleak's code.
"""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pydicom")

from synthleak.cli import main  # noqa: E402
from synthleak.data import discover, load_folder, load_image  # noqa: E402
from synthleak.data.dicom import Window, parse_window, read_frames  # noqa: E402
from synthleak.data.runfile import validate_run  # noqa: E402
from synthleak.errors import DataError  # noqa: E402
from helpers import make_layout, write_dicom, write_images  # noqa: E402

LUNG_W, LUNG_L = 1500.0, -600.0


def window_u8(hu: np.ndarray, width: float = LUNG_W, level: float = LUNG_L) -> np.ndarray:
    """The issue's formula, written out: 8-bit = clip((HU - (L - W/2)) / W * 255), rounded to nearest."""
    return np.clip(np.rint((hu - (level - width / 2)) / width * 255.0), 0, 255).astype(np.uint8)


def ct_raw(seed: int, shape=(256, 256)) -> np.ndarray:
    """int16 stored values covering air, lung, soft tissue and bone (plus out-of-window extremes)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(-1000, 1600, shape).astype(np.int16)
    raw.flat[0], raw.flat[1] = -2000, 3000
    return raw


def test_ct_is_rescaled_to_hu_and_windowed(tmp_path):
    raw = ct_raw(0)
    path = write_dicom(tmp_path / "ct.dcm", raw, slope=2.0, intercept=-1024.0)
    hu = raw.astype(np.float64) * 2.0 + -1024.0
    frames = read_frames(path)
    assert frames.shape == (1, 256, 256) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], window_u8(hu))
    mediastinum = read_frames(path, parse_window("mediastinum"))
    assert np.array_equal(mediastinum[0], window_u8(hu, 350, 50))
    custom = load_image(path, window="400,40")[0]
    assert np.array_equal(custom, window_u8(hu, 400, 40))


def test_window_option_parsing():
    assert parse_window(None) == Window(1500, -600) == parse_window("lung") == parse_window(" Lung ")
    assert parse_window("2000,-500") == Window(2000, -500)
    for bad in ("wide", "1500", "0,40", "-5,40", "nan,1", "1,2,3"):
        with pytest.raises(DataError, match="--window"):
            parse_window(bad)


def test_multi_frame_ids_and_extensionless_files(tmp_path):
    raws = [ct_raw(s, (64, 64)) for s in range(3)]
    write_dicom(tmp_path / "stack.dcm", np.stack(raws), patient_id="P7")
    write_dicom(tmp_path / "1.2.840.99", raws[0], patient_id="P8")  # no extension, dotted UID name
    write_images(tmp_path, 1, "plain")
    with pytest.warns(UserWarning, match="4 of 5 images were not 256x256"):
        s = load_folder(tmp_path)
    assert s.ids == ["1.2.840.99", "plain_1", "stack_f0001", "stack_f0002", "stack_f0003"]
    assert s.names[2] == "stack_f0001.dcm" and s.names[0] == "1.2.840.99"
    assert s.patients == {"1.2.840.99": "P8", "stack_f0001": "P7", "stack_f0002": "P7", "stack_f0003": "P7"}
    assert s.converted == {"DICOM": 4}
    # the same resize path as a PNG of the same 64x64 pixels
    png = tmp_path.parent / "png"
    png.mkdir()
    Image.fromarray(window_u8(raws[1].astype(np.float64) - 1024.0)).save(png / "x.png")
    assert np.array_equal(s.pixels[3], load_image(png / "x.png")[0])
    with pytest.raises(DataError, match="has 3 frames"):
        load_image(tmp_path / "stack.dcm")


def test_non_ct_rules(tmp_path):
    mr = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + 1000
    path = write_dicom(tmp_path / "mr.dcm", np.stack([mr, mr // 2]), modality="MR", slope=None, intercept=None)
    frames = read_frames(path)
    # min-max per frame: each frame spans 0..255 on its own
    assert frames[:, 0, 0].tolist() == [0, 0] and frames[:, -1, -1].tolist() == [255, 255]
    expected = np.rint((mr - 1000.0) / (mr.max() - 1000.0) * 255).astype(np.uint8)
    assert np.array_equal(frames[0], expected)
    eight = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    kept = read_frames(write_dicom(tmp_path / "xr.dcm", eight, modality="DX", slope=None, intercept=None))
    assert np.array_equal(kept[0], eight)
    inverted = read_frames(write_dicom(tmp_path / "cr.dcm", eight, modality="CR", slope=None, intercept=None,
                                       photometric="MONOCHROME1"))
    assert np.array_equal(inverted[0], 255 - eight)
    # CT is windowed even without rescale tags (slope 1, intercept 0: stored values are HU)
    hu = ct_raw(3, (32, 32)) - 1024
    ct = read_frames(write_dicom(tmp_path / "ct.dcm", hu.astype(np.int16), slope=None, intercept=None))
    assert np.array_equal(ct[0], window_u8(hu.astype(np.float64)))


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_becomes_luma(tmp_path, photometric):
    import pydicom

    try:
        from pydicom.pixels import convert_color_space  # pydicom >= 3
    except ImportError:
        from pydicom.pixel_data_handlers.util import convert_color_space
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "us.dcm", rgb[..., 0], modality="US", slope=None, intercept=None)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    ds.PixelData = (rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", photometric)).tobytes()
    ds.save_as(path)
    luma = np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)
    assert np.abs(read_frames(path)[0].astype(int) - luma).max() <= 1


def test_duplicate_ids_across_extensions_and_frames(tmp_path):
    write_images(tmp_path, 1, "x")
    write_dicom(tmp_path / "x_1.dcm", ct_raw(0, (8, 8)))
    with pytest.raises(DataError, match=r"duplicate image id 'x_1' \(also x_1\.(png|dcm)\)"):
        load_folder(tmp_path)
    (tmp_path / "x_1.dcm").unlink()
    write_dicom(tmp_path / "s.dcm", np.stack([ct_raw(0, (8, 8))] * 2))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "s_f0002.png")
    with pytest.raises(DataError, match=r"duplicate image id 's_f0002'.*s\.dcm frame 2|s\.dcm frame 2.*s_f0002"):
        load_folder(tmp_path)


def test_missing_pydicom_names_file_and_extra(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "a.dcm", ct_raw(0, (8, 8)))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DataError) as err:
        load_folder(tmp_path)
    assert str(err.value) == f"{path}: reading DICOM needs pydicom (pip install 'synthleak[dicom]')"


def _dicom_layout(root: Path, bad_name: str, bad_writer) -> Path:
    make_layout(root)
    bad_writer(root / "real_unknown" / bad_name)
    return root


def _audit_fails_in_one_line(root: Path, tmp_path: Path, capsys, *needles: str) -> None:
    out = tmp_path / "out" / "run.csv"
    rc = main(["audit", str(root), "--out", str(out), "--quiet", "--cache-dir", "none", "--bootstrap", "10"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out").exists()


def test_compressed_without_decoder_is_one_line(tmp_path, capsys):
    from pydicom.uid import JPEGLosslessSV1

    from synthleak.data.dicom import _decoder_available

    if _decoder_available(JPEGLosslessSV1):
        pytest.skip("a JPEG Lossless decoder is installed")
    root = _dicom_layout(tmp_path / "data", "lossless.dcm", lambda p: write_dicom(
        p, ct_raw(0, (8, 8)), transfer_syntax=JPEGLosslessSV1, pixel_data=b"\xff\xd8\xff\xc3garbage\xff\xd9"))
    _audit_fails_in_one_line(root, tmp_path, capsys, "lossless.dcm: pixel data is compressed as JPEG Lossless",
                             "no installed decoder", "pip install pylibjpeg pylibjpeg-libjpeg")


def test_compressed_garbage_is_one_line(tmp_path, capsys):
    from pydicom.uid import JPEGBaseline8Bit

    root = _dicom_layout(tmp_path / "data", "baseline.dcm", lambda p: write_dicom(
        p, ct_raw(0, (8, 8)).astype(np.uint8), transfer_syntax=JPEGBaseline8Bit, pixel_data=b"\xff\xd8junk\xff\xd9"))
    _audit_fails_in_one_line(root, tmp_path, capsys, "baseline.dcm: ", "JPEG Baseline")


@pytest.mark.parametrize("kind", ["random", "truncated", "magic-only", "no-pixels"])
def test_corrupt_dicom_is_one_line(tmp_path, capsys, kind):
    def writer(p: Path) -> None:
        if kind == "random":
            p.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
        elif kind == "truncated":
            write_dicom(p, ct_raw(0, (32, 32)))
            p.write_bytes(p.read_bytes()[:-500])
        elif kind == "magic-only":
            p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xffgarbage")
        else:
            import pydicom

            write_dicom(p, ct_raw(0, (8, 8)))
            ds = pydicom.dcmread(p)
            del ds.PixelData
            ds.save_as(p)

    name = "scan" if kind == "magic-only" else "scan.dcm"  # no extension: found by its DICM preamble
    root = _dicom_layout(tmp_path / "data", name, writer)
    _audit_fails_in_one_line(root, tmp_path, capsys, f"real_unknown/{name}: ")


def test_groups_from_dicom(tmp_path):
    make_layout(tmp_path, n_used=2, n_not=2)
    for folder, patient in (("real_used", "A"), ("real_not_used", "B")):
        write_dicom(tmp_path / folder / f"{folder}_ct.dcm", np.stack([ct_raw(1)] * 2), patient_id=patient)
    with pytest.warns(UserWarning, match="--groups-from dicom: 4 of 8 labelled reals are not DICOM files with a "
                                         "PatientID and count as their own group"):
        d = discover(tmp_path, groups_from="dicom")
    assert d.groups == {"real_used_ct_f0001": "A", "real_used_ct_f0002": "A",
                        "real_not_used_ct_f0001": "B", "real_not_used_ct_f0002": "B"}
    assert sorted(set(d.labelled_groups())) == ["A", "B", *sorted(f"__id__{i}" for i in
                                                              ("notused_1", "notused_2", "used_1", "used_2"))]
    groups = tmp_path / "g.csv"
    groups.write_text("used_1,p\n")
    with pytest.raises(DataError, match="--groups and --groups-from cannot be combined"):
        discover(tmp_path, groups=groups, groups_from="dicom")
    with pytest.raises(DataError, match="--groups-from 'csv': unknown source"):
        discover(tmp_path, groups_from="csv")
    for p in tmp_path.glob("real_*/*.dcm"):
        p.unlink()
    with pytest.raises(DataError, match="no real image is a DICOM file with a PatientID"):
        discover(tmp_path, groups_from="dicom")


def _hu_from_u8(u8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A CT-like HU image whose lung window is close to `u8` (with noise and out-of-window extremes)."""
    hu = (LUNG_L - LUNG_W / 2) + u8.astype(np.float64) * LUNG_W / 255.0 + rng.normal(0, 3, u8.shape)
    hu[:3, :3], hu[-3:, -3:] = -3024.0, 2500.0
    return hu


def test_audit_on_dicom_equals_audit_on_png_export(tiny_challenge, tmp_path, capsys):
    """DICOM CT reals beside PNG synthetic images give exactly the run file of the same images as PNG."""
    slope, intercept = 2.0, -1024.0
    dicom_root, png_root = tmp_path / "dicom", tmp_path / "png"
    groups = dict(line.split(",") for line in (tiny_challenge / "groups.csv").read_text().split())
    rng = np.random.default_rng(0)
    png_groups = []
    for split in ("train", "test"):
        shutil.copytree(tiny_challenge / split / "generated", dicom_root / split / "generated")
        shutil.copytree(tiny_challenge / split / "generated", png_root / split / "generated")
    for folder in ("train/real_used", "train/real_not_used", "test/real_unknown"):
        files = sorted((tiny_challenge / folder).glob("*.png"))
        pngs = [np.asarray(Image.open(f)) for f in files]
        raws = [np.rint((_hu_from_u8(u8, rng) - intercept) / slope).astype(np.int16) for u8 in pngs]
        (png_root / folder).mkdir(parents=True)
        if folder == "test/real_unknown":
            # one multi-frame file at half size (resized like a PNG would be), one file without extension
            stack = np.stack([r[::2, ::2] for r in raws[:3]])
            write_dicom(dicom_root / folder / "stack.dcm", stack, slope=slope, intercept=intercept,
                        patient_id=groups[files[0].stem])
            for k, frame in enumerate(stack, 1):
                exported = window_u8(frame.astype(np.float64) * slope + intercept)
                Image.fromarray(exported).save(png_root / folder / f"stack_f{k:04d}.png")
                png_groups.append(f"stack_f{k:04d},{groups[files[0].stem]}")
            files, raws = files[3:], raws[3:]
        for i, (f, raw) in enumerate(zip(files, raws)):
            name = f.stem if (folder == "train/real_used" and i == 0) else f"{f.stem}.dcm"
            write_dicom(dicom_root / folder / name, raw, slope=slope, intercept=intercept, patient_id=groups[f.stem])
            Image.fromarray(window_u8(raw.astype(np.float64) * slope + intercept)).save(png_root / folder / f"{f.stem}.png")
            png_groups.append(f"{f.stem},{groups[f.stem]}")
    (tmp_path / "groups.csv").write_text("\n".join(png_groups) + "\n")
    assert (dicom_root / "train/real_used/real_used_0001").exists()  # found by its DICM preamble

    def audit(root: Path, *extra: str) -> tuple[bytes, bytes]:
        out = tmp_path / f"{root.name}.csv"
        # the default recipe, with the verdict and the HTML report, as a hospital would run it
        rc = main(["audit", str(root), "--out", str(out), "--bootstrap", "20", "--permutations", "200",
                   "--report", str(tmp_path / f"{root.name}-report"), "--cache-dir", "none", "--quiet", *extra])
        assert rc == 0, capsys.readouterr().err
        assert (tmp_path / f"{root.name}-report" / "index.html").exists()
        return out.read_bytes(), (tmp_path / f"{root.name}.scores.csv").read_bytes()

    from_dicom = audit(dicom_root, "--groups-from", "dicom")
    printed = capsys.readouterr().out
    assert "DICOM images; CT ones read through the window W1500 L-600, groups from PatientID" in printed
    assert "group-aware" in printed
    from_png = audit(png_root, "--groups", str(tmp_path / "groups.csv"))
    assert from_dicom == from_png
    rows = from_dicom[0].decode().split()
    assert len(rows) == 24 and any(r.startswith("stack_f0002,") for r in rows)
    assert {r[-1] for r in rows} == {"0", "1"}
    assert validate_run(tmp_path / "dicom.csv", dicom_root / "test") == 24


def test_window_changes_only_dicom_ct_pixels(tmp_path):
    make_layout(tmp_path, size=32)
    write_dicom(tmp_path / "real_unknown" / "ct.dcm", ct_raw(5, (32, 32)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lung, soft = discover(tmp_path), discover(tmp_path, window="mediastinum")
    i = lung.real_unknown.ids.index("ct")
    assert not np.array_equal(lung.real_unknown.pixels[i], soft.real_unknown.pixels[i])
    assert np.array_equal(np.delete(lung.real_unknown.pixels, i, 0), np.delete(soft.real_unknown.pixels, i, 0))
    assert lung.window == Window(1500, -600) and soft.window == Window(350, 50)


def test_compressed_file_decodes_when_a_decoder_exists(tmp_path):
    """RLE Lossless: pydicom encodes and decodes it without extra packages."""
    import pydicom
    from pydicom.uid import RLELossless

    raws = np.stack([ct_raw(s, (32, 32)) for s in range(2)])
    plain = write_dicom(tmp_path / "plain.dcm", raws, slope=1.5, intercept=-1000.0)
    ds = pydicom.dcmread(plain)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(read_frames(tmp_path / "rle.dcm"), read_frames(plain))
    expected = window_u8(raws.astype(np.float64) * 1.5 + -1000.0)
    assert np.array_equal(read_frames(plain), expected)
