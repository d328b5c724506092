"""Run the audit on a labelled benchmark and write a markdown table to benchmarks/results/.

    python benchmarks/run_bench.py ../shared/data/bench-iqoth [--methods quick] [--name NAME] [--set k=v]

Methods never see the labels: test_labels.csv is passed to the report step only. The real-only
control and the pixel nearest-synthetic baseline are always included as references.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

from synthleak.config import MethodConfig
from synthleak.pipeline import AuditReport, expand_methods, run_audit
from synthleak.runtime import choose_device

RESULTS = Path(__file__).resolve().parent / "results"


def markdown(report: AuditReport, title: str, settings: str, seconds: float) -> str:
    d = report.data
    lines = [
        f"# {title}", "",
        f"- data: `{d.source}` — generated {len(d.generated)}"
        + (f" + {len(d.test_generated)} (test)" if d.test_generated else "")
        + (f", labelled {len(d.real_used)} used / {len(d.real_not_used)} not used" if d.has_labelled else "")
        + f", test reals {len(d.real_unknown)}",
        f"- settings: {settings}",
        f"- decision: {report.decision.describe()}; CV on labelled reals only; test labels read only for this table",
        f"- machine: {platform.machine()}, {platform.processor() or 'cpu'}; total wall time {seconds:.0f}s",
        f"- date: {datetime.date.today().isoformat()}", "",
        "| method | CV AUC [95% CI] | CV kappa | test AUC [95% CI] | TPR@1%FPR | TPR@0.1%FPR | kappa | F1 | acc | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report.rows():
        if m.error:
            lines.append(f"| {m.name} | skipped: {m.error} |||||||||")
            continue
        cv, t = m.cv or {}, m.test or {}
        f = lambda dct, k, ci=False: (str(dct[k]) if ci else f"{dct[k].value:.3f}") if k in dct else "-"
        lines.append(f"| {m.name} | {f(cv, 'auc', True)} | {f(cv, 'kappa')} | {f(t, 'auc', True)} | "
                     f"{f(t, 'tpr@1%fpr')} | {f(t, 'tpr@0.1%fpr')} | {f(t, 'kappa')} | {f(t, 'f1')} | "
                     f"{f(t, 'accuracy')} | {m.seconds:.1f}s |")
        for v in sorted(set(m.variants_cv_auc) | set(m.variants_test_auc)):
            cva, ta = m.variants_cv_auc.get(v), m.variants_test_auc.get(v)
            lines.append(f"| &nbsp;&nbsp;· {m.name}:{v} | {'-' if cva is None else f'{cva:.3f}'} | | "
                         f"{'-' if ta is None else f'{ta:.3f}'} | | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--methods", default="quick")
    p.add_argument("--name", help="results file name (default: <data folder>-<methods>)")
    p.add_argument("--feature-space", default="pixels")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--max-train-images", type=int)
    p.add_argument("--vit-size", help="ViT size of the vit-ae methods (default: base)")
    p.add_argument("--encoder")
    p.add_argument("--groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    data = Path(args.data)
    labels = data / "test_labels.csv"
    if not labels.exists():
        sys.exit(f"{labels}: a benchmark needs test labels")
    names = expand_methods(args.methods)
    if "nearest" not in names:
        names.insert(0, "nearest")
    cfg = MethodConfig(seed=args.seed, device=choose_device(args.device), feature_space=args.feature_space,
                       epochs=args.epochs, image_size=args.image_size, max_train_images=args.max_train_images,
                       vit_size=args.vit_size, encoder=args.encoder,
                       options=dict(s.split("=", 1) for s in args.set))
    start = time.perf_counter()
    report = run_audit(data, methods=names, cfg=cfg, labels=labels, groups=args.groups)
    seconds = time.perf_counter() - start
    settings = (f"methods {','.join(names)}; feature space {cfg.feature_space}; seed {cfg.seed}; epochs "
                f"{cfg.options.get('epochs', 'default')}; image size {cfg.options.get('image_size', 'default')}; max train images "
                f"{cfg.max_train_images or 'all'}; options {cfg.options or '-'}")
    name = args.name or f"{data.name}-{args.methods.replace(',', '_')}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.md"
    out.write_text(markdown(report, f"Benchmark: {data.name}", settings, seconds))
    print(out.read_text())
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
