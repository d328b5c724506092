"""An audit's images in one feature space: synthetic, labelled and test reals, embedded together.

Every method that compares reals with synthetic images in a space needs the same three arrays; the
audit context (synthleak.methods.context) computes them once per space and hands them to every method
and to the verdict. Trainable spaces are fitted on the synthetic images only (never on a real image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import MethodConfig
from ..data.images import ImageSet
from ..data.layout import AuditData
from ..data.stream import concat_images
from . import get_extractor
from .store import image_features


@dataclass
class Embedding:
    """Features of the audit's images in one space (None where the audit has no such images)."""

    space: str
    synthetic: np.ndarray | None
    labelled: np.ndarray | None
    test: np.ndarray | None
    #: what the space's model was trained on, for the output record ({} when nothing is trained)
    trained_on: dict = field(default_factory=dict)
    #: the trained model's record (epochs, losses, ...), {} for spaces that learn nothing
    model_meta: dict = field(default_factory=dict)

    @property
    def n_labelled(self) -> int:
        return 0 if self.labelled is None else len(self.labelled)

    @property
    def reals(self) -> np.ndarray | None:
        """The labelled then the test reals: the row order of every per-real array of a method."""
        parts = [a for a in (self.labelled, self.test) if a is not None]
        return np.concatenate(parts) if parts else None


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
    return images.materialise(), desc


def embed(data: AuditData, cfg: MethodConfig, need_synthetic: bool = True) -> Embedding:
    """The audit's images in cfg.feature_space (the space's model fitted on synthetic images if it learns).

    Spaces that ask for it (extractor.scale) are z-scored with the synthetic set's statistics (the reals'
    when the synthetic set is not embedded), so every feature weighs alike in a Euclidean distance."""
    extractor = get_extractor(cfg.feature_space, cfg)
    record: dict = {}
    if extractor.trainable:
        train_images, desc = training_synthetic(data, cfg)
        extractor.fit(train_images)
        record[f"{cfg.feature_space} feature model"] = desc
    syn = image_features(extractor, data.synthetic(cfg.synthetic_pool), cfg) if need_synthetic else None
    lab = image_features(extractor, data.labelled()[0], cfg) if data.has_labelled else None
    test = image_features(extractor, data.real_unknown, cfg) if data.real_unknown is not None else None
    if extractor.scale:
        ref = syn if syn is not None else np.concatenate([a for a in (lab, test) if a is not None])
        mu, sd = ref.mean(0), ref.std(0)
        sd[sd < 1e-8] = 1.0
        syn, lab, test = ((a - mu) / sd if a is not None else None for a in (syn, lab, test))
    return Embedding(cfg.feature_space, syn, lab, test, record, dict(getattr(extractor, "meta", None) or {}))
