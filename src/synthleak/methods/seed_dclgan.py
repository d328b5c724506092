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
from ..features.embedding import training_synthetic
from .base import Method, MethodResult, Signal, cross_fitted_classifier
from .context import AuditContext, as_context

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


def safe_cross_fit(x: np.ndarray, y: np.ndarray, x_other: np.ndarray | None, make: Callable[[], object],
                   folds) -> tuple[np.ndarray, np.ndarray | None]:
    """cross_fitted_classifier, tolerating folds whose training rows hold one class only.

    Small group-aware splits (a few patients) can leave a training fold with a single label; its
    held-out rows then get that fold's member rate (an uninformative constant) instead of a crash.
    """
    usable = [(tr, va) for tr, va in folds if len(np.unique(y[tr])) == 2]
    oof, other = cross_fitted_classifier(x, y, x_other if len(np.unique(y)) == 2 else None, make, usable)
    for tr, va in folds:
        if len(np.unique(y[tr])) < 2:
            oof[va] = float(np.mean(y[tr]))
    if x_other is not None and other is None:
        other = np.full(len(x_other), float(np.mean(y)))
    return oof, other


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
    """Labelled (honest) and test scores of each signal, plus per-test nearest synthetic (for saliency)."""

    labelled: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
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
    if r.labelled is not None:
        _, y = data.labelled()
        x_test = r.test.pooled if r.test is not None else None
        lab["features"], t = safe_cross_fit(r.labelled.pooled, y, x_test, make_classifier(cfg), folds)
        if t is not None:
            test["features"] = t
    desc = (f"domain A = {len(a)}, domain B = {len(b)} images: two seeded halves of the synthetic "
            f"training images (no reals seen)")
    features = (lambda k: (r.labelled.pooled, x_test)) if r.labelled is not None else None
    return SignalSet(lab, test, features, neighbours, r), desc


def cross_fitted_signals(data: AuditData, cfg: MethodConfig, settings: DCLGANSettings, train_images: ImageSet,
                         synthetic: ImageSet, folds, index: IndexFactory = NeighbourIndex) -> tuple[SignalSet, str]:
    """The paper's domains (generated vs real_not_used), one GAN per labelled fold (cross-fitting)."""
    images, y = data.labelled()
    n_test = len(data.real_unknown) if data.real_unknown is not None else 0
    lab = {name: np.zeros(len(y)) for name in ("critic", "overlap", "critic_nearest", "features")}
    test = {name: np.zeros(n_test) for name in lab}
    per_fold: list[Readouts] = []
    neighbours = None
    make = make_classifier(cfg)
    for k, (tr, va) in enumerate(folds):
        if not np.any(y[tr] == 0):
            raise SynthleakError(f"--set dclgan_domain=real_not_used: labelled fold {k + 1} has no training "
                                 "real_not_used images (use fewer --folds)")
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
        if len(np.unique(y[tr])) == 2:
            model = make().fit(r.labelled.pooled[tr], y[tr])
            predict = lambda x, model=model: model.predict_proba(x)[:, 1]  # noqa: E731
        else:  # a one-class training fold carries no information: constant member rate
            predict = lambda x, rate=float(np.mean(y[tr])): np.full(len(x), rate)  # noqa: E731
        lab["features"][va] = predict(r.labelled.pooled[va])
        if r.test is not None:
            test["critic"] += _zscore(syn_critic, r.test.logit) / len(folds)
            ov, nn = overlap_scores(r.test, r.synthetic)
            test["overlap"] += _zscore(syn_overlap, ov) / len(folds)
            neighbours = nn if neighbours is None else neighbours
            test["critic_nearest"] += _zscore(syn_nearest, critic_nearest(r.test, r.synthetic, index)) / len(folds)
            test["features"] += predict(r.test.pooled) / len(folds)
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


# ---------------------------------------------------------------------------- honest selection
@dataclass
class Choice:
    labelled: np.ndarray
    test: np.ndarray | None
    chosen: str
    per_fold: list[str]
    cv_auc: dict[str, float]


