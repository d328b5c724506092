"""Metrics the challenge and privacy research expect, with bootstrap confidence intervals.

Decision metrics (accuracy, precision, recall, F1, Cohen's kappa) need 0/1 predictions; ranking
metrics (ROC AUC, TPR at 1% and 0.1% FPR) need continuous scores. Ranking metrics come from
scikit-learn; the binary decision metrics are computed from the four confusion counts with
scikit-learn's formulas (tests/test_metrics_decide.py checks they agree), because the threshold search and the
bootstrap call them thousands of times per audit and scikit-learn's input validation dominated that.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc, roc_curve

DECISION_METRICS = ("accuracy", "precision", "recall", "f1", "kappa")
SCORE_METRICS = ("auc", "tpr@1%fpr", "tpr@0.1%fpr")


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target_fpr: float) -> float:
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def tpr_at_fpr(y: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """Highest TPR reachable with FPR <= target (no interpolation: an honest, conservative reading)."""
    fpr, tpr, _ = roc_curve(y, scores)
    return _tpr_at(fpr, tpr, target_fpr)


def confusion_counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) of 0/1 predictions; `pred` may be [n] or [candidates, n] (one row per threshold)."""
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp = (pred & y).sum(axis=-1)
    fp = (pred & ~y).sum(axis=-1)
    fn = y.sum() - tp
    tn = (~y).sum() - fp
    return tp, fp, fn, tn


def kappa_from_counts(tp, fp, fn, tn) -> np.ndarray:
    """Cohen's kappa as scikit-learn computes it (1 - observed / expected disagreement); 0 where it is
    undefined (labels and predictions one constant class)."""
    tp, fp, fn, tn = (np.asarray(a, float) for a in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    pred_neg, pred_pos, true_neg, true_pos = tn + fn, fp + tp, tn + fp, fn + tp
    expected = pred_neg * true_pos / n + pred_pos * true_neg / n
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = 1.0 - (fp + fn) / expected
    return np.where(expected > 0, kappa, 0.0)


def f1_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(a, float) for a in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0)


def decision_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = (int(c) for c in confusion_counts(y, pred))
    n = tp + fp + fn + tn
    return {
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": float(f1_from_counts(tp, fp, fn)),
        # kappa is undefined (0/0) when labels and predictions are one constant class: report 0 (chance)
        "kappa": float(kappa_from_counts(tp, fp, fn, tn)),
    }


def score_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    y, scores = np.asarray(y, int), np.asarray(scores, float)
    if len(np.unique(y)) < 2:
        return {m: float("nan") for m in SCORE_METRICS}
    fpr, tpr, _ = roc_curve(y, scores)  # one curve serves AUC and both low-FPR readings
    return {
        "auc": float(auc(fpr, tpr)),
        "tpr@1%fpr": _tpr_at(fpr, tpr, 0.01),
        "tpr@0.1%fpr": _tpr_at(fpr, tpr, 0.001),
    }


@dataclass
class Metric:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _resampler(y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator):
    """Stratified bootstrap of images, or of whole groups (patients) when groups are known.

    Slices of one patient are not independent: resampling them one by one gives intervals that are
    far too narrow, so with groups the unit of resampling is the patient.
    """
    if groups is None:
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        if len(pos) and len(neg):
            return lambda: np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        return lambda: rng.choice(len(y), len(y))
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    # strata: groups whose images are mostly used vs mostly not used
    used_share = np.array([y[m].mean() for m in members])
    strata = [np.flatnonzero(used_share >= 0.5), np.flatnonzero(used_share < 0.5)]
    strata = [s for s in strata if len(s)]

    def draw() -> np.ndarray:
        picked = np.concatenate([rng.choice(s, len(s)) for s in strata])
        return np.concatenate([members[g] for g in picked])

    return draw


def evaluate(y: np.ndarray, pred: np.ndarray | None = None, scores: np.ndarray | None = None,
             n_boot: int = 1000, seed: int = 0, groups: np.ndarray | None = None) -> dict[str, Metric]:
    """Point estimates with percentile 95% CIs from a stratified bootstrap (of patients when `groups`)."""
    y = np.asarray(y, int)

    def compute(idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        if pred is not None:
            out.update(decision_metrics(y[idx], np.asarray(pred)[idx]))
        if scores is not None:
            out.update(score_metrics(y[idx], np.asarray(scores)[idx]))
        return out

    point = compute(np.arange(len(y)))
    draw = _resampler(y, None if groups is None else np.asarray(groups), np.random.default_rng(seed))
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        for k, v in compute(draw()).items():
            samples[k].append(v)
    result = {}
    for k, v in point.items():
        arr = np.array(samples[k], float)
        arr = arr[~np.isnan(arr)]
        lo, hi = (np.percentile(arr, [2.5, 97.5]) if len(arr) else (np.nan, np.nan))
        result[k] = Metric(v, float(lo), float(hi))
    return result


def paired_gain(y: np.ndarray, pred_new: np.ndarray, pred_old: np.ndarray, metric: str = "kappa",
                n_boot: int = 2000, seed: int = 0, groups: np.ndarray | None = None) -> Metric:
    """metric(new) - metric(old) on the same images, with a paired bootstrap 95% CI.

    Both decisions are scored on every resample together, so the interval reflects the gain itself
    rather than the (much wider) spread of each metric alone; with groups, patients are resampled.
    """
    y = np.asarray(y, int)
    gain = lambda idx: (decision_metrics(y[idx], np.asarray(pred_new)[idx])[metric]
                        - decision_metrics(y[idx], np.asarray(pred_old)[idx])[metric])
    draw = _resampler(y, None if groups is None else np.asarray(groups), np.random.default_rng(seed))
    samples = np.array([gain(draw()) for _ in range(n_boot)])
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return Metric(float(gain(np.arange(len(y)))), float(lo), float(hi))


def format_metrics(metrics: dict[str, Metric]) -> str:
    order = [m for m in (*DECISION_METRICS, *SCORE_METRICS) if m in metrics]
    width = max(len(m) for m in order)
    return "\n".join(f"{m:<{width}}  {metrics[m]}" for m in order)
