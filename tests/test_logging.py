"""Progress and log lines go through the "synthleak" logger; a run's quiet setting is its level, applied once."""
from __future__ import annotations

import logging

from synthleak.config import MethodConfig
from synthleak.methods import run_method
from synthleak.pipeline import run_audit
from synthleak.runtime import LOGGER, Progress, is_quiet, log, verbosity

from test_nearest import _toy


def test_lines_go_through_the_logger_and_quiet_is_its_level(capsys):
    log("hello")
    Progress("work", 2).update(2)
    err = capsys.readouterr().err
    assert "hello" in err and "[work] 2/2" in err
    with verbosity(True):
        assert is_quiet() and LOGGER.level == logging.WARNING
        log("hidden")
        Progress("work", 2).update(2)
        with verbosity(False):  # an entry point called by a quiet run does not speak up again
            log("still hidden")
            assert is_quiet()
    assert not is_quiet()
    assert capsys.readouterr().err == ""


def test_a_quiet_run_prints_nothing_and_a_verbose_one_prints_progress(capsys):
    data = _toy(n=20)
    run_audit(data, methods="nearest", cfg=MethodConfig(cache_dir="none", quiet=True), with_verdict=False)
    run_method("nearest", data, MethodConfig(cache_dir="none", quiet=True))
    assert capsys.readouterr().err == ""
    run_audit(data, methods="nearest", cfg=MethodConfig(cache_dir="none"), with_verdict=False)
    assert "running nearest ..." in capsys.readouterr().err
    assert not is_quiet()


def test_a_quiet_run_restores_the_level_the_caller_set():
    LOGGER.setLevel(logging.DEBUG)
    try:
        with verbosity(True):
            assert is_quiet()
        assert LOGGER.level == logging.DEBUG
    finally:
        LOGGER.setLevel(logging.INFO)
