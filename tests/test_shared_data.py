"""Checks against the shared benchmark; skipped cleanly where ../shared/data is absent."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_dataset
from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.data.runfile import read_labels
from synthleak.methods import run_method
from synthleak.metrics import score_metrics

pytestmark = pytest.mark.shared_data


def test_bench_iqoth_layout_and_pixel_baseline():
    root = shared_dataset("bench-iqoth")
    data = discover(root)
    assert (len(data.generated), len(data.test_generated)) == (2000, 1000)
    assert (len(data.real_used), len(data.real_not_used), len(data.real_unknown)) == (100, 100, 400)
    labels = read_labels(root / "test_labels.csv")
    y_test = np.array([labels[i] for i in data.real_unknown.ids])
    res = run_method("nearest", data, MethodConfig(cache_dir="none"))
    # SOURCE.md documents the GAN-Leaks pixel baseline at test AUC 0.5647 (64x64, L2, all 3000 synthetic)
    assert score_metrics(y_test, res.test_scores)["auc"] == pytest.approx(0.5647, abs=0.01)
    control = run_method("control-real-only", data, MethodConfig(cache_dir="none"))
    assert abs(score_metrics(y_test, control.test_scores)["auc"] - 0.5) < 0.06
