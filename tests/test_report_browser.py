"""The HTML report as a person sees it: rendered by headless Chromium, with a negative control.

CI installs Debian's chromium and sets SYNTHLEAK_REQUIRE_BROWSER=1, so there a missing browser is a
failure; elsewhere the test skips and says why.
"""
from __future__ import annotations

import os
import re

import pytest

from synthleak.cli import main
from synthleak.report.browser import MAX_BLANK_END, WIDTH, check_report, find_chromium

CHROMIUM = find_chromium()
REQUIRED = os.environ.get("SYNTHLEAK_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if REQUIRED:
            pytest.fail("SYNTHLEAK_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("headless Chromium not installed (apt-get install chromium); the CI run requires it")
    return CHROMIUM


def _report(tiny_challenge, folder, *extra):
    assert main(["audit", str(tiny_challenge), "--method", "default,nearest", "--out", str(folder / "run.csv"),
                 "--labels", str(tiny_challenge / "test_labels.csv"), "--report", str(folder / "report"),
                 "--quiet", "--bootstrap", "20", "--permutations", "200", "--cache-dir", "none", *extra]) == 0
    return folder / "report" / "index.html"


def test_report_renders_with_verdict_and_images(tiny_challenge, tmp_path, chromium):
    index = _report(tiny_challenge, tmp_path)
    check = check_report(index, "Leakage shown", chromium)
    assert check.ok, check.problems
    assert check.broken_images == 0 and not check.console_errors
    assert 'id="metrics"' in check.dom and "control-real-only" in check.dom
    assert check.screenshot is not None and check.screenshot.std() > 5
    # readable at 1280 px: the metrics table fits, every value and its CI on one line, and the screenshot
    # is the page itself (no large blank area below it)
    assert check.metrics_overflow is False and check.metrics_wrapped == 0
    assert check.screenshot.shape[1] == WIDTH and check.blank_end <= MAX_BLANK_END
    assert abs(len(check.screenshot) - check.page_height) <= 1
    # the memorisation summary, similarities a reader can weigh, and the copies file actually written
    text = re.sub(r"<[^>]+>", "", check.dom)
    assert "Memorisation: what each statistic says" in text and "member-closer share" in text
    assert "of training images come to a held-out image" in text or "every training image comes" in text
    assert "similarity -" not in text and "RUN.copies.csv" not in text
    assert str(tmp_path / "run.copies.csv") in text


def test_negative_control_a_table_that_wraps_fails_the_check(tiny_challenge, tmp_path, chromium):
    index = _report(tiny_challenge, tmp_path)
    page = index.read_text()
    index.write_text(page.replace("#metrics td{white-space:nowrap}", "#metrics td{white-space:normal;max-width:4em}"))
    check = check_report(index, "Leakage shown", chromium)
    assert not check.ok and check.metrics_wrapped and any("wrap" in p for p in check.problems)


def test_single_file_report_needs_no_other_file(tiny_challenge, tmp_path, chromium):
    index = _report(tiny_challenge, tmp_path, "--report-single-file")
    assert [p.name for p in index.parent.iterdir()] == ["index.html"]
    moved = tmp_path / "mailed.html"
    index.rename(moved)  # the page travels alone
    assert check_report(moved, "Leakage shown", chromium).ok


def test_negative_control_a_missing_image_fails_the_check(tiny_challenge, tmp_path, chromium):
    index = _report(tiny_challenge, tmp_path)
    pngs = sorted(index.parent.glob("*.png"))
    assert pngs
    pngs[0].unlink()
    check = check_report(index, "Leakage shown", chromium)
    assert not check.ok
    assert check.broken_images == 1 and check.console_errors
