"""seed-resnet-radiomics: in-fold top-K selection (no held-out labels), meta-signals, end-to-end runs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from synthleak.attacks.knn import NeighbourIndex
from synthleak.config import MethodConfig
from synthleak.data.layout import AuditData
from synthleak.decide import cv_folds
from synthleak.errors import SynthleakError
from synthleak.features.embedding import Embedding
from synthleak.methods.context import labelled_folds
from synthleak.methods import run_method
from synthleak.methods import seed_resnet_radiomics as srr

#: (rows as a tuple of the id column, labels) of every fit of the spy, in call order
SPY_FITS: list[tuple[np.ndarray, np.ndarray]] = []


class SpyRanker(ClassifierMixin, BaseEstimator):
    """Importance model that records exactly which rows and labels it was fit on.

    Importances favour the first raw column, so selection itself still works.
    """

    def fit(self, X, y):
        SPY_FITS.append((np.array(X, copy=True), np.array(y, copy=True)))
        self.feature_importances_ = np.linspace(1.0, 0.0, np.asarray(X).shape[1])
        return self


@pytest.fixture(autouse=True)
def _clear_spy():
    SPY_FITS.clear()
    yield
    SPY_FITS.clear()


def _toy(n: int = 40, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])  # ids carry no label
    raw = rng.normal(size=(n, d))
    raw[:, 0] = np.arange(n)  # row id: lets the spy tell which rows it saw
    raw[:, 1] += 2.0 * y  # one informative feature
    meta = rng.normal(size=(n, len(srr.META_COLUMNS)))
    synthetic = rng.normal(size=(200, d))
    synthetic[:, 0] = rng.uniform(0, n, 200)
    return np.concatenate([meta, raw], axis=1), y, synthetic


class _ToyAudit:
    """The part of an audit context ScoringMethod.run reads: labels, folds and the index factory."""

    def __init__(self, y, folds):
        self.y, self._folds = y, folds
        self.data = SimpleNamespace(has_labelled=True)

    def folds(self, cfg=None):
        return self._folds

    def index(self, database):
        return NeighbourIndex(database)


def _toy_method(x, x_test, synthetic, k: int, n_trees: int) -> srr.SeedResNetRadiomics:
    """The method on given classifier inputs: its own fit / score and ScoringMethod.run's cross-fitting, with the
    autoencoder and radiomics (prepare) replaced by the toy table."""

    class Toy(srr.SeedResNetRadiomics):
        def prepare(self, audit):
            self.k, self.keep_raw, self.fallback, self.n_trees = k, False, "cosine", n_trees
            self.synthetic_raw, self.has_labelled, self.selections = synthetic, True, []
            self.has_test = x_test is not None
            self.n_folds = len(audit.folds())
            n = len(x) + (0 if x_test is None else len(x_test))
            self.unsupervised = {key: np.zeros(n) for key in srr.VARIANT_NAMES}
            self.nearest = np.zeros((n, 3), int)
            return Embedding("toy", None, x, x_test)

        def notes(self, embedding):
            return []

    return Toy(MethodConfig(seed=0, quiet=True))


def test_top_k_ranking_never_sees_held_out_rows_or_labels(monkeypatch):
    """Would fail if the ranking were fit on all labelled rows before cross-validation."""
    monkeypatch.setattr(srr, "make_importance_model", lambda seed, n_trees: SpyRanker())
    x, y, synthetic = _toy()
    x_test = x[:5] + 0.1
    folds = cv_folds(y, None, 5, 0)
    method = _toy_method(x, x_test, synthetic, k=3, n_trees=10)
    result = method.run(_ToyAudit(y, folds))
    assert len(SPY_FITS) == len(folds) + 1  # one ranking per fold, then one on all labelled for the test
    for (rows, labels), (train_idx, val_idx) in zip(SPY_FITS, folds):
        seen = rows[:, 0].astype(int)  # the id column
        assert sorted(seen) == sorted(train_idx.tolist())
        assert not set(seen) & set(val_idx.tolist())
        np.testing.assert_array_equal(labels, y[seen])
    assert len(SPY_FITS[-1][0]) == len(y)
    assert result.labelled_scores.shape == (len(y),) and result.test_scores.shape == (5,)
    assert len(method.selections) == len(folds) + 1 and all(len(s) == 3 for s in method.selections)


def test_held_out_scores_do_not_depend_on_held_out_labels():
    """Flipping the labels of one fold's rows leaves that fold's out-of-fold scores unchanged."""
    x, y, synthetic = _toy(seed=1)
    folds = cv_folds(y, None, 4, 0)
    base = _toy_method(x, None, synthetic, k=2, n_trees=20).run(_ToyAudit(y, folds))
    _, val = folds[0]
    flipped = y.copy()
    flipped[val] = 1 - flipped[val]
    again = _toy_method(x, None, synthetic, k=2, n_trees=20).run(_ToyAudit(flipped, folds))
    np.testing.assert_allclose(again.labelled_scores[val], base.labelled_scores[val])
    maha = "mahalanobis-top2"
    np.testing.assert_allclose(again.variants[maha].labelled[val], base.variants[maha].labelled[val])
    assert not np.allclose(again.labelled_scores, base.labelled_scores)  # other folds learnt from the flipped rows


def test_transformer_selects_informative_feature_and_measures_distance():
    x, y, synthetic = _toy(n=80)
    t = srr.TopKMahalanobis(synthetic, k=1, random_state=0, n_trees=30).fit(x, y)
    assert t.selected_.tolist() == [1]  # raw column 1 carries the label
    out = t.transform(x)
    assert out.shape == (len(x), len(srr.META_COLUMNS) + 1)
    np.testing.assert_array_equal(out[:, :2], x[:, :2])
    # sqrt-Mahalanobis of one standard-normal feature ~ |z|: members (shifted by 2) lie farther away
    assert out[y == 1, 2].mean() > out[y == 0, 2].mean() + 0.5
    wide = srr.TopKMahalanobis(synthetic, k=50, keep_raw=True, n_trees=5).fit(x, y)
    assert len(wide.selected_) == x.shape[1] - 2 and wide.transform(x).shape[1] == 3 + x.shape[1] - 2


def test_min_cosine_distance():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    d, idx = srr.min_cosine_distance(np.array([[2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]), ref)
    np.testing.assert_allclose(d[:2], [0.0, 1.0], atol=1e-12)
    assert idx[0, 0] == 0 and idx.shape == (3, 3) and np.isfinite(d).all()


def _cfg(**kw) -> MethodConfig:
    base = dict(epochs=1, image_size=32, base_filters=8, batch_size=8, quiet=True)
    base.update(kw)
    return MethodConfig(**base)


def test_end_to_end_on_phantoms_without_held_out_labels(tiny_audit_data, monkeypatch):
    monkeypatch.setattr(srr, "make_importance_model", lambda seed, n_trees: SpyRanker())
    data = tiny_audit_data
    cfg = _cfg(options={"top_k": "5", "n_trees": "20"})
    result = run_method("seed-resnet-radiomics", data, cfg)
    images, y = data.labelled()
    assert result.test_scores.shape == (len(data.real_unknown),)
    assert result.labelled_scores.shape == (len(y),)
    assert np.isfinite(result.test_scores).all() and ((result.labelled_scores >= 0) & (result.labelled_scores <= 1)).all()
    assert set(result.variants) == {"recon-error", "min-cosine-distance", "mahalanobis-radiomics", "mahalanobis-top5"}
    for sig in result.variants.values():
        assert sig.labelled.shape == (len(y),) and sig.test.shape == (len(data.real_unknown),)
        assert np.isfinite(sig.labelled).all() and np.isfinite(sig.test).all()
    assert result.trained_on["resnet-ae"].startswith("train/generated")
    assert "random forest" in result.trained_on and result.neighbours.shape == (len(data.real_unknown), 3)
    # the run's own rankings: one per shared fold on that fold's training rows only, then one on all rows
    folds = labelled_folds(data, cfg)
    assert len(SPY_FITS) == len(folds) + 1
    all_rows = SPY_FITS[-1][0]
    assert len(all_rows) == len(y)
    for (rows, labels), (train_idx, _) in zip(SPY_FITS, folds):
        np.testing.assert_array_equal(rows, all_rows[train_idx])
        np.testing.assert_array_equal(labels, y[train_idx])
    # same inputs + seed -> same scores (second run reuses the cached model and features)
    monkeypatch.undo()
    a = run_method("seed-resnet-radiomics", data, cfg)
    b = run_method("seed-resnet-radiomics", data, cfg)
    np.testing.assert_array_equal(a.test_scores, b.test_scores)
    np.testing.assert_array_equal(a.labelled_scores, b.labelled_scores)


def test_fallback_without_labelled_reals_and_fit_on_test_generated(tiny_audit_data):
    d = tiny_audit_data
    unlabelled = AuditData(generated=d.generated, real_unknown=d.real_unknown, test_generated=d.test_generated)
    result = run_method("seed-resnet-radiomics", unlabelled, _cfg(fit_on_test_generated=True))
    assert result.labelled_scores is None
    np.testing.assert_array_equal(result.test_scores, result.variants["min-cosine-distance"].test)
    assert any("no labelled reals" in n for n in result.notes)
    assert "test/generated" in result.trained_on["resnet-ae"]
    recon = run_method("seed-resnet-radiomics", unlabelled, _cfg(options={"fallback": "recon"}))
    np.testing.assert_array_equal(recon.test_scores, recon.variants["recon-error"].test)


@pytest.mark.parametrize("option", [{"top_k": "0"}, {"rf_raw_features": "2"}, {"fallback": "x"}, {"top_k": "a"},
                                    {"n_trees": "0"}])
def test_bad_options_are_user_errors(tiny_audit_data, option):
    with pytest.raises(SynthleakError, match=list(option)[0]):
        run_method("seed-resnet-radiomics", tiny_audit_data, _cfg(options=option))


@pytest.mark.parametrize("method", ["seed-resnet-radiomics", "seed-vit-ae"])
def test_a_training_fold_of_one_class_is_a_user_error_before_training(method, monkeypatch):
    """Every used real from one patient: the fold that holds that patient out trains on non-members only."""
    from synthleak.data.images import ImageSet
    import synthleak.methods.seed_resnet_radiomics as radiomics
    import synthleak.methods.seed_vit_ae as vit

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the folds were checked")

    monkeypatch.setattr(radiomics, "training_synthetic", no_training)
    monkeypatch.setattr(vit, "_train", no_training)
    rng = np.random.default_rng(0)

    def images(prefix, n):
        pixels = rng.integers(0, 255, (n, 256, 256), dtype=np.uint8)
        return ImageSet.from_arrays(pixels, [f"{prefix}{i}" for i in range(n)])

    used, not_used = images("u", 6), images("n", 6)
    groups = {**{i: "P" for i in used.ids}, **{i: i for i in not_used.ids}}
    data = AuditData(generated=images("g", 4), real_used=used, real_not_used=not_used, real_unknown=images("t", 3),
                     groups=groups)
    with pytest.raises(SynthleakError, match="one class"):
        run_method(method, data, MethodConfig(quiet=True, cache_dir="none", n_folds=2))
