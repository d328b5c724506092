"""Property tests (hypothesis) over every reader of user input: images, DICOM, layouts, run/labels/groups files.

Each case must end in a result that satisfies the reader's contract or in a one-line DataError that
names the file, never in another exception and never in a partial result or output. Inputs that once
broke a reader are kept as explicit @example cases (or plain tests at the end).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from synthleak.data import discover, load_folder
from synthleak.data.images import IGNORED_NAMES, IMAGE_SUFFIXES, PIL_SUFFIXES, natural_key, to_gray_u8
from synthleak.data.layout import read_groups
from synthleak.data.runfile import (atomic_write_text, id_problem, read_labels, read_scores_or_run, run_text,
                                    validate_run)
from synthleak.errors import DataError
from helpers import write_dicom

pydicom = pytest.importorskip("pydicom")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")


def fuzz(max_examples: int):
    """Reproducible: the same examples on every run and machine; no example database written."""
    return settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def check_error(exc: DataError, *names: str) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text and text.isprintable(), text
    for name in names:
        assert name in text, (name, text)


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def dicom_bytes(pixels: np.ndarray, **kwargs) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_dicom(Path(tmp) / "x.dcm", pixels, **kwargs).read_bytes()


_VALID: dict[str, bytes] = {}


def valid_file(kind: str) -> bytes:
    """Small valid files of each kind, built once."""
    if kind not in _VALID:
        rng = np.random.default_rng(0)
        gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
        ct = rng.integers(-1100, 1500, (12, 10)).astype(np.int16)
        _VALID.update({
            "png": png_bytes(gray), "png-rgb": png_bytes(np.dstack([gray] * 3)), "jpg": png_bytes(gray, "JPEG"),
            "png16": png_bytes(gray.astype(np.uint16) * 257),
            "dcm": dicom_bytes(ct), "dcm-multi": dicom_bytes(np.stack([ct, ct // 2, ct * 0])),
            "dcm-mr": dicom_bytes(ct.astype(np.uint16), modality="MR", slope=None, intercept=None),
        })
    return _VALID[kind]


def load_one(name: str, data: bytes):
    """Write one file into a fresh folder and load it: (ImageSet or None, DataError or None)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            return load_folder(Path(tmp)), None
        except DataError as exc:
            check_error(exc, name)
            return None, exc


def check_image_set(s, n: int | None = None) -> None:
    assert s.pixels.dtype == np.uint8 and s.pixels.shape[1:] == (256, 256)
    assert len(s.ids) == len(s.names) == len(s.hashes) == len(s.pixels) >= 1
    if n is not None:
        assert len(s) == n


# --- images: random bytes, truncated and bit-flipped files ------------------------------------------

MAGIC = {"none": b"", "png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff\xe0", "dicm": b"\0" * 128 + b"DICM",
         "gif": b"GIF89a", "tiff": b"II*\x00"}


@fuzz(200)
@given(payload=st.binary(max_size=300), magic=st.sampled_from(sorted(MAGIC)),
       suffix=st.sampled_from([".png", ".PNG", ".jpg", ".jpeg", ".dcm", ".dicom", "", ".bin"]))
@example(payload=b"", magic="none", suffix=".png")
@example(payload=b"", magic="dicm", suffix="")
@example(payload=b"\x02\x00\x10\x00UI\xff\xffgarbage", magic="dicm", suffix="")
def test_random_bytes_load_or_one_line_error(payload, magic, suffix):
    s, err = load_one(f"f{suffix}", MAGIC[magic] + payload)
    if s is not None:
        check_image_set(s)
    elif suffix.lower() not in IMAGE_SUFFIXES and magic != "dicm":
        assert "not an image file" in str(err)


@fuzz(200)
@given(kind=st.sampled_from(["png", "png-rgb", "png16", "jpg", "dcm", "dcm-multi", "dcm-mr"]),
       cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3))
@example(kind="dcm-multi", cut=1.0, flips=[])
@example(kind="dcm", cut=0.5, flips=[])
def test_truncated_or_flipped_files(kind, cut, flips):
    data = bytearray(valid_file(kind))
    for where, xor in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= xor
    data = bytes(data[: max(1, int(round(cut * len(data))))])
    s, _ = load_one("img.dcm" if kind.startswith("dcm") else f"img.{kind[:3]}", data)
    if s is not None:
        check_image_set(s)
    if cut == 1.0 and not flips:
        check_image_set(s, 3 if kind == "dcm-multi" else 1)


