"""Build a development set of real chest-CT *volumes* (contiguous axial slices, known patients).

    python benchmarks/prepare_ct_volumes.py /work/data/ct-volumes
    python benchmarks/prepare_ct_volumes.py OUT --source /work/.mirror/OWNER+NAME/repo [--source ...]

For ground-truth membership benchmarks split by patient or by slab of contiguous slices. Each
source is a fetched GitHub mirror (a bare git directory, read with `git ls-tree` / `git cat-file`,
no checkout needed) or a plain folder; every `.dcm` / `.dicom` file in it is read. The defaults are
the two mirrors found for this set (see DEFAULT_SOURCES and OUT/README.md).

Per DICOM series (PatientID + SeriesInstanceUID; CT, axial, one frame per file):
1. Slices are sorted along the slice normal (ImagePositionPatient projected on the normal of
   ImageOrientationPatient, i.e. z for axial slices), then InstanceNumber; a repeated position is
   dropped (first InstanceNumber kept).
2. A series longer than --max-slices (200) keeps its contiguous central run of that many slices.
3. Pixels -> Hounsfield units with RescaleSlope / RescaleIntercept -> lung window W1500 L-600:
   8-bit = clip(round((HU - (L - W/2)) / W * 255), 0, 255) (the project's DICOM reader,
   synthleak.data.dicom.read_frames, i.e. what `synthleak audit` sees), then 256x256 with
   cv2.INTER_AREA.
4. Slices that are nearly all background (fewer than --min-body of the pixels at HU > -500, i.e.
   8-bit >= 145) are dropped.
5. The kept slices are cut into runs without gaps (a gap: a position step above 1.5x the series'
   median step, e.g. a dropped slice) and each run into slabs of --slab (16) contiguous slices; a
   run's last slab shorter than half a slab is merged into the slab before it (same run).
   Series of one patient in one space (FrameOfReferenceUID, else StudyInstanceUID) share slabs by
   position: a slice whose z lies inside a slab already cut from another series (e.g. the second
   reconstruction kernel of the same acquisition) gets that slab, so a slab split never puts the
   same anatomy of one patient on both sides (assign_slabs).

Writes, deterministically (same sources -> same bytes; OUT/images is emptied first):
- OUT/images/<patient>_<series>_<slice:04d>.png  256x256 uint8 gray; <slice> = the slice's index in
  the sorted series (so gaps in the numbering show dropped slices); <series> = s<SeriesNumber>.
- OUT/patients.csv  `<id>,<patient>` (no header; id = file stem, the format of `--groups`).
- OUT/slabs.csv     `<id>,<patient>-slab<NN>` (NN counts the patient's slabs over all its series).
- OUT/README.md     sources (repository, commit), licences, counts per patient and series.
Patient ids are the DICOM PatientID with every character outside [A-Za-z0-9-] replaced by '-'
(so '_' only separates the parts of a file name). Images are never committed to the repository.
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

MIRRORS = Path("/work/.mirror")
DEFAULT_SOURCES = (
    MIRRORS / "huyenbui117+lung_CT" / "repo",
    MIRRORS / "deep-learning-with-pytorch+dlwpt-code" / "repo",
)
# What is known of each default source's licence and provenance (README.md).
SOURCE_NOTES = {
    "huyenbui117/lung_CT": (
        "TCIA collection Lung-PET-CT-Dx (Li P et al. 2020, https://doi.org/10.7937/TCIA.2020.NNC2-0461), "
        "licence CC BY 4.0 per TCIA; the GitHub repository has no licence file of its own."),
    "deep-learning-with-pytorch/dlwpt-code": (
        "book code of 'Deep Learning with PyTorch' (Stevens, Antiga, Viehmann), data/p1ch4/volumetric-dicom, "
        "one series of TCIA patient C3N-00247 (an NCI CPTAC subject, chest CT with contrast; the CPTAC "
        "collections on TCIA are CC BY 3.0); the repository has no licence file."),
}
WINDOW_WIDTH, WINDOW_LEVEL = 1500.0, -600.0
SIZE = 256
BODY_HU = -500.0
DICOM_SUFFIXES = (".dcm", ".dicom")


# ----------------------------------------------------------------------------- pure helpers


def lung_window(hu: np.ndarray, width: float = WINDOW_WIDTH, level: float = WINDOW_LEVEL) -> np.ndarray:
    """Hounsfield units -> uint8: clip(round((HU - (L - W/2)) / W * 255), 0, 255)."""
    scaled = (np.asarray(hu, np.float64) - (level - width / 2.0)) / width * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def body_threshold_u8(width: float = WINDOW_WIDTH, level: float = WINDOW_LEVEL) -> int:
    """The smallest 8-bit value of a pixel at HU > BODY_HU after the window."""
    return int(lung_window(np.array([BODY_HU + 1e-6]), width, level)[0])


@dataclass
class SliceInfo:
    """What sorting and grouping need of one DICOM file."""

    key: str                       # where to read it again (a blob id or a file path)
    name: str                      # its path inside the source, for messages
    patient: str
    series_uid: str
    series_number: int | None
    instance: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    extra: dict = field(default_factory=dict)


def slice_normal(orientation) -> np.ndarray:
    """Unit normal of ImageOrientationPatient (row x column); z when absent or degenerate."""
    if orientation is None or len(orientation) != 6:
        return np.array([0.0, 0.0, 1.0])
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def is_axial(orientation) -> bool:
    """True when the slice normal is within ~25 degrees of the patient z axis (or unknown)."""
    return orientation is None or abs(slice_normal(orientation)[2]) > 0.9


def slice_location(s: SliceInfo) -> float | None:
    if s.position is None:
        return None
    return float(np.dot(np.asarray(s.position, float), slice_normal(s.orientation)))


def sort_slices(slices: list[SliceInfo]) -> list[SliceInfo]:
    """Sort one series along the slice normal (z), then InstanceNumber, then name; drop repeated positions.

    Slices without a position are sorted by InstanceNumber after the others (a series is either
    all with positions or all without, in practice).
    """
    def key(s: SliceInfo):
        loc = slice_location(s)
        return (loc is None, 0.0 if loc is None else round(loc, 3),
                s.instance if s.instance is not None else 1 << 30, s.name)

    out: list[SliceInfo] = []
    seen: set[float] = set()
    for s in sorted(slices, key=key):
        loc = slice_location(s)
        if loc is not None:
            r = round(loc, 3)
            if r in seen:
                continue
            seen.add(r)
        out.append(s)
    return out


def central_run(n: int, keep: int) -> range:
    """Indices of the contiguous central `keep` of `n` (all of them when n <= keep)."""
    if n <= keep:
        return range(n)
    start = (n - keep) // 2
    return range(start, start + keep)


def contiguous_runs(indices: list[int], locations: list[float | None]) -> list[list[int]]:
    """Split kept slice indices (into the sorted series) into runs without a gap.

    A gap is a missing index (a dropped slice) or, with positions, a step above 1.5x the median
    step of the series (a missing acquisition).
    """
    locs = [loc for loc in locations if loc is not None]
    steps = np.abs(np.diff(locs)) if len(locs) == len(locations) and len(locs) > 1 else np.array([])
    median = float(np.median(steps)) if steps.size else 0.0
    runs: list[list[int]] = []
    for i in indices:
        if runs:
            prev = runs[-1][-1]
            gap = i != prev + 1
            if not gap and median > 0:
                gap = abs(locations[i] - locations[prev]) > 1.5 * median
            if not gap:
                runs[-1].append(i)
                continue
        runs.append([i])
    return runs


def cut_slabs(run: list[int], slab: int) -> list[list[int]]:
    """Consecutive chunks of `slab`; a last chunk shorter than slab/2 joins the chunk before it."""
    chunks = [run[k:k + slab] for k in range(0, len(run), slab)]
    if len(chunks) > 1 and len(chunks[-1]) < slab / 2:
        chunks[-2].extend(chunks.pop())
    return chunks


def assign_slabs(kept: list[int], locations: list[float | None], slab: int,
                 known: list[tuple[float, float, int]], numbered: int) -> tuple[dict[int, int], int]:
    """Slab number of each kept slice of one series; returns (slice -> slab, slabs newly cut).

    `known` holds (z from, z to, slab) of the slabs already cut from other series of the same patient
    in the same space (FrameOfReferenceUID, else StudyInstanceUID): a slice inside one of them takes
    that slab, so two reconstructions of one acquisition (e.g. a sharp and a soft kernel) share their
    slabs and a slab split never puts the same anatomy on both sides. The other slices are cut into
    new slabs (contiguous_runs, cut_slabs), numbered from numbered + 1 and added to `known`.
    """
    out: dict[int, int] = {}
    rest: list[int] = []
    for i in kept:
        z = locations[i]
        hit = None if z is None else next((n for lo, hi, n in known if lo <= z <= hi), None)
        if hit is None:
            rest.append(i)
        else:
            out[i] = hit
    locs = [z for z in locations if z is not None]
    half = float(np.median(np.abs(np.diff(locs)))) / 2 if len(locs) == len(locations) and len(locs) > 1 else 0.0
    fresh = 0
    for run in contiguous_runs(rest, locations):
        for chunk in cut_slabs(run, slab):
            fresh += 1
            for i in chunk:
                out[i] = numbered + fresh
            zs = [locations[i] for i in chunk]
            if None not in zs:
                known.append((min(zs) - half, max(zs) + half, numbered + fresh))
    return out, fresh


def patient_label(patient_id: str) -> str:
    label = re.sub(r"[^A-Za-z0-9-]+", "-", patient_id.strip()).strip("-")
    return label or "unknown"


# ----------------------------------------------------------------------------- sources


class Source:
    """Files of one source: a bare git mirror (read at HEAD) or a folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.is_git = (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()
        if not self.is_git and not self.path.is_dir():
            raise SystemExit(f"{self.path}: neither a git mirror nor a folder")
        self._cat: subprocess.Popen | None = None

    @property
    def repository(self) -> str:
        """owner/name for a mirror at /work/.mirror/owner+name/repo, else the folder path."""
        for part in (self.path.name, self.path.parent.name):
            if "+" in part:
                return part.replace("+", "/", 1)
        return str(self.path)

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True,
                              capture_output=True).stdout.decode("utf-8", "replace")

    def commit(self) -> tuple[str, str]:
        if not self.is_git:
            return "", ""
        sha, date = self._git("log", "-1", "--format=%H %cI", "HEAD").split()
        return sha, date

    def dicom_files(self) -> list[tuple[str, str, int]]:
        """(key, name, size) of every .dcm/.dicom file, sorted by name."""
        found = []
        if self.is_git:
            out = subprocess.run(["git", "-C", str(self.path), "ls-tree", "-r", "-l", "-z", "HEAD"],
                                 check=True, capture_output=True).stdout
            for entry in out.split(b"\0"):
                if not entry:
                    continue
                meta, name = entry.split(b"\t", 1)
                _mode, kind, sha, size = meta.split()
                name = name.decode("utf-8", "replace")
                if kind == b"blob" and name.lower().endswith(DICOM_SUFFIXES) and size != b"-":
                    found.append((sha.decode(), name, int(size)))
        else:
            for p in self.path.rglob("*"):
                if p.is_file() and p.name.lower().endswith(DICOM_SUFFIXES):
                    found.append((str(p), str(p.relative_to(self.path)), p.stat().st_size))
        return sorted(found, key=lambda t: t[1])

    def read(self, key: str) -> bytes:
        if not self.is_git:
            return Path(key).read_bytes()
        if self._cat is None:
            self._cat = subprocess.Popen(["git", "-C", str(self.path), "cat-file", "--batch"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._cat.stdin is not None and self._cat.stdout is not None
        self._cat.stdin.write(key.encode() + b"\n")
        self._cat.stdin.flush()
        header = self._cat.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise RuntimeError(f"{self.path}: git cat-file could not read {key}")
        data = self._cat.stdout.read(int(header[2]))
        self._cat.stdout.read(1)  # the newline after the content
        return data

    def close(self) -> None:
        if self._cat is not None:
            assert self._cat.stdin is not None
            self._cat.stdin.close()
            self._cat.wait()
            self._cat = None


# ----------------------------------------------------------------------------- DICOM


def _floats(value) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if all(np.isfinite(out)) else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_info(data: bytes, key: str, name: str) -> SliceInfo | None:
    """Header of one file, or None (with a reason on stderr) when it is not one axial CT slice."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, named
        print(f"  skip {name}: unreadable ({type(exc).__name__})", file=sys.stderr)
        return None
    modality = str(ds.get("Modality", "") or "").upper()
    frames = _int(ds.get("NumberOfFrames", 1)) or 1
    if modality != "CT" or frames != 1 or ds.get("Rows") is None:
        print(f"  skip {name}: not a single-frame CT image (Modality {modality or '?'})", file=sys.stderr)
        return None
    orientation = _floats(ds.get("ImageOrientationPatient")) if "ImageOrientationPatient" in ds else None
    if not is_axial(orientation):
        print(f"  skip {name}: not axial", file=sys.stderr)
        return None
    position = _floats(ds.get("ImagePositionPatient")) if "ImagePositionPatient" in ds else None
    return SliceInfo(
        key=key, name=name,
        patient=str(ds.get("PatientID", "") or "unknown"),
        series_uid=str(ds.get("SeriesInstanceUID", "") or "unknown"),
        series_number=_int(ds.get("SeriesNumber")),
        instance=_int(ds.get("InstanceNumber")),
        position=position if position is not None and len(position) == 3 else None,
        orientation=orientation if orientation is not None and len(orientation) == 6 else None,
        extra={"SeriesDescription": str(ds.get("SeriesDescription", "") or ""),
               "StudyDescription": str(ds.get("StudyDescription", "") or ""),
               "SliceThickness": str(ds.get("SliceThickness", "") or ""),
               "Rows": _int(ds.get("Rows")), "Columns": _int(ds.get("Columns")),
               "space": str(ds.get("FrameOfReferenceUID", "") or ds.get("StudyInstanceUID", "") or "")},
    )


def decode_slice(data: bytes, name: str = "slice.dcm", size: int = SIZE) -> np.ndarray:
    """One CT slice -> lung-windowed uint8 (the project's reader), resized to size x size (INTER_AREA)."""
    from synthleak.data.dicom import Window, read_frames

    frames = read_frames(Path(name), window=Window(WINDOW_WIDTH, WINDOW_LEVEL), notes={}, data=data)
    img = frames[0]
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.uint8)


def body_fraction(img: np.ndarray) -> float:
    """Share of pixels at HU > BODY_HU (8-bit >= body_threshold_u8())."""
    return float(np.mean(img >= body_threshold_u8()))


# ----------------------------------------------------------------------------- build


def _series_labels(series: dict[str, list[SliceInfo]]) -> dict[str, str]:
    """s<SeriesNumber> when unique within the patient, else s<k> in order of (number, uid)."""
    order = sorted(series, key=lambda uid: (series[uid][0].series_number is None,
                                            series[uid][0].series_number or 0, uid))
    numbers = [series[uid][0].series_number for uid in order]
    unique = None not in numbers and len(set(numbers)) == len(numbers)
    return {uid: f"s{numbers[k]}" if unique else f"s{k + 1}" for k, uid in enumerate(order)}


def build(sources: list[Path], out: Path, max_slices: int = 200, slab: int = 16,
          min_body: float = 0.08) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout
    out = Path(out)
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)

    by_series: dict[tuple[str, str], list[SliceInfo]] = defaultdict(list)
    origin: dict[tuple[str, str], Source] = {}
    meta = []
    opened = [Source(p) for p in sources]
    for src in opened:
        sha, date = src.commit()
        files = src.dicom_files()
        meta.append({"repository": src.repository, "path": str(src.path), "commit": sha, "date": date,
                     "files": len(files), "bytes": sum(f[2] for f in files)})
        print(f"{src.repository}: {len(files)} DICOM files", file=sys.stderr)
        for key, name, _ in files:
            info = read_info(src.read(key), key, name)
            if info is None:
                continue
            k = (info.patient, info.series_uid)
            if k in origin and origin[k] is not src:
                print(f"  skip {name}: series {info.series_uid} already read from another source", file=sys.stderr)
                continue
            origin[k] = src
            by_series[k].append(info)

    patients: dict[str, dict[str, list[SliceInfo]]] = defaultdict(dict)
    for (patient, uid), slices in by_series.items():
        patients[patient][uid] = slices

    rows_patient: list[tuple[str, str]] = []
    rows_slab: list[tuple[str, str]] = []
    summary: dict = {"sources": meta, "patients": {}}
    labels_used: dict[str, str] = {}
    for patient in sorted(patients):
        label = patient_label(patient)
        if labels_used.setdefault(label, patient) != patient:
            raise SystemExit(f"patients {patient!r} and {labels_used[label]!r} both map to {label!r}")
        series = patients[patient]
        names = _series_labels(series)
        slab_no = 0
        known: dict[str, list[tuple[float, float, int]]] = {}  # space -> (z from, z to, slab) of slabs cut
        p_sum = {"dicom_patient_id": patient, "series": {}}
        for uid in sorted(series, key=lambda u: names[u]):
            src = origin[(patient, uid)]
            ordered = sort_slices(series[uid])
            window = central_run(len(ordered), max_slices)
            locations = [slice_location(s) for s in ordered]
            kept: list[int] = []
            for i in window:
                img = decode_slice(src.read(ordered[i].key), ordered[i].name)
                if body_fraction(img) < min_body:
                    continue
                ident = f"{label}_{names[uid]}_{i:04d}"
                cv2.imwrite(str(images / f"{ident}.png"), img)
                kept.append(i)
            space = ordered[0].extra["space"]
            slab_of, fresh = assign_slabs(kept, locations, slab, known.setdefault(space, []), slab_no)
            slab_no += fresh
            for i in kept:
                ident = f"{label}_{names[uid]}_{i:04d}"
                rows_patient.append((ident, label))
                rows_slab.append((ident, f"{label}-slab{slab_of[i]:02d}"))
            n_slabs = len(set(slab_of.values()))
            first = ordered[0].extra
            p_sum["series"][names[uid]] = {
                "uid": uid, "repository": src.repository, "description": first["SeriesDescription"],
                "study": first["StudyDescription"], "thickness": first["SliceThickness"],
                "size": f"{first['Rows']}x{first['Columns']}", "slices_in_series": len(ordered),
                "kept": len(kept), "slabs": n_slabs,
                "folder": str(Path(ordered[0].name).parent)}
        summary["patients"][label] = p_sum
    for src in opened:
        src.close()

    rows_patient.sort()
    rows_slab.sort()
    (out / "patients.csv").write_text("".join(f"{i},{p}\n" for i, p in rows_patient), encoding="utf-8")
    (out / "slabs.csv").write_text("".join(f"{i},{s}\n" for i, s in rows_slab), encoding="utf-8")
    (out / "README.md").write_text(_readme(summary, max_slices, slab, min_body), encoding="utf-8")
    return summary


def _readme(summary: dict, max_slices: int, slab: int, min_body: float) -> str:
    lines = [
        "# ct-volumes: real chest-CT volumes for development benchmarks",
        "",
        "Written by `benchmarks/prepare_ct_volumes.py` (synthleak); do not edit by hand, rerun it.",
        "",
        ("- `images/<patient>_<series>_<slice>.png`: 256x256 uint8, axial, lung window W1500 L-600 "
         "(HU from RescaleSlope/Intercept; 8-bit = clip(round((HU + 1350) / 1500 * 255), 0, 255)), "
         "resized with cv2.INTER_AREA; `<slice>` = index in the series sorted by z (gaps = dropped slices)."),
        (f"- kept: at most {max_slices} central slices per series; slices with under {min_body:.0%} of "
         "pixels at HU > -500 (nearly all background) dropped."),
        ("- `patients.csv`: `<id>,<patient>`; `slabs.csv`: `<id>,<patient>-slab<NN>`, slabs of "
         f"{slab} contiguous slices within one series (a run's remainder under {slab // 2} joins the slab before); "
         "series of one patient in one frame of reference (e.g. two reconstruction kernels of one acquisition) "
         "share their slabs by z position, so one slab is one piece of anatomy."),
        "",
        "## Sources",
        "",
        "| repository | commit | commit date | DICOM files | MB |",
        "|---|---|---|---|---|",
    ]
    for s in summary["sources"]:
        lines.append(f"| {s['repository']} | `{s['commit']}` | {s['date']} | {s['files']} | "
                     f"{s['bytes'] / 1e6:.0f} |")
    lines += ["", "Licence and provenance notes:", ""]
    for s in summary["sources"]:
        lines.append(f"- {s['repository']}: {SOURCE_NOTES.get(s['repository'], 'unknown; check before reuse.')}")
    lines += ["", ("Use for development and evaluation only; cite the TCIA collections. Not for redistribution "
                   "inside the synthleak repository."), "", "## Patients", "",
              "| patient | DICOM PatientID | series | description | thickness (mm) | slices in series | kept | slabs |",
              "|---|---|---|---|---|---|---|---|"]
    total = 0
    for label, p in summary["patients"].items():
        for name, s in p["series"].items():
            total += s["kept"]
            lines.append(f"| {label} | {p['dicom_patient_id']} | {name} | {s['description']} | {s['thickness']} | "
                         f"{s['slices_in_series']} | {s['kept']} | {s['slabs']} |")
    lines += ["", f"{len(summary['patients'])} patients, {total} images.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Sources default to: " + ", ".join(str(p) for p in DEFAULT_SOURCES))
    ap.add_argument("out", type=Path, help="output folder (e.g. /work/data/ct-volumes); images/ in it is rewritten")
    ap.add_argument("--source", type=Path, action="append", default=None, metavar="PATH",
                    help="a fetched mirror (bare git dir, read at HEAD) or a folder with DICOM series; repeat")
    ap.add_argument("--max-slices", type=int, default=200,
                    help="keep at most this many central contiguous slices per series (default 200)")
    ap.add_argument("--slab", type=int, default=16, help="slices per slab (default 16)")
    ap.add_argument("--min-body", type=float, default=0.08,
                    help="drop slices with a smaller share of pixels at HU > -500 (default 0.08)")
    args = ap.parse_args(argv)
    if args.max_slices < 1 or args.slab < 2 or not 0 <= args.min_body < 1:
        ap.error("--max-slices >= 1, --slab >= 2 and 0 <= --min-body < 1")
    summary = build(args.source or list(DEFAULT_SOURCES), args.out, args.max_slices, args.slab, args.min_body)
    print(f"{args.out}: {len(summary['patients'])} patients")
    for label, p in summary["patients"].items():
        kept = sum(s["kept"] for s in p["series"].values())
        per = ", ".join(f"{n}: {s['kept']}/{s['slices_in_series']} ({s['slabs']} slabs)"
                        for n, s in p["series"].items())
        print(f"  {label}: {kept} slices  [{per}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
