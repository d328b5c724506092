"""The dataset-level verdict (synthleak.leakage): hand-computed statistics, p-value calibration, errors."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

import synthleak
from synthleak.errors import SynthleakError
from synthleak.leakage import (
    CopyRow,
    Verdict,
    authenticity,
    data_copying_ct,
    find_copies,
    format_p,
    memorised_share,
    permutation_test,
    similarity,
    verdict,
)


def mc_tolerance(p: float, permutations: int) -> float:
    """4 Monte-Carlo standard errors of a relabelling p-value, plus its (1 + x) / (1 + B) offset.

    The estimate counts Binomial(B, p) exceedances, so its standard error is sqrt(p (1 - p) / B);
    4 of them fail by chance about once in 16,000 comparisons (and the seeds are fixed anyway).
    """
    return 4 * np.sqrt(p * (1 - p) / permutations) + 2 / permutations


def clustered_null(rng: np.random.Generator, patients: int, slices: int, icc: float, unequal: bool = False):
    """Signal-free scores with a strong patient effect; half the patients (all their slices) are members."""
    sizes = rng.integers(1, 2 * slices, patients) if unequal else np.full(patients, slices)
    groups = np.repeat(np.arange(patients), sizes)
    scores = np.sqrt(icc) * rng.normal(size=patients)[groups] + np.sqrt(1 - icc) * rng.normal(size=len(groups))
    member = np.zeros(patients, int)
    member[rng.permutation(patients)[: patients // 2]] = 1
    return scores, member[groups], groups


# ---------------------------------------------------------------- descriptive statistics by hand

CT_MEMBERS = np.array([[0.0], [10.0], [100.0], [110.0]])  # two k-means cells, centres 5 and 105
CT_NONMEMBERS = np.array([[3.0], [6.0], [104.0]])  # nearest-member distances 3, 4 | 4
CT_SYNTHETIC = np.array([[1.0], [9.0], [5.0], [101.0], [102.0]])  # 1, 1, 5 | 1, 2


def test_ct_by_hand():
    # cell A: synthetic {1, 1, 5} vs non-member {3, 4}: U = #(synthetic farther) = 2 (5>3, 5>4), m=3, n=2
    z_a = (2 - 3 * 2 / 2) / np.sqrt(3 * 2 * (3 + 2 + 1) / 12)
    # cell B: synthetic {1, 2} vs non-member {4}: U = 0, m=2, n=1
    z_b = (0 - 2 * 1 / 2) / np.sqrt(2 * 1 * (2 + 1 + 1) / 12)
    ct = data_copying_ct(CT_MEMBERS, CT_NONMEMBERS, CT_SYNTHETIC, cells=2, min_synthetic=0)
    assert ct == pytest.approx((2 / 3) * z_a + (1 / 3) * z_b)  # weights: non-member shares 2/3, 1/3
    # a cell enters only with MORE than min_synthetic synthetic images: 3 > 2 (A) in, 2 (B) out
    assert data_copying_ct(CT_MEMBERS, CT_NONMEMBERS, CT_SYNTHETIC, cells=2, min_synthetic=2) == pytest.approx(z_a)
    with pytest.raises(SynthleakError, match="none of the 2 cells"):
        data_copying_ct(CT_MEMBERS, CT_NONMEMBERS, CT_SYNTHETIC, cells=2, min_synthetic=3)


def test_ct_direction_in_a_wide_space():
    """100-d features (PCA to 64 on the way): copies of members give C_T << 0, fresh samples C_T ~ 0."""
    rng = np.random.default_rng(0)
    members, nonmembers, fresh = (rng.normal(size=(n, 100)) for n in (300, 300, 300))
    copies = members[rng.integers(0, 300, 300)] + rng.normal(0, 0.05, (300, 100))
    assert data_copying_ct(members, nonmembers, copies) < -10
    assert abs(data_copying_ct(members, nonmembers, fresh)) < 3
    assert data_copying_ct(members, nonmembers, fresh, seed=1) == data_copying_ct(members, nonmembers, fresh, seed=1)


MEMBERS = np.array([[0.0], [10.0], [11.0]])  # nearest other member: 10, 1, 1
MEMBER_GROUPS = ["a", "b", "b"]  # 10 and 11 are slices of one patient: nearest *other patient* 10, 10, 11


def test_authenticity_by_hand():
    synthetic = np.array([[2.0], [10.5], [14.0], [-7.0]])
    # 2: d1=2 <= 10 (member 0) inauthentic; 10.5: 0.5 <= 1 inauthentic; 14: 3 > 1 authentic; -7: 7 <= 10
    assert authenticity(MEMBERS, synthetic) == pytest.approx(1 / 4)
    # with groups member 11's nearest other is 0 at 11: 14 (d1=3) becomes inauthentic too
    assert authenticity(MEMBERS, synthetic, member_groups=MEMBER_GROUPS) == 0.0
    # an exact copy of a duplicated member is inauthentic (0 <= 0), a far point authentic
    dup = np.array([[0.0], [0.0], [50.0]])
    assert authenticity(dup, np.array([[0.0], [200.0]])) == pytest.approx(1 / 2)


def test_memorised_share_by_hand():
    synthetic = np.array([[1.0], [10.2], [10.4], [5.0]])
    # 1: 1 < 9/3 yes; 10.2: 0.2 < 0.8/3 yes; 10.4: 0.4 < 0.6/3 no; 5: 5 < 5/3 no
    assert memorised_share(MEMBERS, synthetic) == pytest.approx(2 / 4)
    # second nearest from another patient: 10.4 -> 0.4 < 10.4/3 yes
    assert memorised_share(MEMBERS, synthetic, member_groups=MEMBER_GROUPS) == pytest.approx(3 / 4)
    assert memorised_share(MEMBERS, synthetic, ratio=0.5) == pytest.approx(2 / 4)  # 10.4: 0.4 < 0.3 no


def test_nearest_other_group_search_widens_past_many_slices():
    """A patient with 30 near-identical slices: the other-patient neighbour lies beyond the first k."""
    members = np.r_[np.linspace(0, 0.3, 30), [100.0]][:, None]
    groups = ["p"] * 30 + ["q"]
    synthetic = np.array([[0.15]])
    assert memorised_share(members, synthetic) == 0.0  # second nearest is a sibling slice, 0.01 away
    assert memorised_share(members, synthetic, member_groups=groups) == 1.0  # 0.0 < 99.85 / 3


def test_find_copies_by_hand():
    members, nonmembers = np.array([[0.0], [10.0]]), np.array([[1.0], [14.0]])
    # members' nearest non-member: 1 (sim 1 - 1/2 = 0.5), 4 (sim 1 - 16/2 = -7); 95th percentile
    # (linear): -7 + 0.95 * 7.5 = 0.125
    synthetic = np.array([[0.2], [9.5], [5.0], [10.9]])
    found = find_copies(members, nonmembers, synthetic, synthetic_ids=["s0", "s1", "s2", "s3"],
                        member_ids=["m0", "m10"])
    assert found.threshold == pytest.approx(0.125)
    # similarities 1 - 0.02, 1 - 0.125, 1 - 12.5, 1 - 0.405: three above 0.125
    assert [(r.synthetic_id, r.real_id) for r in found.rows] == [("s0", "m0"), ("s1", "m10"), ("s3", "m10")]
    assert [r.similarity for r in found.rows] == pytest.approx([0.98, 0.875, 0.595], abs=1e-5)
    assert found.share == 0.75
    assert found.ci[0] <= 0.75 <= found.ci[1] and found.ci[0] < found.ci[1]
    assert find_copies(members, nonmembers, synthetic) == find_copies(members, nonmembers, synthetic)


def test_similarity_is_cosine_for_unit_vectors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 16))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    assert similarity(np.linalg.norm(a - b)) == pytest.approx(a @ b)


# ---------------------------------------------------------------- the permutation test

def _exhaustive_p(scores: np.ndarray, units: np.ndarray, unit_labels: np.ndarray) -> float:
    """Exact relabelling p-value: every way of choosing which units are members, AUC from scipy's U."""
    n_units, n_member_units = len(unit_labels), int(unit_labels.sum())

    def auc(member_units) -> float:
        is_member = np.isin(units, member_units)
        x, y = scores[is_member], scores[~is_member]
        return mannwhitneyu(x, y).statistic / (len(x) * len(y))

    observed = auc(np.flatnonzero(unit_labels))
    every = [auc(np.array(c)) for c in itertools.combinations(range(n_units), n_member_units)]
    return float(np.mean(np.array(every) >= observed - 1e-12))


