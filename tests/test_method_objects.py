"""The method layer's shape (issue 22): method objects, the audit context that owns folds and embeddings,
cross-fitting done once in ScoringMethod.run, calibration as a wrapper and the ensemble as a composite."""
from __future__ import annotations

import numpy as np
import pytest

from synthleak.calibration import Calibration
from synthleak.config import MethodConfig
from synthleak.errors import SynthleakError
from synthleak.methods import Calibrated, make_method, run_method
from synthleak.methods.base import Reference, Scores, ScoringMethod
from synthleak.methods.context import AuditContext, labelled_folds
from synthleak.methods.ensemble import Ensemble
from synthleak.methods.nearest import Nearest, NearestCalibrated
from synthleak.pipeline import run_audit

from test_nearest import _toy

CFG = dict(cache_dir="none", quiet=True)


class Spy(ScoringMethod):
    """A method that learns from labels and records every fit: score = its fold index (to see who scored what)."""

    @property
    def reference_classes(self):
        return (0, 1)

    def fit(self, reference: Reference) -> "Spy":
        self.fits = getattr(self, "fits", []) + [reference]
        return self

    def score(self, features, positions, neighbours=False) -> Scores:
        reference = self.fits[-1]
        # a row is never scored by a fit that learned from its own label
        assert reference.labelled_rows is not None
        assert not set(positions.tolist()) & set(reference.labelled_rows.tolist())
        assert np.array_equal(features, reference.reals[positions])
        fold = np.full(len(positions), float(reference.fold))
        return Scores(fold, variants={"minus-fold": -fold, "rows": positions.astype(float)})


def test_scoring_method_cross_fits_on_the_audits_folds():
    data = _toy()
    audit = AuditContext(data, MethodConfig(**CFG))
    method = Spy(MethodConfig(**CFG, feature_space="pixels32"))
    result = method.run(audit)
    folds = audit.folds()
    assert len(method.fits) == len(folds) + 1
    for i, (train, val) in enumerate(folds):
        assert np.array_equal(method.fits[i].labelled_rows, train)
        assert np.all(result.labelled_scores[val] == i)  # each fold scored by the fit on the other folds
        assert not method.fits[i].final
    last = method.fits[-1]
    assert last.final and len(last.y) == len(data.labelled()[1])
    assert np.all(result.test_scores == len(folds))  # test reals: the fit on every labelled real
    # variant signals are gathered like the score: each labelled row from its own fold's fit, in row order
    assert list(result.variants) == ["minus-fold", "rows"]
    np.testing.assert_array_equal(result.variants["minus-fold"].labelled, -result.labelled_scores)
    np.testing.assert_array_equal(result.variants["minus-fold"].test, -result.test_scores)
    np.testing.assert_array_equal(result.variants["rows"].labelled, np.arange(len(result.labelled_scores)))


def test_every_method_but_the_compositions_is_a_scoring_method():
    """The attacks and the paper's methods all fit / score through ScoringMethod.run; only the compositions (the
    ensemble, the default recipe's choice among candidates, a calibration wrapper) run on their own."""
    from synthleak.methods import METHODS
    from synthleak.methods.adaptive import AdaptiveDefault

    for name in METHODS:
        method = make_method(name, MethodConfig(**CFG))
        assert isinstance(method, ScoringMethod) != isinstance(method, (Ensemble, AdaptiveDefault)), name
    assert isinstance(make_method("seed-dclgan+neighbours", MethodConfig(**CFG)), Calibrated)


def test_the_audit_computes_folds_and_each_embedding_once(monkeypatch):
    import synthleak.methods.context as context

    calls = []
    real_embed = context.embed
    monkeypatch.setattr(context, "embed", lambda data, cfg, need: calls.append((cfg.feature_space, need))
                        or real_embed(data, cfg, need))
    fold_calls = []
    real_folds = context.labelled_folds
    monkeypatch.setattr(context, "labelled_folds", lambda data, cfg: fold_calls.append(1) or real_folds(data, cfg))
    report = run_audit(_toy(n=40), methods="nearest,nearest-local,density-ratio,nearest-calibrated,ensemble",
                       cfg=MethodConfig(**CFG), check_control=False, with_verdict=False)
    assert all(m.error is None for m in report.methods)
    assert calls == [("pixels", True)]  # five methods (the ensemble's components too), one embedding
    assert len(fold_calls) == 1
    calls.clear()
    report = run_audit(_toy(n=40), methods="default", cfg=MethodConfig(**CFG), check_control=False)
    assert report.verdict is not None
    assert calls == [("pixels", True)]  # the verdict reuses the default recipe's embedding


