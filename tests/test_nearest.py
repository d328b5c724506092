"""Neighbour index backends and the distance attacks, including the real-only control."""
from __future__ import annotations

import numpy as np
import pytest

from synthleak.attacks.knn import NeighbourIndex
from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.data.layout import AuditData
from synthleak.methods import run_method
from synthleak.metrics import score_metrics


def test_backends_agree():
    rng = np.random.default_rng(0)
    db, q = rng.normal(size=(300, 16)), rng.normal(size=(40, 16))
    d_t, i_t = NeighbourIndex(db, "auto").search(q, 3)
    d_f, i_f = NeighbourIndex(db, "faiss").search(q, 3)
    brute = np.sqrt(((q[:, None] - db[None]) ** 2).sum(-1))
    assert (i_t == np.argsort(brute, 1)[:, :3]).all() and (i_f == i_t).all()
    np.testing.assert_allclose(d_t, np.sort(brute, 1)[:, :3], rtol=1e-5)
    np.testing.assert_allclose(d_f, d_t, rtol=1e-3)


def test_fold_reference_ignores_the_scored_rows_own_label_and_fold():
    """The control's fit on a fold's training part compares each held-out row with that part's rows of a class
    only: the held-out rows' own labels never matter to their scores."""
    from synthleak.decide import cv_folds
    from synthleak.methods.base import Reference
    from synthleak.methods.nearest import ControlRealOnly

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = np.r_[np.ones(20), np.zeros(20)].astype(int)
    train, val = cv_folds(y, None, 5, 0)[0]

    def fold_scores(labels):
        control = ControlRealOnly(MethodConfig(cache_dir="none"))
        control.fit(Reference(None, None, x, len(x), x[train], labels[train], train, 0, 5, 100))
        return control.score(x[val], val).values

    flipped = y.copy()
    flipped[val] = 1 - flipped[val]  # labels of the held-out fold must not matter to its own scores
    np.testing.assert_array_equal(fold_scores(flipped), fold_scores(y))
    # and the references really are the training part's rows of each class
    distance = lambda ref: np.sqrt(((x[val][:, None] - ref[None]) ** 2).sum(-1)).min(1)  # noqa: E731
    expected = distance(x[train][y[train] == 0]) - distance(x[train][y[train] == 1])
    np.testing.assert_allclose(fold_scores(y), expected, rtol=1e-5, atol=1e-6)  # (float32 search)


def _toy(member_shift: float = 0.0, n: int = 20, seed: int = 0) -> AuditData:
    """Members sit right next to synthetic images; non-members do not."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (n, 256, 256)).astype(np.uint8)
    syn = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    members = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    others = rng.integers(0, 200, (n, 256, 256)).astype(np.uint8)
    half = n // 2
    return AuditData(
        generated=ImageSet.from_arrays(syn, [f"g{i}" for i in range(n)]),
        real_used=ImageSet.from_arrays(members[:half], [f"u{i}" for i in range(half)]),
        real_not_used=ImageSet.from_arrays(others[:half], [f"n{i}" for i in range(half)]),
        real_unknown=ImageSet.from_arrays(np.r_[members[half:], others[half:]], [f"t{i}" for i in range(2 * half)]),
    )


@pytest.mark.parametrize("method", ["nearest", "nearest-calibrated"])
def test_attacks_find_planted_members(method):
    data = _toy()
    res = run_method(method, data, MethodConfig(cache_dir="none"))
    y_test = np.r_[np.ones(10), np.zeros(10)]
    assert score_metrics(y_test, res.test_scores)["auc"] == 1.0
    assert score_metrics(data.labelled()[1], res.labelled_scores)["auc"] == 1.0
    assert res.neighbours.shape == (20, 3)


def test_control_never_reads_synthetic_images():
    data = _toy()
    res = run_method("control-real-only", data, MethodConfig(cache_dir="none"))
    data.generated = ImageSet.from_arrays(np.zeros((2, 256, 256), np.uint8))
    res2 = run_method("control-real-only", data, MethodConfig(cache_dir="none"))
    np.testing.assert_array_equal(res.test_scores, res2.test_scores)
    np.testing.assert_array_equal(res.labelled_scores, res2.labelled_scores)


def test_control_detects_leak_through_labelled_reals():
    """When test members are near-copies of labelled members, the control must light up."""
    rng = np.random.default_rng(1)
    used = rng.integers(0, 255, (10, 256, 256)).astype(np.uint8)
    not_used = rng.integers(0, 255, (10, 256, 256)).astype(np.uint8)
    jitter = lambda a: np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    data = AuditData(
        generated=ImageSet.from_arrays(rng.integers(0, 255, (5, 256, 256)).astype(np.uint8)),
        real_used=ImageSet.from_arrays(used, [f"u{i}" for i in range(10)]),
        real_not_used=ImageSet.from_arrays(not_used, [f"n{i}" for i in range(10)]),
        real_unknown=ImageSet.from_arrays(np.r_[jitter(used), jitter(not_used)], [f"t{i}" for i in range(20)]),
    )
    res = run_method("control-real-only", data, MethodConfig(cache_dir="none"))
    assert score_metrics(np.r_[np.ones(10), np.zeros(10)], res.test_scores)["auc"] == 1.0


def test_feature_cache_hit(tmp_path):
    data = _toy()
    cfg = MethodConfig(cache_dir=str(tmp_path))
    a = run_method("nearest", data, cfg).test_scores
    assert list((tmp_path / "features" / "pixels").glob("*.npy"))
    b = run_method("nearest", data, cfg).test_scores
    np.testing.assert_array_equal(a, b)
