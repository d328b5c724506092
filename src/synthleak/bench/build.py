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
from ..runtime import log, verbosity


#: generators build-bench knows (noisy-copies: instant perturbed member copies, for tests)
GENERATORS = ("rae-gmm", "dcgan", "ddpm", "noisy-copies")


@dataclass
class BenchSpec:
    member_fraction: float = 0.5
    labelled_fraction: float = 0.35
    n_generated_train: int = 200
    n_generated_test: int = 100
    generator: str = "rae-gmm"  # one of GENERATORS
    image_size: int | None = None  # training resolution of the generator (None: its own default)
    generator_epochs: int = 150  # rae-gmm, dcgan
    seed: int = 0
    #: member images (whole groups, as close to this count as the groups allow); overrides member_fraction
    members: int | None = None
    #: ddpm: diffusion preset (models/diffusion.py; None = 'cpu') and training steps (None = the preset's)
    preset: str | None = None
    generator_steps: int | None = None


def split_by_group(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask selecting about `fraction` of the groups (whole groups only, at least one each side)."""
    uniq = rng.permutation(np.unique(groups))
    k = int(np.clip(round(fraction * len(uniq)), 1, len(uniq) - 1))
    return np.isin(groups, uniq[:k])


def split_by_count(groups: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of whole groups, taken in random order while each keeps the image count nearest
    `target` (at least one group, and at least one group left out)."""
    uniq = rng.permutation(np.unique(groups))
    chosen, count = [], 0
    for g in uniq[:-1]:
        size = int((groups == g).sum())
        if not chosen or count + size / 2 <= target:
            chosen.append(g)
            count += size
    return np.isin(groups, chosen)


def check_generator(spec: BenchSpec) -> None:
    from ..errors import SynthleakError

    if spec.generator not in GENERATORS:
        raise SynthleakError(f"--generator {spec.generator!r}: unknown (choose from {', '.join(GENERATORS)})")
    if spec.preset is not None and spec.generator != "ddpm":
        raise SynthleakError(f"--preset: only for --generator ddpm (not {spec.generator})")
    if spec.generator == "ddpm":
        from ..models.diffusion import check_image_size

        check_image_size(diffusion_config(spec))


def diffusion_config(spec: BenchSpec):
    """The ddpm generator's settings: the preset, at `spec.image_size` when given."""
    from dataclasses import replace

    from ..models.diffusion import diffusion_preset

    config = diffusion_preset(spec.preset or "cpu")
    return replace(config, image_size=spec.image_size) if spec.image_size else config


def make_generator(spec: BenchSpec, device: str = "cpu",
                   state_path: str | Path | None = None, diffusion=None):
    """The generator `spec` names. state_path: resumable training state (dcgan, ddpm); diffusion: a
    DiffusionConfig replacing the preset's (tests run the GPU preset's code path at toy sizes)."""
    from .generator import NoisyCopyGenerator, RAEGenerator

    check_generator(spec)
    if spec.generator == "rae-gmm":
        return RAEGenerator(seed=spec.seed, device=device)
    if spec.generator == "noisy-copies":
        return NoisyCopyGenerator(seed=spec.seed)
    if spec.generator == "dcgan":
        from .dcgan import DCGANBenchGenerator

        return DCGANBenchGenerator(side=spec.image_size or 128, seed=spec.seed, device=device,
                                   state_path=state_path)
    from .ddpm import DDPMBenchGenerator

    return DDPMBenchGenerator(diffusion or diffusion_config(spec), seed=spec.seed, device=device,
                              state_path=state_path)


def _write_pngs(folder: Path, prefix: str, images: np.ndarray, start: int = 1) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images, start):
        name = f"{prefix}_{i:04d}.png"
        cv2.imwrite(str(folder / name), img)
        names.append(name)
    return names


