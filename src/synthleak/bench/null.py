"""Signal-free audits: how often does the verdict cry wolf when no labelled image trained the generator?

Phantom patients (known patients, a few slices each); the synthetic images come from a generator
trained on *other* patients. Each repetition draws a fresh labelled / test split and runs the whole
audit (default recipe, verdict):
- `a`: non-member images relabelled "used" / "not used" at random, image by image;
- `b-groups`: "used" and "not used" are disjoint patients, with patient groups (whole patients
  relabelled);
- `b-images`: the same draws without groups (image-level relabelling: anti-conservative when slices of
  one patient look alike; shown to explain why groups matter).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..config import MethodConfig
from ..data.images import ImageSet
from ..data.layout import AuditData
from ..runtime import verbosity
from .build import BenchSpec, make_generator
from .phantoms import make_phantoms

CASES = ("a", "b-groups", "b-images")


def null_world(seed: int = 11, patients: int = 160, slices: int = 3, n_synthetic: int = 600):
    """(images, patient of each image, ids, synthetic ImageSet from a generator that saw none of them)."""
    images, patient = make_phantoms(patients, slices, seed=seed)
    others, _ = make_phantoms(patients // 2, slices, seed=seed + 1)
    with verbosity(True):  # a helper of tests and benchmarks: its generator's training lines are noise
        generator = make_generator(BenchSpec(generator="rae-gmm", seed=seed)).fit(others, epochs=60)
    synthetic = ImageSet.from_arrays(generator.sample(n_synthetic), [f"gen_{i:04d}" for i in range(n_synthetic)])
    return images, patient, [f"real_{i:04d}" for i in range(len(images))], synthetic


def signal_free_verdicts(reps: int, cache_dir: str | None = None, seed: int = 11,
                         permutations: int = 2000) -> Iterator[tuple[int, str, object]]:
    """Yield (repetition, case, Verdict) for `reps` repetitions of every case in CASES."""
    from ..pipeline import run_audit

    images, patient, ids, synthetic = null_world(seed)
    n_patients = int(patient.max()) + 1

    def audit(used, not_used, test, groups, rep):
        take = lambda idx: ImageSet.from_arrays(images[idx], [ids[i] for i in idx])
        data = AuditData(generated=synthetic, real_used=take(used), real_not_used=take(not_used),
                         real_unknown=take(test), groups=groups, source="phantoms (signal-free)")
        report = run_audit(data, cfg=MethodConfig(seed=rep, cache_dir=cache_dir, quiet=True), check_control=False,
                           n_boot=20, permutations=permutations)
        if report.verdict is None:
            raise RuntimeError(report.verdict_error)
        return report.verdict

    patient_groups = {ids[i]: f"patient_{patient[i]}" for i in range(len(ids))}
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        order = rng.permutation(len(images))
        yield rep, "a", audit(order[:60], order[60:120], order[120:320], None, rep)
        pats = rng.permutation(n_patients)
        used = np.flatnonzero(np.isin(patient, pats[:20]))
        not_used = np.flatnonzero(np.isin(patient, pats[20:40]))
        test = np.flatnonzero(np.isin(patient, pats[40:100]))
        yield rep, "b-groups", audit(used, not_used, test, patient_groups, rep)
        yield rep, "b-images", audit(used, not_used, test, None, rep)
