"""The member-closer statistic and the memorisation summary: definitions checked by hand and by brute
force, the test's false alarms, and every statistic's direction on a copying and a non-copying generator."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synthleak.errors import SynthleakError
from synthleak.leakage import _Distances, member_closer, verdict
from synthleak.report.summary import ANATOMY, COPIES, conclusion, summarise


def brute_force(d2: np.ndarray, m: int, reps: int, rng: np.random.Generator) -> float:
    """The definition: random equal-size subsamples of members (columns :m) and non-members, the share
    of rows whose nearest member is nearer than their nearest non-member (ties 1/2), averaged."""
    n = d2.shape[1] - m
    k = min(m, n)
    total = 0.0
    for _ in range(reps):
        a = d2[:, rng.choice(m, k, replace=False)].min(1)
        b = d2[:, m + rng.choice(n, k, replace=False)].min(1)
        total += np.mean((a < b) + 0.5 * (a == b))
    return total / reps


@pytest.mark.parametrize("m,n", [(6, 15), (15, 6), (9, 9)])
def test_closed_form_is_the_average_over_every_subsample(m, n):
    rng = np.random.default_rng(m * 100 + n)
    members, nonmembers = rng.normal(size=(m, 3)), rng.normal(size=(n, 3))
    nonmembers[0] = members[0]  # an exact duplicate across the labels: ties count one half
    synthetic = np.r_[rng.normal(size=(40, 3)), members[:1]]
    d2 = _Distances(np.r_[members, nonmembers])(synthetic)
    share = member_closer(members, nonmembers, synthetic, permutations=100).share
    assert share == pytest.approx(brute_force(d2, m, 30_000, rng), abs=0.004)  # ~5 Monte-Carlo SEs


def test_distances_match_numpy_and_duplicates_tie_exactly():
    rng = np.random.default_rng(3)
    reals = rng.random((30, 64)).astype(np.float32)
    reals[7] = reals[3]
    synthetic = rng.random((50, 64)).astype(np.float32)
    d2 = _Distances(reals)(synthetic)
    exact = ((synthetic[:, None].astype(float) - reals[None].astype(float)) ** 2).sum(-1)
    assert np.allclose(d2, exact, rtol=1e-5, atol=1e-5)
    assert (d2[:, 7] == d2[:, 3]).all()


def test_hand_computed_shares():
    members = np.array([[0.0], [10.0]])
    nonmembers = np.array([[4.0], [20.0], [30.0], [40.0]])
    # m = 2 <= n = 4, k = 2: both members drawn, 2 of 4 non-members.
    # x = 1: nearest member 0 (d 1), no non-member nearer: 1.
    # x = 6: nearest member 10 (d 4); non-member 4 (d 2) nearer: wins only when 4 is not drawn,
    #        C(3, 2) / C(4, 2) = 1/2.
    # x = 35: nearest member 10 (d 25); non-members 20, 30, 40 nearer: never (C(1, 2) = 0): 0.
    # x = 7: nearest member 10 (d 3), non-member 4 at d 3 too (a tie): 1/2 * (1 + 1/2) = 3/4.
    synthetic = np.array([[1.0], [6.0], [35.0], [7.0]])
    result = member_closer(members, nonmembers, synthetic, permutations=100)
    assert result.share == pytest.approx((1 + 0.5 + 0 + 0.75) / 4)
    assert result.subsample == 2 and result.sample == 4 and not result.grouped
    # the sides swapped: the complement, row by row
    swapped = member_closer(nonmembers, members, synthetic, permutations=100)
    assert swapped.share == pytest.approx(1 - result.share)


def test_groups_are_the_units_of_the_subsample():
    """With groups a unit's distance is its nearest image's, and k = min(groups) units are drawn per side."""
    members = np.array([[0.0], [1.0], [10.0]])
    member_groups = ["a", "a", "b"]
    nonmembers = np.array([[4.0], [20.0], [30.0], [40.0]])
    nonmember_groups = ["c", "d", "e", "e"]
    # 2 member units (a: 0, 1; b: 10) against 3 non-member units (c: 4, d: 20, e: 30, 40), k = 2
    # x = 0.5: a at 0.5, nothing nearer: 1.   x = 2: a at 1, c (2 away) is not nearer: 1.
    # x = 3: a at 2, c at 1 nearer: C(2, 2) / C(3, 2) = 1/3.   x = 25: b at 15, d and e at 5: 0.
    synthetic = np.array([[0.5], [2.0], [3.0], [25.0]])
    result = member_closer(members, nonmembers, synthetic, member_groups=member_groups,
                           nonmember_groups=nonmember_groups, permutations=100)
    assert result.share == pytest.approx((1 + 1 + 1 / 3 + 0) / 4)
    assert result.grouped and result.units == 5 and result.subsample == 2


def _world(rng, copying: bool, patients=40, slices=3, dims=16, n_synthetic=300):
    """Patients with near-identical slices; half are members. A copying generator emits slightly noisy
    copies of member slices; a non-copying one emits fresh patients from the same population."""
    centres = rng.normal(size=(patients, dims))
    images = np.repeat(centres, slices, 0) + 0.05 * rng.normal(size=(patients * slices, dims))
    group = np.repeat(np.arange(patients), slices)
    member = group < patients // 2
    if copying:
        source = images[member][rng.integers(0, member.sum(), n_synthetic)]
        synthetic = source + 0.02 * rng.normal(size=source.shape)
    else:
        synthetic = rng.normal(size=(n_synthetic, dims)) + 0.05 * rng.normal(size=(n_synthetic, dims))
    return images[member], images[~member], synthetic, group[member], group[~member]


@pytest.mark.parametrize("copying", [True, False])
def test_direction_on_a_copying_and_a_non_copying_generator(copying):
    members, nonmembers, synthetic, g_mem, g_non = _world(np.random.default_rng(5), copying)
    result = member_closer(members, nonmembers, synthetic, member_groups=g_mem, nonmember_groups=g_non + 1000)
    assert result.grouped and result.units == 40
    low, high = result.ci
    assert low <= result.share <= high
    if copying:
        assert result.share > 0.95 and result.p_value < 0.01
    else:
        assert abs(result.share - 0.5) < 0.15 and result.p_value > 0.05


def test_every_statistic_points_the_right_way():
    """copy share, memorised share, authenticity, C_T and member-closer, on a copying and a fresh generator."""
    readings = {}
    for copying in (True, False):
        members, nonmembers, synthetic, g_mem, g_non = _world(np.random.default_rng(8), copying, n_synthetic=400)
        labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
        groups = np.r_[g_mem, g_non]
        scores = np.random.default_rng(0).normal(size=len(labels))
        v = verdict(scores, labels, groups=groups, synthetic_features=synthetic, member_features=members,
                    nonmember_features=nonmembers, member_groups=g_mem, permutations=500)
        readings[copying] = v
        s = summarise(v)
        assert s.answers == {COPIES: copying, ANATOMY: copying}, s.headline
        assert ("reproduces training anatomy" in conclusion(s)) == copying
    copier, fresh = readings[True], readings[False]
    assert copier.copy_share > 0.5 and fresh.copy_share < 0.1
    assert copier.memorised_share > fresh.memorised_share + 0.2
    assert copier.authenticity < fresh.authenticity - 0.3
    assert copier.ct < -2 < fresh.ct
    assert copier.member_closer_share > 0.95 and copier.member_closer_p < 0.01
    assert abs(fresh.member_closer_share - 0.5) < 0.15 and fresh.member_closer_p > 0.05
    # the held-out reals' own values: what a generator that copies nothing gets
    assert fresh.authenticity == pytest.approx(fresh.authenticity_held_out, abs=0.25)


def test_anatomy_without_copies_is_explained():
    """A generator that learnt its training patients' anatomy but copies no image: each synthetic image a
    member patient's anatomy plus variation wider than the gap between two patients' nearest images."""
    rng = np.random.default_rng(11)
    patients, slices, dims = 40, 4, 16
    centres = rng.normal(size=(patients, dims))
    images = np.repeat(centres, slices, 0) + 0.3 * rng.normal(size=(patients * slices, dims))
    group = np.repeat(np.arange(patients), slices)
    member = group < patients // 2
    synthetic = centres[rng.integers(0, patients // 2, 400)] + 1.3 * rng.normal(size=(400, dims))
    labels = member.astype(int)
    v = verdict(rng.normal(size=len(labels)), labels, groups=group, synthetic_features=synthetic,
                member_features=images[member], nonmember_features=images[~member], member_groups=group[member],
                permutations=500)
    s = summarise(v)
    assert s.answers[ANATOMY] and not s.answers[COPIES], s.headline
    assert "near-copies of single training images: none" in s.headline
    assert "reproduction of training anatomy: yes" in s.headline
    assert any("without pixel-level copies" in note for note in s.notes)
    assert conclusion(s).startswith("The generator reproduces training anatomy")


def test_relabelling_p_values_stay_calibrated_on_signal_free_data():
    """Synthetic images from other patients: at most ~5% of p-values below 0.05 (40 draws: <= 5 allowed,
    a binomial(40, 0.05) count exceeds 5 with probability ~1.4%), by whole groups."""
    alarms = []
    for rep in range(40):
        rng = np.random.default_rng([21, rep])
        members, nonmembers, synthetic, g_mem, g_non = _world(rng, copying=False, patients=24, n_synthetic=150)
        result = member_closer(members, nonmembers, synthetic, member_groups=g_mem, nonmember_groups=g_non + 100,
                               permutations=200, seed=rep)
        alarms.append(result.p_value < 0.05)
    assert sum(alarms) <= 5, sum(alarms)


def test_memory_mapped_synthetic_features_match_and_sampling_keeps_the_share(tmp_path):
    members, nonmembers, synthetic, _, _ = _world(np.random.default_rng(2), copying=True, n_synthetic=600)
    mapped = np.lib.format.open_memmap(tmp_path / "syn.npy", mode="w+", dtype=np.float32, shape=synthetic.shape)
    mapped[:] = synthetic
    mapped.flush()
    mapped = np.load(tmp_path / "syn.npy", mmap_mode="r")
    full = member_closer(members, nonmembers, synthetic, permutations=100)
    assert member_closer(members, nonmembers, mapped, permutations=100) == full
    # a test sample smaller than the synthetic set: the share (and its CI) still use every image
    sampled = member_closer(members, nonmembers, mapped, permutations=100, sample=200)
    assert sampled.sample == 200 and sampled.share == full.share and sampled.ci == full.ci
    assert sampled.p_value < 0.05


def test_errors_and_verdict_notes():
    rng = np.random.default_rng(4)
    a, b, s = rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), rng.normal(size=(9, 2))
    with pytest.raises(SynthleakError, match="hold both members and non-members"):
        member_closer(a, b, s, member_groups=list("aabbc"), nonmember_groups=list("cddee"))
    with pytest.raises(SynthleakError, match="fewer than 2 member or non-member groups"):
        member_closer(a, b, s, member_groups=list("aaaaa"), nonmember_groups=list("bbccd"))
    with pytest.raises(SynthleakError, match="member_groups: 3 entries for 5 rows"):
        member_closer(a, b, s, member_groups=list("abc"))
    # in the verdict a member-closer problem is a note, not a failure: here the feature rows cannot be
    # matched to the groups of the scores (4 member rows for 5 members), so no whole-group test
    labels = np.r_[np.ones(5), np.zeros(5)]
    v = verdict(rng.normal(size=10), labels, groups=list("aabbcddeef"), synthetic_features=s, member_features=a[:4],
                nonmember_features=b, permutations=200)
    assert v.member_closer_share is None and any(n.startswith("member-closer:") for n in v.notes)
    assert v.member_closer_line() is None


def test_verdict_json_and_line():
    members, nonmembers, synthetic, g_mem, g_non = _world(np.random.default_rng(6), copying=True)
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    v = verdict(np.r_[np.ones(len(members)), np.zeros(len(nonmembers))] + 0.0, labels,
                groups=np.r_[g_mem, g_non + 1000], synthetic_features=synthetic, member_features=members,
                nonmember_features=nonmembers, permutations=2000, seed=3)
    data = json.loads(json.dumps(v.to_json()))
    assert data["member_closer_share"] == v.member_closer_share and len(data["member_closer_ci"]) == 2
    assert data["member_closer_p"] == v.member_closer_p and "500 relabellings of 40 groups" in data["member_closer_test"]
    line = v.member_closer_line()
    assert line.startswith("member-closer: ") and "chance 50%" in line and "p = 0.002" in line