# --- PIL modes and sizes ---------------------------------------------------------------------------

MODES = ["L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "1", "CMYK", "PA", "YCbCr", "HSV", "LAB", "RGBX"]
MUST_LOAD = {"L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "1", "CMYK"}
SPECIAL_FLOATS = [0.0, -1.0, 1e30, float("nan"), float("inf"), -float("inf")]


def make_mode(mode: str, w: int, h: int, seed: int, special: float | None) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-70000, 70000, (h, w)).astype(np.int32))
    if mode == "F":
        arr = rng.normal(0, 300, (h, w)).astype(np.float32)
        if special is not None:
            arr.flat[0] = special
        return Image.fromarray(arr)
    if mode in ("P", "PA", "1"):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    bands = Image.getmodebands(mode)
    return Image.frombytes(mode, (w, h), rng.integers(0, 256, w * h * bands, dtype=np.uint8).tobytes())


@fuzz(150)
@given(mode=st.sampled_from(MODES), w=st.integers(1, 300), h=st.integers(1, 300), seed=st.integers(0, 99),
       container=st.sampled_from(["png", "jpg", "memory"]), special=st.none() | st.sampled_from(SPECIAL_FLOATS))
@example(mode="F", w=3, h=2, seed=0, container="memory", special=float("nan"))
@example(mode="F", w=3, h=2, seed=0, container="memory", special=float("inf"))
def test_modes_and_sizes(mode, w, h, seed, container, special):
    img = make_mode(mode, w, h, seed, special)
    data = None
    if container != "memory":
        buf = io.BytesIO()
        try:
            img.save(buf, format="PNG" if container == "png" else "JPEG")
            data = buf.getvalue()
        except (OSError, KeyError, ValueError):
            data = None  # this format cannot hold this mode: test the conversion in memory
    if data is None:
        try:
            arr, _ = to_gray_u8(img, Path("mem.png"))
        except DataError as exc:
            check_error(exc, "mem.png")
            assert mode not in MUST_LOAD or (mode == "F" and special is not None and not np.isfinite(special))
            return
        assert arr.dtype == np.uint8 and arr.shape == (h, w)
        return
    s, err = load_one(f"m.{container}", data)
    assert err is None, err
    check_image_set(s, 1)
    if mode == "L" and container == "png" and (w, h) == (256, 256):
        assert np.array_equal(s.pixels[0], np.asarray(img))


# --- DICOM headers and pixel data --------------------------------------------------------------------


@fuzz(250)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), n=st.integers(1, 3), multi=st.booleans(),
       dtype=st.sampled_from(["u1", "i2", "u2"]), modality=st.sampled_from(["CT", "ct", "MR", "US", None]),
       slope=st.sampled_from([None, 1.0, 2.0, 0.5, -1.0, 0.0, 1e300]),
       intercept=st.sampled_from([None, 0.0, -1024.0, 100.5, -1e300]),
       photometric=st.sampled_from(["MONOCHROME2", "MONOCHROME2", "MONOCHROME1", "RGB", "PALETTE COLOR",
                                    "YBR_FULL", "XYZ", ""]),
       delta=st.sampled_from([0, 0, 0, -1, -2, 1, 3, -10**6]), frames_tag=st.sampled_from([None, 0, -1, 2, 4, 10**9]),
       window=st.sampled_from(["lung", "mediastinum", "100,0", "1,0"]), seed=st.integers(0, 99),
       patient=st.sampled_from([None, "", "P1", " P2 ", "名前"]))
@example(rows=2, cols=2, n=1, multi=False, dtype="i2", modality="CT", slope=1e300, intercept=-1e300,
         photometric="MONOCHROME2", delta=0, frames_tag=None, window="lung", seed=0, patient=None)
@example(rows=2, cols=2, n=2, multi=True, dtype="i2", modality="CT", slope=1.0, intercept=0.0,
         photometric="MONOCHROME2", delta=0, frames_tag=10**9, window="lung", seed=0, patient=None)