def test_p_value_matches_exhaustive_enumeration_with_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=10) + np.r_[np.full(5, 0.8), np.zeros(5)], 1)  # ties on purpose
    labels = np.r_[np.ones(5), np.zeros(5)]
    exact = _exhaustive_p(scores, np.arange(10), labels)  # all C(10, 5) = 252 relabellings
    got = permutation_test(scores, labels, permutations=20_000, seed=0)
    assert 0.005 < exact < 0.5
    assert got.p_value == pytest.approx(exact, abs=mc_tolerance(exact, 20_000))
    assert got.auc == pytest.approx(roc_auc_score(labels, scores))


def test_group_p_value_matches_exhaustive_enumeration():
    """8 patients of 1-5 slices, 4 members: all C(8, 4) = 70 patient relabellings."""
    rng = np.random.default_rng(5)
    sizes = np.array([1, 5, 2, 4, 3, 3, 5, 1])
    groups = np.repeat(np.arange(8), sizes)
    unit_labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    labels = unit_labels[groups]
    scores = rng.normal(size=8)[groups] + rng.normal(0, 0.3, len(groups)) + 0.6 * labels
    exact = _exhaustive_p(scores, groups, unit_labels)
    got = permutation_test(scores, labels, groups=[f"p{g}" for g in groups], permutations=20_000, seed=1)
    assert got.grouped and got.units == 8
    assert got.p_value == pytest.approx(exact, abs=mc_tolerance(exact, 20_000))
    assert got.auc == pytest.approx(roc_auc_score(labels, scores))  # image-level AUC, group-level null


