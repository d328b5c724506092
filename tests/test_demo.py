"""The demo and the benchmark builder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synthleak.bench.build import BenchSpec, build_benchmark, build_from_folder
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


@pytest.mark.slow
def test_full_demo(tmp_path, capsys):
    assert run_demo(tmp_path) == 0
    assert "members are detectable" in capsys.readouterr().out
