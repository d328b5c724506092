"""The default recipe: compare at the synthetic set's own resolution, then let the labelled reals choose the score.

Two findings shaped it (benchmarks/results/suite.md):
- A generator trained at low resolution (a diffusion model at 32 px, upsampled) reproduces its
  members only at that scale; compared at 64 px its reproductions look far from them. The
  comparison side is measured from the synthetic images' power spectrum (synthleak.resolution) and
  every candidate score is computed there, never finer.
- No single score wins across generator families: a memorising generator is found best by the plain
  nearest-synthetic distance, a smooth GAN by the difficulty-calibrated density ratio, whose reference
  dilutes a memorisation signal. The recipe therefore computes a handful of pre-registered,
  label-free candidates (CANDIDATES) on one embedding. The first (the calibrated density ratio) is
  kept unless the labelled reals show, with confidence, that another ranks them better: its AUC must
  beat the first's in 95% of bootstrap resamples of labelled patients, and there must be at least
  MIN_UNITS_PER_CLASS patients of each class (look-alike clusters without --groups). Labelled reals
  from one or two patients (measured: a DCGAN on CT volumes whose labelled reals were two slabs of one
  patient made `nearest` look best, 0.97 against 0.84, and it was worst on the test patients, 0.73
  against 0.93) cannot tell generator families apart; they can still veto a first candidate that ranks
  them clearly the wrong way round (INVERTED_AUC), and without a veto a label-free criterion may break
  the tie: the candidate whose scores over every real image split most clearly into two groups
  (BIMODAL_*; a generator that reproduces its members sets them apart from everyone else). The CV scores reported are nested: each fold's
  scores come from the candidate chosen on the other folds, so the choice is never graded on the
  images that made it. Without labelled reals the first candidate is used.

Scores of different candidates live on different scales; each is put on one robust scale (median 0,
inter-quartile range 1 over every real image, labelled and test, labels unused) before the choice, a
monotone map that changes no ranking and no decision. The dataset-level verdict must not inherit the
choice (it was made with the labels it tests), so the recipe hands it every candidate's raw label-free
scores and the verdict's relabelling test takes the maximum over them in every relabelling.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..attacks.knn import IndexFactory, NeighbourIndex
from ..calibration import Calibration, neighbour_rows
from ..config import MethodConfig
from ..data.layout import AuditData
from ..decide import MIXTURE_MIN_SEPARATION, two_gaussians
from ..metrics import score_metrics
from ..options import Options, option
from ..resolution import Resolution, estimate_resolution, sample_rows
from .base import Method, MethodResult, Signal
from .context import AuditContext
from .density import density_ratio_ranks, density_ratio_scores

#: the pre-registered candidates, in order of preference for ties (and the choice without labels)
CANDIDATES = ("density-ratio+neighbours", "nearest", "nearest+neighbours")


@dataclass(frozen=True)
class AdaptiveOptions(Options):
    pixel_side: int | None = option(None, "compare at this side instead of the measured resolution", minimum=2)
    k_real: int = option(20, "the reals' neighbour whose distance sets the density ratio's real scale")


def measure_resolution(data: AuditData, cfg: MethodConfig) -> Resolution:
    """The synthetic set's effective resolution against every real image (a seeded sample of each)."""
    synthetic = data.synthetic(cfg.synthetic_pool)
    syn_pixels = synthetic.read(sample_rows(len(synthetic), seed=cfg.seed))
    reals = [s.pixels for s in (data.labelled()[0] if data.has_labelled else None, data.real_unknown)
             if s is not None]
    real_pixels = np.concatenate(reals)
    return estimate_resolution(syn_pixels, real_pixels[sample_rows(len(real_pixels), seed=cfg.seed)])


def robust_scale(scores: np.ndarray) -> np.ndarray:
    """(scores - median) / inter-quartile range: one scale for every candidate, ranks unchanged."""
    q1, median, q3 = np.percentile(scores, [25, 50, 75])
    return (scores - median) / max(q3 - q1, 1e-12)