def test_dicom_reader(rows, cols, n, multi, dtype, modality, slope, intercept, photometric, delta, frames_tag,
                      window, seed, patient):
    rng = np.random.default_rng(seed)
    lo, hi = {"u1": (0, 256), "i2": (-2000, 3000), "u2": (0, 5000)}[dtype]
    pixels = rng.integers(lo, hi, (n, rows, cols) if multi else (rows, cols)).astype(dtype)
    raw = pixels.tobytes()
    data = raw[:max(0, len(raw) + delta)] if delta < 0 else raw + b"\0" * delta
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dicom(Path(tmp) / "scan", pixels, modality=modality, slope=slope, intercept=intercept,
                    photometric=photometric or "MONOCHROME2", pixel_data=data, frames=frames_tag, patient_id=patient)
        try:
            s = load_folder(Path(tmp), window=window)
        except DataError as exc:
            check_error(exc, "scan")
            return
    frames = n if multi else 1
    clean = (delta == 0 and frames_tag in (None, frames) and photometric in ("MONOCHROME2", "")
             and modality in ("CT", "ct") and slope not in (None, 1e300) and intercept not in (None, -1e300))
    check_image_set(s, frames if frames_tag in (None, frames) else None)
    assert s.ids == (["scan"] if len(s) == 1 else [f"scan_f{k:04d}" for k in range(1, len(s) + 1)])
    assert s.patients == ({i: patient.strip() for i in s.ids} if patient and patient.strip() else {})
    if clean:
        width, level = {"lung": (1500, -600), "mediastinum": (350, 50), "100,0": (100, 0), "1,0": (1, 0)}[window]
        hu = pixels.astype(np.float64).reshape(frames, rows, cols) * slope + intercept
        expected = np.clip(np.rint((hu - (level - width / 2)) / width * 255.0), 0, 255).astype(np.uint8)
        resized = [np.asarray(Image.fromarray(f).resize((256, 256), Image.Resampling.BILINEAR)) for f in expected]
        assert np.array_equal(s.pixels, np.stack(resized))


# --- layout discovery with odd names ----------------------------------------------------------------

ODD = ["a.b", "IMG.0001", " lead", "trail ", "a,b", "x.png", "..", "名前", "e\u0301", "tab\there", "new\nline",
       "\udcff", "q\"uote", "A", "a", "img01", "img1", "d\u0663", "dicomdir", "Thumbs.db", ".hidden", "1.2.840.1"]
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
SUFFIXES = [".png", ".PNG", ".jpg", ".jpeg", ".dcm", "", ".txt", ".b.png"]


def expected_outcome(files: list[tuple[str, str]]) -> list[str] | None:
    """The ids discover must give for real_unknown/ files [(name, content kind)], or None for a DataError."""
    ids = []
    for name, content in files:
        if name.startswith(".") or name.lower() in IGNORED_NAMES:
            continue
        suffix = Path(name).suffix.lower()
        if suffix in PIL_SUFFIXES:
            ok = content == "image"
        elif suffix in (".dcm", ".dicom"):
            ok = content == "dicom"
        else:
            ok = content == "dicom"  # found by its DICM preamble, or "not an image file"
        if not ok:
            return None
        ids.append(name[: -len(suffix)] if suffix in IMAGE_SUFFIXES else name)
    if not ids or len(set(ids)) != len(ids) or any(id_problem(i) for i in ids):
        return None
    return sorted(ids, key=natural_key)


@fuzz(120)
@given(files=st.lists(st.tuples(st.text(NAME_CHARS, min_size=1, max_size=10) | st.sampled_from(ODD),
                                st.sampled_from(SUFFIXES), st.sampled_from(["image", "image", "dicom", "text"])),
                      min_size=1, max_size=5))
