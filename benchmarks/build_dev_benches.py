"""Build the development benchmarks for calibration and decisions (shifted and unshifted).

    python benchmarks/build_dev_benches.py OUT_DIR [--only NAME,...] [--generator rae-gmm] [--epochs 300]

Every benchmark is written by `synthleak build-bench` (the library call behind it), so what is
measured here is what a user gets:
- `iqoth-random`: ../shared/data/iqoth-256, split by pseudo-patient (no shift between labelled and test reals).
- `iqoth-classes`: the same, but labelled and test reals come from different class folders
  (benign / malignant / normal): `--label-groups folders`.
- `iqoth-anatomy`: labelled and test reals come from different anatomy clusters (KMeans on the
  pseudo-patients' mean thumbnails), `--label-groups FILE`.
- `phantom-populations`: procedural phantoms from 4 populations of very different anatomy and
  window (known patients); labelled and test reals come from different populations.
- `phantom-null`: signal-free: membership split by patient with the same population shift, but the
  synthetic images come from a generator trained on *other* phantom patients (neither members nor
  non-members), so no real image was used: any AUC away from 0.5 is an artefact.

iqoth-256 has no patient ids. Its files are numbered in acquisition order within each class folder and
neighbouring slices of one patient are far closer than slices of two patients, so a pseudo-patient
is a run of consecutive case numbers whose 32x32 thumbnails never jump by more than
PSEUDO_PATIENT_JUMP (L2, intensities in [0, 1]); that gives about 100 groups for 110 real patients
(merging two patients is safe, splitting one would leak it across the member split).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PSEUDO_PATIENT_JUMP = 4.5
NAMES = ("iqoth-random", "iqoth-classes", "iqoth-anatomy", "phantom-populations", "phantom-null")


def _case_number(path: Path) -> int:
    found = re.findall(r"(\d+)$", path.stem)
    return int(found[0]) if found else 0


def iqoth_pseudo_patients(root: Path) -> dict[str, str]:
    """id -> pseudo-patient id (runs of consecutive, similar slices within each class folder)."""
    groups: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.png"), key=_case_number)
        thumbs = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (32, 32),
                                      interpolation=cv2.INTER_AREA).reshape(-1) / 255.0 for f in files])
        jumps = np.linalg.norm(np.diff(thumbs, axis=0), axis=1) > PSEUDO_PATIENT_JUMP
        run = np.r_[0, np.cumsum(jumps)]
        groups.update({f.stem: f"{folder.name}-{r:03d}" for f, r in zip(files, run)})
    return groups


def anatomy_clusters(root: Path, groups: dict[str, str], k: int = 4, seed: int = 0) -> dict[str, str]:
    """id -> anatomy cluster of its pseudo-patient (KMeans on mean 16x16 thumbnails, whole patients)."""
    from sklearn.cluster import KMeans

    files = sorted(root.rglob("*.png"))
    thumbs = {f.stem: cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (16, 16),
                                 interpolation=cv2.INTER_AREA).reshape(-1) / 255.0 for f in files}
    patients = sorted(set(groups.values()))
    means = np.stack([np.mean([thumbs[i] for i, g in groups.items() if g == p], axis=0) for p in patients])
    cluster = KMeans(k, n_init=10, random_state=seed).fit_predict(means)
    by_patient = dict(zip(patients, cluster))
    return {i: f"anatomy-{by_patient[g]}" for i, g in groups.items()}


def _write_csv(path: Path, table: dict[str, str]) -> Path:
    path.write_text("".join(f"{k},{v}\n" for k, v in sorted(table.items())))
    return path


def main(argv: list[str] | None = None) -> int:
    from synthleak.bench.build import BenchSpec, build_benchmark
    from synthleak.bench.folder import build_from_folder
    from synthleak.bench.phantoms import make_population_phantoms

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--only", default=",".join(NAMES))
    p.add_argument("--generator", default="rae-gmm")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    iqoth = SHARED / "iqoth-256"
    meta = Path(tempfile.mkdtemp(prefix="devbench-"))
    common = dict(member_fraction=0.3, labelled_fraction=0.3, n_generated=3000, epochs=args.epochs,
                  generator=args.generator, seed=args.seed, force=args.force, image_size=args.image_size)
    if any(n.startswith("iqoth") for n in wanted):
        if not iqoth.exists():
            print(f"{iqoth} not present", file=sys.stderr)
            return 1
        groups = iqoth_pseudo_patients(iqoth)
        groups_csv = _write_csv(meta / "iqoth-groups.csv", groups)
        anatomy_csv = _write_csv(meta / "iqoth-anatomy.csv", anatomy_clusters(iqoth, groups, seed=args.seed))
        label_groups = {"iqoth-random": None, "iqoth-classes": "folders", "iqoth-anatomy": anatomy_csv}
        for name in [n for n in wanted if n.startswith("iqoth")]:
            build_from_folder(iqoth, out / name, groups=groups_csv, label_groups=label_groups[name], **common)
            (out / name / "pseudo_patients.csv").write_text(groups_csv.read_text())
    if any(n.startswith("phantom") for n in wanted):
        images, patients, populations = make_population_phantoms(200, 4, seed=args.seed)
        spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.3, n_generated_train=2000,
                         n_generated_test=1000, generator=args.generator, generator_epochs=args.epochs,
                         seed=args.seed, image_size=args.image_size)
        if "phantom-populations" in wanted:
            build_benchmark(images, patients, out / "phantom-populations", spec, force=args.force,
                            label_groups=np.array([f"population-{p}" for p in populations]))
        if "phantom-null" in wanted:
            _build_null(images, patients, populations, out / "phantom-null", spec, args)
    return 0


def _build_null(images, patients, populations, out: Path, spec, args) -> None:
    """Members and non-members as usual, but the generator is trained on a third set of patients."""
    from dataclasses import replace

    from synthleak.bench.build import build_benchmark, make_generator
    from synthleak.bench.phantoms import make_population_phantoms

    other, _, _ = make_population_phantoms(100, 4, seed=args.seed + 1000)
    generator = make_generator(spec).fit(other, epochs=spec.generator_epochs)
    synthetic = generator.sample(spec.n_generated_train + spec.n_generated_test)
    build_benchmark(images, patients, out, replace(spec, generator="noisy-copies"), force=args.force,
                    label_groups=np.array([f"population-{p}" for p in populations]), synthetic=synthetic)


if __name__ == "__main__":
    sys.exit(main())