@pytest.mark.parametrize("n_members,n_nonmembers,shift,seed", [(6, 7, 0.5, 0), (8, 8, 1.0, 1), (10, 5, 0.0, 2),
                                                                (4, 12, 1.5, 3)])
def test_p_value_matches_scipy_exact_mann_whitney(n_members, n_nonmembers, shift, seed):
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(shift, 1, n_members), rng.normal(0, 1, n_nonmembers)
    exact = mannwhitneyu(members, nonmembers, alternative="greater", method="exact").pvalue
    got = permutation_test(np.r_[members, nonmembers], np.r_[np.ones(n_members), np.zeros(n_nonmembers)],
                           permutations=20_000, seed=seed)
    assert got.p_value == pytest.approx(exact, abs=mc_tolerance(exact, 20_000))


def test_clear_shift_gives_p_at_the_floor():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(1.5, 1, 100), rng.normal(0, 1, 100)]
    result = permutation_test(scores, np.r_[np.ones(100), np.zeros(100)])
    assert result.p_value == pytest.approx(1 / 2001) and result.p_value < 0.001


def test_constant_scores_give_p_one():
    assert permutation_test(np.zeros(6), [1, 1, 1, 0, 0, 0], permutations=100).p_value == 1.0


def _false_alarms(make, reps: int, permutations: int, grouped: bool) -> int:
    shown = 0
    for rep in range(reps):
        scores, labels, groups = make(np.random.default_rng(rep))
        result = permutation_test(scores, labels, groups=groups if grouped else None,
                                  permutations=permutations, seed=rep)
        shown += result.p_value < 0.05
    return shown


@pytest.mark.parametrize("unequal", [False, True], ids=["equal-slices", "unequal-slices"])
def test_group_permutation_is_calibrated_where_image_level_is_not(unequal):
    """Signal-free, ICC 0.9: image-level relabelling reads the patient effect as membership.

    100 repetitions at alpha 0.05 (200 relabellings each, ~0.2 s): the patient-level test may alarm
    about 5 times (at most 9 allowed: P(Binomial(100, 0.05) >= 10) = 0.03); image-level ~30 times.
    """
    def make(rng):
        return clustered_null(rng, patients=16, slices=8, icc=0.9, unequal=unequal)

    assert _false_alarms(make, 100, 200, grouped=True) <= 9
    assert _false_alarms(make, 100, 200, grouped=False) >= 20


def test_false_alarms_when_scores_ignore_labels():
    def make(rng):
        return rng.normal(size=200), rng.permutation(np.r_[np.ones(100), np.zeros(100)]), None

    assert _false_alarms(make, 100, 200, grouped=False) <= 9


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unrelated", "clustered-equal", "clustered-unequal"])
def test_false_alarms_full_size(case):
    """100 repetitions at the default 2,000 relabellings, 400-1,000 labelled scores: at most 9 alarms."""
    def make(rng):
        if case == "unrelated":
            return rng.normal(size=1000), rng.permutation(np.r_[np.ones(400), np.zeros(600)]), None
        return clustered_null(rng, patients=50, slices=10, icc=0.8, unequal=case == "clustered-unequal")

    assert _false_alarms(make, 100, 2000, grouped=case != "unrelated") <= 9
    if case != "unrelated":
        assert _false_alarms(make, 100, 2000, grouped=False) >= 20  # image-level: 4x alpha and more


