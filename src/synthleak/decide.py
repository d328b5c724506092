"""Turning continuous scores into 0/1 decisions, and the cross-validation folds used everywhere.

Thresholds are chosen on labelled reals only: to maximise Cohen's kappa (default) or F1, at a target
false-positive rate, or at an expected member rate. `cv_decisions` estimates how good the decision
will be on unseen images by choosing the threshold on k-1 folds and applying it to the held-out one.

Rules that transfer to test reals unlike the labelled ones (other patients, another scanner):
- `quantile` carries the *rank* of the labelled threshold rather than its value: the share q of
  labelled scores below the kappa-best threshold becomes the test threshold at the q-quantile of
  the test scores (robust to any monotone shift of the test scores; assumes a similar member rate).
- `mixture` estimates the test member rate from the test scores themselves (a two-component
  Gaussian mixture; the upper component is "used") and flags that share; when the mixture does not
  separate, it falls back to the labelled member rate.
- `tail` is precision-first: flag only scores above every labelled non-member's score (a conformal
  bound: a new non-member exceeds them all with probability at most 1 / (n0 + 1)).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .metrics import confusion_counts, f1_from_counts, kappa_from_counts

OBJECTIVES = ("kappa", "f1")
MODES = (*OBJECTIVES, "fpr", "rate", "quantile", "mixture", "tail")
#: placeholder mode: each method's own rule (MethodSpec.decision), resolved by the audit
AUTO = "auto"
#: Ashman's D below which two mixture components are "not separated" (2 = a dip between them)
MIXTURE_MIN_SEPARATION = 2.0


def cv_folds(y: np.ndarray, groups: np.ndarray | None = None, n_splits: int = 5, seed: int = 0):
    """Stratified (and group-aware when groups are given) folds: list of (train_idx, val_idx)."""
    y = np.asarray(y)
    n_splits = int(max(2, min(n_splits, np.bincount(y, minlength=2).min())))
    if groups is not None:
        n_groups = len(np.unique(groups))
        n_splits = max(2, min(n_splits, n_groups))
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _candidates(scores: np.ndarray) -> np.ndarray:
    u = np.unique(scores)
    if len(u) == 1:
        return u
    mids = (u[:-1] + u[1:]) / 2
    return np.r_[u[0] - 1e-12, mids, u[-1] + 1e-12]


def best_threshold(scores: np.ndarray, y: np.ndarray, objective: str = "kappa") -> float:
    """Threshold t (predict 1 when score >= t) maximising kappa or F1 on these labelled scores."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}")
    scores, y = np.asarray(scores, float), np.asarray(y, int)
    cands = _candidates(scores)
    if len(cands) > 512:  # quantile grid keeps this O(n) per candidate set on large label sets
        cands = np.unique(np.quantile(scores, np.linspace(0, 1, 513)))
    # every candidate at once from confusion counts (metrics.py), then the same first-best rule as a loop
    tp, fp, fn, tn = confusion_counts(y, scores[None, :] >= cands[:, None])
    values = kappa_from_counts(tp, fp, fn, tn) if objective == "kappa" else f1_from_counts(tp, fp, fn)
    best_t, best_v = float(np.median(scores)), -np.inf
    for t, v in zip(cands, values):
        if v > best_v + 1e-12:
            best_t, best_v = float(t), float(v)
    return best_t


def threshold_at_fpr(scores: np.ndarray, y: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold whose FPR on the labelled non-members is at most target_fpr."""
    neg = np.sort(np.asarray(scores, float)[np.asarray(y) == 0])
    if len(neg) == 0:
        raise ValueError("no labelled non-members to set an FPR threshold")
    k = int(np.floor(target_fpr * len(neg) + 1e-9))  # negatives allowed at or above the threshold
    if k >= len(neg):
        return float(neg[0])
    # just above the (k+1)-th highest negative: ties with it stay below, so at most k negatives are flagged
    return float(np.nextafter(neg[len(neg) - k - 1], np.inf))


def threshold_at_rate(scores: np.ndarray, member_rate: float) -> float:
    """Threshold flagging the top `member_rate` share of these scores as members."""
    if not 0 < member_rate < 1:
        raise ValueError("member rate must be in (0, 1)")
    return float(np.quantile(np.asarray(scores, float), 1 - member_rate))


def quantile_threshold(scores: np.ndarray, y: np.ndarray, unlabelled: np.ndarray) -> float:
    """The kappa-best labelled threshold carried to the unlabelled scores by its quantile."""
    scores = np.asarray(scores, float)
    t = best_threshold(scores, y, "kappa")
    below = float((scores < t).mean())
    if below <= 0.0:
        return float(np.min(unlabelled)) - 1e-12
    if below >= 1.0:
        return float(np.nextafter(np.max(unlabelled), np.inf))
    return float(np.quantile(np.asarray(unlabelled, float), below))


def two_gaussians(x: np.ndarray, seed: int = 0):
    """A two-component Gaussian mixture of the 1-D values `x` [n, 1], and Ashman's D of its components
    (about 2 or more: two groups with a dip between them)."""
    from sklearn.mixture import GaussianMixture

    two = GaussianMixture(2, random_state=seed, n_init=3).fit(x)
    means, variances = two.means_.ravel(), two.covariances_.ravel()
    return two, float(np.sqrt(2) * abs(means[1] - means[0]) / np.sqrt(variances.sum()))


def mixture_member_rate(scores: np.ndarray, fallback: float, seed: int = 0) -> tuple[float, bool]:
    """Share of the upper component of a 1-D two-component Gaussian mixture of `scores`.

    Returns (rate, separated). The mixture counts as a second population only when two components
    explain the scores better than one by BIC *and* are well apart (Ashman's D >= 2, i.e. a dip
    between them); otherwise, or when the rate is extreme, the fallback rate is returned with
    separated=False (a weak membership signal does not give a usable rate estimate).
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, float).reshape(-1, 1)
    if len(x) < 10 or np.ptp(x) == 0:
        return fallback, False
    one = GaussianMixture(1, random_state=seed).fit(x)
    two, ashman_d = two_gaussians(x, seed)
    rate = float(two.weights_[int(np.argmax(two.means_.ravel()))])
    separated = (two.bic(x) < one.bic(x) and ashman_d >= MIXTURE_MIN_SEPARATION and 0.05 <= rate <= 0.95)
    return (rate, True) if separated else (fallback, False)


