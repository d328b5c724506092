"""Paper method 2: autoencoder features of the real images, clustered into "used" / "not used".

Recipe (`seed-ae-kmeans`, `seed-ae-gmm`, `seed-ae-spectral`)
1. Features: encoder of the residual conv autoencoder trained on the generated images
   (`conv-res-ae`; `--encoder FILE` starts it from `synthleak pretrain --arch conv-res`;
   `--set features=NAME` picks another feature space).
2. All reals to classify (labelled + real_unknown) are standardised (z-score over those reals) and
   optionally PCA-reduced (`--set pca=N`). Both steps ignore labels, as does the clustering.
3. Clustering into k = `--clusters` clusters (seeded): KMeans, a Gaussian mixture
   (`--set gmm_cov=diag|full|spherical|tied`) or spectral clustering on an RBF kernel with the
   median-distance bandwidth (`--set affinity=rbf|nn`, `--set n_neighbors=N`). The clustering is
   unsupervised, so it is fit once on all reals.
4. Cluster -> label mapping. Each cluster gets a value:
   - with labelled reals: its used-share among the labelled reals it holds, smoothed with one
     pseudo-image at the overall used rate, (used_c + p) / (n_c + 1), so a cluster holding few or no
     labelled reals falls back toward the base rate p;
   - without labelled reals: minus the distance from the cluster's centroid to the centroid of the
     synthetic images' features (same scaling / PCA): the cluster nearer the synthetic data is "used".
   For k = 2 the cluster with the higher value is "used" (u, the other v) and the score is a signed
   affinity, higher = more used: KMeans d_v - d_u (distances to the centres); GMM the log posterior
   odds log P(u|x) - log P(v|x) (a monotone transform of the posterior of the used component that
   does not saturate at 0 / 1); Spectral log(a_u / a_v), with a_c the mean kernel affinity of the
   image to the other members of cluster c. For k > 2 the score is sum_c m_c(x) * value_c with soft
   memberships m (GMM posterior, normalised spectral affinities, KMeans isotropic-Gaussian
   responsibilities), i.e. each cluster's used-share is its score, softened by membership.
5. Honesty: the mapping reads labels, so the labelled reals' scores are out-of-fold — for each CV
   fold (the audit's folds) the mapping is decided from the other folds' labels only. Test scores use
   the mapping from all labelled reals.

The other two algorithms are computed on the same features and reported as variants (cheap next to
the feature model); `--set variants=0` skips them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import logsumexp, softmax

from ..config import MethodConfig
from ..errors import SynthleakError
from ..options import Options, option
from ..features.embedding import Embedding
from .base import Reference, Scores, ScoringMethod
from .context import AuditContext

ALGORITHMS = ("kmeans", "gmm", "spectral")
DEFAULT_FEATURES = "conv-res-ae"


@dataclass
class Clustering:
    """Hard assignment [n], log-affinity [n, k] (higher = closer) and soft memberships [n, k] (rows sum to 1)."""

    assign: np.ndarray
    affinity: np.ndarray
    membership: np.ndarray

    @property
    def k(self) -> int:
        return self.affinity.shape[1]


# ----------------------------------------------------------------------------- mapping rule



@dataclass(frozen=True)
class ClusterOptions(Options):
    clusters: int = option(2, "clusters k (--clusters)")
    features: str = option(DEFAULT_FEATURES, "feature space clustered (a --feature-space name)")
    pca: int = option(0, "PCA dimensions after standardising (0 = off)")
    gmm_cov: str = option("diag", "covariance of the Gaussian mixture (diag, full, spherical, tied)")
    gmm_init: int = option(3, "initialisations of the Gaussian mixture")
    affinity: str = option("rbf", "spectral clustering's affinity: rbf (median heuristic) or nn")
    n_neighbors: int = option(10, "neighbours of the nn affinity")
    variants: int = option(1, "1: report the other clustering algorithms beside the main one")


def used_shares(assign: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Smoothed used-share of each cluster among labelled reals: (used_c + p) / (n_c + 1), p = mean(y)."""
    y = np.asarray(y, int)
    prior = float(y.mean()) if len(y) else 0.5
    used = np.bincount(assign[y == 1], minlength=k).astype(float)
    total = np.bincount(assign, minlength=k).astype(float)
    return (used + prior) / (total + 1.0)


def synthetic_proximity(x_reals: np.ndarray, assign: np.ndarray, x_synthetic: np.ndarray, k: int) -> np.ndarray:
    """Minus the distance of each cluster's centroid to the synthetic centroid (no-labels rule)."""
    target = x_synthetic.mean(0)
    values = np.full(k, -np.inf)
    for c in range(k):
        members = x_reals[assign == c]
        if len(members):
            values[c] = -float(np.linalg.norm(members.mean(0) - target))
    return values


