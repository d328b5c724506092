"""Distance-based attacks: nearest synthetic neighbour (GAN-Leaks), calibrated, and the real-only control."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..attacks.knn import NeighbourIndex
from ..config import MethodConfig
from ..data.layout import AuditData
from ..errors import SynthleakError
from ..features import get_extractor
from ..features.store import image_features
from ..options import Options, option
from .base import MethodResult, labelled_folds, training_synthetic


def embed(data: AuditData, cfg: MethodConfig, need_synthetic: bool = True):
    """Features of synthetic, labelled and test reals in cfg.feature_space (fit on synthetic if needed).

    Returns (synthetic_features or None, labelled_features or None, test_features or None, extractor, record).
    """
    extractor = get_extractor(cfg.feature_space, cfg)
    record: dict = {}
    if extractor.trainable:
        train_images, desc = training_synthetic(data, cfg)
        extractor.fit(train_images)
        record[f"{cfg.feature_space} feature model"] = desc
    syn = image_features(extractor, data.synthetic(cfg.synthetic_pool), cfg) if need_synthetic else None
    lab = extractor.extract(data.labelled()[0]) if data.has_labelled else None
    test = extractor.extract(data.real_unknown) if data.real_unknown is not None else None
    if extractor.scale:
        # z-score with statistics of the synthetic set (or the reals when the method never sees it),
        # so every feature contributes comparably to the Euclidean distance.
        ref = syn if syn is not None else np.concatenate([a for a in (lab, test) if a is not None])
        mu, sd = ref.mean(0), ref.std(0)
        sd[sd < 1e-8] = 1.0
        syn, lab, test = ((a - mu) / sd if a is not None else None for a in (syn, lab, test))
    return syn, lab, test, extractor, record


def real_rows(lab: np.ndarray | None, test: np.ndarray | None) -> np.ndarray | None:
    """Features of the labelled then the test reals: the row order of MethodResult.real_features."""
    parts = [a for a in (lab, test) if a is not None]
    return np.concatenate(parts) if parts else None


@dataclass(frozen=True)
class NearestOptions(Options):
    k: int = option(1, "score = minus the mean distance to the k nearest synthetic images")


def _k(cfg: MethodConfig) -> int:
    k = NearestOptions.read(cfg.options).k
    if k < 1:
        raise SynthleakError("--set k=N: N must be at least 1")
    return k


#: random reference subsets averaged per score (see reference_distance)
REFERENCE_REPEATS = 10


def reference_distance(x: np.ndarray, ref: np.ndarray, size: int, k: int, rng: np.random.Generator,
                       repeats: int = REFERENCE_REPEATS) -> np.ndarray:
    """Mean k-NN distance from x to random `size`-row subsets of `ref` (all of `ref` when it is that small).

    Nearest-neighbour distances shrink as the reference grows, so every score must see a reference of
    the same size: otherwise a fold holding many images of one class (leaving few of that class in its
    training part) would push all its scores one way, and labelled and test scores would differ in scale.
    """
    if size >= len(ref):
        return NeighbourIndex(ref).search(x, k)[0].mean(1)
    total = np.zeros(len(x))
    for _ in range(repeats):
        subset = ref[rng.choice(len(ref), size, replace=False)]
        total += NeighbourIndex(subset).search(x, k)[0].mean(1)
    return total / repeats


def fold_reference_size(y: np.ndarray, folds, classes: tuple[int, ...]) -> int:
    """Largest reference size every fold's training part can offer for each of `classes`."""
    size = min(int((y[train] == c).sum()) for train, _ in folds for c in classes)
    if size == 0:
        raise SynthleakError("a cross-validation fold has no labelled reals of one class in its training part "
                             "(give more labelled reals or patients, or fewer --folds)")
    return size


