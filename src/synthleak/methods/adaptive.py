"""The default recipe: compare at the synthetic set's own resolution, then let the labelled reals choose the score.

Two findings shaped it (benchmarks/results/suite.md):
- A generator trained at low resolution (a diffusion model at 32 px, upsampled) reproduces its
  members only at that scale; compared at 64 px its reproductions look far from them. The
  comparison side is measured from the synthetic images' power spectrum (synthleak.resolution) and
  every candidate score is computed there, never finer.
- No single score wins across generator families: a memorising generator is found best by the plain
  nearest-synthetic distance, a smooth GAN by the difficulty-calibrated density ratio, whose reference
  dilutes a memorisation signal. The recipe therefore computes a handful of pre-registered,
  label-free candidates (CANDIDATES) on one embedding and picks the one with the highest AUC on the
  labelled reals (groups respected). The CV scores reported for it are nested: each fold's scores
  come from the candidate chosen on the other folds, so the choice is never graded on the images
  that made it. Without labelled reals the first candidate is used.

Scores of different candidates live on different scales; each is put on one robust scale (median 0,
inter-quartile range 1 over every real image, labelled and test, labels unused) before the choice, a
monotone map that changes no ranking and no decision. The dataset-level verdict must not inherit the
choice (it was made with the labels it tests), so the recipe hands it every candidate's raw label-free
scores and the verdict's relabelling test takes the maximum over them in every relabelling.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..calibration import Calibration
from ..config import MethodConfig
from ..data.layout import AuditData
from ..features import get_extractor
from ..features.store import image_features
from ..metrics import score_metrics
from ..resolution import Resolution, estimate_resolution, sample_rows
from .base import MethodResult, Signal, labelled_folds
from .density import density_ratio_scores

#: the pre-registered candidates, in order of preference for ties (and the choice without labels)
CANDIDATES = ("density-ratio+neighbours", "nearest", "nearest+neighbours")


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


def candidate_scores(syn: np.ndarray, reals: np.ndarray, cfg: MethodConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{candidate: raw label-free score per real row}, and each real's 3 nearest synthetic rows.

    One neighbour search serves both the nearest distance and the density ratio's numerator."""
    k_real = cfg.option("k_real", 20, int)
    ratio, neighbours, _, nearest_distance = density_ratio_scores(syn, reals, k_real)
    nearest = -nearest_distance
    calibration = Calibration("neighbours", k=cfg.calibrate_k)
    raw = {"density-ratio": ratio, "nearest": nearest}
    out = {}
    for name in CANDIDATES:
        base, _, calibrate = name.partition("+")
        out[name] = calibration.apply(raw[base], reals, cfg.seed) if calibrate else raw[base]
    return out, neighbours


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    return float(score_metrics(y, scores)["auc"])


def choose(scaled: dict[str, np.ndarray], y: np.ndarray, rows: np.ndarray) -> str:
    """The candidate with the highest AUC on the labelled rows `rows` (first in CANDIDATES on ties)."""
    aucs = {name: _auc(scaled[name][rows], y[rows]) for name in CANDIDATES}
    return max(CANDIDATES, key=lambda name: (aucs[name], -CANDIDATES.index(name)))


def run_adaptive(data: AuditData, cfg: MethodConfig) -> MethodResult:
    resolution = measure_resolution(data, cfg)
    side = cfg.option("pixel_side", resolution.comparison_side, int)
    space_cfg = replace(cfg, feature_space="pixels", options={**cfg.options, "pixel_side": str(side)})
    extractor = get_extractor("pixels", space_cfg)
    syn = image_features(extractor, data.synthetic(cfg.synthetic_pool), space_cfg)
    lab = extractor.extract(data.labelled()[0]) if data.has_labelled else None
    test = extractor.extract(data.real_unknown) if data.real_unknown is not None else None
    reals = np.concatenate([a for a in (lab, test) if a is not None])
    raw, neighbours = candidate_scores(syn, reals, space_cfg)
    scaled = {name: robust_scale(s) for name, s in raw.items()}
    n_lab = len(lab) if lab is not None else 0

    record = {"resolution": resolution.to_json(), "comparison_side": side,
              "side_from": "--set pixel_side" if "pixel_side" in cfg.options else "the measured resolution",
              "candidates": list(CANDIDATES)}
    if n_lab:
        y = data.labelled()[1]
        everything = np.arange(n_lab)
        chosen = choose(scaled, y, everything)
        nested = np.empty(n_lab)
        fold_choices = []
        for train, val in labelled_folds(data, cfg):
            pick = choose(scaled, y, train)
            fold_choices.append(pick)
            nested[val] = scaled[pick][val]
        record["labelled_auc"] = {name: round(_auc(scaled[name][:n_lab], y), 4) for name in CANDIDATES}
        record["chosen"] = chosen
        record["why"] = (f"highest AUC on the {n_lab} labelled reals among the pre-registered candidates "
                         f"({record['labelled_auc'][chosen]:.3f})")
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