def candidate_scores(syn: np.ndarray, reals: np.ndarray, k_real: int, calibrate_k: int,
                     index: IndexFactory = NeighbourIndex) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{candidate: raw label-free score per real row}, and each real's 3 nearest synthetic rows.

    One search of the synthetic set serves both the nearest distance and the density ratio's numerator,
    and one reals-on-reals search both the density ratio's reference scale and the calibration."""
    Calibration("neighbours", k=calibrate_k)  # validates k
    real_search = None
    if len(reals) >= 3:  # (fewer: density_ratio_scores says so)
        columns = max(min(calibrate_k, len(reals) - 1), density_ratio_ranks(k_real, len(reals))[1]) + 1
        real_search = index(reals).search(reals, columns)
    ratio, neighbours, _, nearest_distance = density_ratio_scores(
        syn, reals, k_real, real_distances=real_search[0] if real_search else None, index=index)
    nearest = -nearest_distance
    # the same reals-on-reals neighbourhoods calibrate every candidate (as Calibration.apply does each)
    rows = neighbour_rows(reals, calibrate_k, idx=real_search[1])
    raw = {"density-ratio": ratio, "nearest": nearest}
    out = {}
    for name in CANDIDATES:
        base, _, calibrate = name.partition("+")
        out[name] = raw[base] - raw[base][rows].mean(1) if calibrate else raw[base]
    return out, neighbours


#: labelled units (patients; look-alike clusters without groups) each class needs before the labels may
#: overrule the first candidate: with fewer, a labelled AUC is one or two patients' anatomy, not the generator
MIN_UNITS_PER_CLASS = 5
#: with too few units, the labels may still veto the first candidate when it ranks the labelled members clearly
#: *below* the non-members (measured: the calibrated density ratio on a 64 px DDPM, labelled AUC 0.16 from two
#: member patients, test 0.52, while `nearest` reached 0.86): a score pointing the wrong way is not a matter of
#: degree. 0.30, not 0.50: a few patients' anatomy moves an AUC far on weak signals (random scores of 30 + 30 images
#: fall to 0.40 about one time in ten, to 0.30 about one in 250, more often when the images come from two patients)
INVERTED_AUC = 0.30
#: with too few units and no veto, a label-free tie-break: the candidate whose scores over every real image split
#: most clearly into two groups (two-component Gaussian mixture, Ashman's D), when that D is at least
#: BIMODAL_MIN_D (a dip between the groups, the mixture rule's own criterion) and beats the first candidate's by
#: BIMODAL_MARGIN. A generator that reproduces its members sets them apart from everyone else; a score that
#: does so more clearly is the better membership signal (pre-registered and checked in suite.md)
BIMODAL_MIN_D = MIXTURE_MIN_SEPARATION
BIMODAL_MARGIN = 0.5
#: bootstrap resamples (of labelled units) behind the choice, and the one-sided confidence it needs
CHOICE_BOOTSTRAP = 200
CHOICE_CONFIDENCE = 0.95


def separation(scores: np.ndarray, seed: int = 0) -> float:
    """Ashman's D of a two-component Gaussian mixture of `scores` (about 2 or more: two groups with a dip)."""
    x = np.asarray(scores, float).reshape(-1, 1)
    if len(x) < 10 or np.ptp(x) == 0:
        return 0.0
    return two_gaussians(x, seed)[1]


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    return float(score_metrics(y, scores)["auc"])


