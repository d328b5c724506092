"""The verdict through the whole audit on signal-free data: it must not cry wolf."""
from __future__ import annotations

import pytest

from synthleak.bench.null import CASES, signal_free_verdicts


def test_signal_free_verdicts_run_every_case_and_stay_unremarkable(tmp_path):
    verdicts = list(signal_free_verdicts(2, str(tmp_path / "cache"), permutations=200))
    assert [case for _, case, _ in verdicts] == list(CASES) * 2
    for _, _, v in verdicts:
        assert 0 < v.p_value <= 1 and v.permutations == 200
        # the copy threshold is the 95th percentile of real-to-real similarity: about 5% by chance
        assert v.copy_share is not None and v.copy_share < 0.15


@pytest.mark.slow
def test_false_alarms_at_most_9_in_100(tmp_path):
    shown = {case: 0 for case in CASES}
    for _, case, v in signal_free_verdicts(100, str(tmp_path / "cache")):
        shown[case] += v.leakage_shown
    assert shown["a"] <= 9 and shown["b-groups"] <= 9, shown
