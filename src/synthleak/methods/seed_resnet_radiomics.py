"""Seed method 3: ResNet-AE latent + radiomics -> meta-signals -> Random Forest (`seed-resnet-radiomics`).

Per real image three meta-signals measure how close it is to what the generator produces:
  * the ResNet autoencoder's reconstruction error (the AE is trained on synthetic images only),
  * the minimum cosine distance from its latent to the synthetic latents,
  * the Mahalanobis distance (square root) to the synthetic distribution over the top-K of the
    combined latent + radiomics features, K features ranked by Random Forest importance.
A Random Forest on the meta-signals (optionally plus the raw features) of the labelled reals gives
P(used). Unlike the paper's public notebook, the top-K ranking learns from labels, so it lives in the
classifier Pipeline and is refit inside every cross-validation fold: a held-out fold's labels never
choose its features. Options (`--set`): top_k=20, rf_raw_features=0|1, fallback=cosine|recon|
mahalanobis (the unsupervised signal used when there are no labelled reals), n_trees=100 (both forests).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import SynthleakError
from ..features.radiomics import RadiomicsExtractor
from ..features.resnet_ae import ResNetAEExtractor, ResNetAEOptions
from ..runtime import log
from ..options import Options, option
from ..features.embedding import Embedding, training_synthetic
from .base import Reference, Scores, ScoringMethod, fold_reference_size
from .context import AuditContext

#: meta-signal columns that precede the raw features in the classifier's input
META_COLUMNS = ("recon_error", "min_cosine_distance")
FALLBACKS = ("cosine", "recon", "mahalanobis")
N_TREES = 100


def make_forest(seed: int, n_trees: int = N_TREES) -> RandomForestClassifier:
    """The paper's Random Forest: 100 Gini trees (one job: the audit parallelises elsewhere)."""
    return RandomForestClassifier(n_estimators=n_trees, criterion="gini", random_state=seed, n_jobs=1)


def make_importance_model(seed: int, n_trees: int = N_TREES):
    """Estimator whose feature_importances_ rank the raw features (looked up at fit time: tests spy on it)."""
    return make_forest(seed, n_trees)


class MahalanobisReference:
    """Shrunk (Ledoit-Wolf) Gaussian of synthetic feature vectors; distance = sqrt of the Mahalanobis form.

    Shrinkage keeps the covariance invertible when features are many or collinear (AE latents).
    """

    def __init__(self, synthetic: np.ndarray):
        self.model = LedoitWolf().fit(np.asarray(synthetic, dtype=np.float64))

    def distance(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(self.model.mahalanobis(np.asarray(x, dtype=np.float64)), 0.0))


class TopKMahalanobis(TransformerMixin, BaseEstimator):
    """Label-dependent step of the method, fit on training-fold rows only (it sits in the Pipeline).

    Input X = [meta-signal columns (n_meta) | raw features]. fit ranks the raw features by Random Forest
    importance against y and keeps the top k; transform appends the Mahalanobis distance of those k
    features to the synthetic distribution (`synthetic`: raw features of synthetic images, already
    standardised like X). Output: [meta-signals, mahalanobis] (+ raw features when keep_raw).
    """

    def __init__(self, synthetic: np.ndarray, k: int = 20, n_meta: int = len(META_COLUMNS),
                 keep_raw: bool = False, random_state: int = 0, importance_model=None, n_trees: int = N_TREES):
        self.synthetic = synthetic
        self.k = k
        self.n_meta = n_meta
        self.keep_raw = keep_raw
        self.random_state = random_state
        self.importance_model = importance_model
        self.n_trees = n_trees

    def fit(self, X: np.ndarray, y: np.ndarray) -> "TopKMahalanobis":
        raw = np.asarray(X)[:, self.n_meta:]
        ranker = (clone(self.importance_model) if self.importance_model is not None
                  else make_importance_model(self.random_state, self.n_trees))
        ranker.fit(raw, y)
        importance = np.asarray(ranker.feature_importances_, dtype=float)
        # stable sort: ties (e.g. never-used features) keep column order, so runs are reproducible
        self.selected_ = np.argsort(-importance, kind="stable")[: max(1, min(self.k, raw.shape[1]))]
        self.importances_ = importance
        self.reference_ = MahalanobisReference(np.asarray(self.synthetic)[:, self.selected_])
        return self

    def mahalanobis(self, X: np.ndarray) -> np.ndarray:
        return self.reference_.distance(np.asarray(X)[:, self.n_meta:][:, self.selected_])

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        parts = [X[:, : self.n_meta], self.mahalanobis(X)[:, None]]
        if self.keep_raw:
            parts.append(X[:, self.n_meta:])
        return np.concatenate(parts, axis=1)


