"""The method (recipe) interface: data + config in, continuous membership scores out."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import MethodConfig
from ..data.images import ImageSet
from ..data.layout import AuditData
from ..data.stream import concat_images
from ..decide import cv_folds


@dataclass
class Signal:
    """Scores of one signal: out-of-fold on the labelled reals (order of AuditData.labelled()) and test."""

    labelled: np.ndarray | None
    test: np.ndarray | None


@dataclass
class MethodResult:
    """What a method returns. Higher score = more likely used (member).

    labelled_scores must be honest for the labelled reals: out-of-fold or cross-fitted whenever the
    method fitted anything on labelled reals, so that CV metrics computed from them are unbiased.
    """

    test_scores: np.ndarray | None
    labelled_scores: np.ndarray | None = None
    #: what each model was trained on, recorded in outputs (e.g. {"autoencoder": "train/generated (2000)"})
    trained_on: dict[str, Any] = field(default_factory=dict)
    #: sub-signals reported beside the main score (e.g. reconstruction error, critic output)
    variants: dict[str, Signal] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    #: optional: for each test image, indices into the synthetic set of its nearest neighbours (report)
    neighbours: np.ndarray | None = None
    #: optional: features of the labelled then the test reals (score order), for difficulty calibration
    real_features: np.ndarray | None = None
    #: the difficulty calibration applied to the scores ("none" when raw)
    calibration: str = "none"
    #: labelled-real scores the final threshold is fitted on, when they differ from labelled_scores (which
    #: serve the CV estimate): a recipe that chooses among candidates reports nested CV scores, but its test
    #: threshold belongs to the chosen candidate's own scores of every labelled real
    threshold_scores: np.ndarray | None = None
    #: label-free scores of the labelled reals for the verdict, one column per candidate, when the method's
    #: own labelled_scores were chosen with the labels (the verdict's test then takes the maximum over them)
    verdict_scores: np.ndarray | None = None
    #: the synthetic images' features in the method's space (reused by the verdict instead of re-embedding)
    synthetic_features: np.ndarray | None = None
    #: what the method decided and why (JSON-able), written to RUN.json as "recipe"
    details: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[[AuditData, MethodConfig], MethodResult]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    target: str  # "module:function" with signature (AuditData, MethodConfig) -> MethodResult
    description: str
    uses_synthetic: bool = True
    needs_labelled: bool = False
    #: excluded from `--method all` (too slow for a default comparison)
    slow: bool = False
    #: the method's own settings, used where the user chose none: feature space, calibration and
    #: decision rule (the default recipe is a method with its own settings)
    feature_space: str = "pixels"
    calibration: str = "none"
    decision: str = "kappa"
    #: the rule used instead of `decision` when the shift check fires (labelled reals unlike the test
    #: reals): one whose threshold does not rest on the labelled reals' score values; None keeps `decision`
    shift_decision: str | None = None
    #: the `--set` keys it reads: "module:Class" of synthleak.options.Options subclasses (imported when needed)
    option_classes: tuple[str, ...] = ()
    #: whether it also reads the keys of its feature space (--feature-space, or its own feature_space)
    reads_feature_space: bool = True
    #: "module:function" (cfg -> option classes) for keys that depend on its settings (ensemble components,
    #: the clustered space)
    more_options: str | None = None

    def configure(self, cfg: MethodConfig, calibration: str | None = None) -> MethodConfig:
        """cfg with this method's defaults filled in where the user left them open.

        `calibration` (from a `method+calibration` variant name) overrides both."""
        return replace(cfg, feature_space=cfg.feature_space or self.feature_space,
                       calibrate=calibration or cfg.calibrate or self.calibration)


def training_synthetic(data: AuditData, cfg: MethodConfig) -> tuple[ImageSet, str]:
    """Synthetic images models may be trained on (in memory), and a description for the output record.

    Default: train/generated only; --fit-on-test-generated adds test/generated. --max-train-images
    takes a seeded random subset (CPU budgets); only that subset is read from the files.
    """
    images = data.generated
    desc = f"train/generated ({len(images)})"
    if cfg.fit_on_test_generated and data.test_generated is not None:
        images = concat_images([data.generated, data.test_generated])
        desc = f"train/generated + test/generated ({len(images)})"
    if cfg.max_train_images and len(images) > cfg.max_train_images:
        rng = np.random.default_rng(cfg.seed)
        idx = np.sort(rng.choice(len(images), cfg.max_train_images, replace=False))
        images = images.subset(idx)
        desc += f", random subset of {cfg.max_train_images}"
    return images.materialise(quiet=cfg.quiet), desc


def labelled_folds(data: AuditData, cfg: MethodConfig):
    """The CV folds over AuditData.labelled() that every method and the decision step share."""
    _, y = data.labelled()
    return cv_folds(y, data.labelled_groups(), cfg.n_folds, cfg.seed)


def cross_fitted_classifier(
    x_labelled: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    make_model: Callable[[], Any],
    folds,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold P(used) for labelled rows and P(used) for test rows from a model fit on all labelled.

    `make_model()` returns a fresh scikit-learn style classifier (fit / predict_proba). Anything that
    learns from labels (feature selection, scaling) must live inside that model (a Pipeline), so it is
    refit on each training fold and never sees the held-out fold's labels.
    """
    oof = np.zeros(len(y), dtype=float)
    for train_idx, val_idx in folds:
        model = make_model()
        model.fit(x_labelled[train_idx], y[train_idx])
        oof[val_idx] = model.predict_proba(x_labelled[val_idx])[:, 1]
    test = None
    if x_test is not None and len(x_test):
        model = make_model()
        model.fit(x_labelled, y)
        test = model.predict_proba(x_test)[:, 1]
    return oof, test