@example(files=[("img1", ".png", "image"), ("img01", ".png", "image")])
@example(files=[("a", ".png", "image"), ("a", ".dcm", "dicom")])
@example(files=[("x.png", ".png", "image")])
@example(files=[("\udcff", ".png", "image")])
@example(files=[("1²", ".png", "image"), ("1", ".png", "image")])
@example(files=[("new\nline", ".png", "image")])
@example(files=[("1.2.840.1", "", "dicom"), ("x", ".b.png", "image")])
def test_discover_odd_names(files):
    content = {"image": valid_file("png"), "dicom": valid_file("dcm"), "text": b"id,1\n"}
    named = {}
    for base, suffix, kind in files:
        name = base + suffix
        if name in (".", "..") or len(os.fsencode(name)) > 200:
            continue
        named[name] = kind
    if not named:
        return
    expected = expected_outcome(list(named.items()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "generated").mkdir()
        (root / "generated" / "g.png").write_bytes(valid_file("png"))
        (root / "real_unknown").mkdir()
        for name, kind in named.items():
            (root / "real_unknown" / name).write_bytes(content[kind])
        try:
            d = discover(root)
        except DataError as exc:
            check_error(exc)
            assert expected is None, (expected, str(exc))
            return
        assert expected is not None and d.real_unknown.ids == expected
        check_image_set(d.real_unknown, len(expected))


FOLDER_STATES = ["images", "images", "missing", "empty", "file", "subfolder"]


@fuzz(60)
@given(split=st.booleans(), states=st.fixed_dictionaries(
    {k: st.sampled_from(FOLDER_STATES) for k in ("generated", "real_used", "real_not_used", "real_unknown")}),
    test_generated=st.sampled_from(FOLDER_STATES), need_unknown=st.booleans())
def test_discover_layout_shapes(split, states, test_generated, need_unknown):
    """Folders present, missing, empty, files in their place or holding subfolders, flat or train/test."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        where = {k: root / ("test" if split and k == "real_unknown" else "train" if split else "") / k
                 for k in states}
        if split:
            where["test_generated"] = root / "test" / "generated"
            states = {**states, "test_generated": test_generated}
            (root / "train").mkdir()
            (root / "test").mkdir()
        for key, state in states.items():
            folder = where[key]
            if state == "file":
                folder.write_bytes(valid_file("png"))
            elif state != "missing":
                folder.mkdir()
                if state == "images":
                    for i in range(2):
                        (folder / f"{key}_{i}.png").write_bytes(valid_file("png"))
                elif state == "subfolder":
                    (folder / "inner").mkdir()
        try:
            d = discover(root, need_unknown=need_unknown)
        except DataError as exc:
            check_error(exc)
            return
    loaded = {k: getattr(d, k if k != "test_generated" else "test_generated") for k in states}
    for key, state in states.items():
        assert (loaded[key] is not None) == (state == "images"), (key, state)
        if loaded[key] is not None:
            check_image_set(loaded[key], 2)


# --- run, scores, labels and groups files --------------------------------------------------------------

PARSERS = {"labels": read_labels, "run": lambda p: read_scores_or_run(p)[0], "groups": read_groups}


def parse(which: str, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(data)
        try:
            return PARSERS[which](path)
        except DataError as exc:
            check_error(exc, "in.csv")
            return None


def check_parsed(which: str, out) -> None:
    if out is None:
        return
    assert out and all(k and k == k.strip() for k in out)
    if which == "labels":
        assert set(out.values()) <= {0, 1}
    elif which == "run":
        assert all(np.isfinite(v) for v in out.values())
    else:
        assert all(g for g in out.values())


@fuzz(200)
@given(data=st.binary(max_size=200), which=st.sampled_from(sorted(PARSERS)))
@example(data=b"\xff\xfe,1\n", which="labels")
@example(data=b"\xff,g\n", which="groups")  # not UTF-8: was a UnicodeDecodeError traceback in read_groups
@example(data=b'"unterminated,1\n', which="run")
@example(data=b"\x00,1\n", which="labels")
def test_parsers_random_bytes(data, which):
    check_parsed(which, parse(which, data))


TOKENS = ["a", "a.png", " b ", "", "x.dcm", "IMG.0001", "é", '"q', "a,b", "0", "1", " 1", "2", "0.5", "nan", "inf",
          "-1e3", "1_0", "x", "\ufeff", "p1", '""', "\t"]


@fuzz(200)
@given(rows=st.lists(st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), min_size=0, max_size=3), max_size=6),
       eol=st.sampled_from(["\n", "\r\n", "\r"]), bom=st.booleans(), which=st.sampled_from(sorted(PARSERS)))
@example(rows=[["", "1"]], eol="\n", bom=False, which="labels")      # empty id: was accepted as id ''
@example(rows=[["a", ""]], eol="\n", bom=False, which="groups")      # empty group: was accepted
@example(rows=[["a", "g1"], ["a", "g2"]], eol="\n", bom=False, which="groups")  # conflicting groups
@example(rows=[["a", "1"]], eol="\n", bom=True, which="labels")      # Excel's BOM: was part of the first id
@example(rows=[["x" * 200_000, "1"]], eol="\n", bom=False, which="run")  # csv field limit: was csv.Error
def test_parsers_structured(rows, eol, bom, which):
    text = ("\ufeff" if bom else "") + eol.join(",".join(r) for r in rows)
    out = parse(which, text.encode("utf-8", "surrogatepass"))
    check_parsed(which, out)
    if bom and out is not None:
        assert not any(k.startswith("\ufeff") for k in out)


run_ids = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
                   .filter(lambda i: id_problem(i) is None), min_size=1, max_size=8, unique=True)


@fuzz(150)
@given(ids=run_ids, seed=st.integers(0, 9))
@example(ids=["a²", "a2", "١٢", "12"], seed=0)
@example(ids=["1" * 5000], seed=0)  # a digit run longer than int()'s limit: natural_key raised ValueError
def test_run_file_round_trip(ids, seed):
    preds = np.random.default_rng(seed).integers(0, 2, len(ids))
    with tempfile.TemporaryDirectory() as tmp:
        path = atomic_write_text(Path(tmp) / "run.csv", run_text(ids, preds))
        values, binary = read_scores_or_run(path)
    assert binary and values == {i: float(p) for i, p in zip(ids, preds)}


@fuzz(60)
@given(data=st.binary(max_size=120) | st.lists(st.sampled_from(["u_1,1", "u_2,0", "u_3.png,1", "u_1,0", "zz,1",
                                                                    "u_2,2", "", "u_3"]), max_size=5)
       .map(lambda lines: "\n".join(lines).encode()))
def test_validate_run(data):
    with tempfile.TemporaryDirectory() as tmp:
        test_dir = Path(tmp) / "test" / "real_unknown"
        test_dir.mkdir(parents=True)
        for i in (1, 2, 3):
            (test_dir / f"u_{i}.png").write_bytes(valid_file("png"))
        run = Path(tmp) / "run.csv"
        run.write_bytes(data)
        try:
            n = validate_run(run, test_dir.parent)
        except DataError as exc:
            check_error(exc)
            return
    assert n == 3


# --- the command line: a bad real image is one line on stderr and no output file ----------------------


@pytest.fixture(scope="module")
def small_layout(tmp_path_factory) -> Path:
    from helpers import make_layout

    return make_layout(tmp_path_factory.mktemp("fuzz") / "data", size=256)


@fuzz(15)
@given(payload=st.binary(max_size=200), magic=st.sampled_from(sorted(MAGIC)),
       name=st.sampled_from(["bad.png", "bad.dcm", "bad", "bad.jpg"]))
def test_cli_bad_real_image_writes_nothing(small_layout, payload, magic, name):
    from synthleak.cli import main

    bad = small_layout / "real_unknown" / name
    bad.write_bytes(MAGIC[magic] + payload)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out, stderr = Path(tmp) / "run.csv", io.StringIO()
            with contextlib.redirect_stderr(stderr):
                rc = main(["audit", str(small_layout), "--out", str(out), "--quiet", "--cache-dir", "none",
                           "--bootstrap", "5", "--method", "nearest"])
            err = stderr.getvalue().strip().splitlines()
            assert rc == 2 and len(err) == 1 and name in err[0] and err[0].startswith("synthleak: error: "), err
            assert list(Path(tmp).iterdir()) == []
    finally:
        bad.unlink()


# --- regressions found by the fuzzing, as plain tests -------------------------------------------------


def test_decompression_bomb_is_one_line(tmp_path):
    """A PNG header claiming 100000 x 100000 pixels: PIL's DecompressionBombError used to escape."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(DataError, match="bomb.png: image dimensions are implausibly large"):
        load_folder(tmp_path)


def test_natural_key_handles_any_digits():
    assert sorted(["a10", "a2", "a01", "a1", "A1", "1²", "١٢", "3"], key=natural_key) == \
        ["1²", "3", "١٢", "A1", "a01", "a1", "a2", "a10"]


def test_error_messages_stay_one_line():
    assert str(DataError("x\ny.png: broken")) == "x\\ny.png: broken"