def _rank_auc(ranks: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each column of `ranks` (mid-ranks over all rows) with rows weighted by bootstrap counts."""
    n1 = (weights * y).sum()
    n0 = (weights * (1 - y)).sum()
    if n1 == 0 or n0 == 0:
        return np.full(ranks.shape[1], np.nan)
    # weighted Mann-Whitney: rank of a row among the resampled rows, from the full-sample ranks
    order = np.argsort(ranks, axis=0, kind="stable")
    out = np.empty(ranks.shape[1])
    for j in range(ranks.shape[1]):
        w = weights[order[:, j]]
        yy = y[order[:, j]]
        cum0 = np.cumsum(w * (1 - yy)) - w * (1 - yy)  # non-members strictly before (ties broken by order)
        out[j] = float((w * yy * cum0).sum() / (n1 * n0))
    return out


def choose(scaled: dict[str, np.ndarray], y: np.ndarray, rows: np.ndarray, units: np.ndarray,
           seed: int = 0, separations: dict[str, float] | None = None) -> tuple[str, str]:
    """(candidate, why) for the labelled rows `rows`: the first candidate unless another one's AUC beats
    it with CHOICE_CONFIDENCE in a bootstrap over labelled units (patients), which needs at least
    MIN_UNITS_PER_CLASS units of each class; among those that do, the highest AUC. With fewer units the first
    candidate is kept unless its labelled AUC is at most INVERTED_AUC (then the best other candidate), or the
    label-free `separations` (each candidate's Ashman's D over every real) favour another (BIMODAL_*)."""
    prior = CANDIDATES[0]
    y_rows, u_rows = y[rows], units[rows]
    per_class = [len(np.unique(u_rows[y_rows == c])) for c in (0, 1)]
    aucs = {name: _auc(scaled[name][rows], y_rows) for name in CANDIDATES}
    if min(per_class) < MIN_UNITS_PER_CLASS:
        few = (f"the labelled reals hold {per_class[1]} member and {per_class[0]} non-member patients (or look-alike "
               f"clusters), fewer than {MIN_UNITS_PER_CLASS} of each, too few to let their AUCs choose")
        if aucs[prior] <= INVERTED_AUC:
            others = [name for name in CANDIDATES[1:] if aucs[name] > INVERTED_AUC]
            if others:
                best = max(others, key=lambda name: aucs[name])
                return best, (f"{best}: {prior} (the first pre-registered candidate) points the wrong way on the "
                              f"labelled reals (AUC {aucs[prior]:.3f} <= {INVERTED_AUC}); {few}, so the candidate "
                              f"with the highest labelled AUC ({aucs[best]:.3f}) is used")
        if separations is not None:
            best = max(CANDIDATES, key=separations.get)
            d_best, d_prior = separations[best], separations[prior]
            if best != prior and d_best >= BIMODAL_MIN_D and d_best - d_prior >= BIMODAL_MARGIN:
                return best, (f"{best}: {few}; over every real image (labels unused) its scores split into two "
                              f"groups more clearly than {prior}'s (Ashman's D {d_best:.2f} against {d_prior:.2f})")
        return prior, f"{prior} (the first pre-registered candidate): {few}"
    from scipy.stats import rankdata

    ranks = np.column_stack([rankdata(scaled[name][rows]) for name in CANDIDATES])
    codes = np.unique(u_rows, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    wins = np.zeros(len(CANDIDATES))
    for _ in range(CHOICE_BOOTSTRAP):
        counts = np.bincount(rng.integers(0, codes.max() + 1, codes.max() + 1), minlength=codes.max() + 1)
        boot = _rank_auc(ranks, y_rows, counts[codes].astype(float))
        wins += boot > boot[0]
    confident = [name for i, name in enumerate(CANDIDATES) if i and wins[i] / CHOICE_BOOTSTRAP >= CHOICE_CONFIDENCE]
    if not confident:
        return prior, (f"{prior} (the first pre-registered candidate): no other candidate beat its labelled AUC "
                       f"({aucs[prior]:.3f}) in {CHOICE_CONFIDENCE:.0%} of {CHOICE_BOOTSTRAP} patient bootstraps")
    best = max(confident, key=lambda name: aucs[name])
    return best, (f"{best}: its labelled AUC {aucs[best]:.3f} beat {prior}'s {aucs[prior]:.3f} in "
                  f"{wins[CANDIDATES.index(best)] / CHOICE_BOOTSTRAP:.0%} of {CHOICE_BOOTSTRAP} patient bootstraps")


def selection_units(data: AuditData, seed: int) -> np.ndarray:
    """Per labelled real, the unit the choice resamples: its patient, else a look-alike cluster (neighbouring
    slices of one patient must not count as independent evidence)."""
    groups = data.labelled_groups()
    if groups is not None:
        return np.asarray(groups).astype(str)
    from ..shift import look_alike_groups, shift_features

    return look_alike_groups(shift_features(data.labelled()[0].pixels), seed).astype(str)


class AdaptiveDefault(Method):
    """The default recipe (see the module's docstring)."""

    Settings = AdaptiveOptions

    def run(self, audit: AuditContext) -> MethodResult:
        return run_adaptive(audit, self.cfg, self.settings)


def run_adaptive(audit: AuditContext, cfg: MethodConfig, opts: AdaptiveOptions) -> MethodResult:
    data = audit.data
    resolution = measure_resolution(data, cfg)
    side = opts.pixel_side or resolution.comparison_side
    space_cfg = replace(cfg, feature_space="pixels", options={**cfg.options, "pixel_side": str(side)})
    embedding = audit.embedding(space_cfg)
    syn, lab, test, reals = embedding.synthetic, embedding.labelled, embedding.test, embedding.reals
    raw, neighbours = candidate_scores(syn, reals, opts.k_real, cfg.calibrate_k, audit.index)
    scaled = {name: robust_scale(s) for name, s in raw.items()}
    n_lab = len(lab) if lab is not None else 0

    record = {"resolution": resolution.to_json(), "comparison_side": side,
              "side_from": "--set pixel_side" if "pixel_side" in cfg.options else "the measured resolution",
              "candidates": list(CANDIDATES)}
    if n_lab:
        y = data.labelled()[1]
        units = selection_units(data, cfg.seed)
        separations = {name: round(separation(scaled[name], cfg.seed), 4) for name in CANDIDATES}
        chosen, why = choose(scaled, y, np.arange(n_lab), units, cfg.seed, separations)
        nested = np.empty(n_lab)
        fold_choices = []
        for i, (train, val) in enumerate(audit.folds(cfg)):
            pick, _ = choose(scaled, y, train, units, cfg.seed + 1 + i, separations)
            fold_choices.append(pick)
            nested[val] = scaled[pick][val]
        record["labelled_auc"] = {name: round(_auc(scaled[name][:n_lab], y), 4) for name in CANDIDATES}
        record["separation"] = separations
        record["chosen"] = chosen
        record["why"] = why
        record["fold_choices"] = fold_choices
        labelled_scores = nested
    else:
        chosen = CANDIDATES[0]
        record["chosen"] = chosen
        record["why"] = "no labelled reals to choose with: the first pre-registered candidate"
        labelled_scores = None

    result = MethodResult(test_scores=scaled[chosen][n_lab:] if test is not None else None,
                          labelled_scores=labelled_scores, real_features=reals,
                          trained_on={"pixels": "nothing is trained"})
    result.neighbours = neighbours[n_lab:] if test is not None else None
    result.variants = {name: Signal(raw[name][:n_lab] if n_lab else None, raw[name][n_lab:] if test is not None
                                    else None) for name in CANDIDATES}
    result.threshold_scores = scaled[chosen][:n_lab] if n_lab else None
    result.verdict_scores = np.column_stack([raw[name][:n_lab] for name in CANDIDATES]) if n_lab else None
    result.synthetic_features = syn
    result.details = record
    result.calibration = "neighbours" if "+neighbours" in chosen else "none"
    result.notes.append(resolution.describe())
    result.notes.append(f"score: {chosen} in {side}x{side} pixels ({record['why']}); CV scores nested: each fold's "
                        "from the candidate chosen on the other folds")
    return result