def fold_reference_distance(x: np.ndarray, y: np.ndarray, folds, ref_class: int, size: int, k: int = 1,
                            seed: int = 0) -> np.ndarray:
    """Distance from each labelled row to the labelled rows of `ref_class` in the *other* folds.

    Cross-fitting by fold keeps the reference independent of the scored row's own label and of its
    patient (the folds are group-aware), as for a test image scored against the labelled reals; the
    reference is subsampled to `size` rows in every fold (see reference_distance).
    """
    out = np.empty(len(x))
    for i, (train, val) in enumerate(folds):
        rng = np.random.default_rng([seed, ref_class, i])
        out[val] = reference_distance(x[val], x[train][y[train] == ref_class], size, k, rng)
    return out


def run_nearest(data: AuditData, cfg: MethodConfig) -> MethodResult:
    syn, lab, test, _, record = embed(data, cfg)
    index = NeighbourIndex(syn)
    k = _k(cfg)
    result = MethodResult(test_scores=None, trained_on=record, real_features=real_rows(lab, test))
    if lab is not None:
        result.labelled_scores = -index.search(lab, k)[0].mean(1)
    if test is not None:
        d, idx = index.search(test, max(k, 3))
        result.test_scores = -d[:, :k].mean(1)
        result.neighbours = idx[:, :3]
    result.notes.append(f"distance to the nearest of {len(syn)} synthetic images in '{cfg.feature_space}' space")
    return result


def run_nearest_calibrated(data: AuditData, cfg: MethodConfig) -> MethodResult:
    """Score = d(x, real non-members) - d(x, synthetic): membership beyond mere typicality.

    The labelled non-members are both the reference set and scored rows, so labelled reals are
    cross-fitted: each fold is compared with the non-members of the other folds only.
    """
    if not data.has_labelled:
        raise SynthleakError("nearest-calibrated needs labelled real_not_used/ images as its reference set")
    syn, lab, test, _, record = embed(data, cfg)
    k = _k(cfg)
    index = NeighbourIndex(syn)
    _, y = data.labelled()
    ref = lab[y == 0]
    folds = labelled_folds(data, cfg)
    size = fold_reference_size(y, folds, (0,))
    result = MethodResult(test_scores=None, trained_on=record, real_features=real_rows(lab, test))
    result.labelled_scores = (-index.search(lab, k)[0].mean(1)
                              + fold_reference_distance(lab, y, folds, 0, size, k, cfg.seed))
    if test is not None:
        d, idx = index.search(test, max(k, 3))
        rng = np.random.default_rng([cfg.seed, 0, len(folds)])
        result.test_scores = -d[:, :k].mean(1) + reference_distance(test, ref, size, k, rng)
        result.neighbours = idx[:, :3]
    result.notes.append(f"reference: random subsets of {size} of the {len(ref)} labelled real_not_used images "
                        "(the other folds' for labelled rows)")
    return result


def run_control_real_only(data: AuditData, cfg: MethodConfig) -> MethodResult:
    """Never looks at a synthetic image: d(x, real_not_used) - d(x, real_used).

    A high AUC here means membership leaks through the labelled reals themselves (same patient or
    scanner in both splits), not through the generator.
    """
    if not data.has_labelled:
        raise SynthleakError("control-real-only needs labelled reals (real_used/ and real_not_used/)")
    _, lab, test, _, record = embed(data, cfg, need_synthetic=False)
    _, y = data.labelled()
    k = _k(cfg)
    folds = labelled_folds(data, cfg)
    size = fold_reference_size(y, folds, (0, 1))
    used, not_used = lab[y == 1], lab[y == 0]
    result = MethodResult(test_scores=None, trained_on=record)
    result.labelled_scores = (-fold_reference_distance(lab, y, folds, 1, size, k, cfg.seed)
                              + fold_reference_distance(lab, y, folds, 0, size, k, cfg.seed))
    if test is not None:
        rng = np.random.default_rng([cfg.seed, 2, len(folds)])
        result.test_scores = (-reference_distance(test, used, size, k, rng)
                              + reference_distance(test, not_used, size, k, rng))
    result.notes.append(f"control: labelled reals only, never synthetic images (references of {size} per class)")
    return result


