"""Paper method 4 (`seed-dclgan`): membership signals from a DCLGAN's generated-domain critic.

Hypothesis of the paper: real images used to train the generator align more with the generated
images in the critic's feature maps than unused reals do. Three signals per real image:

(a) critic   - the critic's mean patch logit (LOGAN-style: how "generated-like" the image looks);
(b) overlap  - cosine similarity of its hooked activation maps (pooled to g x g, centred on the
               generated-set mean, one unit-norm block per layer) to those of its nearest generated
               image (the paper's "attention overlap");
(c) features - pooled activations (channel mean/std) fed to a cross-fitted logistic regression.

The main score is the signal with the best CV AUC on the labelled reals, chosen honestly: for each
outer fold the choice is made on the other folds only ((c) re-cross-fitted inside them) and the
held-out rows get the chosen signal z-scored against the training rows, so the out-of-fold
labelled scores contain no selection on their own labels. Without labelled reals, (b) is used.

Domains of the DCLGAN (`--set dclgan_domain=`):
- `halves` (default): two seeded halves of the synthetic training images. No real image is seen,
  so (a) and (b) need no cross-fitting, and one GAN is trained (cheap on CPU).
- `real_not_used`: the paper's set-up, domain B = labelled real_not_used. That is label use, so it
  is cross-fitted: one GAN per labelled fold, trained on the other folds' non-members only; each
  fold's labelled rows are scored by the model that never saw them; test scores average the fold
  models (each standardised on its own scores of the synthetic images). Costs n_folds GAN trainings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..attacks.knn import IndexFactory, NeighbourIndex
from ..config import MethodConfig
from ..data.images import ImageSet
from ..data.layout import AuditData
from ..decide import cv_folds
from ..errors import SynthleakError
from ..features.dclgan import (CriticReadout, DCLGANSettings, PatchGANDiscriminator, TrainedCritic,
                               activation_maps, dclgan_settings, read_critic, split_halves, train_or_load)
from ..options import Options, option
from ..runtime import log
from ..features.embedding import Embedding, training_synthetic
from .base import MethodResult, Reference, Scores, ScoringMethod
from .context import AuditContext

SIGNALS = ("critic", "overlap", "features")
DOMAINS = ("halves", "real_not_used")


# ------------------------------------------------------------------------------------ signals
def overlap_scores(queries: CriticReadout, synthetic: CriticReadout,
                   exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(b): max cosine similarity of each query's pooled activation maps to a synthetic image's.

    Maps are centred on the synthetic-set mean first: raw post-LeakyReLU activations share a large
    common component that would make every cosine close to 1. Each hooked layer is normalised on its
    own so the wider deepest layer does not outweigh the other. Returns (similarity, nearest index).
    """
    centre = synthetic.grid.mean(0)
    q = _blockwise_unit(queries.grid - centre, queries.grid_sizes)
    s = _blockwise_unit(synthetic.grid - centre, synthetic.grid_sizes)
    syn = torch.from_numpy(s)
    best, arg = [], []
    for start in range(0, len(q), 512):
        sims = torch.from_numpy(q[start:start + 512]) @ syn.T
        if exclude_self:
            rows = torch.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        val, idx = sims.max(1)
        best.append(val.numpy())
        arg.append(idx.numpy())
    return np.concatenate(best).astype(float), np.concatenate(arg)


def _blockwise_unit(x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, start = [], 0
    for width in sizes:
        block = x[:, start:start + width]
        out.append(block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12))
        start += width
    return (np.concatenate(out, 1) / np.sqrt(len(sizes))).astype(np.float32)


def critic_nearest(queries: CriticReadout, synthetic: CriticReadout, index: IndexFactory = NeighbourIndex
                   ) -> np.ndarray:
    """Extra variant: minus the distance to the nearest synthetic image in z-scored pooled space."""
    mu, sd = synthetic.pooled.mean(0), synthetic.pooled.std(0)
    sd[sd < 1e-8] = 1.0
    index = index((synthetic.pooled - mu) / sd)
    return -index.search((queries.pooled - mu) / sd, 1)[0][:, 0]


@dataclass(frozen=True)
class SeedDCLGANOptions(Options):
    clf_c: float = option(0.01, "inverse L2 strength of the logistic regression on critic features")
    overlap_grid: int = option(8, "pooling grid of the critic maps compared between a real and its nearest "
                                  "synthetic image")
    saliency_top: int = option(3, "test images drawn with their critic-overlap map (with --artifacts)")
    dclgan_domain: str = option("halves", "domain B of the DCLGAN: the other half of the synthetic images, or "
                                          "the labelled real_not_used images (the paper)")


