"""Render a report in headless Chromium and say whether a person would see a complete page.

Used by the tests (CI installs Debian's `chromium`) and by benchmarks/report_screenshot.py. Three
independent signals: the rendered DOM (does the verdict text reach the page?), the page's own image
check (`data-broken-images` on <body>, set by the report's inline script after load), and the
browser console (script errors, images that failed to load); plus a screenshot that must not be blank.
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

    @property
    def ok(self) -> bool:
        return not self.problems


def _run(chromium: str, args: list[str], user_dir: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={user_dir}", *args], capture_output=True,
                          text=True, timeout=timeout)


def check_report(index: Path, expect_text: str, chromium: str | None = None, timeout: float = 120.0,
                 screenshot: Path | None = None) -> BrowserCheck:
    """Render `index` twice (DOM dump, screenshot) and collect every sign of a broken page."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install chromium)")
    url = Path(index).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="synthleak-chromium-") as tmp:
        dom_run = _run(chromium, ["--virtual-time-budget=10000", "--dump-dom", url], f"{tmp}/a", timeout)
        shot_path = Path(screenshot) if screenshot else Path(tmp) / "shot.png"
        shot_run = _run(chromium, ["--window-size=1300,2400", f"--screenshot={shot_path}", url], f"{tmp}/b", timeout)
        image = cv2.imread(str(shot_path), cv2.IMREAD_GRAYSCALE) if shot_path.exists() else None
    console = [line for run in (dom_run, shot_run) for line in run.stderr.splitlines()
               if ":CONSOLE" in line and re.search(r"error|failed|uncaught", line, re.IGNORECASE)]
    found = re.search(r'data-broken-images="(\d+)"', dom_run.stdout)
    check = BrowserCheck(dom=dom_run.stdout, console_errors=console,
                         broken_images=int(found.group(1)) if found else None, screenshot=image)
    if expect_text not in re.sub(r"<[^>]+>", "", dom_run.stdout):
        check.problems.append(f"the rendered page does not contain {expect_text!r}")
    if check.broken_images is None:
        check.problems.append("the page's image check did not run")
    elif check.broken_images:
        check.problems.append(f"{check.broken_images} images failed to load")
    if console:
        check.problems.append(f"{len(console)} console errors (first: {console[0][-160:]})")
    if image is None:
        check.problems.append("no screenshot")
    elif float(image.std()) < 5.0:
        check.problems.append("the screenshot is blank")
    return check
