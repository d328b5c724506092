"""benchmarks/prepare_ct_volumes.py: the real chest-CT volume set and its helpers.

The helper tests always run (synthetic slices, no data). The data tests read the built set at
$SYNTHLEAK_CT_VOLUMES (default /work/data/ct-volumes) and skip when it is absent; build it with
`python benchmarks/prepare_ct_volumes.py /work/data/ct-volumes`.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CT_VOLUMES = Path(os.environ.get("SYNTHLEAK_CT_VOLUMES", "/work/data/ct-volumes"))
MIN_PATIENTS = int(os.environ.get("SYNTHLEAK_CT_MIN_PATIENTS", "3"))


def _load_script():
    name = "prepare_ct_volumes"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "prepare_ct_volumes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


pcv = _load_script()
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _info(name: str, z: float | None, instance: int | None, orientation=AXIAL):
    return pcv.SliceInfo(key=name, name=name, patient="P", series_uid="1.2", series_number=2,
                         instance=instance, position=None if z is None else (0.0, 0.0, z),
                         orientation=orientation)


# ----------------------------------------------------------------------------- helpers, no data


def test_lung_window_formula():
    hu = np.array([-3000.0, -1350.0, -1000.0, -600.0, 0.0, 150.0, 2000.0])
    expected = np.clip(np.rint((hu - (-600 - 750)) / 1500 * 255), 0, 255).astype(np.uint8)
    got = pcv.lung_window(hu)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert got[0] == 0 and got[1] == 0 and got[-1] == 255
    assert got[3] == 128  # -600 HU: 127.5 rounds half to even
    # the body threshold is the first 8-bit value above -500 HU
    assert pcv.lung_window(np.array([-500.0 - 1e-3]))[0] < pcv.body_threshold_u8() <= pcv.lung_window(
        np.array([-499.0]))[0]


def test_sort_slices_by_position_then_instance_and_drop_repeats():
    slices = [_info("c", 10.0, 1), _info("a", -5.0, 3), _info("b", 2.5, 2), _info("dup", 2.5, 9),
              _info("d", 30.0, 0)]
    ordered = pcv.sort_slices(slices)
    assert [s.name for s in ordered] == ["a", "b", "c", "d"]  # z ascending; repeated z keeps the lower InstanceNumber
    # feet-first / flipped orientation: sorted along the slice normal (here -z), not raw z
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    ordered = pcv.sort_slices([_info(n, z, i, flipped) for n, z, i in [("u", 0.0, 1), ("v", 5.0, 2), ("w", -5.0, 3)]])
    assert [s.name for s in ordered] == ["v", "u", "w"]
    # without positions: InstanceNumber
    ordered = pcv.sort_slices([_info("x", None, 3), _info("y", None, 1), _info("z", None, 2)])
    assert [s.name for s in ordered] == ["y", "z", "x"]
    assert pcv.is_axial(AXIAL) and not pcv.is_axial((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))  # sagittal


def test_central_run_runs_and_slabs():
    assert list(pcv.central_run(10, 20)) == list(range(10))
    assert list(pcv.central_run(250, 200)) == list(range(25, 225))
    locs = [float(2 * i) for i in range(40)]
    locs[30:] = [loc + 10.0 for loc in locs[30:]]  # a missing acquisition between slices 29 and 30
    kept = [i for i in range(40) if i != 12]       # slice 12 dropped
    runs = pcv.contiguous_runs(kept, locs)
    assert runs == [list(range(12)), list(range(13, 30)), list(range(30, 40))]
    assert [len(c) for c in pcv.cut_slabs(list(range(37)), 16)] == [16, 21]  # remainder 5 < 8 merges
    assert [len(c) for c in pcv.cut_slabs(list(range(42)), 16)] == [16, 16, 10]
    assert [len(c) for c in pcv.cut_slabs(list(range(5)), 16)] == [5]


def test_two_reconstructions_share_slabs():
    locs = [float(5 * i) for i in range(36)]
    known: list = []
    first, fresh = pcv.assign_slabs(list(range(36)), locs, 16, known, 0)  # 16 + 20 (remainder 4 merges)
    assert fresh == 2 and sorted(set(first.values())) == [1, 2]
    # a second kernel of the same acquisition, one slice fewer at each end: same slabs, none new
    second, fresh2 = pcv.assign_slabs(list(range(1, 35)), locs, 16, known, fresh)
    assert fresh2 == 0 and all(second[i] == first[i] for i in second)
    # a series extending beyond: the new part (slices 36..59: 16 + 8) gets new slab numbers
    longer = [float(5 * i) for i in range(60)]
    third, fresh3 = pcv.assign_slabs(list(range(60)), longer, 16, known, fresh)
    assert fresh3 == 2 and third[10] == first[10] and third[45] == 3 and third[59] == 4


def test_patient_label_keeps_underscore_for_separators():
    assert pcv.patient_label("Lung_Dx-A0001") == "Lung-Dx-A0001"
    assert pcv.patient_label(" C3N-00247 ") == "C3N-00247"
    assert pcv.patient_label("__") == "unknown"


def test_decode_and_read_info_on_a_synthetic_dicom(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from helpers import write_dicom

    rng = np.random.default_rng(0)
    stored = rng.integers(-200, 2500, size=(64, 64)).astype(np.int16)  # HU = stored - 1024
    path = write_dicom(tmp_path / "s.dcm", stored, patient_id="Lung_Dx-A9999")
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "1.2.3", 4, 7
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, -12.5], list(AXIAL)
    ds.save_as(path)
    data = path.read_bytes()

    img = pcv.decode_slice(data, "s.dcm", size=32)
    expected = cv2.resize(pcv.lung_window(stored.astype(float) - 1024.0), (32, 32), interpolation=cv2.INTER_AREA)
    assert img.dtype == np.uint8 and img.shape == (32, 32)
    np.testing.assert_array_equal(img, expected)

    info = pcv.read_info(data, "key", "s.dcm")
    assert (info.patient, info.series_uid, info.series_number, info.instance) == ("Lung_Dx-A9999", "1.2.3", 4, 7)
    assert pcv.slice_location(info) == pytest.approx(-12.5)
    ds.Modality = "MR"
    ds.save_as(path)
    assert pcv.read_info(path.read_bytes(), "key", "s.dcm") is None


def test_build_from_a_folder(tmp_path):
    """End to end on two tiny synthetic patients (a folder source, not a git mirror)."""
    pydicom = pytest.importorskip("pydicom")
    from helpers import write_dicom

    src = tmp_path / "src"
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26 ** 2)
    for patient, n in (("P_1", 20), ("P_2", 18)):
        for k in range(n):
            empty = patient == "P_2" and k == n - 1  # nearly all air: dropped
            stored = np.where(body & ~empty, 1024 + 40, 24).astype(np.int16)
            path = write_dicom(src / patient / f"{k:03d}.dcm", stored, patient_id=patient)
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = f"9.{patient[-1]}", 3, n - k
            ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.0 * k], list(AXIAL)
            ds.save_as(path)
    out = tmp_path / "out"
    summary = pcv.build([src], out, max_slices=200, slab=8, min_body=0.08)
    assert set(summary["patients"]) == {"P-1", "P-2"}
    pngs = sorted(p.stem for p in (out / "images").glob("*.png"))
    assert len(pngs) == 20 + 17 and "P-2_s3_0017" not in pngs and "P-1_s3_0000" in pngs
    slabs = dict(csv.reader((out / "slabs.csv").open()))
    # P-1: 20 slices -> slabs of 8, 8, 4 (4 is not under half a slab); P-2: 17 kept -> 8, 8 + 1
    assert [slabs[f"P-1_s3_{i:04d}"] for i in (0, 8, 16, 19)] == ["P-1-slab01", "P-1-slab02", "P-1-slab03", "P-1-slab03"]
    assert slabs["P-2_s3_0016"] == "P-2-slab02" and len({v for k, v in slabs.items() if k.startswith("P-2")}) == 2
    patients = dict(csv.reader((out / "patients.csv").open()))
    assert set(patients) == set(pngs) and set(patients.values()) == {"P-1", "P-2"}
    assert (out / "README.md").read_text().count("| P-") == 2


# ----------------------------------------------------------------------------- the built set


def _data() -> Path:
    if not (CT_VOLUMES / "images").is_dir():
        pytest.skip(f"{CT_VOLUMES} absent (set SYNTHLEAK_CT_VOLUMES or run benchmarks/prepare_ct_volumes.py)")
    return CT_VOLUMES


def _table(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    assert all(len(r) == 2 for r in rows), f"{path}: expected <id>,<value> rows"
    table = dict(rows)
    assert len(table) == len(rows), f"{path}: repeated ids"
    return table


def test_built_images_are_256_uint8_gray():
    root = _data()
    pngs = sorted((root / "images").glob("*.png"))
    assert pngs
    for p in pngs:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.dtype == np.uint8 and img.shape == (256, 256), p.name


def test_built_every_image_has_patient_and_slab_and_slabs_stay_in_one_patient():
    root = _data()
    ids = {p.stem for p in (root / "images").glob("*.png")}
    patients = _table(root / "patients.csv")
    slabs = _table(root / "slabs.csv")
    assert set(patients) == ids and set(slabs) == ids
    owner: dict[str, str] = {}
    for ident, slab in slabs.items():
        assert owner.setdefault(slab, patients[ident]) == patients[ident], f"{slab} spans two patients"
        assert slab.startswith(patients[ident] + "-slab")
        assert ident.startswith(patients[ident] + "_")


def test_built_has_enough_patients():
    root = _data()
    n = len(set(_table(root / "patients.csv").values()))
    assert n >= MIN_PATIENTS, (f"{root}: {n} patients, need at least {MIN_PATIENTS} "
                               "(SYNTHLEAK_CT_MIN_PATIENTS overrides)")
