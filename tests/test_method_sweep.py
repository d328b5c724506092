"""Every quick method in every cheap feature space, raw and calibrated, on small random data: no method
errors, and every score is finite and aligned with the images it scores."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import make_layout
from synthleak.config import MethodConfig
from synthleak.methods import METHODS
from synthleak.pipeline import run_audit

QUICK = [m for m, s in METHODS.items() if not s.slow]
#: the feature spaces that need no training and no downloaded weights
CHEAP_SPACES = ["pixels", "pixels32", "radiomics"]
VARIANTS = ["", "+neighbours", "+clusters"]


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory):
    from synthleak.data import discover

    # 160 reals: enough for two clusters of the clusters calibration (about 100 reals per cluster)
    root = make_layout(tmp_path_factory.mktemp("sweep"), n_gen=60, n_used=40, n_not=40, n_unknown=80, size=64)
    return discover(root)


@pytest.mark.filterwarnings("ignore:.*were resized:UserWarning")  # 64x64 images keep the sweep fast
@pytest.mark.parametrize("space", CHEAP_SPACES)
def test_every_quick_method_scores_every_image(sweep_data, space):
    names = [m + v for m in QUICK for v in VARIANTS]
    cfg = MethodConfig(feature_space=space, calibrate_k=10, quiet=True)
    report = run_audit(sweep_data, methods=names, cfg=cfg, n_boot=10, with_verdict=False, check_control=False)
    n_labelled, n_test = len(sweep_data.labelled()[0]), len(sweep_data.real_unknown)
    assert [m.name for m in report.methods] == names
    for m in report.methods:
        assert m.error is None, f"{m.name} in {space}: {m.error}\n{m.traceback or ''}"
        res = m.result
        for what, scores, n in (("test", res.test_scores, n_test), ("labelled", res.labelled_scores, n_labelled)):
            assert scores is not None and scores.shape == (n,), f"{m.name} in {space}: {what} scores misaligned"
            assert np.all(np.isfinite(scores)), f"{m.name} in {space}: non-finite {what} scores"
        assert m.test_pred.shape == (n_test,) and set(np.unique(m.test_pred)) <= {0, 1}
        assert m.cv is not None and np.isfinite(m.cv["auc"].value), f"{m.name} in {space}: no CV metrics"
        expected = m.name.partition("+")[2] or "none"
        if m.name == "default":  # the calibration of the candidate it chose
            expected = res.details["chosen"].partition("+")[2] or "none"
        assert res.calibration == expected, f"{m.name} in {space}: calibration {res.calibration}"
