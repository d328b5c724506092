"""The method interface: a Method runs on an audit context and returns continuous membership scores.

Every attack and paper method is a ScoringMethod in scikit-learn's shape (fit on a Reference, score real
images); the audit context and ScoringMethod.run own what used to be repeated in every method: folds, embeddings,
cross-fitting. The compositions (calibration, ensemble, the default recipe) are Methods with their own run.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..attacks.knn import IndexFactory, NeighbourIndex
from ..config import MethodConfig
from ..errors import SynthleakError
from ..features.embedding import Embedding
from ..options import Options

if TYPE_CHECKING:
    from .context import AuditContext


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


@dataclass(frozen=True)
class MethodSpec:
    name: str
    target: str  # "module:Class" of a Method subclass, built with the method's MethodConfig
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


class Method(ABC):
    """One membership-inference method, built from the run's configuration (its `--set` keys read and checked
    into `settings`, a frozen synthleak.options.Options) and run on an audit context, which owns the folds and
    the embeddings every method shares."""

    #: the method's own `--set` keys
    Settings: ClassVar[type[Options]] = Options

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.settings = self.Settings.read(cfg.options)
        self.name = type(self).__name__

    @abstractmethod
    def run(self, audit: AuditContext) -> MethodResult:
        """Honest scores of the audit's labelled reals (out-of-fold where labels were used) and of its test reals."""


@dataclass
class Reference:
    """What a scoring method is fitted on. Never a test label; labelled reals only for methods that use labels,
    and then only a fold's training part when the fitted method scores that fold's held-out rows."""

    #: the synthetic images' features (None for methods that never look at them) and their neighbour index
    synthetic: np.ndarray | None
    synthetic_index: NeighbourIndex | None
    #: every real image, labelled then test, labels unused (what a transductive score may compare with), and
    #: how many of its first rows are the labelled reals
    reals: np.ndarray
    n_labelled: int = 0
    #: labelled reals the method may learn from, with their labels and their rows in `reals` (methods that use
    #: labels)
    labelled: np.ndarray | None = None
    y: np.ndarray | None = None
    labelled_rows: np.ndarray | None = None
    #: which fit this is: the i-th fold's training part (scores that fold), or len(folds) for every labelled
    #: real (scores the test reals); seeds a method's random subsets so that each fit draws its own
    fold: int = 0
    n_folds: int = 0
    #: reference rows per class that every fold's training part can offer (a common size for every fit, so
    #: that labelled and test scores share one scale; see nearest.reference_distance)
    reference_size: int = 0
    #: builds the neighbour indexes a method searches (the run's search mode; searches recorded)
    index: IndexFactory = NeighbourIndex

    @property
    def final(self) -> bool:
        """True for the fit on every labelled real (the one that scores the test reals)."""
        return self.fold == self.n_folds


@dataclass
class Scores:
    """A scoring method's scores of some real images (higher = more likely used)."""

    values: np.ndarray
    #: each row's 3 nearest synthetic images (for the report), when the method searched for them
    neighbours: np.ndarray | None = None
    #: further signals of the same rows, reported beside the main score (a clustering's other algorithms, the
    #: paper methods' meta-signals)
    variants: dict[str, np.ndarray] = field(default_factory=dict)


