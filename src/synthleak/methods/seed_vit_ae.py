"""Paper method 1: ViT autoencoder (CT-pre-trainable encoder) trained on the generated images.

Two decisions on the same trained model, each reporting the other as a variant:
- `seed-vit-ae` (`run_classifier`): P(used) from a classifier on the encoder's latent features of the
  labelled reals. Candidates are logistic regression (scaled, C in {0.01, 0.1, 1}) and a Random
  Forest (300 trees, `--set rf_trees=N`); the candidate is chosen by an inner CV *inside* each
  training fold (nested CV), so the out-of-fold labelled scores stay honest.
- `seed-vit-ae-recon` (`run_recon`): score = minus the reconstruction error. An autoencoder trained on
  the generator's output reconstructs what the generator reproduces best, so lower error = used. The
  sign is fixed in advance (never chosen on labels, test or labelled); `--set recon_sign=higher`
  flips it when a user has a reason to expect the opposite, and the variant `recon-error` always
  shows the opposite direction for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ..config import MethodConfig
from ..data.layout import AuditData
from ..decide import cv_folds
from ..errors import SynthleakError
from ..features.vit_ae import ViTAEExtractor
from ..options import Options, option
from ..features.embedding import training_synthetic
from ..features.store import image_features
from .base import Method, MethodResult, Signal, cross_fitted_classifier
from .context import AuditContext, as_context

LOGREG_C = (0.01, 0.1, 1.0)
INNER_FOLDS = 3



@dataclass(frozen=True)
class SeedViTAEOptions(Options):
    rf_trees: int = option(300, "trees of the Random Forest among the classifiers chosen by CV (seed-vit-ae)")
    recon_sign: str = option("lower", "seed-vit-ae-recon: 'lower' reconstruction error = used, or 'higher'")


def _logreg(c: float = 0.1, seed: int = 0) -> Pipeline:
    return Pipeline([("scale", StandardScaler()),
                     ("clf", LogisticRegression(C=c, max_iter=5000, random_state=seed))])


def _forest(seed: int, trees: int = 300) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, max_features="sqrt",
                                  random_state=seed, n_jobs=1)


def make_chooser(seed: int, inner_folds: int = INNER_FOLDS, trees: int = 300, cv=None) -> GridSearchCV:
    """Logistic regression or Random Forest, whichever has the best inner-CV ROC AUC on its training rows.

    `cv` may be precomputed (group-aware) inner splits of exactly the rows the chooser will be fit on.
    """
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    grid = [
        {"clf": [LogisticRegression(C=c, max_iter=5000, random_state=seed) for c in LOGREG_C]},
        # Trees need no scaling; 'passthrough' keeps the forest on raw features.
        {"scale": ["passthrough"], "clf": [_forest(seed, trees)]},
    ]
    if cv is None:
        cv = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, grid, scoring="roc_auc", cv=cv, refit=True, n_jobs=1, error_score="raise")


def _describe(estimator) -> str:
    clf = estimator.named_steps["clf"] if isinstance(estimator, Pipeline) else estimator
    if isinstance(clf, LogisticRegression):
        return f"logistic regression (C={clf.C:g})"
    return "random forest"


def _inner_folds(y: np.ndarray, n_outer: int) -> int:
    """Inner folds must leave at least two rows of each class per fold in the smallest training fold."""
    smallest_class = int(np.bincount(y, minlength=2).min())
    per_train_fold = smallest_class * (n_outer - 1) // n_outer
    if per_train_fold < 2:
        raise SynthleakError("seed-vit-ae needs at least 3 labelled reals of each class for nested CV")
    return int(max(2, min(INNER_FOLDS, per_train_fold)))


def _train(data: AuditData, cfg: MethodConfig) -> tuple[ViTAEExtractor, dict]:
    extractor = ViTAEExtractor(cfg)
    images, desc = training_synthetic(data, cfg)
    extractor.fit(images)
    init = extractor.record.get("encoder init", "random")
    trained_on = {"vit autoencoder": desc,
                  "vit encoder before the autoencoder": "nothing (random initialisation)" if init == "random" else init}
    return extractor, trained_on


def _recon_signals(extractor: ViTAEExtractor, data: AuditData, sign: float) -> tuple[Signal, Signal]:
    """(main, opposite) signals from the reconstruction error; sign -1 = lower error is 'used'."""
    lab = extractor.reconstruction_error(data.labelled()[0]) if data.has_labelled else None
    test = extractor.reconstruction_error(data.real_unknown) if data.real_unknown is not None else None

    def signed(s: float) -> Signal:
        return Signal(None if lab is None else s * lab, None if test is None else s * test)

    return signed(sign), signed(-sign)


def _classifier_signals(extractor: ViTAEExtractor, audit: AuditContext, cfg: MethodConfig
                        ) -> tuple[dict[str, Signal], list[str], dict]:
    """Nested-CV chosen classifier plus each candidate family alone, all cross-fitted."""
    data = audit.data
    images, y = data.labelled()
    x_lab = image_features(extractor, images, cfg)
    x_test = image_features(extractor, data.real_unknown, cfg) if data.real_unknown is not None else None
    folds = audit.folds(cfg)
    inner = _inner_folds(y, len(folds))
    trees = SeedViTAEOptions.read(cfg.options).rf_trees
    if trees < 1:
        raise SynthleakError("--set rf_trees=N: N must be at least 1")
    choosers: list[GridSearchCV] = []
    groups = data.labelled_groups()
    # cross_fitted_classifier fits one model per outer fold in order, then one on all rows: the inner
    # splits of each are made group-aware on exactly those rows, so patients never straddle them.
    fit_rows = [train for train, _ in folds] + [np.arange(len(y))]

    def make_tracked_chooser() -> GridSearchCV:
        # cross_fitted_classifier fits each model it makes in place: keeping them shows what was chosen.
        inner_cv = None
        if groups is not None:
            rows = fit_rows[min(len(choosers), len(fit_rows) - 1)]
            inner_cv = cv_folds(y[rows], groups[rows], inner, cfg.seed)
        choosers.append(make_chooser(cfg.seed, inner, trees, inner_cv))
        return choosers[-1]

    signals: dict[str, Signal] = {}
    signals["classifier"] = Signal(*cross_fitted_classifier(x_lab, y, x_test, make_tracked_chooser, folds))
    signals["logreg"] = Signal(*cross_fitted_classifier(x_lab, y, x_test, lambda: _logreg(0.1, cfg.seed), folds))
    signals["random-forest"] = Signal(*cross_fitted_classifier(x_lab, y, x_test, lambda: _forest(cfg.seed, trees), folds))
    choices = [_describe(c.best_estimator_) for c in choosers[:len(folds)]]
    final = choosers[-1] if x_test is not None else make_chooser(
        cfg.seed, inner, trees, None if groups is None else cv_folds(y, groups, inner, cfg.seed)).fit(x_lab, y)
    notes = [f"classifier for test scores (inner {inner}-fold CV on all labelled reals): "
             f"{_describe(final.best_estimator_)}, inner AUC {final.best_score_:.3f}",
             f"per outer fold the inner CV chose: {', '.join(choices)}"]
    trained_on = {"classifier": f"labelled reals ({int(y.sum())} used + {int((1 - y).sum())} not used), "
                                f"nested CV: {len(folds)} outer x {inner} inner folds"}
    return signals, notes, trained_on


def _recon_sign(cfg: MethodConfig) -> float:
    sign = SeedViTAEOptions.read(cfg.options).recon_sign
    if sign not in ("lower", "higher"):
        raise SynthleakError(f"--set recon_sign={sign}: expected 'lower' (lower error = used) or 'higher'")
    return -1.0 if sign == "lower" else 1.0


def run_classifier(audit: AuditContext | AuditData, cfg: MethodConfig) -> MethodResult:
    """seed-vit-ae: P(used) from a CV-chosen classifier on the ViT autoencoder's latent features."""
    audit = as_context(audit, cfg)  # (bare AuditData: library callers of this method alone)
    data = audit.data
    if not data.has_labelled:
        raise SynthleakError("seed-vit-ae needs labelled reals (real_used/ and real_not_used/); "
                             "use seed-vit-ae-recon without them")
    sign = _recon_sign(cfg)  # option errors before any training
    extractor, trained_on = _train(data, cfg)
    signals, notes, clf_record = _classifier_signals(extractor, audit, cfg)
    recon, opposite = _recon_signals(extractor, data, sign)
    main = signals.pop("classifier")
    result = MethodResult(test_scores=main.test, labelled_scores=main.labelled,
                          trained_on={**trained_on, **clf_record})
    result.variants = {**signals, "recon": recon, "recon-error": opposite}
    result.notes = notes + [_loss_note(extractor)]
    return result


