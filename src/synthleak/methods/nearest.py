"""Distance-based attacks: nearest synthetic neighbour (GAN-Leaks), calibrated, and the real-only control."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..attacks.knn import IndexFactory, NeighbourIndex
from ..features.embedding import Embedding
from ..options import Options, option
from .base import Reference, Scores, ScoringMethod, fold_reference_size

__all__ = ["Nearest", "NearestCalibrated", "ControlRealOnly", "NearestOptions", "fold_reference_size",
           "reference_distance"]


@dataclass(frozen=True)
class NearestOptions(Options):
    k: int = option(1, "score = minus the mean distance to the k nearest synthetic images", minimum=1)


#: random reference subsets averaged per score (see reference_distance)
REFERENCE_REPEATS = 10


def reference_distance(x: np.ndarray, ref: np.ndarray, size: int, k: int, rng: np.random.Generator,
                       repeats: int = REFERENCE_REPEATS, index: IndexFactory = NeighbourIndex) -> np.ndarray:
    """Mean k-NN distance from x to random `size`-row subsets of `ref` (all of `ref` when it is that small).

    Nearest-neighbour distances shrink as the reference grows, so every score must see a reference of
    the same size: otherwise a fold holding many images of one class (leaving few of that class in its
    training part) would push all its scores one way, and labelled and test scores would differ in scale.
    """
    if size >= len(ref):
        return index(ref).search(x, k)[0].mean(1)
    total = np.zeros(len(x))
    for _ in range(repeats):
        subset = ref[rng.choice(len(ref), size, replace=False)]
        total += index(subset).search(x, k)[0].mean(1)
    return total / repeats


class Nearest(ScoringMethod):
    """GAN-Leaks full black-box: minus the mean distance to the k nearest synthetic images."""

    Settings = NearestOptions

    def fit(self, reference: Reference) -> "Nearest":
        self.index = reference.synthetic_index
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        k = self.settings.k
        # (k columns unless neighbours are wanted: an approximate search tunes its probes to the k it is asked)
        d, idx = self.index.search(features, max(k, 3) if neighbours else k)
        return Scores(-d[:, :k].mean(1), idx[:, :3] if neighbours else None)

    def notes(self, embedding: Embedding) -> list[str]:
        return [f"distance to the nearest of {len(self.index.database)} synthetic images in '{embedding.space}' space"]


class NearestCalibrated(Nearest):
    """Score = d(x, real non-members) - d(x, synthetic): membership beyond mere typicality.

    The labelled non-members are both the reference set and scored rows, so labelled reals are
    cross-fitted: each fold is compared with the non-members of the other folds only.
    """

    @property
    def reference_classes(self) -> tuple[int, ...]:
        return (0,)

    def fit(self, reference: Reference) -> "NearestCalibrated":
        super().fit(reference)
        if getattr(self, "_searched", None) is not reference.synthetic_index:
            # every labelled real's synthetic distance in one search (the same for every fold's fit)
            labelled = reference.reals[:reference.n_labelled]
            self.labelled_nearest = -self.index.search(labelled, self.settings.k)[0].mean(1)
            self._searched = reference.synthetic_index
        self.final = reference.final
        self.non_members = reference.labelled[reference.y == 0]
        self.size, self.make_index = reference.reference_size, reference.index
        self.rng = np.random.default_rng([self.cfg.seed, 0, reference.fold])
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        k = self.settings.k
        nearest = (super().score(features, positions, neighbours) if self.final
                   else Scores(self.labelled_nearest[positions]))
        reference = reference_distance(features, self.non_members, self.size, k, self.rng, index=self.make_index)
        return Scores(nearest.values + reference, nearest.neighbours)

    def notes(self, embedding: Embedding) -> list[str]:
        return [f"reference: random subsets of {self.size} of the {len(self.non_members)} labelled real_not_used "
                "images (the other folds' for labelled rows)"]


class ControlRealOnly(ScoringMethod):
    """Never looks at a synthetic image: d(x, real_not_used) - d(x, real_used).

    A high AUC here means membership leaks through the labelled reals themselves (same patient or
    scanner in both splits), not through the generator.
    """

    Settings = NearestOptions
    needs_synthetic = False
    reports_features = False

    @property
    def reference_classes(self) -> tuple[int, ...]:
        return (0, 1)

    def fit(self, reference: Reference) -> "ControlRealOnly":
        self.used = reference.labelled[reference.y == 1]
        self.not_used = reference.labelled[reference.y == 0]
        self.size, self.make_index = reference.reference_size, reference.index
        seed = self.cfg.seed
        # one generator for both references of the test reals, one per class in a fold: the draws of the
        # scores pinned in tests/data/method_pins.json
        if reference.final:
            self.rngs = (np.random.default_rng([seed, 2, reference.fold]),) * 2
        else:
            self.rngs = tuple(np.random.default_rng([seed, c, reference.fold]) for c in (1, 0))
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        k = self.settings.k
        used = reference_distance(features, self.used, self.size, k, self.rngs[0], index=self.make_index)
        not_used = reference_distance(features, self.not_used, self.size, k, self.rngs[1], index=self.make_index)
        return Scores(not_used - used)

    def notes(self, embedding: Embedding) -> list[str]:
        return [f"control: labelled reals only, never synthetic images (references of {self.size} per class)"]