def make_classifier(cfg: MethodConfig) -> Callable[[], object]:
    """(c)'s classifier: standardised features, strongly L2-regularised logistic regression.

    Critic features have hundreds of dimensions for ~200 labelled rows, so the default C is small
    (--set clf_c=C to change it); scaling lives inside the pipeline so it is refit per fold.
    """
    c = SeedDCLGANOptions.read(cfg.options).clf_c
    if c <= 0:
        raise SynthleakError("--set clf_c=C: C must be positive")
    return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


class _Classifier:
    """(c)'s classifier fitted on some rows; a one-class training part (small group-aware splits of a few patients)
    teaches it only its member rate, an uninformative constant, instead of a crash."""

    def __init__(self, make: Callable[[], object], x: np.ndarray, y: np.ndarray):
        self.rate = float(np.mean(y))
        self.model = make().fit(x, y) if len(np.unique(y)) == 2 else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.rate) if self.model is None else self.model.predict_proba(x)[:, 1]


def _out_of_fold(make: Callable[[], object], x: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
    """(c)'s P(used) of each row from a classifier fitted on the other folds."""
    oof = np.zeros(len(y))
    for train, val in folds:
        oof[val] = _Classifier(make, x[train], y[train]).predict(x[val])
    return oof


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan")


def _zscore(train: np.ndarray, values: np.ndarray) -> np.ndarray:
    sd = float(np.std(train))
    return (values - float(np.mean(train))) / (sd if sd > 1e-12 else 1.0)


# ------------------------------------------------------------------------------ model read-outs
@dataclass
class Readouts:
    """Critic read-outs of one trained model for the synthetic reference, labelled and test reals."""

    trained: TrainedCritic
    synthetic: CriticReadout
    labelled: CriticReadout | None
    test: CriticReadout | None


def read_all(trained: TrainedCritic, data: AuditData, synthetic: ImageSet, cfg: MethodConfig) -> Readouts:
    grid = SeedDCLGANOptions.read(cfg.options).overlap_grid

    def read(images: ImageSet | None) -> CriticReadout | None:
        if images is None:
            return None
        return read_critic(trained.critic, images, trained.settings, cfg.device, grid=grid)

    return Readouts(trained, read(synthetic), read(data.labelled()[0] if data.has_labelled else None),
                    read(data.real_unknown))


@dataclass
class SignalSet:
    """The critic's label-free signals (a)-(b) and the nearest-distance variant of every real, the critic features
    (c) is read from, and per test image its nearest synthetic image (for saliency).

    `labelled` rows are honest: with the real_not_used domain each fold's rows come from the model that never saw
    them (z-scored on that model's own synthetic scores), and `test` averages the fold models."""

    labelled: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    #: (labelled, test) pooled critic features of the model that reads fold k's rows
    features_for_fold: Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None
    neighbours: np.ndarray | None
    saliency_model: Readouts


def halves_signals(data: AuditData, cfg: MethodConfig, settings: DCLGANSettings, train_images: ImageSet,
                   synthetic: ImageSet, folds, index: IndexFactory = NeighbourIndex) -> tuple[SignalSet, str]:
    """One label-free GAN between two halves of the synthetic training images."""
    a, b = split_halves(train_images, cfg.seed)
    trained = train_or_load(a, b, settings, cfg, tag="halves")
    r = read_all(trained, data, synthetic, cfg)
    lab, test = {}, {}
    neighbours = None
    if r.labelled is not None:
        lab["critic"] = r.labelled.logit.astype(float)
        lab["overlap"] = overlap_scores(r.labelled, r.synthetic)[0]
        lab["critic_nearest"] = critic_nearest(r.labelled, r.synthetic, index)
    if r.test is not None:
        test["critic"] = r.test.logit.astype(float)
        test["overlap"], neighbours = overlap_scores(r.test, r.synthetic)
        test["critic_nearest"] = critic_nearest(r.test, r.synthetic, index)
    desc = (f"domain A = {len(a)}, domain B = {len(b)} images: two seeded halves of the synthetic "
            f"training images (no reals seen)")
    x_test = r.test.pooled if r.test is not None else None
    features = (lambda k: (r.labelled.pooled, x_test)) if r.labelled is not None else None
    return SignalSet(lab, test, features, neighbours, r), desc


def cross_fitted_signals(data: AuditData, cfg: MethodConfig, settings: DCLGANSettings, train_images: ImageSet,
                         synthetic: ImageSet, folds, index: IndexFactory = NeighbourIndex) -> tuple[SignalSet, str]:
    """The paper's domains (generated vs real_not_used), one GAN per labelled fold (cross-fitting)."""
    images, y = data.labelled()
    n_test = len(data.real_unknown) if data.real_unknown is not None else 0
    lab = {name: np.zeros(len(y)) for name in ("critic", "overlap", "critic_nearest")}
    test = {name: np.zeros(n_test) for name in lab}
    per_fold: list[Readouts] = []
    neighbours = None
    for k, (tr, _) in enumerate(folds):  # every fold checked before any GAN trains
        if not np.any(y[tr] == 0):
            raise SynthleakError(f"--set dclgan_domain=real_not_used: labelled fold {k + 1} has no training "
                                 "real_not_used images (use fewer --folds)")
    for k, (tr, va) in enumerate(folds):
        non_members = images.subset(tr[y[tr] == 0])
        log(f"[seed-dclgan] fold {k + 1}/{len(folds)}: DCLGAN on {len(train_images)} generated vs "
            f"{len(non_members)} training-fold real_not_used")
        trained = train_or_load(train_images, non_members, settings, cfg, tag=f"real_not_used-fold{k}")
        r = read_all(trained, data, synthetic, cfg)
        per_fold.append(r)
        # Fold models differ in scale: standardise (a), (b) and the nearest distance on each model's
        # own scores of the synthetic images (leave-self-out for (b) and the distance).
        syn_critic = r.synthetic.logit
        syn_overlap = overlap_scores(r.synthetic, r.synthetic, exclude_self=True)[0]
        syn_nearest = _self_excluded_nearest(r.synthetic, index)
        lab["critic"][va] = _zscore(syn_critic, r.labelled.logit[va])
        lab["overlap"][va] = _zscore(syn_overlap, overlap_scores(r.labelled, r.synthetic)[0][va])
        lab["critic_nearest"][va] = _zscore(syn_nearest, critic_nearest(r.labelled, r.synthetic, index)[va])
        if r.test is not None:
            test["critic"] += _zscore(syn_critic, r.test.logit) / len(folds)
            ov, nn = overlap_scores(r.test, r.synthetic)
            test["overlap"] += _zscore(syn_overlap, ov) / len(folds)
            neighbours = nn if neighbours is None else neighbours
            test["critic_nearest"] += _zscore(syn_nearest, critic_nearest(r.test, r.synthetic, index)) / len(folds)
    if data.real_unknown is None:
        test = {}

    def features_for_fold(k: int):
        r = per_fold[k]
        return r.labelled.pooled, (r.test.pooled if r.test is not None else None)

    desc = (f"one model per labelled fold ({len(folds)}): domain A = {len(train_images)} synthetic training "
            f"images, domain B = that fold's training real_not_used images (cross-fitted)")
    return SignalSet(lab, test, features_for_fold, neighbours, per_fold[0]), desc


def _self_excluded_nearest(synthetic: CriticReadout, index: IndexFactory = NeighbourIndex) -> np.ndarray:
    mu, sd = synthetic.pooled.mean(0), synthetic.pooled.std(0)
    sd[sd < 1e-8] = 1.0
    z = (synthetic.pooled - mu) / sd
    return -index(z).search(z, 2)[0][:, 1]


# ------------------------------------------------------------------------------------ saliency
def save_saliency(signals: SignalSet, data: AuditData, synthetic: ImageSet, scores: np.ndarray,
                  cfg: MethodConfig) -> list[Path]:
    """For the top-flagged test images: the image, its nearest synthetic image (by (b)) and the
    per-location cosine overlap of their deepest critic maps, as one PNG each."""
    if cfg.artifacts_dir is None or data.real_unknown is None or signals.neighbours is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = SeedDCLGANOptions.read(cfg.options).saliency_top
    r = signals.saliency_model
    layer = PatchGANDiscriminator.HOOKED[-1]
    centre = r.synthetic.mean_maps[layer]
    out_dir = Path(cfg.artifacts_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in np.argsort(-scores, kind="stable")[:top]:
        j = int(signals.neighbours[i])
        pair = ImageSet.concat([data.real_unknown.subset([i]), synthetic.subset([j])])
        maps = activation_maps(r.trained.critic, pair, r.trained.settings, cfg.device, layer) - centre
        overlap = spatial_overlap(maps[0], maps[1])
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
        axes[0].imshow(pair.pixels[0], cmap="gray")
        axes[0].set_title(f"test {data.real_unknown.ids[i]}")
        axes[1].imshow(pair.pixels[1], cmap="gray")
        axes[1].set_title(f"nearest synthetic {synthetic.ids[j]}")
        axes[2].imshow(pair.pixels[0], cmap="gray")
        size = pair.pixels.shape[1]
        im = axes[2].imshow(overlap, cmap="magma", alpha=0.6, vmin=-1, vmax=1, extent=(0, size, size, 0),
                             interpolation="bilinear")
        axes[2].set_title(f"critic {layer} overlap (cosine)")
        fig.colorbar(im, ax=axes[2], fraction=0.046)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / f"seed-dclgan_overlap_{data.real_unknown.ids[i]}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def spatial_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-location cosine similarity [h, w] between two activation maps [C, h, w]."""
    num = (a * b).sum(0)
    den = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    return num / np.maximum(den, 1e-12)


# ----------------------------------------------------------------------------------------- run
def _check_options(cfg: MethodConfig) -> None:
    """Fail on a bad option before any training, not after it."""
    opts = SeedDCLGANOptions.read(cfg.options)
    if opts.overlap_grid < 1:
        raise SynthleakError("--set overlap_grid=N: N must be at least 1")
    if opts.saliency_top < 0:
        raise SynthleakError("--set saliency_top=N: N must be 0 or more")
    make_classifier(cfg)


class SeedDCLGAN(ScoringMethod):
    """Paper method 4: DCLGAN critic output, activation overlap and critic features, chosen by CV.

    `prepare` trains (or loads) the critic(s) and reads every real once: (a), (b) and the nearest-distance variant
    are label-free per image (with the real_not_used domain already cross-fitted over the audit's folds, one GAN
    per fold). `fit` on a fold's labelled rows fits (c)'s classifier on them and chooses the signal with the best
    AUC on them ((c) judged by an inner CV of those rows); `score` z-scores the chosen signal against its values
    on the training rows. The fit on every labelled real chooses by the out-of-fold AUC of each signal; with the
    real_not_used domain its (c) averages the fold models (one critic per fold: none saw every labelled real)."""

    Settings = SeedDCLGANOptions
    reports_features = False
    uses_labels_when_given = True

    def prepare(self, audit: AuditContext) -> Embedding:
        data, cfg = audit.data, self.cfg
        self.dclgan = dclgan_settings(cfg)
        _check_options(cfg)
        self.domain = self.settings.dclgan_domain
        if self.domain not in DOMAINS:
            raise SynthleakError(f"--set dclgan_domain={self.domain}: choose from {', '.join(DOMAINS)}")
        if self.domain == "real_not_used" and not data.has_labelled:
            raise SynthleakError("--set dclgan_domain=real_not_used needs labelled reals (real_used/ and "
                                 "real_not_used/)")
        train_images, train_desc = training_synthetic(data, cfg)
        # the critic reads every synthetic image several times
        self.synthetic_images = data.synthetic(cfg.synthetic_pool).materialise()
        build = halves_signals if self.domain == "halves" else cross_fitted_signals
        signals, model_desc = build(data, cfg, settings=self.dclgan, train_images=train_images,
                                    synthetic=self.synthetic_images, folds=audit.folds(cfg) if data.has_labelled
                                    else None, index=audit.index)
        return self.keep_signals(audit, signals, {"dclgan": f"{model_desc}; from {train_desc}"})

    def keep_signals(self, audit: AuditContext, signals: SignalSet, trained_on: dict) -> Embedding:
        """Keep the critic's signals of every real and start the fit state afresh (what `prepare` ends with; tests
        give their own signals here). The embedding's rows are the critic features of the model that reads fold 1
        (the only model with the halves domain)."""
        self.data, self.signals, self.labelled = audit.data, signals, audit.data.has_labelled
        self.folds = audit.folds(self.cfg) if self.labelled else None
        self.y = audit.y if self.labelled else None
        self.groups = audit.data.labelled_groups() if self.labelled else None
        self.n_labelled = 0 if self.y is None else len(self.y)
        self.make = make_classifier(self.cfg)
        self.fold_models: dict[int, _Classifier] = {}
        self.per_fold: list[str] = []
        self.rows = {}
        for name in ("critic", "overlap", "critic_nearest"):
            parts = [p for p in (signals.labelled.get(name), signals.test.get(name)) if p is not None]
            if parts:
                self.rows[name] = np.concatenate(parts)
        r = signals.saliency_model
        return Embedding("dclgan critic", None, None if r.labelled is None else r.labelled.pooled,
                         None if r.test is None else r.test.pooled, trained_on)

    # (c), the classifier on critic features
    def _fold_model(self, k: int) -> _Classifier:
        """(c)'s classifier of fold k: fitted on that fold's training rows, with the features of the model that
        reads fold k."""
        if k not in self.fold_models:
            train, _ = self.folds[k]
            x, _ = self.signals.features_for_fold(k)
            self.fold_models[k] = _Classifier(self.make, x[train], self.y[train])
        return self.fold_models[k]

    def _features_out_of_fold(self) -> np.ndarray:
        oof = np.zeros(self.n_labelled)
        for k, (_, val) in enumerate(self.folds):
            oof[val] = self._fold_model(k).predict(self.signals.features_for_fold(k)[0][val])
        return oof

    def fit(self, reference: Reference) -> "SeedDCLGAN":
        if reference.labelled is None:
            return self
        names = list(SIGNALS)
        if reference.final:
            train = {n: self.rows[n][:self.n_labelled] for n in names if n != "features"}
            train["features"] = self._features_out_of_fold()
            y = self.y
            self.cv_auc = {n: _auc(y, train[n]) for n in names}
            self.chosen = max(names, key=lambda n: (self.cv_auc[n], -names.index(n)))
            if self.domain == "halves":
                x_labelled, _ = self.signals.features_for_fold(0)
                self.final_model = _Classifier(self.make, x_labelled, y)
        else:
            rows, y, k = reference.labelled_rows, reference.y, reference.fold
            train = {n: self.rows[n][rows] for n in names if n != "features"}
            x_labelled, _ = self.signals.features_for_fold(k)
            inner = cv_folds(y, None if self.groups is None else self.groups[rows], self.cfg.n_folds, self.cfg.seed)
            train["features"] = _out_of_fold(self.make, x_labelled[rows], y, inner)
            self.chosen = max(names, key=lambda n: (_auc(y, train[n]), -names.index(n)))
            self.per_fold.append(self.chosen)
        self.fold = reference.fold
        self.reference_values = train[self.chosen]
        return self

    def _features_scores(self, positions: np.ndarray) -> np.ndarray:
        if self.fold < len(self.folds):  # a fold's held-out labelled rows
            return self._fold_model(self.fold).predict(self.signals.features_for_fold(self.fold)[0][positions])
        test = positions - self.n_labelled
        if self.domain == "halves":
            return self.final_model.predict(self.signals.features_for_fold(0)[1][test])
        mean = np.zeros(len(test))
        for k in range(len(self.folds)):
            mean += self._fold_model(k).predict(self.signals.features_for_fold(k)[1][test]) / len(self.folds)
        return mean

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        signals = {n: self.rows[n][positions] for n in ("critic", "overlap") if n in self.rows}
        if self.labelled:
            signals["features"] = self._features_scores(positions)
        if "critic_nearest" in self.rows:
            signals["critic_nearest"] = self.rows["critic_nearest"][positions]
        values = (_zscore(self.reference_values, signals[self.chosen]) if self.labelled else signals["overlap"])
        nearest = None
        if neighbours and self.signals.neighbours is not None:
            nearest = self.signals.neighbours[positions - self.n_labelled][:, None]
        return Scores(values, nearest, signals)

    def notes(self, embedding: Embedding) -> list[str]:
        if self.labelled:
            aucs = ", ".join(f"{n} {v:.3f}" for n, v in self.cv_auc.items())
            notes = [f"main score: '{self.chosen}' (best CV AUC on labelled reals: {aucs}); labelled scores are "
                     f"nested-CV (per-fold picks: {', '.join(self.per_fold)})"]
        else:
            notes = ["no labelled reals: main score is (b) activation overlap with the nearest generated image"]
        settings, meta = self.dclgan, self.signals.saliency_model.trained.meta
        epochs = meta.get("epochs_done", settings.epochs)
        timing = ""
        if meta.get("train_seconds") is not None and epochs:
            timing = f", {meta['train_seconds'] / epochs:.1f} s/epoch ({meta.get('images_per_s')} img/s)"
        notes.append(f"DCLGAN {settings.image_size}px, {settings.base_filters} base filters, "
                     f"{settings.resnet_blocks} ResNet blocks, {epochs} epochs{timing}, domains: {self.domain}")
        if self.domain == "real_not_used":
            notes.append("cross-fitted: labelled rows scored by the fold model that never saw them; "
                         "(c)'s training rows were seen by their critic, so (c) is honest but pessimistic")
        return notes

    def run(self, audit: AuditContext) -> MethodResult:
        result = super().run(audit)
        if result.test_scores is not None:
            result.artifacts = save_saliency(self.signals, self.data, self.synthetic_images, result.test_scores,
                                             self.cfg)
        return result
