"""The demo and the benchmark builder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synthleak.bench.build import BenchSpec, build_benchmark
from synthleak.bench.folder import build_from_folder
from synthleak.bench.phantoms import make_phantoms
from synthleak.data import discover
from synthleak.data.runfile import read_labels
from synthleak.demo import run_demo
from synthleak.errors import OutputExistsError


def test_phantoms_are_deterministic_and_patient_specific():
    a, ga = make_phantoms(3, 2, seed=5)
    b, _ = make_phantoms(3, 2, seed=5)
    assert (a == b).all() and a.dtype == np.uint8 and a.shape == (6, 256, 256)
    d = lambda i, j: np.abs(a[i].astype(int) - a[j].astype(int)).mean()
    assert d(0, 1) < d(0, 2) and d(0, 1) < d(0, 4)  # same patient closer than other patients


def test_builder_splits_by_patient(tiny_challenge):
    groups = dict(l.split(",") for l in (tiny_challenge / "groups.csv").read_text().splitlines())
    labels = read_labels(tiny_challenge / "test_labels.csv")
    data = discover(tiny_challenge)
    g = lambda ids: {groups[i] for i in ids}
    assert not g(data.real_used.ids) & g(data.real_not_used.ids)
    test_members = [i for i in data.real_unknown.ids if labels[i] == 1]
    test_non = [i for i in data.real_unknown.ids if labels[i] == 0]
    assert not (g(data.real_used.ids) | g(test_members)) & (g(data.real_not_used.ids) | g(test_non))
    assert not g(data.real_unknown.ids) & (g(data.real_used.ids) | g(data.real_not_used.ids))


def test_builder_refuses_non_empty_output(tmp_path):
    (tmp_path / "x").write_text("keep")
    images, groups = make_phantoms(4, 2)
    with pytest.raises(OutputExistsError):
        build_benchmark(images, groups, tmp_path, BenchSpec(generator="noisy-copies"), quiet=True)


def test_build_from_folder(tmp_path):
    import cv2

    images, _ = make_phantoms(6, 2)
    for cls in ("a", "b"):
        (tmp_path / "real" / cls).mkdir(parents=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(tmp_path / "real" / ("a" if i % 2 else "b") / f"s{i}.png"), im)
    summary = build_from_folder(tmp_path / "real", tmp_path / "bench", n_generated=9, generator="noisy-copies",
                                member_fraction=0.5, labelled_fraction=0.5, quiet=True)
    assert summary["generated"] == 9 and summary["members"] == 6
    assert json.loads((tmp_path / "bench" / "SOURCE.json").read_text())["generator"] == "noisy-copies"


def test_small_demo_runs_and_detects_members(tmp_path, capsys):
    """The demo's code path at a small size (the full demo is in test_full_demo, marked slow)."""
    assert run_demo(tmp_path, epochs=30, quiet=True, n_patients=40, slices=2) == 0
    printed = capsys.readouterr().out
    assert "members are detectable" in printed and "nearest" in printed
    assert (tmp_path / "runs" / "run.nearest.csv").exists()
    # the verdict comes first (with 14 labelled patients it need not be significant: see test_full_demo)
    verdict = json.loads((tmp_path / "runs" / "run.default.json").read_text())["verdict"]
    assert printed.startswith("verdict: leakage ") and verdict["permutations"] >= 2000
    assert printed.splitlines()[1].startswith("member-closer: ") and "member_closer_p" in verdict
    # it ends with the audit to run next on its data, patient groups and test labels included
    last = printed.strip().splitlines()[-1].split()
    assert last[:2] == ["synthleak", "audit"] and "--groups" in last and "--labels" in last
    # the statistics are computed at the scale the recipe measured (a 30-epoch autoencoder resolves ~20 px)
    recipe = json.loads((tmp_path / "runs" / "run.default.json").read_text())["recipe"]
    assert recipe["comparison_side"] <= recipe["resolution"]["effective_side"] < 64
    assert 0.0 <= verdict["copy_share"] <= 1.0


@pytest.mark.slow
def test_full_demo(tmp_path, capsys):
    assert run_demo(tmp_path) == 0
    printed = capsys.readouterr().out
    assert "members are detectable" in printed
    verdict = json.loads((tmp_path / "runs" / "run.default.json").read_text())["verdict"]
    assert printed.startswith("verdict: leakage shown") and verdict["p_value"] < 0.001


def test_label_groups_make_labelled_and_test_reals_disjoint_populations(tmp_path):
    from synthleak.bench.phantoms import make_population_phantoms

    images, patients, populations = make_population_phantoms(24, 2, n_populations=3, seed=2)
    spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.3, n_generated_train=6, n_generated_test=3,
                     generator="noisy-copies", seed=1)
    label_groups = np.array([f"pop{p}" for p in populations])
    summary = build_benchmark(images, patients, tmp_path / "b", spec, quiet=True, label_groups=label_groups)
    table = dict(line.split(",") for line in (tmp_path / "b" / "label_groups.csv").read_text().splitlines())
    data = discover(tmp_path / "b")
    labelled_pops = {table[i] for i in data.real_used.ids + data.real_not_used.ids}
    test_pops = {table[i] for i in data.real_unknown.ids}
    assert labelled_pops and test_pops and not labelled_pops & test_pops
    assert set(summary["label_groups"]["labelled"]) == labelled_pops
    # members and non-members are drawn inside every population, the test ones included
    labels = read_labels(tmp_path / "b" / "test_labels.csv")
    for pop in test_pops:
        ys = {labels[i] for i in data.real_unknown.ids if table[i] == pop}
        assert ys == {0, 1}


def test_label_groups_refuse_a_patient_in_two_label_groups():
    from synthleak.bench.build import split_membership
    from synthleak.errors import DataError

    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    label_groups = np.array(["a", "b", "a", "a", "b", "b", "b", "b"])
    with pytest.raises(DataError, match="patient group '0' spans"):
        split_membership(groups, BenchSpec(), np.random.default_rng(0), label_groups)


def test_build_from_folder_label_groups_folders(tmp_path):
    import cv2

    images, _ = make_phantoms(12, 2, seed=3)
    for i, im in enumerate(images):
        folder = tmp_path / "real" / ("a" if i < 12 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"s{i}.png"), im)
    summary = build_from_folder(tmp_path / "real", tmp_path / "bench", n_generated=9, generator="noisy-copies",
                                member_fraction=0.5, labelled_fraction=0.5, quiet=True, label_groups="folders")
    assert sorted(summary["label_groups"]["labelled"] + summary["label_groups"]["test"]) == ["a", "b"]