def cluster_scores(cl: Clustering, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Membership scores of the given rows from per-cluster values (see the module docstring)."""
    if cl.k == 2:
        used = int(np.argmax(values))  # ties: the lower cluster index
        other = 1 - used
        return cl.affinity[rows, used] - cl.affinity[rows, other]
    finite = np.where(np.isfinite(values), values, np.nanmin(values[np.isfinite(values)]))
    return cl.membership[rows] @ finite


# ----------------------------------------------------------------------------- algorithms


def _kmeans(x: np.ndarray, k: int, cfg: MethodConfig) -> Clustering:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=cfg.seed).fit(x)
    dist = km.transform(x)
    # responsibilities of an isotropic Gaussian per centre, bandwidth = mean squared distance to own centre
    tau = max(float(np.mean(dist.min(1) ** 2)), 1e-12)
    return Clustering(km.labels_.astype(int), -dist, softmax(-(dist ** 2) / tau, axis=1))


def _gmm(x: np.ndarray, k: int, cfg: MethodConfig) -> Clustering:
    from sklearn.mixture import GaussianMixture

    opts = ClusterOptions.read(cfg.options)
    cov = opts.gmm_cov  # (checked with the other settings before any training: _check_options)
    gm = GaussianMixture(n_components=k, covariance_type=cov, n_init=opts.gmm_init,
                         reg_covar=1e-3, random_state=cfg.seed).fit(x)
    log_joint = np.log(gm.weights_)[None, :] + _component_log_density(gm, x)
    membership = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    return Clustering(log_joint.argmax(1).astype(int), log_joint, membership)


def _component_log_density(gm, x: np.ndarray) -> np.ndarray:
    """log N(x | mean_c, cov_c) for every component, from the fitted (public) parameters."""
    from scipy.stats import multivariate_normal

    k, d = gm.means_.shape
    out = np.empty((len(x), k))
    for c in range(k):
        if gm.covariance_type == "full":
            cov = gm.covariances_[c]
        elif gm.covariance_type == "tied":
            cov = gm.covariances_
        elif gm.covariance_type == "diag":
            cov = np.diag(gm.covariances_[c])
        else:
            cov = np.eye(d) * gm.covariances_[c]
        out[:, c] = multivariate_normal(gm.means_[c], cov, allow_singular=True).logpdf(x)
    return out


def rbf_kernel_median(x: np.ndarray) -> np.ndarray:
    """exp(-d^2 / median(d^2)) over all pairs (the median heuristic keeps it scale-free)."""
    from sklearn.metrics import pairwise_distances

    d2 = pairwise_distances(x, metric="sqeuclidean")
    off = d2[~np.eye(len(x), dtype=bool)]
    gamma = 1.0 / max(float(np.median(off)), 1e-12)
    return np.exp(-gamma * d2)


def _spectral(x: np.ndarray, k: int, cfg: MethodConfig) -> Clustering:
    from sklearn.cluster import SpectralClustering

    kernel = rbf_kernel_median(x)
    opts = ClusterOptions.read(cfg.options)
    affinity = opts.affinity
    if affinity == "rbf":
        sc = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=cfg.seed).fit(kernel)
    else:  # "nn" (the settings were checked before any training: _check_options)
        sc = SpectralClustering(n_clusters=k, affinity="nearest_neighbors", random_state=cfg.seed,
                                n_neighbors=min(opts.n_neighbors, len(x) - 1)).fit(x)
    assign = sc.labels_.astype(int)
    # mean kernel affinity of each image to the *other* members of each cluster
    onehot = np.eye(k)[assign]
    sums = kernel @ onehot - onehot * np.diag(kernel)[:, None]
    counts = onehot.sum(0)[None, :] - onehot
    mean_aff = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    log_aff = np.log(np.maximum(mean_aff, 1e-300))
    membership = mean_aff / np.maximum(mean_aff.sum(1, keepdims=True), 1e-300)
    return Clustering(assign, log_aff, membership)


CLUSTERERS = {"kmeans": _kmeans, "gmm": _gmm, "spectral": _spectral}


# ----------------------------------------------------------------------------- features


def _standardise_and_reduce(reals: np.ndarray, synthetic: np.ndarray | None, cfg: MethodConfig):
    """Z-score (and PCA when asked) fitted on the reals only; the synthetic set is mapped alike."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(reals)
    x = scaler.transform(reals)
    s = scaler.transform(synthetic) if synthetic is not None else None
    n_pca = ClusterOptions.read(cfg.options).pca
    if n_pca:
        pca = PCA(n_components=min(n_pca, *x.shape), random_state=cfg.seed).fit(x)
        x = pca.transform(x)
        s = pca.transform(s) if s is not None else None
    return x, s


def _check_options(opts: ClusterOptions, n_reals: int, algorithms: list[str]) -> None:
    """The settings of the clusterings that will run, checked before any feature model trains."""
    if opts.clusters < 2 or opts.clusters > n_reals:
        raise SynthleakError(f"--clusters {opts.clusters}: must be between 2 and the number of real images ({n_reals})")
    if opts.pca < 0:
        raise SynthleakError("--set pca=N: N must be 0 (off) or positive")
    if "gmm" in algorithms and opts.gmm_cov not in ("diag", "full", "spherical", "tied"):
        raise SynthleakError(f"--set gmm_cov={opts.gmm_cov}: expected diag, full, spherical or tied")
    if "spectral" in algorithms and opts.affinity not in ("rbf", "nn"):
        raise SynthleakError(f"--set affinity={opts.affinity}: expected rbf or nn")


def clustered_space_options(cfg: MethodConfig) -> list:
    """The option classes of the feature space that is clustered (--set features=SPACE)."""
    from ..features import feature_space_options

    return feature_space_options(ClusterOptions.read(cfg.options).features)


# ----------------------------------------------------------------------------- method


def _describe(name: str, cl: Clustering, values: np.ndarray, labelled: bool) -> str:
    sizes = np.bincount(cl.assign, minlength=cl.k).tolist()
    what = "smoothed labelled used-share" if labelled else "minus distance to the synthetic centroid"
    vals = ", ".join(f"{v:.3g}" for v in values)
    used = f"; 'used' = cluster {int(np.argmax(values))}" if cl.k == 2 else ""
    return f"{name}: cluster sizes {sizes}; {what} per cluster [{vals}]{used}"


class SeedAEClustering(ScoringMethod):
    """Paper method 2: cluster the reals in an encoder's feature space, map clusters to used / not used.

    The clustering learns no label, so `prepare` fits it once on every real; `fit` learns only the cluster ->
    label mapping (from a fold's labelled reals, or without labels from the synthetic centroid) and `score` reads
    each real's cluster affinities through it."""

    Settings = ClusterOptions
    algorithm = "kmeans"
    reports_features = False
    uses_labels_when_given = True

    def prepare(self, audit: AuditContext) -> Embedding:
        data, opts = audit.data, self.settings
        if data.real_unknown is None and not data.has_labelled:
            raise SynthleakError("clustering needs real images to classify (real_unknown/ or labelled reals)")
        names = [self.algorithm] + ([a for a in ALGORITHMS if a != self.algorithm] if opts.variants else [])
        _check_options(opts, (len(data.labelled()[1]) if data.has_labelled else 0)
                       + (len(data.real_unknown) if data.real_unknown is not None else 0), names)
        self.has_labelled = data.has_labelled
        emb = audit.embedding(replace(self.cfg, feature_space=opts.features), need_synthetic=not data.has_labelled)
        reals = emb.reals.astype(np.float64)
        k = opts.clusters
        x, s = _standardise_and_reduce(reals, None if emb.synthetic is None else emb.synthetic.astype(np.float64),
                                       self.cfg)
        self.clusterings = {name: CLUSTERERS[name](x, k, self.cfg) for name in names}
        self.space, self.x, self.s = opts.features, x, s
        n_lab = emb.n_labelled
        return Embedding(f"{opts.features} (standardised)", None, x[:n_lab] if n_lab else None,
                         x[n_lab:] if len(x) > n_lab else None, dict(emb.trained_on))

    def fit(self, reference: Reference) -> "SeedAEClustering":
        if reference.labelled is None:
            self.values = {name: synthetic_proximity(self.x, cl.assign, self.s, cl.k)
                           for name, cl in self.clusterings.items()}
        else:
            self.values = {name: used_shares(cl.assign[reference.labelled_rows], reference.y, cl.k)
                           for name, cl in self.clusterings.items()}
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        signals = {name: cluster_scores(cl, positions, self.values[name]) for name, cl in self.clusterings.items()}
        return Scores(signals.pop(self.algorithm), variants=signals)

    def notes(self, embedding: Embedding) -> list[str]:
        return [_describe(name, cl, self.values[name], self.has_labelled) for name, cl in self.clusterings.items()]

    def trained_on(self, embedding: Embedding) -> dict:
        k = self.settings.clusters
        return {**super().trained_on(embedding),
                "clustering": (f"{len(self.x)} reals (labelled + real_unknown) without labels, "
                               f"'{self.space}' features, {self.x.shape[1]} dims, k={k}"),
                "cluster->label mapping": ("labelled reals (out-of-fold for labelled scores)" if self.has_labelled
                                           else "no labels: cluster nearest the synthetic centroid = used")}


class SeedAEKMeans(SeedAEClustering):
    algorithm = "kmeans"


class SeedAEGMM(SeedAEClustering):
    algorithm = "gmm"


class SeedAESpectral(SeedAEClustering):
    algorithm = "spectral"
