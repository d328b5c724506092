"""Every fast method with and without difficulty calibration, on bench-iqoth and the dev benchmarks.

    python benchmarks/bench_calibration.py BENCH_DIR [BENCH_DIR ...] [--name calibration]

Writes benchmarks/results/<name>.md: per benchmark the labelled-vs-test shift check, then every
method plain, `+neighbours` and `+clusters` (CV AUC on the labelled reals; test AUC, TPR at 1% FPR
and the run file's kappa, each with a 95% CI), beside the pixel `nearest` baseline and the
real-only control; and the paired-bootstrap 95% CI of the kappa gain of the default recipe over
`nearest`. Methods never see test labels: they are read here only for the tables.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np

from synthleak.config import MethodConfig
from synthleak.metrics import paired_gain
from synthleak.pipeline import run_audit, test_labels

RESULTS = Path(__file__).resolve().parent / "results"
BASE_METHODS = ("nearest", "nearest-calibrated", "nearest-local", "density-ratio", "domias", "ensemble")
CALIBRATIONS = ("", "+neighbours", "+clusters")


def method_list() -> list[str]:
    return ["default"] + [m + c for m in BASE_METHODS for c in CALIBRATIONS]


def _groups(root: Path) -> Path | None:
    path = root / "groups.csv"
    return path if path.exists() else None


def bench_section(root: Path, n_boot: int, seed: int) -> tuple[list[str], dict]:
    start = time.perf_counter()
    cfg = MethodConfig(seed=seed, quiet=True, cache_dir="none")
    report = run_audit(root, methods=method_list(), cfg=cfg, labels=root / "test_labels.csv",
                       groups=_groups(root), n_boot=n_boot)
    y = test_labels(root / "test_labels.csv", report.data)
    test_groups = None
    if report.data.groups is not None and all(i in report.data.groups for i in report.data.real_unknown.ids):
        test_groups = np.array([report.data.groups[i] for i in report.data.real_unknown.ids])
    default, nearest = report.by_name("default"), report.by_name("nearest")
    gain = paired_gain(y, default.test_pred, nearest.test_pred, "kappa", n_boot=n_boot, seed=seed,
                       groups=test_groups)
    d = report.data
    lines = [f"## {root.name}", "",
             f"- `{root}`: generated {len(d.synthetic('all'))}, labelled {len(d.real_used)} used / "
             f"{len(d.real_not_used)} not used, test reals {len(y)} ({int(y.sum())} used)"
             + ("; patient groups from groups.csv (CV folds and CIs by patient)" if d.groups else ""),
             f"- shift check: {report.shift.message() if report.shift else 'n/a'}",
             f"- kappa gain of `default` over `nearest` (paired bootstrap{' by patient' if test_groups is not None else ''}):"
             f" **{gain}**", f"- wall time {time.perf_counter() - start:.0f}s", "",
             "| method | calibration | decision | CV AUC | test AUC [95% CI] | TPR@1%FPR [95% CI] | kappa [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for m in report.rows():
        if m.error:
            lines.append(f"| {m.name} | | | skipped: {m.error} | | | |")
            continue
        cv = f"{m.cv['auc'].value:.3f}" if m.cv else "-"
        t = m.test
        lines.append(f"| {m.name} | {m.result.calibration} | {m.rule.mode} | {cv} | {t['auc']} | {t['tpr@1%fpr']} | "
                     f"{t['kappa']} |")
    summary = {"default_auc": default.test["auc"], "default_kappa": default.test["kappa"],
               "nearest_auc": nearest.test["auc"], "nearest_kappa": nearest.test["kappa"], "gain": gain,
               "control_auc": report.control.test["auc"] if report.control and report.control.test else None,
               "shifted": bool(report.shift and report.shift.shifted)}
    return lines + [""], summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("benchmarks", nargs="+")
    p.add_argument("--name", default="calibration")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sections, summaries = [], []
    for b in args.benchmarks:
        print(f"{b} ...", file=sys.stderr, flush=True)
        lines, summary = bench_section(Path(b), args.bootstrap, args.seed)
        sections += lines
        summaries.append((Path(b).name, summary))
    head = [f"# Difficulty calibration and decisions ({datetime.date.today().isoformat()})", "",
            f"`python benchmarks/bench_calibration.py {' '.join(args.benchmarks)}` on {platform.machine()}; "
            "cache off; test labels read only for these tables.", "",
            "| benchmark | shifted | `nearest` AUC | `nearest` kappa | `default` AUC | `default` kappa | kappa gain [95% CI] | control AUC |",
            "|---|---|---|---|---|---|---|---|"]
    for name, s in summaries:
        head.append(f"| {name} | {'yes' if s['shifted'] else 'no'} | {s['nearest_auc']} | {s['nearest_kappa']} | "
                    f"{s['default_auc']} | {s['default_kappa']} | {s['gain']} | {s['control_auc'] or '-'} |")
    out = RESULTS / f"{args.name}.md"
    out.write_text("\n".join(head + [""] + sections))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
