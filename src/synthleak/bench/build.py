"""Build a ground-truth benchmark in the challenge layout from real images with known patients.

Members (the generator's training set) and non-members are split by patient, then each side is
split again by patient into labelled (train/real_used, train/real_not_used) and test
(test/real_unknown) images, so no patient crosses any boundary. A generator is trained on the
members only and sampled into train/generated and test/generated. test_labels.csv holds the truth.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import OutputExistsError
from ..runtime import log


@dataclass
class BenchSpec:
    member_fraction: float = 0.5
    labelled_fraction: float = 0.35
    n_generated_train: int = 200
    n_generated_test: int = 100
    generator: str = "rae-gmm"  # or 'noisy-copies' (instant, for tests)
    generator_epochs: int = 150
    seed: int = 0


def split_by_group(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask selecting about `fraction` of the groups (whole groups only, at least one each side)."""
    uniq = rng.permutation(np.unique(groups))
    k = int(np.clip(round(fraction * len(uniq)), 1, len(uniq) - 1))
    return np.isin(groups, uniq[:k])


def make_generator(spec: BenchSpec, device: str = "cpu", quiet: bool = False):
    from .generator import NoisyCopyGenerator, RAEGenerator

    if spec.generator == "rae-gmm":
        return RAEGenerator(seed=spec.seed, device=device, quiet=quiet)
    if spec.generator == "noisy-copies":
        return NoisyCopyGenerator(seed=spec.seed)
    raise ValueError(f"unknown generator {spec.generator!r}")


def _write_pngs(folder: Path, prefix: str, images: np.ndarray, start: int = 1) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images, start):
        name = f"{prefix}_{i:04d}.png"
        cv2.imwrite(str(folder / name), img)
        names.append(name)
    return names


def build_benchmark(images: np.ndarray, groups: np.ndarray, out: Path, spec: BenchSpec,
                    device: str = "cpu", quiet: bool = False, force: bool = False) -> dict:
    """Write the challenge layout to `out`; returns a summary dict.

    The benchmark is built in a temporary folder beside `out` and renamed into place at the end, so an
    interrupted build never leaves a half-written benchmark. An existing non-empty `out` is replaced
    only with `force`.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise OutputExistsError(f"{out}: folder exists and is not empty (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summary = _write_benchmark(images, groups, staging, spec, device, quiet)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log(f"benchmark written to {out}: {summary}", quiet)
    return summary


def _write_benchmark(images: np.ndarray, groups: np.ndarray, out: Path, spec: BenchSpec, device: str,
                     quiet: bool) -> dict:
    rng = np.random.default_rng(spec.seed)
    member = split_by_group(groups, spec.member_fraction, rng)
    labelled = np.zeros(len(groups), bool)
    for side in (member, ~member):
        sub = split_by_group(groups[side], spec.labelled_fraction, rng)
        labelled[np.flatnonzero(side)[sub]] = True
    generator = make_generator(spec, device, quiet).fit(images[member], epochs=spec.generator_epochs)
    synthetic = generator.sample(spec.n_generated_train + spec.n_generated_test)

    _write_pngs(out / "train" / "generated", "generated", synthetic[:spec.n_generated_train])
    _write_pngs(out / "test" / "generated", "generated", synthetic[spec.n_generated_train:],
                start=spec.n_generated_train + 1)
    used_names = _write_pngs(out / "train" / "real_used", "real_used", images[member & labelled])
    not_used_names = _write_pngs(out / "train" / "real_not_used", "real_not_used", images[~member & labelled])
    # Test file names are assigned in random order so they carry no membership information.
    test_idx = rng.permutation(np.flatnonzero(~labelled))
    test_names = _write_pngs(out / "test" / "real_unknown", "real_unknown", images[test_idx])
    (out / "test_labels.csv").write_text("".join(f"{n},{int(member[i])}\n" for n, i in zip(test_names, test_idx)))
    group_rows = [*zip(used_names, groups[member & labelled]), *zip(not_used_names, groups[~member & labelled]),
                  *zip(test_names, groups[test_idx])]
    (out / "groups.csv").write_text("".join(f"{Path(n).stem},patient_{g}\n" for n, g in group_rows))
    summary = {
        "members": int(member.sum()), "non_members": int((~member).sum()),
        "train/real_used": len(used_names), "train/real_not_used": len(not_used_names),
        "test/real_unknown": len(test_names), "test members": int(member[test_idx].sum()),
        "generated": len(synthetic), "generator": spec.generator, "seed": spec.seed,
        "generator_epochs": getattr(generator, "epochs_trained", None),
    }
    (out / "SOURCE.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_from_folder(real: Path, out: Path, groups: str | Path | None = None, member_fraction: float = 0.3,
                      labelled_fraction: float = 0.2, n_generated: int = 3000, epochs: int = 300,
                      generator: str = "rae-gmm", seed: int = 0, device: str = "cpu", quiet: bool = False,
                      force: bool = False) -> dict:
    """`synthleak build-bench`: every image below `real` (recursively) is a candidate member.

    Without a groups file each image is its own group: then slices of one patient can fall on both
    sides of the member split, and the real-only control will show how much that leaks.
    """
    from ..data.images import IMAGE_SUFFIXES, load_image, natural_key
    from ..data.layout import read_groups
    from ..errors import DataError

    real = Path(real)
    if not real.is_dir():
        raise DataError(f"{real}: folder does not exist")
    files = sorted((p for p in real.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(str(p.relative_to(real))))
    if len(files) < 8:
        raise DataError(f"{real}: needs at least 8 images, found {len(files)}")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"{real}: duplicate image id {dup!r} in different subfolders")
    images = np.stack([load_image(p)[0] for p in files])
    table = read_groups(Path(groups)) if groups else {}
    group_ids = np.array([table.get(s, f"image_{s}") for s in stems])
    n_test = int(round(n_generated / 3))
    spec = BenchSpec(member_fraction=member_fraction, labelled_fraction=labelled_fraction,
                     n_generated_train=n_generated - n_test, n_generated_test=n_test, generator=generator,
                     generator_epochs=epochs, seed=seed)
    return build_benchmark(images, group_ids, out, spec, device=device, quiet=quiet, force=force)
