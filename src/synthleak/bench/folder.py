"""`synthleak build-bench`: a benchmark, or a leak ladder of them, from a folder of real images.

The entry point sits above both builders (bench/build.py writes one benchmark, bench/ladder.py a ladder
of checkpoints on top of it), so that neither has to import the other back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.images import IMAGE_SUFFIXES, load_image, natural_key
from ..data.layout import read_groups
from ..errors import DataError
from ..runtime import verbosity
from .build import BenchSpec, build_benchmark, check_generator, check_members, refuse_existing
from .ladder import build_ladder, check_ladder


def build_from_folder(real: Path, out: Path, groups: str | Path | None = None, member_fraction: float = 0.3,
                      labelled_fraction: float = 0.2, n_generated: int = 3000, epochs: int = 300,
                      generator: str = "rae-gmm", seed: int = 0, device: str = "cpu", quiet: bool = False,
                      force: bool = False, label_groups: str | Path | None = None,
                      image_size: int | None = None, members: int | None = None, preset: str | None = None,
                      rungs: str | list[int] | None = None) -> dict:
    """`synthleak build-bench`: every image below `real` (recursively) is a candidate member.

    Without a groups file each image is its own group: then slices of one patient can fall on both
    sides of the member split, and the real-only control will show how much that leaks.
    `label_groups` (a `<id>,<label group>` file, or "folders" for the first subfolder below `real`)
    draws the labelled and the test reals from disjoint label groups (see split_membership).
    `members` (an image count, whole groups) overrides `member_fraction`. `rungs` (step counts, ddpm
    or dcgan) builds a leak ladder instead of one benchmark (bench/ladder.py).
    """
    with verbosity(quiet):
        real, out = Path(real), Path(out)
        n_test = int(round(n_generated / 3))
        spec = BenchSpec(member_fraction=member_fraction, labelled_fraction=labelled_fraction,
                         n_generated_train=n_generated - n_test, n_generated_test=n_test, generator=generator,
                         generator_epochs=epochs, seed=seed, image_size=image_size, members=members, preset=preset)
        # every check that needs no image comes first: bad options fail at once, not after loading
        if rungs is not None:
            rungs = check_ladder(spec, rungs)
        else:
            check_generator(spec)
        refuse_existing(out, force)
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
        label_group_ids = None
        if label_groups is not None:
            if str(label_groups) == "folders":
                parts = [p.relative_to(real).parts for p in files]
                if any(len(x) < 2 for x in parts):
                    top = next(p for p, x in zip(files, parts) if len(x) < 2)
                    raise DataError(f"{top}: --label-groups folders needs every image inside a subfolder of {real}")
                label_group_ids = np.array([x[0] for x in parts])
            else:
                label_table = read_groups(Path(label_groups))
                missing = [s for s in stems if s not in label_table]
                if missing:
                    raise DataError(f"{label_groups}: {len(missing)} image"
                                    f"{'s have' if len(missing) > 1 else ' has'} no label "
                                    f"group (first: {missing[0]!r})")
                label_group_ids = np.array([label_table[s] for s in stems])
        check_members(spec, group_ids, label_group_ids, source=str(real))
        if rungs is not None:
            return build_ladder(images, group_ids, out, spec, rungs, device=device, force=force,
                                label_groups=label_group_ids)
        return build_benchmark(images, group_ids, out, spec, device=device, force=force,
                               label_groups=label_group_ids)