def tail_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """Just above the highest labelled non-member score."""
    neg = np.asarray(scores, float)[np.asarray(y) == 0]
    if len(neg) == 0:
        raise ValueError("no labelled non-members to set a tail threshold")
    return float(np.nextafter(neg.max(), np.inf))


@dataclass
class DecisionRule:
    """How to binarise: mode in MODES (see the module docstring)."""

    mode: str = "kappa"
    target_fpr: float = 0.01
    member_rate: float = 0.5

    def __post_init__(self) -> None:
        from .errors import SynthleakError

        if self.mode not in (*MODES, AUTO):
            raise SynthleakError(f"--decision {self.mode}: choose from {', '.join(MODES)}")
        if not 0 <= self.target_fpr < 1:
            raise SynthleakError(f"--target-fpr {self.target_fpr:g}: must be at least 0 and below 1")
        if not 0 < self.member_rate < 1:
            raise SynthleakError(f"--member-rate {self.member_rate:g}: must be between 0 and 1 (exclusive)")

    def resolve(self, method_default: str) -> "DecisionRule":
        """This rule, or the method's own when the mode is 'auto'."""
        return replace(self, mode=method_default) if self.mode == AUTO else self

    def fit(self, scores: np.ndarray | None, y: np.ndarray | None, unlabelled: np.ndarray | None = None) -> float:
        if self.mode == AUTO:
            raise ValueError("resolve() an 'auto' decision rule before fitting it")
        if self.mode in OBJECTIVES:
            if scores is None or y is None:
                # Without labelled reals only the member-rate rule is possible.
                return threshold_at_rate(unlabelled, self.member_rate)
            return best_threshold(scores, y, self.mode)
        if self.mode == "fpr":
            if scores is None or y is None:
                raise ValueError("--decision fpr needs labelled reals")
            return threshold_at_fpr(scores, y, self.target_fpr)
        if self.mode == "rate":
            pool = unlabelled if unlabelled is not None else scores
            return threshold_at_rate(pool, self.member_rate)
        if self.mode == "tail":
            if scores is None or y is None:
                raise ValueError("--decision tail needs labelled reals")
            return tail_threshold(scores, y)
        pool = unlabelled if unlabelled is not None else scores
        if scores is None or y is None:
            # without labelled reals: the mixture still estimates a rate; the quantile rule cannot
            rate = mixture_member_rate(pool, self.member_rate)[0] if self.mode == "mixture" else self.member_rate
            return threshold_at_rate(pool, rate)
        if self.mode == "quantile":
            return quantile_threshold(scores, y, pool)
        if self.mode == "mixture":
            # the fallback is the labelled member rate, unless the labelled part holds one class only (a CV
            # fold of few patients): then the expected rate (--member-rate)
            labelled_rate = float(np.mean(y))
            rate, _ = mixture_member_rate(pool, labelled_rate if 0 < labelled_rate < 1 else self.member_rate)
            return threshold_at_rate(pool, rate)
        raise ValueError(f"unknown decision mode {self.mode!r}")

    def describe(self) -> str:
        if self.mode == AUTO:
            return "each method's own rule"
        if self.mode in OBJECTIVES:
            return f"threshold maximising {self.mode} on the labelled reals"
        if self.mode == "fpr":
            return f"threshold at {self.target_fpr:g} FPR on the labelled non-members"
        if self.mode == "quantile":
            return "the kappa-best labelled threshold carried to the test scores by its quantile"
        if self.mode == "mixture":
            return "member rate estimated from the test scores (two-component mixture), top share flagged"
        if self.mode == "tail":
            return "flag only scores above every labelled non-member's score (precision first)"
        return f"top {self.member_rate:.0%} of test scores flagged as members"


def cv_decisions(scores: np.ndarray, y: np.ndarray, rule: DecisionRule, folds) -> np.ndarray:
    """Out-of-fold 0/1 decisions: each fold's threshold is chosen on the other folds only."""
    scores, y = np.asarray(scores, float), np.asarray(y, int)
    pred = np.zeros(len(y), dtype=int)
    for train_idx, val_idx in folds:
        if rule.mode == "rate":
            t = threshold_at_rate(scores[train_idx], rule.member_rate)
        elif rule.mode in ("quantile", "mixture"):
            # these rules read the unlabelled scores they are applied to: here the held-out fold's
            t = rule.fit(scores[train_idx], y[train_idx], scores[val_idx])
        else:
            t = rule.fit(scores[train_idx], y[train_idx])
        pred[val_idx] = (scores[val_idx] >= t).astype(int)
    return pred