def run_recon(audit: AuditContext | AuditData, cfg: MethodConfig) -> MethodResult:
    """seed-vit-ae-recon: minus the reconstruction error (lower error = used; fixed, not fitted)."""
    audit = as_context(audit, cfg)  # (bare AuditData: library callers of this method alone)
    data = audit.data
    sign = _recon_sign(cfg)  # option errors before any training
    extractor, trained_on = _train(data, cfg)
    recon, opposite = _recon_signals(extractor, data, sign)
    result = MethodResult(test_scores=recon.test, labelled_scores=recon.labelled, trained_on=trained_on)
    result.variants["recon-error" if sign < 0 else "minus-recon-error"] = opposite
    result.notes.append("score = " + ("minus " if sign < 0 else "") + "per-image reconstruction MSE "
                        f"({'lower' if sign < 0 else 'higher'} error = used; sign fixed, not fitted)")
    if data.has_labelled:
        signals, notes, clf_record = _classifier_signals(extractor, audit, cfg)
        result.variants.update(signals)
        result.trained_on.update(clf_record)
        result.notes += notes
    result.notes.append(_loss_note(extractor))
    return result


def _loss_note(extractor: ViTAEExtractor) -> str:
    losses = extractor.record.get("losses") or []
    if not losses:
        return f"vit autoencoder: {extractor.record.get('epochs', 0)} epoch(s) (no training loss recorded)"
    return f"vit autoencoder: {len(losses)} epoch(s), final training MSE {losses[-1]:.5f}"


class SeedViTAEClassifier(Method):
    """Paper method 1: a CV-chosen classifier on the ViT autoencoder's latent features."""

    Settings = SeedViTAEOptions

    def run(self, audit: AuditContext) -> MethodResult:
        return run_classifier(audit, self.cfg)


class SeedViTAERecon(Method):
    """Paper method 1: the ViT autoencoder's reconstruction error."""

    Settings = SeedViTAEOptions

    def run(self, audit: AuditContext) -> MethodResult:
        return run_recon(audit, self.cfg)
