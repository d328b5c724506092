"""DOMIAS, the local-ratio attack and the rank ensemble on planted members."""
from __future__ import annotations

import numpy as np
import pytest

from synthleak.config import MethodConfig
from synthleak.errors import SynthleakError
from synthleak.methods import run_method
from synthleak.metrics import score_metrics
from test_nearest import _toy


@pytest.mark.parametrize("method,options", [
    ("nearest-local", {"k_local": "5"}),
    ("domias", {"pca": "4"}),
    ("domias", {"pca": "4", "domias_reference": "non-members"}),
    ("ensemble", {"k_local": "5"}),
])
def test_planted_members_found(method, options):
    data = _toy(n=40)
    res = run_method(method, data, MethodConfig(cache_dir="none", options=options, feature_space="pixels32"))
    y_test = np.r_[np.ones(20), np.zeros(20)]
    assert score_metrics(y_test, res.test_scores)["auc"] > 0.9
    assert score_metrics(data.labelled()[1], res.labelled_scores)["auc"] > 0.9


def test_ensemble_reports_components_and_rejects_unknown():
    data = _toy(n=20)
    res = run_method("ensemble", data, MethodConfig(cache_dir="none", options={"k_local": "5"}))
    assert set(res.variants) == {"nearest", "nearest-local"}
    assert res.test_scores.min() > 0 and res.test_scores.max() <= 1
    with pytest.raises(SynthleakError, match="unknown component"):
        run_method("ensemble", data, MethodConfig(cache_dir="none", options={"ensemble": "nope"}))


def test_domias_bad_reference_option():
    with pytest.raises(SynthleakError, match="domias_reference"):
        run_method("domias", _toy(n=20), MethodConfig(cache_dir="none", options={"domias_reference": "x"}))