def split_membership(groups: np.ndarray, spec: BenchSpec, rng: np.random.Generator,
                     label_groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(member, labelled) boolean masks over the images; every patient lies wholly on one side of each.

    Without label groups, patients are split into members / non-members, then each side into labelled
    and test patients. With label groups (e.g. hospitals, scanners, anatomy clusters), whole label
    groups are labelled or test, so the labelled reals and the test reals come from different
    populations (the shifted setting), and members and non-members are drawn within each label group
    so that every population has both.
    """
    if label_groups is None:
        member = (split_by_group(groups, spec.member_fraction, rng) if spec.members is None
                  else split_by_count(groups, spec.members, rng))
        labelled = np.zeros(len(groups), bool)
        for side in (member, ~member):
            sub = split_by_group(groups[side], spec.labelled_fraction, rng)
            labelled[np.flatnonzero(side)[sub]] = True
        return member, labelled
    label_groups = np.asarray(label_groups).astype(str)
    _check_label_groups(groups, label_groups)
    names = np.unique(label_groups)
    member = np.zeros(len(groups), bool)
    for name in names:
        inside = np.flatnonzero(label_groups == name)
        if spec.members is None:
            chosen = split_by_group(groups[inside], spec.member_fraction, rng)
        else:  # each label group gets its share of the member count
            chosen = split_by_count(groups[inside], round(spec.members * len(inside) / len(groups)), rng)
        member[inside[chosen]] = True
    # whole label groups, in random order, become labelled while that brings the labelled share
    # closer to labelled_fraction (at least one group labelled, at least one left for the test set)
    target = spec.labelled_fraction * len(groups)
    labelled_names: list[str] = []
    count = 0
    for name in rng.permutation(names):
        size = int((label_groups == name).sum())
        if len(labelled_names) == len(names) - 1:
            break
        if not labelled_names or count + size / 2 <= target:
            labelled_names.append(name)
            count += size
    return member, np.isin(label_groups, labelled_names)


def _check_label_groups(groups: np.ndarray, label_groups: np.ndarray) -> None:
    from ..errors import DataError

    names = np.unique(label_groups)
    if len(names) < 2:
        raise DataError("--label-groups: needs at least 2 label groups (one labelled, one test)")
    for g in np.unique(groups):
        inside = np.unique(label_groups[groups == g])
        if len(inside) > 1:
            raise DataError(f"--label-groups: patient group {str(g)!r} spans label groups {', '.join(inside[:3])} "
                            "(a patient must belong to one label group)")
    for name in names:
        if len(np.unique(groups[label_groups == name])) < 2:
            raise DataError(f"--label-groups: label group {name!r} has fewer than 2 patient groups "
                            "(members and non-members are drawn within each label group)")


def draw_split(groups: np.ndarray, spec: BenchSpec, label_groups: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(member, labelled, rng): the split every benchmark built with `spec.seed` shares, whatever its
    generator, and the random stream that goes on to name the test files."""
    rng = np.random.default_rng(spec.seed)
    member, labelled = split_membership(groups, spec, rng, label_groups)
    return member, labelled, rng


def check_members(spec: BenchSpec, groups: np.ndarray, label_groups: np.ndarray | None = None,
                  source: str = "the real images") -> None:
    """--members must leave non-members, and give at least two member groups (labelled and test members)."""
    from ..errors import DataError

    if spec.members is None:
        return
    n = len(groups)
    if spec.members < 2 or spec.members >= n:
        raise DataError(f"--members {spec.members}: {source} hold {n} images; members must be at least 2 "
                        "and leave some images as non-members")
    member, _, _ = draw_split(groups, spec, label_groups)
    if len(np.unique(groups[member])) < 2:
        raise DataError(f"--members {spec.members}: selects {int(member.sum())} images of a single patient group "
                        f"in {source}; members need at least 2 groups (labelled and test members)")


def refuse_existing(out: Path, force: bool) -> None:
    """An output folder that exists and is not empty is replaced only with --force."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise OutputExistsError(f"{out}: folder exists and is not empty (use --force to replace it)")


def build_benchmark(images: np.ndarray, groups: np.ndarray, out: Path, spec: BenchSpec,
                    device: str = "cpu", quiet: bool = False, force: bool = False,
                    label_groups: np.ndarray | None = None, synthetic: np.ndarray | None = None,
                    source: dict | None = None) -> dict:
    """Write the challenge layout to `out`; returns a summary dict.

    `synthetic` supplies the generated images instead of training `spec.generator` on the members
    (signal-free controls: images from a generator that saw neither members nor non-members; or a
    leak-ladder rung sampled by the caller). `source` fields describe where they came from: they
    are merged into the summary (and SOURCE.json).

    The benchmark is built in a temporary folder beside `out` and renamed into place at the end, so an
    interrupted build never leaves a half-written benchmark. An existing non-empty `out` is replaced
    only with `force`.
    """
    with verbosity(quiet):
        out = Path(out)
        refuse_existing(out, force)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            summary = _write_benchmark(images, groups, staging, spec, device, label_groups, synthetic, source)
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            os.replace(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        log(f"benchmark written to {out}: {summary}")
        return summary


def _write_benchmark(images: np.ndarray, groups: np.ndarray, out: Path, spec: BenchSpec, device: str,
                     label_groups: np.ndarray | None = None,
                     synthetic: np.ndarray | None = None, source: dict | None = None) -> dict:
    member, labelled, rng = draw_split(groups, spec, label_groups)
    generator = None
    if synthetic is None:
        generator = make_generator(spec, device)
        if spec.generator == "ddpm":  # diffusion training is counted in steps, not epochs
            generator.fit(images[member], max_steps=spec.generator_steps)
        else:
            generator.fit(images[member], epochs=spec.generator_epochs)
        synthetic = generator.sample(spec.n_generated_train + spec.n_generated_test)
    elif len(synthetic) < spec.n_generated_train + spec.n_generated_test:
        raise ValueError("fewer synthetic images supplied than n_generated_train + n_generated_test")

    _write_pngs(out / "train" / "generated", "generated", synthetic[:spec.n_generated_train])
    _write_pngs(out / "test" / "generated", "generated",
                synthetic[spec.n_generated_train:spec.n_generated_train + spec.n_generated_test],
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
        "generated": spec.n_generated_train + spec.n_generated_test,
        "generator": spec.generator if generator is not None else "supplied (not trained on these reals)",
        "seed": spec.seed,
        "generator_epochs": getattr(generator, "epochs_trained", None),
        "generator_steps": getattr(generator, "steps_trained", None),
        "generator_image_size": getattr(generator, "side", None),
    }
    if spec.members is not None:
        summary["members_requested"] = spec.members
    if generator is not None and hasattr(generator, "describe"):
        summary.update(generator.describe())
    summary.update(source or {})
    if label_groups is not None:
        label_groups = np.asarray(label_groups).astype(str)
        summary["label_groups"] = {"labelled": sorted(map(str, set(label_groups[labelled]))),
                                   "test": sorted(map(str, set(label_groups[~labelled])))}
        rows = [*zip(used_names, label_groups[member & labelled]),
                *zip(not_used_names, label_groups[~member & labelled]), *zip(test_names, label_groups[test_idx])]
        (out / "label_groups.csv").write_text("".join(f"{Path(n).stem},{g}\n" for n, g in rows))
    (out / "SOURCE.json").write_text(json.dumps(summary, indent=2))
    return summary