def test_folds_are_the_documented_ones():
    data = _toy()
    cfg = MethodConfig(**CFG, n_folds=4, seed=3)
    folds = AuditContext(data, cfg).folds()
    for (a_train, a_val), (b_train, b_val) in zip(folds, labelled_folds(data, cfg)):
        assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)


def test_calibration_is_a_wrapper_method():
    data = _toy(n=40)
    cfg = MethodConfig(**CFG, calibrate_k=5)
    wrapped = make_method("nearest+neighbours", cfg)
    assert isinstance(wrapped, Calibrated) and isinstance(wrapped.method, Nearest)
    raw = run_method("nearest", data, cfg)
    calibrated = wrapped.run(AuditContext(data, cfg))
    expected = Calibration("neighbours", k=5).apply(np.r_[raw.labelled_scores, raw.test_scores], raw.real_features)
    assert np.allclose(np.r_[calibrated.labelled_scores, calibrated.test_scores], expected)
    assert calibrated.calibration == "neighbours"
    assert isinstance(make_method("nearest", cfg), Nearest)  # no wrapper without a calibration


def test_ensemble_is_a_composite_of_method_objects():
    cfg = MethodConfig(**CFG, options={"ensemble": "nearest,nearest-calibrated+neighbours@pixels32"})
    ensemble = make_method("ensemble", cfg)
    assert isinstance(ensemble, Ensemble)
    (first, a), (second, b) = ensemble.components
    assert (first, second) == ("nearest", "nearest-calibrated+neighbours@pixels32")
    assert isinstance(a, Nearest) and isinstance(b, Calibrated) and isinstance(b.method, NearestCalibrated)
    assert b.cfg.feature_space == "pixels32"
    result = ensemble.run(AuditContext(_toy(n=40), cfg))
    assert set(result.variants) == {first, second}


def test_settings_are_read_and_checked_when_the_method_is_built():
    assert make_method("nearest", MethodConfig(**CFG, options={"k": "3"})).settings.k == 3
    with pytest.raises(SynthleakError, match="k"):
        make_method("nearest", MethodConfig(**CFG, options={"k": "0"}))
    with pytest.raises(SynthleakError, match="domias_reference"):
        make_method("domias", MethodConfig(**CFG, options={"domias_reference": "x"}))


def test_searches_of_the_synthetic_set_are_the_ones_before_the_redesign():
    """Labelled reals searched once with k columns (an approximate search tunes its probes to k); the test reals
    with 3 for the report's neighbours; nearest-calibrated searches the labelled reals once, not per fold."""
    data = _toy(n=40)
    n_synthetic = len(data.generated)
    for name in ("nearest", "nearest-calibrated"):
        audit = AuditContext(data, MethodConfig(**CFG))
        run_method(name, audit, MethodConfig(**CFG))
        synthetic = [(r["queries"], r["k"]) for r in audit.searches.records if r["rows"] == n_synthetic]
        assert synthetic == [(len(data.labelled()[1]), 1), (len(data.real_unknown), 3)], name


def test_label_using_methods_without_labels_name_themselves():
    data = _toy(n=20)
    unlabelled = type(data)(generated=data.generated, real_used=None, real_not_used=None,
                            real_unknown=data.real_unknown)
    with pytest.raises(SynthleakError, match="domias_reference=non-members needs labelled"):
        run_method("domias", unlabelled, MethodConfig(**CFG, options={"domias_reference": "non-members", "pca": "3"}))
    with pytest.raises(SynthleakError, match="component nearest-calibrated needs labelled reals"):
        run_method("ensemble", unlabelled, MethodConfig(**CFG, options={"ensemble": "nearest,nearest-calibrated"}))


def test_settings_no_method_reads_are_refused():
    from synthleak.methods import check_method_options

    with pytest.raises(SynthleakError, match=r"--epochs 3 \(--set epochs='3'\)"):
        check_method_options(["nearest"], MethodConfig(feature_space="effnet-lite0", epochs=3))
    check_method_options(["nearest"], MethodConfig(feature_space="effnet-lite0", batch_size=8, image_size=64))
