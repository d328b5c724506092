"""Paper method 1: ViT autoencoder (CT-pre-trainable encoder) trained on the generated images.

Two decisions on the same trained model, each reporting the other as a variant:
- `seed-vit-ae` (`SeedViTAEClassifier`): P(used) from a classifier on the encoder's latent features of the
  labelled reals. Candidates are logistic regression (scaled, C in {0.01, 0.1, 1}) and a Random
  Forest (300 trees, `--set rf_trees=N`); the candidate is chosen by an inner CV *inside* each
  training fold (nested CV), so the out-of-fold labelled scores stay honest.
- `seed-vit-ae-recon` (`SeedViTAERecon`): score = minus the reconstruction error. An autoencoder trained on
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
from ..features.store import image_features
from ..features.embedding import Embedding, training_synthetic
from .base import Reference, Scores, ScoringMethod, fold_reference_size
from .context import AuditContext

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


def _recon_sign(cfg: MethodConfig) -> float:
    sign = SeedViTAEOptions.read(cfg.options).recon_sign
    if sign not in ("lower", "higher"):
        raise SynthleakError(f"--set recon_sign={sign}: expected 'lower' (lower error = used) or 'higher'")
    return -1.0 if sign == "lower" else 1.0


class SeedViTAE(ScoringMethod):
    """Paper method 1 on one trained ViT autoencoder: the latent features of the reals (classifier) and their
    reconstruction errors (fixed sign), each reported beside the other.

    `prepare` trains (or loads) the autoencoder on the synthetic images and reads every real once; with labelled
    reals `fit` trains the nested-CV chooser and the two candidate families alone on a fold's labelled latents
    (inner splits group-aware on exactly those rows), and `score` reads their P(used) and the signed errors."""

    Settings = SeedViTAEOptions
    reports_features = False
    uses_labels_when_given = True
    #: which signal is the score: "classifier" (seed-vit-ae) or "recon" (seed-vit-ae-recon)
    main = "classifier"

    def learns_from_labels(self, audit: AuditContext) -> bool:
        return self.main == "classifier" or super().learns_from_labels(audit)  # the classifier needs labels

    def prepare(self, audit: AuditContext) -> Embedding:
        data, cfg = audit.data, self.cfg
        self.sign = _recon_sign(cfg)  # option and label errors before any training
        self.has_labelled, self.has_test = data.has_labelled, data.real_unknown is not None
        if self.has_labelled:
            self.trees = self.settings.rf_trees
            if self.trees < 1:
                raise SynthleakError("--set rf_trees=N: N must be at least 1")
            folds = audit.folds(cfg)
            fold_reference_size(audit.y, folds, (0, 1))  # every training part holds both classes
            self.y, self.groups, self.n_outer = audit.y, data.labelled_groups(), len(folds)
            self.inner = _inner_folds(self.y, self.n_outer)
        self.extractor, self.trained_record = _train(data, cfg)
        lab_images = data.labelled()[0] if self.has_labelled else None
        self.choices: list[str] = []
        errors, latent = [], {}
        for name, images in (("labelled", lab_images), ("test", data.real_unknown)):
            latent[name] = None
            if images is not None:  # (one set at a time: the extractor keeps its last pass only)
                errors.append(self.extractor.reconstruction_error(images))
                latent[name] = image_features(self.extractor, images, cfg)
        self.errors = np.concatenate(errors)
        return Embedding("vit-ae", None, latent["labelled"], latent["test"], self.trained_record)

    def fit(self, reference: Reference) -> "SeedViTAE":
        if reference.labelled is None:
            return self
        seed, rows = self.cfg.seed, reference.labelled_rows
        inner_cv = None if self.groups is None else cv_folds(self.y[rows], self.groups[rows], self.inner, seed)
        x, y = reference.labelled, reference.y
        self.models = {"classifier": make_chooser(seed, self.inner, self.trees, inner_cv).fit(x, y)}
        if reference.final and not self.has_test:
            return self  # (the final chooser only names the test-time classifier in the notes)
        self.models.update({"logreg": _logreg(0.1, seed).fit(x, y), "random-forest": _forest(seed, self.trees).fit(x, y)})
        if not reference.final:
            self.choices.append(_describe(self.models["classifier"].best_estimator_))
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        errors = self.errors[positions]
        signals = {"recon": self.sign * errors, "recon-error": -self.sign * errors}
        if self.has_labelled:
            signals.update({name: model.predict_proba(features)[:, 1] for name, model in self.models.items()})
        if self.main == "classifier":
            return Scores(signals.pop("classifier"), variants={name: signals[name] for name in
                                                               ("logreg", "random-forest", "recon", "recon-error")})
        opposite = "recon-error" if self.sign < 0 else "minus-recon-error"
        variants = {opposite: signals.pop("recon-error")}
        variants.update({n: signals[n] for n in ("classifier", "logreg", "random-forest") if n in signals})
        return Scores(signals.pop("recon"), variants=variants)

    def notes(self, embedding: Embedding) -> list[str]:
        notes = []
        if self.main == "recon":
            notes.append("score = " + ("minus " if self.sign < 0 else "") + "per-image reconstruction MSE "
                         f"({'lower' if self.sign < 0 else 'higher'} error = used; sign fixed, not fitted)")
        if self.has_labelled:
            final = self.models["classifier"]
            notes += [f"classifier for test scores (inner {self.inner}-fold CV on all labelled reals): "
                      f"{_describe(final.best_estimator_)}, inner AUC {final.best_score_:.3f}",
                      f"per outer fold the inner CV chose: {', '.join(self.choices)}"]
        return notes + [_loss_note(self.extractor)]

    def trained_on(self, embedding: Embedding) -> dict:
        record = super().trained_on(embedding)
        if self.has_labelled:
            record["classifier"] = (f"labelled reals ({int(self.y.sum())} used + {int((1 - self.y).sum())} not "
                                    f"used), nested CV: {self.n_outer} outer x {self.inner} inner folds")
        return record


def _loss_note(extractor: ViTAEExtractor) -> str:
    losses = extractor.record.get("losses") or []
    if not losses:
        return f"vit autoencoder: {extractor.record.get('epochs', 0)} epoch(s) (no training loss recorded)"
    return f"vit autoencoder: {len(losses)} epoch(s), final training MSE {losses[-1]:.5f}"


class SeedViTAEClassifier(SeedViTAE):
    """Paper method 1: a CV-chosen classifier on the ViT autoencoder's latent features."""

    main = "classifier"

    def labels_missing(self) -> str:
        return ("seed-vit-ae needs labelled reals (real_used/ and real_not_used/); use seed-vit-ae-recon without "
                "them")


class SeedViTAERecon(SeedViTAE):
    """Paper method 1: the ViT autoencoder's reconstruction error."""

    main = "recon"
