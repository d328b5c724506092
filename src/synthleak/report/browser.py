"""Render a report in headless Chromium and say whether a person would see a complete page.

Used by the tests (CI installs Debian's `chromium`) and by benchmarks/report_screenshot.py. Three
independent signals: the rendered DOM (does the verdict text reach the page?), the page's own image
check (`data-broken-images` on <body>, set by the report's inline script after load), and the
browser console (script errors, images that failed to load); plus a screenshot that must not be blank.
The page is laid out at WIDTH px (a laptop screen): the report's script also records whether its
metrics table fits that width with every value and its CI on one line, and the page's height, so that
the screenshot is exactly as tall as the page (no blank area below it) and ends with its content.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
#: window width the page must read well at
WIDTH = 1280
#: screenshot height bounds (a page taller than the cap is cut there)
MIN_HEIGHT, MAX_HEIGHT = 600, 16000
#: white rows tolerated below the last content in the screenshot (the page's bottom margin is ~20 px)
MAX_BLANK_END = 120
#: flags for a sandboxed CI container with no network and no display
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--log-level=0")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class BrowserCheck:
    dom: str
    console_errors: list[str]
    broken_images: int | None
    screenshot: np.ndarray | None
    problems: list[str] = field(default_factory=list)
    page_height: int | None = None  #: the page's height at WIDTH px
    metrics_overflow: bool | None = None  #: the metrics table is wider than the window
    metrics_wrapped: int | None = None  #: metrics cells whose text wraps onto a second line
    blank_end: int | None = None  #: white rows at the bottom of the screenshot

    @property
    def ok(self) -> bool:
        return not self.problems


def _run(chromium: str, args: list[str], user_dir: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={user_dir}", *args], capture_output=True,
                          text=True, timeout=timeout)


def _attribute(dom: str, name: str) -> str | None:
    found = re.search(rf'{name}="([^"]*)"', dom)
    return found.group(1) if found else None


def check_report(index: Path, expect_text: str, chromium: str | None = None, timeout: float = 120.0,
                 screenshot: Path | None = None, width: int = WIDTH) -> BrowserCheck:
    """Render `index` twice at `width` px (DOM dump, then a screenshot as tall as the page) and collect
    every sign of a broken or hard-to-read page."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install chromium)")
    url = Path(index).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="synthleak-chromium-") as tmp:
        dom_run = _run(chromium, [f"--window-size={width},{MIN_HEIGHT}", "--virtual-time-budget=10000", "--dump-dom",
                                  url], f"{tmp}/a", timeout)
        height = _attribute(dom_run.stdout, "data-page-height")
        page_height = int(float(height)) if height else None
        shot_height = min(MAX_HEIGHT, max(MIN_HEIGHT, page_height or 2400))
        shot_path = Path(screenshot) if screenshot else Path(tmp) / "shot.png"
        shot_run = _run(chromium, [f"--window-size={width},{shot_height}", f"--screenshot={shot_path}", url],
                        f"{tmp}/b", timeout)
        image = cv2.imread(str(shot_path), cv2.IMREAD_GRAYSCALE) if shot_path.exists() else None
    console = [line for run in (dom_run, shot_run) for line in run.stderr.splitlines()
               if ":CONSOLE" in line and re.search(r"error|failed|uncaught", line, re.IGNORECASE)]
    found = _attribute(dom_run.stdout, "data-broken-images")
    overflow, wrapped = _attribute(dom_run.stdout, "data-metrics-overflow"), _attribute(dom_run.stdout,
                                                                                         "data-metrics-wrapped")
    check = BrowserCheck(dom=dom_run.stdout, console_errors=console,
                         broken_images=int(found) if found is not None else None, screenshot=image,
                         page_height=page_height, metrics_overflow=None if overflow is None else overflow == "true",
                         metrics_wrapped=int(wrapped) if wrapped is not None else None)
    if expect_text not in re.sub(r"<[^>]+>", "", dom_run.stdout):
        check.problems.append(f"the rendered page does not contain {expect_text!r}")
    if check.broken_images is None:
        check.problems.append("the page's image check did not run")
    elif check.broken_images:
        check.problems.append(f"{check.broken_images} images failed to load")
    if console:
        check.problems.append(f"{len(console)} console errors (first: {console[0][-160:]})")
    if check.metrics_overflow:
        check.problems.append(f"the metrics table is wider than a {width} px window")
    if check.metrics_wrapped:
        check.problems.append(f"{check.metrics_wrapped} metrics cells wrap onto a second line at {width} px")
    if image is None:
        check.problems.append("no screenshot")
    elif float(image.std()) < 5.0:
        check.problems.append("the screenshot is blank")
    else:
        content = np.flatnonzero((image < 245).any(axis=1))
        check.blank_end = int(len(image) - 1 - content.max()) if len(content) else len(image)
        if check.blank_end > MAX_BLANK_END:
            check.problems.append(f"a blank area of {check.blank_end} px at the end of the page")
    return check