def make_classifier(synthetic: np.ndarray, k: int, keep_raw: bool, seed: int, importance_model=None,
                    n_trees: int = N_TREES) -> Pipeline:
    return Pipeline([
        ("meta", TopKMahalanobis(synthetic, k=k, keep_raw=keep_raw, random_state=seed,
                                 importance_model=importance_model, n_trees=n_trees)),
        ("forest", make_forest(seed, n_trees)),
    ])


# ---------------------------------------------------------------------------------------------
# features and unsupervised meta-signals


def min_cosine_distance(queries: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(1 - max cosine similarity to the reference rows, index of the 3 most similar) per query."""
    def unit(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    ref = unit(reference)
    dist, idx = [], []
    for start in range(0, len(queries), chunk):
        sim = unit(queries[start:start + chunk]) @ ref.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :3]
        idx.append(top)
        dist.append(1.0 - sim[np.arange(len(sim)), top[:, 0]])
    if not dist:
        return np.zeros(0), np.zeros((0, 3), int)
    return np.concatenate(dist), np.concatenate(idx)


@dataclass
class ImageFeatures:
    """Per-image quantities of one image set."""

    latent: np.ndarray
    radiomics: np.ndarray
    recon_error: np.ndarray

    @property
    def raw(self) -> np.ndarray:
        return np.concatenate([self.latent, self.radiomics], axis=1)


def _features(ae: ResNetAEExtractor, rad: RadiomicsExtractor, images: ImageSet) -> ImageFeatures:
    return ImageFeatures(ae.extract(images), rad.extract(images), ae.reconstruction_error(images))


@dataclass(frozen=True)
class SeedResNetRadiomicsOptions(Options):
    top_k: int = option(20, "features kept by the Random Forest's importance for the Mahalanobis distance")
    rf_raw_features: int = option(0, "1: the final forest also sees the raw features, not only the meta-signals")
    fallback: str = option("cosine", "the unsupervised score used without labelled reals (see FALLBACKS)")
    n_trees: int = option(N_TREES, "trees of both Random Forests")


def _options(cfg: MethodConfig) -> tuple[int, bool, str, int]:
    opts = SeedResNetRadiomicsOptions.read(cfg.options)
    k = opts.top_k
    if k < 1:
        raise SynthleakError(f"--set top_k={k}: must be at least 1")
    keep_raw = opts.rf_raw_features
    if keep_raw not in (0, 1):
        raise SynthleakError(f"--set rf_raw_features={keep_raw}: must be 0 or 1")
    fallback = opts.fallback
    if fallback not in FALLBACKS:
        raise SynthleakError(f"--set fallback={fallback}: choose from {', '.join(FALLBACKS)}")
    n_trees = opts.n_trees
    if n_trees < 1:
        raise SynthleakError(f"--set n_trees={n_trees}: must be at least 1")
    return k, bool(keep_raw), fallback, n_trees


@dataclass
class SignalSpace:
    """Label-free mapping of ImageFeatures to the classifier input and the unsupervised meta-signals.

    Raw features are z-scored with synthetic statistics; the reference distributions (latents for the
    cosine distance, radiomics for the unsupervised Mahalanobis) are the synthetic images'.
    """

    synthetic: ImageFeatures

    def __post_init__(self) -> None:
        raw = self.synthetic.raw
        self.mu, self.sd = raw.mean(0), raw.std(0)
        self.sd[self.sd < 1e-8] = 1.0
        self.n_latent = self.synthetic.latent.shape[1]
        self.radiomics_reference = MahalanobisReference(self._radiomics_z(self.synthetic.radiomics))

    def _radiomics_z(self, radiomics: np.ndarray) -> np.ndarray:
        return (radiomics - self.mu[self.n_latent:]) / self.sd[self.n_latent:]

    @property
    def synthetic_raw(self) -> np.ndarray:
        return (self.synthetic.raw - self.mu) / self.sd

    def table(self, f: ImageFeatures) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(classifier input [recon, cosine, z-scored raw], unsupervised signals, 3 nearest synthetic)."""
        cos, nn_idx = min_cosine_distance(f.latent, self.synthetic.latent)
        unsupervised = {  # negated: higher = closer to the synthetic images = more likely used
            "recon": -f.recon_error.astype(float),
            "cosine": -cos,
            "mahalanobis": -self.radiomics_reference.distance(self._radiomics_z(f.radiomics)),
        }
        x = np.concatenate([f.recon_error[:, None], cos[:, None], (f.raw - self.mu) / self.sd], axis=1)
        return x, unsupervised, nn_idx


VARIANT_NAMES = {"recon": "recon-error", "cosine": "min-cosine-distance", "mahalanobis": "mahalanobis-radiomics"}


class SeedResNetRadiomics(ScoringMethod):
    """Paper method 3: ResNet autoencoder latent + radiomics, meta-signals, Random Forest.

    `prepare` trains (or loads) the autoencoder on the synthetic images and maps every real to the classifier's
    input and the label-free meta-signals once; `fit` cross-fits the Pipeline (top-K + Mahalanobis + forest) on a
    fold's labelled rows, and `score` reads P(used) and the meta-signals (without labelled reals the score is
    the `fallback` meta-signal)."""

    Settings = SeedResNetRadiomicsOptions
    reports_features = False
    uses_labels_when_given = True

    def prepare(self, audit: AuditContext) -> Embedding:
        data, cfg = audit.data, self.cfg
        self.k, self.keep_raw, self.fallback, self.n_trees = _options(cfg)
        self.has_labelled, self.has_test = data.has_labelled, data.real_unknown is not None
        if self.has_labelled:
            self.n_folds = len(audit.folds(cfg))
            fold_reference_size(audit.y, audit.folds(cfg), (0, 1))  # every training part holds both classes
        train_images, train_desc = training_synthetic(data, cfg)
        # The reference distribution uses every image of the same pool; --max-train-images only caps
        # what the autoencoder trains on (a CPU budget), not what the distances compare against.
        reference_images, reference_desc = training_synthetic(data, replace(cfg, max_train_images=None))
        self.ae = ResNetAEExtractor(cfg).fit(train_images, train_desc)
        weights = ResNetAEOptions.read(cfg.options).weights
        self.rad = RadiomicsExtractor(cfg)
        log(f"[seed-resnet-radiomics] features of {len(reference_images)} synthetic images")
        space = SignalSpace(_features(self.ae, self.rad, reference_images))
        self.synthetic_raw = space.synthetic_raw
        parts = {name: space.table(_features(self.ae, self.rad, images)) for name, images in
                 (("labelled", data.labelled()[0] if self.has_labelled else None), ("test", data.real_unknown))
                 if images is not None}
        tables = list(parts.values())
        self.unsupervised = {key: np.concatenate([t[1][key] for t in tables]) for key in VARIANT_NAMES}
        self.nearest = np.concatenate([t[2] for t in tables])
        self.selections: list[np.ndarray] = []
        record = {"resnet-ae": f"weights {weights}" if weights else self.ae.meta.get("trained_on", train_desc),
                  "synthetic reference (cosine, Mahalanobis)": reference_desc}
        # (nearest synthetic images index train/generated (+ test/generated): a prefix of data.synthetic(), as the
        # report expects)
        return Embedding("resnet-ae+radiomics", None, parts["labelled"][0] if self.has_labelled else None,
                         parts["test"][0] if "test" in parts else None, record)

    def fit(self, reference: Reference) -> "SeedResNetRadiomics":
        if reference.labelled is not None and not (reference.final and not self.has_test):
            self.model = make_classifier(self.synthetic_raw, self.k, self.keep_raw, self.cfg.seed,
                                         n_trees=self.n_trees).fit(reference.labelled, reference.y)
            self.selections.append(self.model.named_steps["meta"].selected_)
        return self

    def score(self, features: np.ndarray, positions: np.ndarray, neighbours: bool = False) -> Scores:
        variants = {name: self.unsupervised[key][positions] for key, name in VARIANT_NAMES.items()}
        if not self.has_labelled:
            values = self.unsupervised[self.fallback][positions]
        else:
            values = self.model.predict_proba(features)[:, 1]
            variants[f"mahalanobis-top{self.k}"] = -self.model.named_steps["meta"].mahalanobis(features)
        return Scores(values, self.nearest[positions] if neighbours else None, variants)

    def notes(self, embedding: Embedding) -> list[str]:
        notes = ["meta-signal variants are negated distances/errors: higher = closer to the synthetic images"]
        if not self.has_labelled:
            return notes + [f"no labelled reals: no Random Forest; score = unsupervised "
                            f"'{VARIANT_NAMES[self.fallback]}' signal (--set fallback=cosine|recon|mahalanobis)"]
        names = self.ae.feature_names() + self.rad.feature_names()
        final, which = (self.selections[-1], "all labelled") if self.has_test else (self.selections[0], "fold 1")
        inputs = "meta-signals + raw features" if self.keep_raw else "meta-signals (recon, cosine, Mahalanobis)"
        return notes + [f"top-{self.k} features ({which}): " + ", ".join(names[i] for i in final[:8])
                        + (" ..." if len(final) > 8 else ""),
                        f"Random Forest ({self.n_trees} trees) on {inputs}; score = P(used)"]

    def trained_on(self, embedding: Embedding) -> dict:
        record = super().trained_on(embedding)
        if self.has_labelled:
            record["random forest"] = (f"labelled reals ({embedding.n_labelled}), cross-fitted over {self.n_folds} "
                                       f"folds; top-{self.k} features chosen inside each fold")
        return record
