"""Difficulty calibration: membership beyond "this kind of image is easy for the generator".

A raw attack score mixes membership with difficulty: some anatomy, slice levels or acquisitions are
simply well covered by the generator (every real image of that kind, member or not, lies close to
some synthetic image) and others badly. Watson et al. (ICLR 2022, "On the importance of difficulty
calibration in membership inference attacks") calibrate each example's score by a reference for
that example; LiRA (Carlini et al., 2022) does the same with shadow models. Here the reference
comes from the audit's own unlabelled real images: each real image's score is compared with the
scores of real images *like it* (near it in the method's feature space), so what remains is "closer
to the generator than images of its kind", and scores of different populations (other patients,
scanners, windows) live on one scale, which is what lets a threshold chosen on the labelled reals
transfer to the test reals.

Labels never enter: the functions here take scores and features only (the labelled and the test
reals pooled), which is what makes the transductive use of `real_unknown` images legitimate and the
calibrated scores valid for a permutation test on the labels.

Modes
- `neighbours`: reference = mean score of the k nearest other real images (Euclidean, features as
  the method uses them). k is large (default 100) on purpose: the few nearest images are often
  slices of the same patient, who shares the image's membership; a reference made of them would
  subtract the very signal we look for, while 100 neighbours span many patients.
- `clusters`: reference = leave-one-out mean score of the image's k-means cluster (PCA of the
  features, about one cluster per `cluster_size` reals): the coarser, piecewise-constant version.
- `non-members`: reference = mean score of the nearest *labelled non-members* (Watson et al.'s
  reference in its purest form: images known to be outside the training set). It reads labels, so
  labelled rows are cross-fitted (each fold against the other folds' non-members, as
  `nearest-calibrated` does) and its scores are not label-free: the verdict never uses them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attacks.knn import IndexFactory, NeighbourIndex
from .errors import SynthleakError

CALIBRATIONS = ("none", "neighbours", "clusters", "non-members")
#: modes that read no label (their scores stay valid for a relabelling test)
LABEL_FREE = ("none", "neighbours", "clusters")


@dataclass(frozen=True)
class Calibration:
    """How to calibrate: mode in CALIBRATIONS; k neighbours; reals per cluster (clusters mode)."""

    mode: str = "none"
    k: int = 100
    cluster_size: int = 100

    def __post_init__(self) -> None:
        if self.mode not in CALIBRATIONS:
            raise SynthleakError(f"--calibrate {self.mode}: choose from {', '.join(CALIBRATIONS)}")
        if self.k < 2:
            raise SynthleakError(f"--calibrate-k {self.k}: needs at least 2 neighbours")
        if self.cluster_size < 2:
            raise SynthleakError(f"calibration cluster size {self.cluster_size}: needs at least 2")

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def describe(self) -> str:
        if self.mode == "neighbours":
            return f"minus the mean score of its {self.k} nearest real images (labels unused)"
        if self.mode == "clusters":
            return f"minus the mean score of its cluster of real images (about {self.cluster_size} per cluster)"
        if self.mode == "non-members":
            return "minus the mean score of its nearest labelled non-members (other folds' for labelled reals)"
        return "none"

    def apply(self, scores: np.ndarray, features: np.ndarray, seed: int = 0, index: IndexFactory = NeighbourIndex
              ) -> np.ndarray:
        """Calibrated scores for every real image (labelled and test pooled, labels unused)."""
        scores = np.asarray(scores, dtype=np.float64)
        features = np.asarray(features, dtype=np.float32)
        if len(scores) != len(features):
            raise ValueError("calibration needs one feature row per score")
        if self.mode == "none":
            return scores
        if self.mode == "non-members":
            raise ValueError("non-members calibration reads labels: use apply_with_labels()")
        if len(scores) < 3:
            raise SynthleakError(f"difficulty calibration needs at least 3 real images, got {len(scores)}")
        if self.mode == "neighbours":
            return scores - neighbour_reference(scores, features, self.k, index)
        return scores - cluster_reference(scores, features, self.cluster_size, seed)


    def apply_with_labels(self, scores: np.ndarray, features: np.ndarray, y: np.ndarray, folds,
                          index: IndexFactory = NeighbourIndex) -> np.ndarray:
        """`non-members` mode: scores of the labelled rows (first len(y)) then the test rows.

        Labelled rows are compared with the other folds' non-members only; test rows with all of
        them. k is capped at half the smallest reference, so every row averages as many neighbours.
        """
        scores = np.asarray(scores, dtype=np.float64)
        features = np.asarray(features, dtype=np.float32)
        n_lab = len(y)
        pools = [train[y[train] == 0] for train, _ in folds] + [np.flatnonzero(y == 0)]
        k = int(min(self.k, min(len(pool) for pool in pools) // 2))
        if k < 1:
            raise SynthleakError("non-members calibration needs at least 2 labelled non-members in every fold")
        out = scores.copy()
        targets = [val for _, val in folds] + [np.arange(n_lab, len(scores))]
        for pool, rows in zip(pools, targets):
            if len(rows) == 0:
                continue
            _, idx = index(features[pool]).search(features[rows], k)
            out[rows] = scores[rows] - scores[pool][idx].mean(1)
        return out


def neighbour_reference(scores: np.ndarray, features: np.ndarray, k: int, index: IndexFactory = NeighbourIndex
                        ) -> np.ndarray:
    """Mean score of each row's k nearest other rows (itself excluded, k capped at n - 1)."""
    return scores[neighbour_rows(features, k, index=index)].mean(1)


def neighbour_rows(features: np.ndarray, k: int, idx: np.ndarray | None = None, index: IndexFactory = NeighbourIndex
                   ) -> np.ndarray:
    """[n, min(k, n - 1)]: each row's nearest other rows (one search serves every score calibrated on them).
    `idx`: the rows of a features-on-features search the caller already ran, with at least k + 1 columns."""
    k = min(k, len(features) - 1)
    if idx is None:
        _, idx = index(features).search(features, k + 1)
    idx = idx[:, :k + 1]
    # drop the row itself wherever it appears (exact duplicates may come first in either order)
    own = idx == np.arange(len(features))[:, None]
    keep = ~own
    keep[~own.any(1), -1] = False  # rows whose own index did not come back drop their farthest instead
    return idx[keep].reshape(len(features), k)


def cluster_reference(scores: np.ndarray, features: np.ndarray, cluster_size: int, seed: int) -> np.ndarray:
    """Leave-one-out mean score of each row's k-means cluster (PCA to at most 20 dimensions first)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = len(scores)
    n_clusters = int(np.clip(round(n / cluster_size), 1, n // 2))
    if n_clusters == 1:
        labels = np.zeros(n, int)
    else:
        dims = int(min(20, features.shape[1], n - 1))
        reduced = PCA(dims, random_state=seed).fit_transform(features) if dims < features.shape[1] else features
        labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(reduced)
    sums = np.bincount(labels, weights=scores)
    counts = np.bincount(labels)
    # a singleton cluster has no other member: its reference is the global mean
    loo = np.where(counts[labels] > 1, (sums[labels] - scores) / np.maximum(counts[labels] - 1, 1), scores.mean())
    return loo
