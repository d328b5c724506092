"""Difficulty calibration, the k-NN density ratio, transferable decisions and the shift check."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthleak.calibration import Calibration, cluster_reference, neighbour_reference
from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.data.images import ImageSet
from synthleak.data.layout import AuditData
from synthleak.decide import DecisionRule, cv_decisions, mixture_member_rate
from synthleak.errors import SynthleakError
from synthleak.methods import get_method, run_method, split_variant
from synthleak.shift import check_shift


def test_neighbour_reference_is_the_mean_of_the_k_nearest_others():
    features = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
    scores = np.array([10.0, 20.0, 30.0, 40.0])
    # nearest others: 0 -> {1, 3}; 1 -> {0, 3}; 3 -> {1, 0} (tie with 7 broken by distance 2 vs 4); 7 -> {3, 1}
    assert neighbour_reference(scores, features, 2) == pytest.approx([25.0, 20.0, 15.0, 25.0])


def test_neighbour_reference_excludes_the_row_itself_even_among_exact_duplicates():
    features = np.zeros((4, 2), np.float32)  # all identical: the row's own index may come back anywhere
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    ref = neighbour_reference(scores, features, 3)
    assert ref == pytest.approx([(10 - s) / 3 for s in scores])


def test_cluster_reference_is_leave_one_out_within_the_cluster():
    features = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]], np.float32)
    scores = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    ref = cluster_reference(scores, features, cluster_size=3, seed=0)
    assert ref == pytest.approx([2.5, 2.0, 1.5, 25.0, 20.0, 15.0])


def test_calibration_removes_a_population_offset_and_keeps_membership():
    rng = np.random.default_rng(0)
    n = 400
    population = np.repeat([0, 1], n // 2)
    member = rng.random(n) < 0.5
    # population 1 is "hard" for the generator: every score lower by 3, membership adds 1 everywhere
    scores = -3.0 * population + 1.0 * member + rng.normal(0, 0.5, n)
    features = np.c_[population * 100.0 + rng.normal(0, 1, n), rng.normal(0, 1, n)].astype(np.float32)
    for mode in ("neighbours", "clusters"):
        calibrated = Calibration(mode, k=50, cluster_size=50).apply(scores, features)
        means = [calibrated[population == p].mean() for p in (0, 1)]
        assert abs(means[0] - means[1]) < 0.2
        # one threshold now serves both populations: pooled AUC rises to the within-population AUC
        assert roc_auc_score(member, calibrated) > roc_auc_score(member, scores) + 0.1
        assert roc_auc_score(member, calibrated) > 0.85


def test_calibration_options_are_validated():
    with pytest.raises(SynthleakError, match="--calibrate bogus"):
        Calibration("bogus")
    with pytest.raises(SynthleakError, match="at least 2"):
        Calibration("neighbours", k=1)
    assert split_variant("nearest+neighbours") == ("nearest", "neighbours")
    with pytest.raises(SynthleakError, match="unknown calibration"):
        get_method("nearest+sideways")


def _data_with_labels_swapped(data: AuditData) -> AuditData:
    return AuditData(generated=data.generated, real_used=data.real_not_used, real_not_used=data.real_used,
                     real_unknown=data.real_unknown, test_generated=data.test_generated, source=data.source)


@pytest.mark.parametrize("name", ["default", "density-ratio+neighbours", "nearest+clusters"])
def test_calibrated_scores_do_not_depend_on_the_labels(tiny_challenge, name):
    """Label-free scores: swapping which labelled reals are 'used' changes nothing but the row order."""
    data = discover(tiny_challenge)
    cfg = MethodConfig(cache_dir="none", quiet=True)
    a = run_method(name, data, cfg)
    b = run_method(name, _data_with_labels_swapped(data), cfg)
    n_used = len(data.real_used)
    # the default recipe chooses among label-free candidates with the labels: its candidates' scores
    # (what the verdict tests) must be label-free, the choice itself is not
    pairs = ([(a.variants[c].labelled, b.variants[c].labelled, a.variants[c].test, b.variants[c].test)
              for c in a.variants] if name == "default" else
             [(a.labelled_scores, b.labelled_scores, a.test_scores, b.test_scores)])
    for a_lab, b_lab, a_test, b_test in pairs:
        swapped = np.r_[b_lab[-n_used:], b_lab[:-n_used]]
        assert np.allclose(a_lab, swapped)
        assert np.allclose(a_test, b_test)


def test_no_test_label_reaches_scores_or_decisions(tiny_challenge, tmp_path):
    """The spy: the same audit with the true and with scrambled test labels writes identical files."""
    from synthleak.data.runfile import read_labels
    from synthleak.pipeline import run_audit

    labels = read_labels(tiny_challenge / "test_labels.csv")
    ids = sorted(labels)
    scrambled = dict(zip(ids, np.random.default_rng(3).permutation([labels[i] for i in ids])))
    outputs = []
    for name, table in (("true", labels), ("scrambled", scrambled)):
        run_audit(tiny_challenge, methods="default,density-ratio+clusters", cfg=MethodConfig(cache_dir="none", quiet=True),
                  labels=table, out=tmp_path / name / "run.csv", n_boot=20)
        outputs.append({p.name: p.read_text() for p in (tmp_path / name).glob("*.csv")})
    assert outputs[0].keys() == outputs[1].keys() and len(outputs[0]) == 5  # 2 run, 2 scores, copies
    assert outputs[0] == outputs[1]


def test_density_ratio_is_invariant_to_an_intensity_window(tiny_challenge):
    """Another window (a linear intensity map) rescales every distance alike: the ranking stays."""
    data = discover(tiny_challenge)

    def windowed(s) -> ImageSet | None:
        if s is None:
            return None
        s = s.materialise() if hasattr(s, "materialise") else s  # synthetic sets stream from their files
        return ImageSet.from_arrays((s.pixels.astype(np.float32) * 0.5 + 40).astype(np.uint8), s.ids)

    other = AuditData(**{k: windowed(getattr(data, k)) for k in
                         ("generated", "real_used", "real_not_used", "real_unknown", "test_generated")})
    cfg = MethodConfig(cache_dir="none", quiet=True, feature_space="pixels32", options={"k_real": "4"})
    a, b = run_method("density-ratio", data, cfg), run_method("density-ratio", other, cfg)
    # rounding to uint8 perturbs distances slightly: ranks agree almost everywhere
    from scipy.stats import spearmanr

    assert spearmanr(a.test_scores, b.test_scores).correlation > 0.95


def test_quantile_rule_follows_a_shift_of_the_test_scores():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 100)
    labelled = rng.normal(0, 1, 200) + 1.5 * y
    test = rng.normal(0, 1, 200) + 1.5 * y + 10.0  # another population: every test score shifted
    kappa_value = DecisionRule("kappa").fit(labelled, y, test)
    quantile = DecisionRule("quantile").fit(labelled, y, test)
    assert (test >= kappa_value).mean() == 1.0  # the carried value flags every test image
    assert 0.3 < (test >= quantile).mean() < 0.7  # the carried rank flags about as many as on labelled reals


def test_mixture_recovers_a_member_rate_and_falls_back_when_unimodal():
    rng = np.random.default_rng(2)
    scores = np.r_[rng.normal(0, 1, 700), rng.normal(6, 1, 300)]
    rate, separated = mixture_member_rate(scores, fallback=0.5)
    assert separated and rate == pytest.approx(0.3, abs=0.03)
    rate, separated = mixture_member_rate(rng.normal(0, 1, 1000), fallback=0.42)
    assert not separated and rate == 0.42


def test_tail_rule_flags_only_beyond_every_labelled_non_member():
    scores = np.array([0.1, 0.5, 0.9, 0.3, 1.2, 2.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = DecisionRule("tail").fit(scores, y)
    assert (scores >= t).tolist() == [False, False, False, False, True, True]
    folds = [(np.array([0, 1, 3, 4]), np.array([2, 5])), (np.array([2, 5]), np.array([0, 1, 3, 4]))]
    for mode in ("quantile", "mixture", "tail"):
        assert cv_decisions(scores, y, DecisionRule(mode), folds).shape == (6,)


def _population_split(populations: np.ndarray, labelled_pops: set[int], seed: int):
    rng = np.random.default_rng(seed)
    if labelled_pops:
        return np.isin(populations, list(labelled_pops))
    return rng.random(len(populations)) < 0.4


def test_shift_check_fires_on_other_populations_and_stays_quiet_on_a_random_split():
    from synthleak.bench.phantoms import make_population_phantoms

    images, patients, populations = make_population_phantoms(48, 3, n_populations=4, seed=4)
    shifted = np.isin(populations, [0, 1])
    check = check_shift(images[shifted], images[~shifted], n_boot=50)
    assert check.shifted and check.auc > 0.7 and "different population" in check.message()
    # a random split by patient: same populations on both sides
    rng = np.random.default_rng(5)
    labelled_patients = rng.permutation(48)[:20]
    random_split = np.isin(patients, labelled_patients)
    check = check_shift(images[random_split], images[~random_split], groups=patients.astype(str), n_boot=50)
    assert not check.shifted and check.auc < 0.65


def test_default_recipe_stays_at_chance_on_signal_free_shifted_data(tmp_path):
    """Members split by patient, labelled and test reals from other populations, synthetic images from
    a third set of patients: nothing to find, so the calibrated default must rank at chance."""
    from synthleak.bench.build import BenchSpec, build_benchmark
    from synthleak.bench.phantoms import make_population_phantoms
    from synthleak.data.runfile import read_labels
    from synthleak.pipeline import run_audit

    images, patients, populations = make_population_phantoms(160, 4, n_populations=4, seed=6)
    others, _, _ = make_population_phantoms(100, 4, n_populations=4, seed=7)
    spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.25, n_generated_train=300, n_generated_test=100,
                     generator="noisy-copies", seed=0)
    build_benchmark(images, patients, tmp_path / "null", spec, quiet=True,
                    label_groups=np.array([f"p{p}" for p in populations]), synthetic=others)
    labels = read_labels(tmp_path / "null" / "test_labels.csv")
    assert len(labels) >= 400
    report = run_audit(tmp_path / "null", cfg=MethodConfig(cache_dir="none", quiet=True), labels=labels, n_boot=50,
                       groups=tmp_path / "null" / "groups.csv")
    assert report.shift is not None and report.shift.shifted
    auc = report.by_name("default").test["auc"].value
    assert abs(auc - 0.5) < 0.07