@pytest.mark.slow
def test_null_p_values_are_uniform():
    """1,000 signal-free clustered data sets: P(p <= a) <= a at a = 0.01, 0.05, 0.1, 0.5 (+ 3 SE)."""
    ps = []
    for rep in range(1000):
        scores, labels, groups = clustered_null(np.random.default_rng(rep), 30, 6, 0.7)
        ps.append(permutation_test(scores, labels, groups=groups, permutations=500, seed=rep).p_value)
    ps = np.array(ps)
    for a in (0.01, 0.05, 0.1, 0.5):
        assert np.mean(ps <= a) <= a + 3 * np.sqrt(a * (1 - a) / 1000)


# ---------------------------------------------------------------- verdict, summary, JSON

def _features(rng, n, shift=0.0):
    return rng.normal(shift, 1, (n, 4))


def test_verdict_with_features_is_seeded_and_serialisable():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30), np.zeros(30)]
    scores = rng.normal(size=60) + labels
    members, nonmembers = _features(rng, 30), _features(rng, 30)
    synthetic = np.r_[members[:6] + 1e-3, _features(rng, 60)]  # 6 near-copies
    kwargs = {"synthetic_features": synthetic, "member_features": members, "nonmember_features": nonmembers,
              "synthetic_ids": [f"gen{i}" for i in range(66)], "member_ids": [f"used{i}" for i in range(30)]}
    v = verdict(scores, labels, **kwargs)
    assert v == verdict(scores, labels, **kwargs)
    assert v.p_value == permutation_test(scores, labels).p_value and v.leakage_shown
    assert {(r.synthetic_id, r.real_id) for r in v.copies} >= {(f"gen{i}", f"used{i}") for i in range(6)}
    assert [r.similarity for r in v.copies] == sorted((r.similarity for r in v.copies), reverse=True)
    assert all(r.similarity > v.copy_threshold for r in v.copies)
    assert v.copy_share == pytest.approx(len(v.copies) / 66)
    assert 0 <= v.authenticity <= 1 and 6 / 66 <= v.memorised_share <= 1
    assert v.ct is not None and v.notes == []  # 66 synthetic images: some cell holds more than 20
    data = json.loads(json.dumps(v.to_json()))  # plain JSON: no NaN, tuples, dataclasses
    assert data["copies"][0].keys() == {"synthetic_id", "real_id", "similarity", "percentile", "distance_ratio"}
    # beyond (about) the 95th percentile of the 30 member-to-non-member pairs; nearer than their median
    assert all(r.percentile > 90 and 0 <= r.distance_ratio < 1 for r in v.copies)
    assert data["copy_share_ci"] == list(v.copy_share_ci)
    assert data["member_closer_ci"] == list(v.member_closer_ci)
    assert {"leakage_shown", "p_value", "alpha", "test", "permutations", "copy_share", "copy_share_ci", "ct",
            "authenticity", "memorised_share", "member_closer_share", "member_closer_ci",
            "member_closer_p"} <= data.keys()


def test_verdict_without_features_and_ct_note():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(20), np.zeros(20)]
    v = verdict(rng.normal(size=40), labels)
    assert v.copy_share is None and v.ct is None and v.copies == [] and v.n_members == 20
    assert v.summary() == f"verdict: leakage not shown (p = {format_p(v.p_value)})"
    few = verdict(rng.normal(size=40), labels, synthetic_features=_features(rng, 10),
                  member_features=_features(rng, 20), nonmember_features=_features(rng, 20))
    assert few.ct is None and few.notes and "C_T" in few.notes[0]  # 10 synthetic images: no cell qualifies
    assert few.copy_share is not None and "copies:" in few.summary()


def _verdict(p: float, shown: bool, share=None, ci=None) -> Verdict:
    return Verdict(leakage_shown=shown, p_value=p, alpha=0.05, test="t", permutations=2000, auc=0.6,
                   n_members=10, n_nonmembers=10, copy_share=share, copy_share_ci=ci)


def test_summary_lines():
    assert (_verdict(1 / 2001, True, 0.125, (0.098, 0.154)).summary()
            == "verdict: leakage shown (p = 0.0005; copies: 12.5% [9.8, 15.4] of synthetic images)")
    assert _verdict(0.41, False).summary() == "verdict: leakage not shown (p = 0.41)"
    assert _verdict(1.0, False).summary() == "verdict: leakage not shown (p = 1)"


