"""Density-based attacks: DOMIAS-style density ratio, and the local nearest-neighbour ratio.

DOMIAS (van Breugel et al., 2023) scores x by p_synthetic(x) / p_reference(x): a generator that
over-fits puts extra synthetic density on its training images *relative to* the real population,
which corrects the plain nearest-synthetic attack for images that are merely typical. Densities are
Gaussian KDEs (scipy, Scott bandwidth) in a PCA space fitted on the synthetic images.

`nearest-local` needs no reference data: it divides the distance to the nearest synthetic image by
the distance to the k-th nearest, i.e. how much closer the generator came to x than its local
sample density explains.

`density-ratio` is DOMIAS with k-nearest-neighbour density estimates instead of KDEs: a k-NN
density is p(x) ~ k / (N r_k(x)^D), so log p_synthetic(x) - log p_real(x) is, up to constants and
the factor D, log r_real,k(x) - log r_synthetic,1(x): how much closer the generator came to x than
the real population's own spacing around x. The real reference is every real image (labelled and
test, labels unused, x itself excluded); its scale is the mean log distance to the 10th..30th
nearest (`--set k_real=20`), which reaches past the handful of neighbouring slices of x's own
patient that would otherwise make it measure slice spacing rather than the population. Unlike a KDE it needs no bandwidth and no PCA, and it is
invariant to any rescaling of the feature space (another CT window or contrast moves numerator
and denominator together).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import gaussian_kde
from sklearn.decomposition import PCA

from ..attacks.knn import NeighbourIndex
from ..config import MethodConfig
from ..data.layout import AuditData
from ..errors import SynthleakError
from ..options import Options, option
from .base import MethodResult, labelled_folds
from .nearest import REFERENCE_REPEATS, embed, fold_reference_size, real_rows

REFERENCES = ("all-reals", "non-members")
#: DOMIAS fits its PCA on at most this many synthetic images (a seeded subsample above it: a PCA of
#: millions of rows would copy them all into memory); every synthetic image is still projected and in the KDE
PCA_FIT_ROWS = 50_000


def _pca_fit_rows(syn: np.ndarray, seed: int) -> np.ndarray:
    if len(syn) <= PCA_FIT_ROWS:
        return syn
    return syn[np.sort(np.random.default_rng(seed).choice(len(syn), PCA_FIT_ROWS, replace=False))]


def _project(pca: PCA, rows: np.ndarray) -> np.ndarray:
    """pca.transform in chunks of PCA_FIT_ROWS rows (the feature store is memory-mapped; never copied whole)."""
    return np.concatenate([pca.transform(rows[s:s + PCA_FIT_ROWS]) for s in range(0, len(rows), PCA_FIT_ROWS)])


def _log_density(fit_rows: np.ndarray, query: np.ndarray, bw_factor: float | None = None) -> np.ndarray:
    kde = gaussian_kde(fit_rows.T, bw_method=bw_factor)
    return kde.logpdf(query.T)


def _subsampled_log_density(ref: np.ndarray, query: np.ndarray, size: int, rng: np.random.Generator,
                            repeats: int = REFERENCE_REPEATS) -> np.ndarray:
    if size >= len(ref):
        return _log_density(ref, query)
    return np.mean([_log_density(ref[rng.choice(len(ref), size, replace=False)], query) for _ in range(repeats)], 0)


def _check_reference_size(n: int, n_comp: int) -> None:
    if n <= n_comp + 1:
        raise SynthleakError(f"domias: {n} reference images cannot support a density in {n_comp} dimensions "
                             f"(use --set pca=N with N < {max(n - 1, 1)}, or the all-reals reference)")


@dataclass(frozen=True)
class DomiasOptions(Options):
    pca: int = option(20, "PCA dimensions of the kernel density estimates")
    domias_reference: str = option("all-reals", "the reference density's images (see REFERENCES)")


@dataclass(frozen=True)
class NearestLocalOptions(Options):
    k_local: int = option(50, "the synthetic neighbour whose distance sets the local scale")


@dataclass(frozen=True)
class DensityRatioOptions(Options):
    k_real: int = option(20, "the reals' neighbour whose distance sets the real density scale")
    k: int = option(1, "the synthetic neighbour whose distance sets the synthetic density")


def run_domias(data: AuditData, cfg: MethodConfig) -> MethodResult:
    syn, lab, test, _, record = embed(data, cfg)
    opts = DomiasOptions.read(cfg.options)
    n_comp, reference = opts.pca, opts.domias_reference
    if reference not in REFERENCES:
        raise SynthleakError(f"--set domias_reference={reference}: choose from {', '.join(REFERENCES)}")
    n_comp = int(min(n_comp, syn.shape[1], len(syn) - 1))
    pca = PCA(n_comp, random_state=cfg.seed).fit(_pca_fit_rows(syn, cfg.seed))
    ps = _project(pca, syn)
    pl = pca.transform(lab) if lab is not None else None
    pt = pca.transform(test) if test is not None else None
    reals = np.concatenate([a for a in (pl, pt) if a is not None])
    if len(reals) <= n_comp + 1:
        raise SynthleakError(f"domias needs more than {n_comp + 1} real images for its reference density")
    result = MethodResult(test_scores=None, trained_on=record, real_features=real_rows(lab, test))
    if reference == "non-members":
        if not data.has_labelled:
            raise SynthleakError("--set domias_reference=non-members needs labelled real_not_used/ images")
        y = data.labelled()[1]
        ref = pl[y == 0]
        # labelled rows are cross-fitted: each fold's reference density uses the other folds' non-members,
        # subsampled to one common size (KDE values and bandwidths depend on the number of points)
        folds = labelled_folds(data, cfg)
        size = fold_reference_size(y, folds, (0,))
        _check_reference_size(size, n_comp)
        ref_lab = np.empty(len(pl))
        for i, (train, val) in enumerate(folds):
            rng = np.random.default_rng([cfg.seed, i])
            ref_lab[val] = _subsampled_log_density(pl[train][y[train] == 0], pl[val], size, rng)
        ref_test = (_subsampled_log_density(ref, pt, size, np.random.default_rng([cfg.seed, len(folds)]))
                    if pt is not None else None)
        result.notes.append(f"reference density: random subsets of {size} of the {len(ref)} labelled "
                            "non-members (the other folds' for labelled rows)")
    else:
        # every real image, unlabelled: the population density; labels are never read
        factor = gaussian_kde(reals.T).factor
        n_lab = len(pl) if pl is not None else 0
        ref_all = np.array([_log_density(np.delete(reals, i, axis=0), reals[i:i + 1], factor)[0]
                            for i in range(len(reals))])
        ref_lab, ref_test = ref_all[:n_lab], ref_all[n_lab:]
        result.notes.append(f"reference density: all {len(reals)} real images, labels unused (leave-one-out)")
    syn_kde = gaussian_kde(ps.T)
    if pl is not None:
        result.labelled_scores = syn_kde.logpdf(pl.T) - ref_lab
    if pt is not None:
        result.test_scores = syn_kde.logpdf(pt.T) - ref_test
    result.notes.append(f"Gaussian KDEs in a {n_comp}-d PCA space of '{cfg.feature_space}' features"
                        + (f" (PCA fitted on a seeded subsample of {PCA_FIT_ROWS} synthetic images)"
                           if len(syn) > PCA_FIT_ROWS else ""))
    return result


def run_nearest_local(data: AuditData, cfg: MethodConfig) -> MethodResult:
    syn, lab, test, _, record = embed(data, cfg)
    k = NearestLocalOptions.read(cfg.options).k_local
    if k < 2:
        raise SynthleakError("--set k_local=N: N must be at least 2")
    index = NeighbourIndex(syn)
    result = MethodResult(test_scores=None, trained_on=record, real_features=real_rows(lab, test))

    def score(x: np.ndarray) -> np.ndarray:
        d, _ = index.search(x, k)
        return -d[:, 0] / np.maximum(d[:, -1], 1e-12)

    if lab is not None:
        result.labelled_scores = score(lab)
    if test is not None:
        result.test_scores = score(test)
        result.neighbours = index.search(test, 3)[1]
    result.notes.append(f"distance to the nearest synthetic image / distance to the {k}-th nearest")
    return result


def density_ratio_ranks(k_real: int, n_reals: int) -> tuple[int, int]:
    """(low, high): the neighbour ranks among the reals whose log distances set the reference scale."""
    # the real reference scale averages log distances over ranks k_real/2 .. 3k_real/2: one rank
    # alone swings when a patient contributes about that many neighbouring slices
    low, high = max(1, k_real // 2), k_real + k_real // 2
    if n_reals <= high:
        # few reals: the reference ranks shrink with the pool, keeping their share of it
        high = n_reals - 1
        low = max(1, min(low, high // 2))
    return low, high


def density_ratio_scores(syn: np.ndarray, reals: np.ndarray, k_real: int = 20, k_syn: int = 1,
                         real_distances: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
    """(scores, indices of each real's 3 nearest synthetic images, reference ranks (low, high), distance
    to the nearest synthetic image) of the k-NN density ratio for every row of `reals` (every other real
    is the reference, labels unused). `real_distances`: a reals-on-reals search the caller already ran
    (sorted, the image itself first, at least density_ratio_ranks(...)[1] + 1 columns), reused."""
    if k_real < 2 or k_syn < 1:
        raise SynthleakError("--set k_real=N needs N >= 2 and --set k=N needs N >= 1")
    if len(reals) < 3:
        raise SynthleakError(f"density-ratio needs at least 3 real images (labelled + test), got {len(reals)}")
    low, high = density_ratio_ranks(k_real, len(reals))
    d_syn, idx_syn = NeighbourIndex(syn).search(reals, max(k_syn, 3))
    if real_distances is None:
        real_distances, _ = NeighbourIndex(reals).search(reals, high + 1)  # the first is the image itself
    d_real = real_distances[:, :high + 1]
    # a floor keeps exact copies (distance 0) finite: far below any real spacing, so they rank first
    floor = 1e-6 * max(float(np.median(d_real[:, -1])), 1e-12)
    log_real = np.log(np.maximum(d_real[:, low:high + 1], floor)).mean(1)
    scores = log_real - np.log(np.maximum(d_syn[:, :k_syn].mean(1), floor))
    return scores, idx_syn[:, :3], (low, high), d_syn[:, 0]


def run_density_ratio(data: AuditData, cfg: MethodConfig) -> MethodResult:
    syn, lab, test, _, record = embed(data, cfg)
    reals = np.concatenate([a for a in (lab, test) if a is not None])
    opts = DensityRatioOptions.read(cfg.options)
    scores, idx_syn, (low, high), _ = density_ratio_scores(syn, reals, opts.k_real, opts.k)
    n_lab = len(lab) if lab is not None else 0
    result = MethodResult(test_scores=None, trained_on=record, real_features=reals)
    if lab is not None:
        result.labelled_scores = scores[:n_lab]
    if test is not None:
        result.test_scores = scores[n_lab:]
        result.neighbours = idx_syn[n_lab:, :3]
    result.notes.append(f"mean log distance to the {low}th..{high}th nearest of {len(reals) - 1} other real images "
                        f"(labels unused) minus log distance to the nearest of {len(syn)} synthetic images, in "
                        f"'{cfg.feature_space}' space")
    return result