class ScoringMethod(Method):
    """A method in scikit-learn's shape: `fit(reference)` then `score(features, positions)`.

    `run` does the rest, the same way for every such method: the audit's images in the method's feature space
    (`prepare`); a label-free method fitted once and scoring every real; a method that learns from labels
    (`learns_from_labels`) cross-fitted on the audit's folds, each fold's rows scored by a fit on the other
    folds, the test reals by a fit on every labelled real."""

    #: whether the method compares with the synthetic images (the real-only control does not)
    needs_synthetic: ClassVar[bool] = True
    #: whether its feature rows are a space for real images (the difficulty calibration's neighbourhoods)
    reports_features: ClassVar[bool] = True
    #: whether it learns from the labelled reals when the audit has them (cross-fitted then) and works label-free
    #: without them (the paper's methods)
    uses_labels_when_given: ClassVar[bool] = False

    @property
    def reference_classes(self) -> tuple[int, ...]:
        """The label classes whose labelled reals the method compares with (none: it keeps no labelled reals as a
        reference)."""
        return ()

    def learns_from_labels(self, audit: AuditContext) -> bool:
        """Whether this run fits on labels, and is therefore cross-fitted."""
        return bool(self.reference_classes) or (self.uses_labels_when_given and audit.data.has_labelled)

    def prepare(self, audit: AuditContext) -> Embedding:
        """The audit's images in the method's feature space: the audit's shared embedding, or for a method with a
        model of its own (the paper's autoencoders) the rows that model gives, built here once per run."""
        return audit.embedding(self.cfg, self.needs_synthetic)

    @abstractmethod
    def fit(self, reference: Reference) -> "ScoringMethod":
        ...

    @abstractmethod
    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        """Scores of real images given by their features and their rows in the reference's `reals`; with
        `neighbours`, each row's 3 nearest synthetic images too (the report's evidence, for the test reals)."""

    def labels_missing(self) -> str:
        """The user error when the method learns from labels and the audit has none."""
        return f"method {self.name} needs labelled reals (real_used/ and real_not_used/)"

    def notes(self, embedding: Embedding) -> list[str]:
        """What the scores are, in a sentence or two (after the last fit)."""
        return []

    def trained_on(self, embedding: Embedding) -> dict[str, Any]:
        """What the method's models were trained on, for the output record (after the last fit)."""
        return dict(embedding.trained_on)

    def run(self, audit: AuditContext) -> MethodResult:
        cross_fit = self.learns_from_labels(audit)
        if cross_fit and not audit.data.has_labelled:
            raise SynthleakError(self.labels_missing())
        emb = self.prepare(audit)
        reals = emb.reals
        index = audit.index(emb.synthetic) if emb.synthetic is not None else None
        n_lab = emb.n_labelled
        test_rows = np.arange(n_lab, len(reals))
        labelled, variants = None, _OutOfFold(n_lab)
        if not cross_fit:
            self.fit(Reference(emb.synthetic, index, reals, n_lab, index=audit.index))
            if n_lab:
                scores = self.score(emb.labelled, np.arange(n_lab))
                labelled = scores.values
                variants.values = dict(scores.variants)
        else:
            y, folds = audit.y, audit.folds(self.cfg)
            size = fold_reference_size(y, folds, self.reference_classes) if self.reference_classes else 0
            labelled = np.empty(n_lab)
            for i, (train, val) in enumerate(folds):
                self.fit(Reference(emb.synthetic, index, reals, n_lab, emb.labelled[train], y[train], train, i,
                                   len(folds), size, audit.index))
                scores = self.score(emb.labelled[val], val)
                labelled[val] = scores.values
                variants.add(scores.variants, val)
            self.fit(Reference(emb.synthetic, index, reals, n_lab, emb.labelled, y, np.arange(n_lab), len(folds),
                               len(folds), size, audit.index))
        test = self.score(emb.test, test_rows, neighbours=True) if emb.test is not None else None
        result = MethodResult(test_scores=test.values if test else None, labelled_scores=labelled,
                              trained_on=self.trained_on(emb),
                              real_features=reals if self.reports_features else None,
                              neighbours=test.neighbours if test else None)
        result.variants = variants.signals(test.variants if test else {})
        result.notes += self.notes(emb)
        return result


class _OutOfFold:
    """The labelled rows' variant signals: a label-free fit's as they are, a cross-fitted method's gathered fold by
    fold (float64, as the main score's; NaN where a fold did not report the signal)."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.values: dict[str, np.ndarray] = {}

    def add(self, variants: dict[str, np.ndarray], rows) -> None:
        for name, values in variants.items():
            if name not in self.values:
                self.values[name] = np.full(self.n_rows, np.nan)
            self.values[name][rows] = values

    def signals(self, test: dict[str, np.ndarray]) -> dict[str, Signal]:
        names = list(self.values) + [n for n in test if n not in self.values]
        return {n: Signal(self.values.get(n), test.get(n)) for n in names}


def fold_reference_size(y: np.ndarray, folds, classes: tuple[int, ...]) -> int:
    """Largest reference size every fold's training part can offer for each of `classes`."""
    size = min(int((y[train] == c).sum()) for train, _ in folds for c in classes)
    if size == 0:
        raise SynthleakError("a cross-validation fold has no labelled reals of one class in its training part "
                             "(give more labelled reals or patients, or fewer --folds)")
    return size