def test_p_formatting_keeps_the_floor_and_the_side_of_alpha():
    assert format_p(1 / 20_001) == "0.00005"  # no 'p < 0.001', no scientific notation
    assert format_p(0.0123) == "0.012"
    assert format_p(0.04998, alpha=0.05) == "0.04998"  # '0.050' would contradict 'shown'
    assert format_p(0.0502, alpha=0.05) == "0.05"  # not below alpha, as "not shown" says


def test_verdict_is_exported_as_a_function():
    assert synthleak.verdict is verdict and callable(synthleak.verdict)


def test_copy_row_order_breaks_ties_by_row():
    members, nonmembers = np.array([[0.0], [100.0]]), np.array([[50.0]])
    found = find_copies(members, nonmembers, np.array([[0.0], [100.0], [0.0]]))
    assert [r.synthetic_id for r in found.rows] == ["0", "1", "2"]
    # an identical copy: beyond every real pair (both members are 50 from the non-member), distance 0
    assert found.rows[0] == CopyRow("0", "0", 1.0, percentile=100.0, distance_ratio=0.0)


# ---------------------------------------------------------------- user errors: one line each

@pytest.mark.parametrize("scores,labels,kwargs,message", [
    ([0.1, 0.2, 0.3], [1, 1, 0], {}, "fewer than 2 non-members"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"groups": ["a", "a", "b", "c"]}, "fewer than 2 members"),
    ([0.1, np.nan, 0.3, 0.4], [1, 1, 0, 0], {}, "NaN or infinite .first at position 1"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0], {}, "3 labels for 4 scores"),
    ([0.1, 0.2, 0.3, 0.4], [1, 2, 0, 0], {}, "must be 0 .non-member. or 1"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"groups": ["a", "b", "c"]}, "groups: 3 entries for 4 rows"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"groups": ["a", "b", "b", "c"]}, "hold both members and non-members"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"alpha": 0}, "alpha 0: must be between 0 and 1"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"alpha": 1.5}, "alpha 1.5"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"permutations": 99}, "at least 100"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"permutations": 500, "alpha": 0.001}, "use at least 1000"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"member_features": np.zeros((2, 3))}, "together"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], {"member_groups": ["a"]}, "need the feature arrays"),
])
def test_user_errors(scores, labels, kwargs, message):
    with pytest.raises(SynthleakError, match=message) as info:
        verdict(scores, labels, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change,message", [
    ({"synthetic_features": np.zeros((5, 2))}, "differ in width"),
    ({"member_features": np.zeros((1, 3))}, "member_features: 1 row"),
    ({"nonmember_features": np.full((3, 3), np.inf)}, "nonmember_features: contains NaN"),
    ({"synthetic_ids": ["a", "b"]}, "synthetic_ids: 2 ids for 5 feature rows"),
    ({"member_groups": ["p", "p", "p", "p"]}, "all members are in one group"),
])
def test_feature_errors(change, message):
    rng = np.random.default_rng(0)
    arrays = {"synthetic_features": rng.normal(size=(5, 3)), "member_features": rng.normal(size=(4, 3)),
              "nonmember_features": rng.normal(size=(3, 3))} | change
    with pytest.raises(SynthleakError, match=message):
        verdict([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], permutations=100, alpha=0.5, **arrays)


def test_copy_reference_both_is_not_fooled_by_a_blurry_generator():
    """Blurry samples of *other* patients sit closer to every real image than two sharp reals do:
    Dar's anchor alone calls them copies, the synthetic anchor does not; true copies pass both."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (160, 32))
    members = centres[:30] + rng.normal(0, 0.8, (30, 32))
    nonmembers = centres[30:60] + rng.normal(0, 0.8, (30, 32))
    # a smoothing generator trained on 100 other patients: shrunk towards the mean, far from no one
    blurry = 0.4 * centres[60 + rng.integers(0, 100, 200)] + rng.normal(0, 0.2, (200, 32))
    held_out_only = find_copies(members, nonmembers, blurry)
    both = find_copies(members, nonmembers, blurry, copy_reference="both")
    assert held_out_only.share > 0.5 and both.share < 0.15
    copies = np.r_[members[:20] + rng.normal(0, 0.05, (20, 32)), blurry[:180]]
    found = find_copies(members, nonmembers, copies, copy_reference="both")
    assert found.share >= 0.09 and {r.synthetic_id for r in found.rows} >= {str(i) for i in range(20)}
    with pytest.raises(SynthleakError, match="copy_reference"):
        find_copies(members, nonmembers, blurry, copy_reference="sideways")
