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

from ..attacks.knn import IndexFactory, NeighbourIndex
from ..errors import SynthleakError
from ..features.embedding import Embedding
from ..options import Options, option
from .base import Reference, Scores, ScoringMethod
from .nearest import REFERENCE_REPEATS

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
    domias_reference: str = option("all-reals", "the reference density's images", choices=REFERENCES)


@dataclass(frozen=True)
class NearestLocalOptions(Options):
    k_local: int = option(50, "the synthetic neighbour whose distance sets the local scale", minimum=2)


@dataclass(frozen=True)
class DensityRatioOptions(Options):
    k_real: int = option(20, "the reals' neighbour whose distance sets the real density scale")
    k: int = option(1, "the synthetic neighbour whose distance sets the synthetic density")


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
                         real_distances: np.ndarray | None = None, index: IndexFactory = NeighbourIndex
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
    d_syn, idx_syn = index(syn).search(reals, max(k_syn, 3))
    if real_distances is None:
        real_distances, _ = index(reals).search(reals, high + 1)  # the first is the image itself
    d_real = real_distances[:, :high + 1]
    # a floor keeps exact copies (distance 0) finite: far below any real spacing, so they rank first
    floor = 1e-6 * max(float(np.median(d_real[:, -1])), 1e-12)
    log_real = np.log(np.maximum(d_real[:, low:high + 1], floor)).mean(1)
    scores = log_real - np.log(np.maximum(d_syn[:, :k_syn].mean(1), floor))
    return scores, idx_syn[:, :3], (low, high), d_syn[:, 0]


class DensityRatio(ScoringMethod):
    """k-NN DOMIAS: the reals' own spacing around x over the distance to the nearest synthetic image (labels unused).

    Transductive: the reference is every real image of the audit (x itself excluded), so it scores those."""

    Settings = DensityRatioOptions

    def fit(self, reference: Reference) -> "DensityRatio":
        opts = self.settings
        self.scores, self.neighbours, self.ranks, _ = density_ratio_scores(
            reference.synthetic, reference.reals, opts.k_real, opts.k, index=reference.index)
        self.n_reals, self.n_synthetic = len(reference.reals), len(reference.synthetic)
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        return Scores(self.scores[positions], self.neighbours[positions] if neighbours else None)

    def notes(self, embedding: Embedding) -> list[str]:
        low, high = self.ranks
        return [f"mean log distance to the {low}th..{high}th nearest of {self.n_reals - 1} other real images "
                f"(labels unused) minus log distance to the nearest of {self.n_synthetic} synthetic images, in "
                f"'{embedding.space}' space"]


class NearestLocal(ScoringMethod):
    """Distance to the nearest synthetic image over the distance to the k-th nearest (no reference data)."""

    Settings = NearestLocalOptions

    def fit(self, reference: Reference) -> "NearestLocal":
        self.index = reference.synthetic_index
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        d, _ = self.index.search(features, self.settings.k_local)
        return Scores(-d[:, 0] / np.maximum(d[:, -1], 1e-12),
                      self.index.search(features, 3)[1] if neighbours else None)

    def notes(self, embedding: Embedding) -> list[str]:
        return [f"distance to the nearest synthetic image / distance to the {self.settings.k_local}-th nearest"]


class Domias(ScoringMethod):
    """DOMIAS: log p_synthetic(x) - log p_reference(x), Gaussian KDEs in a PCA space of the synthetic images.

    The reference is every real image (leave-one-out, labels unused) or, with `--set domias_reference=non-members`,
    the labelled non-members (cross-fitted, subsampled to one size for every fit: KDE values and bandwidths
    depend on the number of points)."""

    Settings = DomiasOptions

    @property
    def reference_classes(self) -> tuple[int, ...]:
        return (0,) if self.settings.domias_reference == "non-members" else ()

    def labels_missing(self) -> str:
        return "--set domias_reference=non-members needs labelled real_not_used/ images"

    def fit(self, reference: Reference) -> "Domias":
        if getattr(self, "_synthetic", None) is not reference.synthetic:
            self._fit_synthetic(reference.synthetic, reference.reals, reference.n_labelled)
        if self.reference_classes:
            self.non_members = self.projected[reference.labelled_rows[reference.y == 0]]
            self.size = reference.reference_size
            _check_reference_size(self.size, self.n_comp)
            self.rng = np.random.default_rng([self.cfg.seed, reference.fold])
        return self

    def _fit_synthetic(self, syn: np.ndarray, reals: np.ndarray, n_labelled: int) -> None:
        """PCA and synthetic KDE (the same for every fold); without labels, the reals' leave-one-out density."""
        seed = self.cfg.seed
        self._synthetic = syn
        self.n_comp = int(min(self.settings.pca, syn.shape[1], len(syn) - 1))
        self.pca = PCA(self.n_comp, random_state=seed).fit(_pca_fit_rows(syn, seed))
        self.synthetic_kde = gaussian_kde(_project(self.pca, syn).T)
        self.n_synthetic = len(syn)
        # the labelled and the test reals projected apart, as before the method objects (the same rounding, so
        # the same scores to the last bit)
        projected = np.concatenate([self.pca.transform(part) for part in (reals[:n_labelled], reals[n_labelled:])
                                    if len(part)])
        self.projected = projected
        if len(projected) <= self.n_comp + 1:
            raise SynthleakError(f"domias needs more than {self.n_comp + 1} real images for its reference density")
        if not self.reference_classes:
            # every real image, unlabelled: the population density; labels are never read
            factor = gaussian_kde(projected.T).factor
            self.reference_log_density = np.array(
                [_log_density(np.delete(projected, i, axis=0), projected[i:i + 1], factor)[0]
                 for i in range(len(projected))])

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        projected = self.projected[positions]
        if self.reference_classes:
            reference = _subsampled_log_density(self.non_members, projected, self.size, self.rng)
        else:
            reference = self.reference_log_density[positions]
        return Scores(self.synthetic_kde.logpdf(projected.T) - reference)

    def notes(self, embedding: Embedding) -> list[str]:
        if self.reference_classes:
            first = (f"reference density: random subsets of {self.size} of the {len(self.non_members)} labelled "
                     "non-members (the other folds' for labelled rows)")
        else:
            first = (f"reference density: all {len(self.reference_log_density)} real images, labels unused "
                     "(leave-one-out)")
        return [first, f"Gaussian KDEs in a {self.n_comp}-d PCA space of '{embedding.space}' features"
                + (f" (PCA fitted on a seeded subsample of {PCA_FIT_ROWS} synthetic images)"
                   if self.n_synthetic > PCA_FIT_ROWS else "")]
