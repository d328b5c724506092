"""The dataset-level verdict through the whole audit: false alarms on signal-free data, power on real leaks.

    python benchmarks/bench_verdict.py [--reps 100] [--bench DIR ...]

Writes benchmarks/results/verdict.md. Signal-free repetitions use procedural phantoms (known
patients) and a generator trained on *other* patients, so no labelled real image was used:
(a) non-members relabelled "used" / "not used" at random, image by image; (b) "used" and "not used"
drawn from disjoint patients, audited with `--groups` (whole patients relabelled) and without (the
image-level test, anti-conservative when slices of one patient are alike). Each repetition is one
`run_audit` on a fresh labelled / test draw with the default recipe. Then the verdict, copies and
descriptive statistics on the demo data and on each benchmark given with --bench.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from synthleak.bench.build import BenchSpec
from synthleak.bench.null import CASES, signal_free_verdicts
from synthleak.bench.phantoms import make_phantoms
from synthleak.config import MethodConfig
from synthleak.pipeline import run_audit

RESULTS = Path(__file__).resolve().parent / "results"


def signal_free(reps: int, cache: str) -> list[str]:
    shown = {c: 0 for c in CASES}
    ps: dict[str, list[float]] = {c: [] for c in CASES}
    start = time.perf_counter()
    for rep, case, v in signal_free_verdicts(reps, cache):
        ps[case].append(v.p_value)
        shown[case] += v.leakage_shown
        if case == CASES[-1] and (rep + 1) % 10 == 0:
            print(f"[verdict] {rep + 1}/{reps} repetitions, {time.perf_counter() - start:.0f}s; shown so far {shown}",
                  file=sys.stderr, flush=True)
    rows = ["| signal-free case | leakage shown (alpha 0.05) | median p |", "|---|---|---|"]
    names = {"a": "(a) non-members relabelled at random, image by image (no groups)",
             "b-groups": "(b) disjoint non-member patients, `--groups` (patients relabelled)",
             "b-images": "(b) the same data without groups (images relabelled)"}
    for key, label in names.items():
        rows.append(f"| {label} | {shown[key]} / {reps} | {np.median(ps[key]):.3f} |")
    return rows + ["", f"{reps} repetitions each, {time.perf_counter() - start:.0f}s in all."]


def with_signal(benches: list[Path], cache: str) -> list[str]:
    rows = ["| data | verdict | labelled AUC | copy share [95% CI] | C_T | authenticity | memorised share |",
            "|---|---|---|---|---|---|---|"]
    for root in benches:
        groups = root / "groups.csv"
        report = run_audit(root, cfg=MethodConfig(cache_dir=cache, quiet=True), check_control=False, n_boot=20,
                           groups=groups if groups.exists() else None)
        v = report.verdict
        ci = f"[{100 * v.copy_share_ci[0]:.1f}, {100 * v.copy_share_ci[1]:.1f}]" if v.copy_share_ci else ""
        fmt = lambda x: "-" if x is None else f"{x:.3f}"
        rows.append(f"| {root.name}{' (groups)' if groups.exists() else ''} | {v.summary()} | {v.auc:.3f} | "
                    f"{100 * (v.copy_share or 0):.1f}% {ci} | {fmt(v.ct)} | {fmt(v.authenticity)} | "
                    f"{fmt(v.memorised_share)} |")
    return rows


def demo_bench(tmp: Path) -> Path:
    from synthleak.bench.build import build_benchmark

    images, groups = make_phantoms(120, 2, seed=0)
    spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.35, n_generated_train=300, n_generated_test=100,
                     generator="rae-gmm", generator_epochs=60, seed=0)
    build_benchmark(images, groups, tmp / "demo", spec, quiet=True)
    return tmp / "demo"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--bench", nargs="*", default=[])
    p.add_argument("--name", default="verdict")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="synthleak-verdict-") as tmp:
        tmp = Path(tmp)
        null_rows = signal_free(args.reps, str(tmp / "cache"))
        signal_rows = with_signal([demo_bench(tmp), *map(Path, args.bench)], str(tmp / "cache"))
    text = [f"# The dataset-level verdict through the audit ({datetime.date.today().isoformat()})", "",
            f"`python benchmarks/bench_verdict.py --reps {args.reps}"
            + (f" --bench {' '.join(args.bench)}" if args.bench else "") + "`: the default recipe's label-free "
            "scores, 2,000 relabellings, alpha 0.05.", "",
            "## False alarms on signal-free data", "",
            "Phantom patients (3 slices each); the generator (RAE-GMM) was trained on 80 *other* patients, so no "
            "labelled image was used (`synthleak.bench.null`). A calibrated test shows leakage in about 5 of 100.", "", *null_rows, "",
            "## Real leaks", "", "`demo` is the demo's data (phantoms, RAE-GMM trained on the members, split by "
            "patient, groups.csv). Copies are judged in the default recipe's space (64x64 pixels).", "",
            *signal_rows, ""]
    out = RESULTS / f"{args.name}.md"
    out.write_text("\n".join(text))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
