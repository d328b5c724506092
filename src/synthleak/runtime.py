"""Seeding, device choice and progress reporting shared by every module.

Progress and log lines go through the `logging` logger "synthleak", which prints them on stderr by default
(the library and the CLI alike; set its level to silence it anywhere). `--quiet` raises the level for a command;
in the library, `quiet=True` does so for a run where it starts: MethodConfig.quiet in run_audit, run_method
and AuditContext.embedding, and the `quiet=` of build_benchmark, build_ladder, run_demo and pretrain
(`verbosity`). Nothing else passes a quiet flag around.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .errors import SynthleakError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same inputs and seed give the same outputs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def choose_device(requested: str | None = None) -> str:
    """'auto'/None picks CUDA when available, else CPU; an explicit device is validated."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SynthleakError(f"--device {requested}: CUDA is not available on this machine (use --device cpu)")
    if requested not in ("cpu",) and not requested.startswith(("cuda", "mps")):
        raise SynthleakError(f"--device {requested}: unknown device (use auto, cpu or cuda[:N])")
    return requested


LOGGER = logging.getLogger("synthleak")


class _StderrHandler(logging.Handler):
    """Bare lines on whatever sys.stderr is when a line is written (a test's capture, a redirected stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - logging must never break a run
            self.handleError(record)


if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
    LOGGER.addHandler(_StderrHandler())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


@contextmanager
def verbosity(quiet: bool) -> Iterator[None]:
    """Within it, progress and log lines are silenced when `quiet` (never re-enabled when not: an outer quiet
    run stays quiet through the entry points it calls)."""
    previous = LOGGER.level
    if not quiet or previous > logging.INFO:
        yield
        return
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(previous)


def is_quiet() -> bool:
    """Whether progress lines are silenced now (for tools with their own progress output, e.g. Ray)."""
    return not LOGGER.isEnabledFor(logging.INFO)


@dataclass
class Progress:
    """Minimal progress lines (epochs, items/s) through the logger."""

    label: str
    total: int | None = None
    #: seconds between lines (0: a line per update); the update reaching `total` always prints
    every: float = 0.0
    _start: float = field(default_factory=time.perf_counter)
    _last_line: float = float("-inf")

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self._start, 1e-9)

    def update(self, done: int, extra: str = "") -> None:
        if is_quiet():
            return
        now = time.perf_counter()
        if now - self._last_line < self.every and not (self.total and done >= self.total):
            return
        self._last_line = now
        elapsed = self.elapsed
        rate = done / elapsed
        of = f"/{self.total}" if self.total else ""
        msg = f"[{self.label}] {done}{of} ({rate:.1f}/s, {elapsed:.0f}s"
        if self.total and 0 < done < self.total and rate > 0:
            msg += f", ETA {format_seconds((self.total - done) / rate)}"
        msg += ")"
        if extra:
            msg += f" {extra}"
        LOGGER.info(msg)


def format_seconds(seconds: float) -> str:
    """12s, 3m05s, 2h14m: a duration as people read it in a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def log(msg: str) -> None:
    """One progress or log line (info level of the "synthleak" logger)."""
    LOGGER.info(msg)


def default_cache_dir() -> str:
    return os.environ.get("SYNTHLEAK_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "synthleak"))
