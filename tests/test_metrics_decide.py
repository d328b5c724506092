"""Metrics against hand-computed values, and threshold selection."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthleak.decide import (DecisionRule, best_threshold, cv_decisions, cv_folds, threshold_at_fpr,
                              threshold_at_rate)
from synthleak.metrics import decision_metrics, evaluate, score_metrics, tpr_at_fpr


def test_decision_metrics_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    m = decision_metrics(y, p)
    # TP=3 FN=1 FP=1 TN=3: acc 6/8, precision 3/4, recall 3/4, F1 3/4; po=0.75, pe=0.5 -> kappa 0.5
    assert m == pytest.approx({"accuracy": 0.75, "precision": 0.75, "recall": 0.75, "f1": 0.75, "kappa": 0.5})


def test_score_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    m = score_metrics(y, s)
    assert m["auc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered correctly
    # at FPR 0 only the 0.8 positive is above every negative -> TPR 0.5
    assert m["tpr@1%fpr"] == pytest.approx(0.5) and m["tpr@0.1%fpr"] == pytest.approx(0.5)


def test_tpr_at_fpr_with_many_negatives():
    y = np.r_[np.zeros(1000), np.ones(10)]
    s = np.r_[np.arange(1000) / 1000, np.full(10, 0.9955)]
    # 4 negatives (0.996..0.999) score above the positives: FPR 0.4% -> TPR 1 at 1% FPR, 0 at 0.1%
    assert tpr_at_fpr(y, s, 0.01) == 1.0 and tpr_at_fpr(y, s, 0.001) == 0.0


def test_bootstrap_ci_contains_point_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    a = evaluate(y, (s > 0.5).astype(int), s, n_boot=200, seed=3)
    b = evaluate(y, (s > 0.5).astype(int), s, n_boot=200, seed=3)
    for k, m in a.items():
        assert m.low <= m.value <= m.high or np.isclose(m.value, m.low) or np.isclose(m.value, m.high), k
        assert (m.low, m.high) == (b[k].low, b[k].high)


def test_best_threshold_maximises_kappa_and_f1():
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = best_threshold(s, y, "kappa")
    assert 0.3 < t <= 0.6
    assert best_threshold(s, y, "f1") == pytest.approx(t)


def test_threshold_at_fpr_and_rate():
    s = np.arange(100, dtype=float)
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    t = threshold_at_fpr(s, y, 0.1)  # 10% of 50 negatives = 5 may be flagged: 45..49
    assert ((s[y == 0] >= t).mean()) == pytest.approx(0.1)
    assert threshold_at_rate(s, 0.25) == pytest.approx(np.quantile(s, 0.75))
    assert (s >= threshold_at_fpr(s, y, 0.0))[y == 0].sum() == 0


def test_cv_decisions_use_only_training_folds():
    # a perfectly separable score: CV decisions must be perfect, and folds must be stratified
    s = np.r_[np.linspace(0, 1, 20), np.linspace(2, 3, 20)]
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    folds = cv_folds(y, None, 5, 0)
    assert all(abs(y[v].mean() - 0.5) < 0.01 for _, v in folds)
    assert (cv_decisions(s, y, DecisionRule("kappa"), folds) == y).all()


def test_group_folds_keep_groups_together():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f"])
    for train, val in cv_folds(y, groups, 3, 0):
        assert not set(groups[train]) & set(groups[val])


def test_rule_without_labels_uses_member_rate():
    s = np.arange(10, dtype=float)
    assert DecisionRule("kappa", member_rate=0.3).fit(None, None, s) == pytest.approx(np.quantile(s, 0.7))


def test_threshold_at_fpr_respects_ties():
    s = np.array([0.0, 1, 1, 1, 1, 1, 1, 1, 2, 3, 5, 6])
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    t = threshold_at_fpr(s, y, 0.1)  # 1 of 10 negatives may be flagged; the tied 1.0s must not be
    assert (s[y == 0] >= t).mean() <= 0.1 and (s[y == 1] >= t).all()


@pytest.mark.parametrize("kwargs,match", [({"target_fpr": 1.5}, "--target-fpr"), ({"member_rate": 0.0}, "--member-rate"),
                                          ({"mode": "nope"}, "--decision")])
def test_decision_rule_validates(kwargs, match):
    from synthleak.errors import SynthleakError

    with pytest.raises(SynthleakError, match=match):
        DecisionRule(**kwargs)


def test_patient_bootstrap_is_wider_than_image_bootstrap():
    # 10 patients x 10 identical slices: the effective sample is 10, not 100
    rng = np.random.default_rng(0)
    patient_y = np.r_[np.ones(5), np.zeros(5)].astype(int)
    patient_s = patient_y * 0.3 + rng.normal(0, 1, 10)
    y, s = np.repeat(patient_y, 10), np.repeat(patient_s, 10)
    groups = np.repeat(np.arange(10), 10)
    by_image = evaluate(y, scores=s, n_boot=300, seed=0)["auc"]
    by_patient = evaluate(y, scores=s, n_boot=300, seed=0, groups=groups)["auc"]
    assert by_patient.value == by_image.value
    assert (by_patient.high - by_patient.low) > 1.5 * (by_image.high - by_image.low)


def test_paired_gain_is_the_difference_with_an_interval_around_it():
    from synthleak.metrics import decision_metrics, paired_gain

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    better = np.where(rng.random(300) < 0.8, y, 1 - y)
    worse = np.where(rng.random(300) < 0.6, y, 1 - y)
    gain = paired_gain(y, better, worse, n_boot=300)
    expected = decision_metrics(y, better)["kappa"] - decision_metrics(y, worse)["kappa"]
    assert gain.value == pytest.approx(expected)
    assert 0 < gain.low < gain.value < gain.high
    same = paired_gain(y, better, better, n_boot=50)
    assert same.value == same.low == same.high == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60))
def test_decision_metrics_equal_scikit_learn(pairs):
    from sklearn.metrics import accuracy_score, cohen_kappa_score, precision_recall_fscore_support

    y, pred = (np.array(v) for v in zip(*pairs))
    ours = decision_metrics(y, pred)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average="binary", pos_label=1,
                                                               zero_division=0)
    kappa = cohen_kappa_score(y, pred) if len(np.unique(np.r_[y, pred])) > 1 else 0.0
    expected = {"accuracy": accuracy_score(y, pred), "precision": precision, "recall": recall, "f1": f1,
                "kappa": kappa}
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 1)), min_size=2, max_size=80),
       st.sampled_from(["kappa", "f1"]))
def test_vectorised_threshold_search_equals_the_scikit_learn_loop(pairs, objective):
    """The threshold found from confusion counts is the one a loop over sklearn's metric finds (ties in scores
    from the integer strategy included)."""
    from sklearn.metrics import cohen_kappa_score, f1_score

    from synthleak.decide import _candidates

    scores, y = (np.array(v) for v in zip(*pairs))
    scores = scores.astype(float)
    best_t, best_v = float(np.median(scores)), -np.inf
    for t in _candidates(scores):
        pred = (scores >= t).astype(int)
        if objective == "kappa":
            v = 0.0 if pred.min() == pred.max() or len(np.unique(np.r_[y, pred])) < 2 else cohen_kappa_score(y, pred)
        else:
            v = f1_score(y, pred, zero_division=0)
        if v > best_v + 1e-12:
            best_t, best_v = float(t), v
    assert best_threshold(scores, y, objective) == best_t


def test_mixture_rule_survives_a_cv_fold_with_one_class():
    """A fold of few patients can hold labelled reals of one class only: the mixture's fallback rate is then
    the expected member rate, not 0 or 1 (which has no threshold)."""
    rng = np.random.default_rng(0)
    one_group = rng.normal(size=40)  # no second component: the fallback is used
    rule = DecisionRule("mixture", member_rate=0.3)
    for only in (0, 1):
        t = rule.fit(one_group[:20], np.full(20, only), one_group[20:])
        assert np.mean(one_group[20:] >= t) == pytest.approx(0.3, abs=0.05)