def choose_signal(signals: SignalSet, y: np.ndarray, groups: np.ndarray | None, folds, cfg: MethodConfig) -> Choice:
    """Nested choice among (a)-(c): each outer fold picks by AUC on its training rows only.

    Scores of the held-out rows are z-scored against the training rows of the chosen signal, so
    rows from folds that chose different signals share one scale. The test score uses the signal
    with the best CV AUC on all labelled rows, z-scored the same way.
    """
    names = [n for n in SIGNALS if n in signals.labelled]
    make = make_classifier(cfg)
    out = np.zeros(len(y))
    per_fold = []
    for k, (tr, va) in enumerate(folds):
        cands: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in names:
            if name == "features":
                x_lab, _ = signals.features_for_fold(k)
                inner = cv_folds(y[tr], None if groups is None else groups[tr], cfg.n_folds, cfg.seed)
                cands[name] = safe_cross_fit(x_lab[tr], y[tr], x_lab[va], make, inner)
            else:
                cands[name] = (signals.labelled[name][tr], signals.labelled[name][va])
        best = max(names, key=lambda n: (_auc(y[tr], cands[n][0]), -names.index(n)))
        per_fold.append(best)
        out[va] = _zscore(cands[best][0], cands[best][1])
    cv_auc = {n: _auc(y, signals.labelled[n]) for n in names}
    chosen = max(names, key=lambda n: (cv_auc[n], -names.index(n)))
    test = None
    if chosen in signals.test:
        test = _zscore(signals.labelled[chosen], signals.test[chosen])
    return Choice(out, test, chosen, per_fold, cv_auc)


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


def run(audit: AuditContext | AuditData, cfg: MethodConfig) -> MethodResult:
    audit = as_context(audit, cfg)  # (bare AuditData: library callers of this method alone)
    data = audit.data
    settings = dclgan_settings(cfg)
    _check_options(cfg)
    domain = SeedDCLGANOptions.read(cfg.options).dclgan_domain
    if domain not in DOMAINS:
        raise SynthleakError(f"--set dclgan_domain={domain}: choose from {', '.join(DOMAINS)}")
    if domain == "real_not_used" and not data.has_labelled:
        raise SynthleakError("--set dclgan_domain=real_not_used needs labelled reals (real_used/ and real_not_used/)")
    train_images, train_desc = training_synthetic(data, cfg)
    synthetic = data.synthetic(cfg.synthetic_pool).materialise()  # the critic reads every image several times
    folds = audit.folds(cfg) if data.has_labelled else None
    build = halves_signals if domain == "halves" else cross_fitted_signals
    signals, model_desc = build(data, cfg, settings, train_images, synthetic, folds, audit.index)

    result = MethodResult(test_scores=None, trained_on={"dclgan": f"{model_desc}; from {train_desc}"})
    for name in (*SIGNALS, "critic_nearest"):
        if name in signals.labelled or name in signals.test:
            result.variants[name] = Signal(signals.labelled.get(name), signals.test.get(name))
    if data.has_labelled:
        _, y = data.labelled()
        choice = choose_signal(signals, y, data.labelled_groups(), folds, cfg)
        result.labelled_scores, result.test_scores = choice.labelled, choice.test
        aucs = ", ".join(f"{n} {v:.3f}" for n, v in choice.cv_auc.items())
        result.notes.append(f"main score: '{choice.chosen}' (best CV AUC on labelled reals: {aucs}); labelled "
                            f"scores are nested-CV (per-fold picks: {', '.join(choice.per_fold)})")
    else:
        result.test_scores = signals.test.get("overlap")
        result.notes.append("no labelled reals: main score is (b) activation overlap with the nearest generated image")
    result.neighbours = None if signals.neighbours is None else signals.neighbours[:, None]
    if result.test_scores is not None:
        result.artifacts = save_saliency(signals, data, synthetic, result.test_scores, cfg)
    meta = signals.saliency_model.trained.meta
    epochs = meta.get("epochs_done", settings.epochs)
    timing = ""
    if meta.get("train_seconds") is not None and epochs:
        timing = f", {meta['train_seconds'] / epochs:.1f} s/epoch ({meta.get('images_per_s')} img/s)"
    result.notes.append(f"DCLGAN {settings.image_size}px, {settings.base_filters} base filters, "
                        f"{settings.resnet_blocks} ResNet blocks, {epochs} epochs{timing}, domains: {domain}")
    if domain == "real_not_used":
        result.notes.append("cross-fitted: labelled rows scored by the fold model that never saw them; "
                            "(c)'s training rows were seen by their critic, so (c) is honest but pessimistic")
    return result


class SeedDCLGAN(Method):
    """Paper method 4: DCLGAN critic output, activation overlap and critic features, chosen by CV."""

    Settings = SeedDCLGANOptions

    def run(self, audit: AuditContext) -> MethodResult:
        return run(audit, self.cfg)
