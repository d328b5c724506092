"""The adaptive default: matched resolution, a nested-CV choice among pre-registered candidates, a shift-aware rule."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.data.layout import AuditData
from synthleak.decide import DecisionRule
from synthleak.leakage import permutation_test
from synthleak.methods import DEFAULT_METHOD, SHIFT_DECISION
from synthleak.methods.adaptive import CANDIDATES, robust_scale
from synthleak.metrics import score_metrics
from synthleak.pipeline import method_rule, run_audit
from synthleak.shift import ShiftCheck
from synthleak.bench.phantoms import make_phantoms


def _low_res_copies(images: np.ndarray, side: int, copies: int, seed: int) -> np.ndarray:
    """A generator that reproduces its members at `side` px: area-down, linear-up, plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        for img in images:
            small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
            big = cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR).astype(float)
            out.append(np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def _audit_data(synthetic_from_members: bool, seed: int = 0) -> tuple[AuditData, np.ndarray]:
    images, patients = make_phantoms(60, 2, seed=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(60)
    member_patients, labelled_patients = set(order[:30]), set(order[:12]) | set(order[30:42])
    member = np.array([p in member_patients for p in patients])
    labelled = np.array([p in labelled_patients for p in patients])
    if synthetic_from_members:
        synthetic = _low_res_copies(images[member], 32, 3, seed)
    else:  # signal-free: the generator saw other patients only
        other, _ = make_phantoms(30, 2, seed=seed + 100)
        synthetic = _low_res_copies(other, 32, 3, seed)
    ids = [f"r{i}" for i in range(len(images))]
    pick = lambda mask: ImageSet.from_arrays(images[mask], [i for i, m in zip(ids, mask) if m])
    data = AuditData(generated=ImageSet.from_arrays(synthetic, [f"g{i}" for i in range(len(synthetic))]),
                     real_used=pick(member & labelled), real_not_used=pick(~member & labelled),
                     real_unknown=pick(~labelled), groups={i: f"p{p}" for i, p in zip(ids, patients)},
                     source="in-memory phantoms")
    return data, member[~labelled].astype(int)


@pytest.fixture(scope="module")
def low_res_audit():
    data, y_test = _audit_data(True)
    report = run_audit(data, methods=f"{DEFAULT_METHOD},density-ratio+neighbours",
                       cfg=MethodConfig(seed=0, quiet=True, cache_dir="none", calibrate_k=20),
                       labels={i: int(v) for i, v in zip(data.real_unknown.ids, y_test)}, n_boot=50,
                       permutations=999)
    return report, y_test


def test_a_low_resolution_generator_is_compared_at_its_own_scale(low_res_audit):
    report, _ = low_res_audit
    details = report.by_name(DEFAULT_METHOD).result.details
    assert 32 / 1.5 <= details["resolution"]["effective_side"] <= 32 * 1.5
    assert details["comparison_side"] <= details["resolution"]["effective_side"]
    assert details["comparison_side"] <= 32


def test_the_default_finds_low_resolution_copies_better_than_the_64_px_recipe(low_res_audit):
    report, _ = low_res_audit
    default, previous = report.by_name(DEFAULT_METHOD), report.by_name("density-ratio+neighbours")
    assert default.test["auc"].value > 0.9
    assert default.test["auc"].value >= previous.test["auc"].value - 0.01
    assert report.verdict is not None and report.verdict.leakage_shown


def test_the_choice_is_recorded_and_the_cv_scores_are_nested(low_res_audit):
    report, _ = low_res_audit
    m = report.by_name(DEFAULT_METHOD)
    details = m.result.details
    assert details["chosen"] in CANDIDATES and set(details["labelled_auc"]) == set(CANDIDATES)
    assert details["chosen"] == CANDIDATES[0] or details["labelled_auc"][details["chosen"]] > \
        details["labelled_auc"][CANDIDATES[0]]
    assert details["chosen"] in details["why"]
    assert len(details["fold_choices"]) >= 2 and set(details["fold_choices"]) <= set(CANDIDATES)
    # the verdict reads every candidate's label-free scores, never the chosen (label-fitted) ones
    assert m.result.verdict_scores.shape == (len(m.result.labelled_scores), len(CANDIDATES))
    assert set(m.variants_test_auc) == set(CANDIDATES)


def test_too_few_labelled_patients_keep_the_first_candidate():
    """Labelled AUCs over one or two patients say more about their anatomy than about the generator."""
    from synthleak.methods.adaptive import choose

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    scaled = {name: 0.3 * y + rng.normal(size=60) for name in CANDIDATES}
    scaled[CANDIDATES[1]] = y + rng.normal(scale=0.1, size=60)  # a perfect-looking alternative
    two_patients = np.where(y == 1, "p1", "p2")
    chosen, why = choose(scaled, y, np.arange(60), two_patients)
    assert chosen == CANDIDATES[0] and "too few" in why
    many_patients = np.array([f"p{i // 3}" for i in range(60)])
    assert choose(scaled, y, np.arange(60), many_patients)[0] == CANDIDATES[1]


def test_few_labelled_patients_veto_a_first_candidate_that_points_the_wrong_way():
    """Two member patients cannot rank candidates, but they can show the first one is inverted (a 64 px DDPM)."""
    from synthleak.methods.adaptive import INVERTED_AUC, choose

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    two_patients = np.where(y == 1, "p1", "p2")
    scaled = {name: y + rng.normal(scale=0.8, size=60) for name in CANDIDATES}
    scaled[CANDIDATES[0]] = -y + rng.normal(scale=0.3, size=60)  # members ranked clearly last
    scaled[CANDIDATES[2]] = y + rng.normal(scale=0.3, size=60)   # the best of the others
    chosen, why = choose(scaled, y, np.arange(60), two_patients)
    assert chosen == CANDIDATES[2] and "wrong way" in why
    # a first candidate near chance is not vetoed: a few patients' anatomy moves an AUC that much
    scaled[CANDIDATES[0]] = rng.normal(size=60)
    assert score_metrics(y, scaled[CANDIDATES[0]])["auc"] > INVERTED_AUC
    assert choose(scaled, y, np.arange(60), two_patients)[0] == CANDIDATES[0]
    # nor when every other candidate points the wrong way too
    scaled = {name: -y + rng.normal(scale=0.3, size=60) for name in CANDIDATES}
    assert choose(scaled, y, np.arange(60), two_patients)[0] == CANDIDATES[0]


def test_few_labelled_patients_let_the_clearest_two_group_split_break_the_tie():
    """Without enough patients to rank candidates, a label-free criterion may: the candidate whose scores over
    every real split most clearly into two groups (a memorising generator sets its members apart)."""
    from synthleak.methods.adaptive import BIMODAL_MARGIN, BIMODAL_MIN_D, choose, separation

    rng = np.random.default_rng(2)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    two_patients = np.where(y == 1, "p1", "p2")
    members_apart = np.r_[rng.normal(4, 0.5, 30), rng.normal(0, 0.5, 30)]
    one_group = rng.normal(size=60) + 0.5 * y
    assert separation(members_apart) > BIMODAL_MIN_D > separation(one_group)
    scaled = {CANDIDATES[0]: one_group, CANDIDATES[1]: members_apart, CANDIDATES[2]: one_group}
    sep = {name: separation(v) for name, v in scaled.items()}
    chosen, why = choose(scaled, y, np.arange(60), two_patients, separations=sep)
    assert chosen == CANDIDATES[1] and "Ashman" in why
    # not without the label-free evidence, nor when the first candidate splits nearly as clearly
    assert choose(scaled, y, np.arange(60), two_patients)[0] == CANDIDATES[0]
    close = {**sep, CANDIDATES[0]: sep[CANDIDATES[1]] - BIMODAL_MARGIN / 2}
    assert choose(scaled, y, np.arange(60), two_patients, separations=close)[0] == CANDIDATES[0]
    # with enough patients the labels decide, not the split
    many = np.array([f"p{i // 3}" for i in range(60)])
    assert "Ashman" not in choose(scaled, y, np.arange(60), many, separations=sep)[1]


def test_the_same_seed_gives_the_same_scores():
    data, _ = _audit_data(True, seed=1)
    cfg = MethodConfig(seed=0, quiet=True, cache_dir="none", calibrate_k=20)
    a = run_audit(data, methods=DEFAULT_METHOD, cfg=cfg, with_verdict=False, check_control=False, n_boot=10)
    b = run_audit(data, methods=DEFAULT_METHOD, cfg=cfg, with_verdict=False, check_control=False, n_boot=10)
    np.testing.assert_array_equal(a.methods[0].result.test_scores, b.methods[0].result.test_scores)
    np.testing.assert_array_equal(a.methods[0].result.labelled_scores, b.methods[0].result.labelled_scores)


def test_signal_free_data_stay_at_chance():
    data, y_test = _audit_data(False, seed=2)
    report = run_audit(data, methods=DEFAULT_METHOD, cfg=MethodConfig(seed=0, quiet=True, cache_dir="none",
                                                                       calibrate_k=20),
                       labels={i: int(v) for i, v in zip(data.real_unknown.ids, y_test)}, n_boot=50,
                       check_control=False, permutations=999)
    assert abs(report.methods[0].test["auc"].value - 0.5) < 0.2


def test_robust_scale_keeps_the_ranking():
    s = np.random.default_rng(0).normal(5, 3, 50)
    np.testing.assert_array_equal(np.argsort(robust_scale(s)), np.argsort(s))
    assert abs(np.median(robust_scale(s))) < 1e-12


def _shift(fires: bool) -> ShiftCheck:
    return ShiftCheck(auc=0.9 if fires else 0.55, low=0.8, high=0.95, shifted=fires, n_labelled=10, n_test=10)


def test_the_shift_rule_replaces_the_labelled_threshold_only_when_the_check_fires():
    rule, why = method_rule(DEFAULT_METHOD, DecisionRule("auto"), _shift(True))
    assert rule.mode == SHIFT_DECISION and "shift check fired" in why
    # the rate flagged under a shift is the labelled reals' member rate, not the --member-rate fallback
    rule, why = method_rule(DEFAULT_METHOD, DecisionRule("auto", member_rate=0.5), _shift(True), labelled_rate=0.3)
    assert rule.mode == "rate" and rule.member_rate == 0.3 and "30%" in why
    rule, why = method_rule(DEFAULT_METHOD, DecisionRule("auto"), _shift(False))
    assert rule.mode == "kappa" and "did not fire" in why
    rule, why = method_rule(DEFAULT_METHOD, DecisionRule("tail"), _shift(True))
    assert rule.mode == "tail" and "--decision" in why  # the user's choice always wins
    assert method_rule("nearest", DecisionRule("auto"), _shift(True))[0].mode == "kappa"


def test_a_maximum_over_candidates_keeps_the_permutation_test_valid():
    """Under no signal the max-over-columns test rejects at about alpha; it is never more eager than the
    naive test of the best column alone."""
    rng = np.random.default_rng(0)
    rejections = 0
    for rep in range(200):
        base = rng.normal(size=(40, 1))
        scores = base + rng.normal(scale=0.7, size=(40, 3))  # three correlated candidates
        labels = np.r_[np.ones(20), np.zeros(20)]
        p = permutation_test(scores, labels, permutations=199, seed=rep).p_value
        best = int(np.argmax([score_metrics(labels, scores[:, j])["auc"] for j in range(3)]))
        assert p >= permutation_test(scores[:, best], labels, permutations=199, seed=rep).p_value - 1e-12
        rejections += p < 0.05
    assert rejections / 200 <= 0.09
