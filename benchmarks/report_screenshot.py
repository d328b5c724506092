"""Make the README's screenshot of the HTML report: the demo's data, audited, rendered by headless Chromium.

    python benchmarks/report_screenshot.py [--out benchmarks/results/report-screenshot.png]

Needs Debian's chromium (apt-get install chromium). The page is checked the same way the tests check
it (verdict text rendered, every image loaded, no console errors) before the screenshot is kept.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

from synthleak.bench.build import BenchSpec, build_benchmark
from synthleak.bench.phantoms import make_phantoms
from synthleak.config import MethodConfig
from synthleak.pipeline import run_audit, test_labels
from synthleak.report import write_report
from synthleak.report.browser import check_report

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULTS / "report-screenshot.png"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="synthleak-shot-") as tmp:
        tmp = Path(tmp)
        images, groups = make_phantoms(120, 2, seed=args.seed)
        spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.35, n_generated_train=300, n_generated_test=100,
                         generator="rae-gmm", generator_epochs=60, seed=args.seed)
        build_benchmark(images, groups, tmp / "data", spec, quiet=True)
        report = run_audit(tmp / "data", methods="default,nearest", labels=tmp / "data" / "test_labels.csv",
                           groups=tmp / "data" / "groups.csv", cfg=MethodConfig(seed=args.seed, cache_dir="none",
                                                                                quiet=True))
        index = write_report(report, tmp / "report", y_test=test_labels(tmp / "data" / "test_labels.csv", report.data))
        shot = tmp / "shot.png"
        check = check_report(index, "Leakage", screenshot=shot)
        if not check.ok:
            print(f"report check failed: {check.problems}", file=sys.stderr)
            return 1
        image = cv2.imread(str(shot))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # the top of the page (verdict, memorisation summary, first copies) at half size keeps the README light
        top = image[:1500]
        cv2.imwrite(str(out), cv2.resize(top, (top.shape[1] // 2, top.shape[0] // 2), interpolation=cv2.INTER_AREA))
        print(f"wrote {out}: {report.verdict.summary() if report.verdict else 'no verdict'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
