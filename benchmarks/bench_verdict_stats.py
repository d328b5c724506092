"""Speed and calibration of the dataset-level verdict (synthleak.leakage).

    python benchmarks/bench_verdict_stats.py [--reps 100]

Times the relabelling test (200, 2,000, 20,000 labelled scores, 2,000 relabellings; image-level and
patient-level) and verdict() with all descriptive statistics at challenge size, then runs false-alarm
simulations on signal-free data (alpha 0.05, default 2,000 relabellings): (a) scores unrelated to the
labels, (b) patient-clustered scores with disjoint patients per label, tested with groups and, to show
why groups matter, without; plus the power on a modest shift. Writes
benchmarks/results/verdict-stats.md. About a minute on 2 busy CPU cores.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from synthleak.leakage import permutation_test, verdict

RESULTS = Path(__file__).resolve().parent / "results"
ALPHA = 0.05


def clustered(rng: np.random.Generator, patients: int, slices: int, icc: float, shift: float = 0.0):
    """Scores with a patient effect (intra-class correlation `icc`); half the patients are members."""
    groups = np.repeat(np.arange(patients), slices)
    member = np.zeros(patients, int)
    member[rng.permutation(patients)[: patients // 2]] = 1
    labels = member[groups]
    scores = (np.sqrt(icc) * rng.normal(size=patients)[groups] + np.sqrt(1 - icc) * rng.normal(size=len(groups))
              + shift * labels)
    return scores, labels, groups


def unrelated(rng: np.random.Generator, n: int = 1000, members: int = 400, shift: float = 0.0):
    labels = rng.permutation(np.r_[np.ones(members, int), np.zeros(n - members, int)])
    return rng.normal(size=n) + shift * labels, labels, None


def best_of(fn, repeats: int = 5) -> float:
    fn()  # warm-up: imports, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timing_rows() -> list[str]:
    rng = np.random.default_rng(0)
    rows = []
    for n in (200, 2_000, 20_000):
        scores, labels = rng.normal(size=n), rng.integers(0, 2, n)
        groups = np.repeat(np.arange(n // 10), 10)
        t_img = best_of(lambda s=scores, y=labels: permutation_test(s, y))
        t_grp = best_of(lambda s=scores, g=groups: permutation_test(s, g % 2, groups=g))
        rows.append(f"| {n:,} | {1000 * t_img:.0f} ms | {1000 * t_grp:.0f} ms ({n // 10:,} patients) |")
    return rows


def verdict_timing() -> str:
    rng = np.random.default_rng(1)
    n_syn, n_lab, dim = 7_000, 100, 512
    synthetic = rng.normal(size=(n_syn, dim)).astype(np.float32)
    members, nonmembers = (rng.normal(size=(n_lab, dim)).astype(np.float32) for _ in range(2))
    scores, labels = rng.normal(size=2 * n_lab), np.r_[np.ones(n_lab), np.zeros(n_lab)]
    seconds = best_of(lambda: verdict(scores, labels, synthetic_features=synthetic, member_features=members,
                                      nonmember_features=nonmembers), repeats=3)
    return (f"- `verdict()` with every descriptive statistic (copies + bootstrap CI, C_T with PCA to 64 and "
            f"k-means, authenticity, Gu share) on {n_syn:,} synthetic x {dim}-d features, {n_lab} + {n_lab} "
            f"labelled reals: **{seconds:.2f} s** (median of 3)")


def alarm_rate(make, reps: int, grouped: bool) -> tuple[int, float]:
    shown, start = 0, time.perf_counter()
    for rep in range(reps):
        scores, labels, groups = make(np.random.default_rng(rep))
        shown += permutation_test(scores, labels, groups=groups if grouped else None, seed=rep).p_value < ALPHA
    return shown, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=100)
    args = p.parse_args()
    reps = args.reps
    cases = [
        ("(a) scores unrelated to labels: 1,000 images, 400 members", lambda r: unrelated(r), False),
        ("(b) patient-clustered (ICC 0.8), 50 patients x 10 slices, disjoint patients per label; **with groups**",
         lambda r: clustered(r, 50, 10, 0.8), True),
        ("(b) the same data **without groups** (image-level relabelling)", lambda r: clustered(r, 50, 10, 0.8), False),
        ("(b') ICC 0.5, 100 patients x 4 slices, with groups", lambda r: clustered(r, 100, 4, 0.5), True),
        ("(b') the same data without groups", lambda r: clustered(r, 100, 4, 0.5), False),
    ]
    power = [
        ("shift 0.15 SD (AUC 0.54), 1,000 images (400 members), no groups", lambda r: unrelated(r, shift=0.15),
         False),
        ("shift 0.3 SD (AUC 0.58), 200 images (100 members), no groups", lambda r: unrelated(r, 200, 100, 0.3), False),
        ("shift 0.5 SD, 50 patients x 10 slices ICC 0.8, with groups", lambda r: clustered(r, 50, 10, 0.8, 0.5), True),
        ("shift 1.0 SD, 50 patients x 10 slices ICC 0.8, with groups", lambda r: clustered(r, 50, 10, 0.8, 1.0), True),
    ]
    alarm_lines = []
    for name, make, grouped in cases:
        shown, secs = alarm_rate(make, reps, grouped)
        alarm_lines.append(f"| {name} | {shown} / {reps} | {secs:.1f} s |")
        print(alarm_lines[-1], flush=True)
    power_lines = []
    for name, make, grouped in power:
        shown, secs = alarm_rate(make, reps, grouped)
        power_lines.append(f"| {name} | {shown} / {reps} | {secs:.1f} s |")
        print(power_lines[-1], flush=True)
    timing = timing_rows()
    print("\n".join(timing), flush=True)
    verdict_line = verdict_timing()
    print(verdict_line)
    lines = [
        "# Verdict statistics: speed and calibration", "",
        (f"`python benchmarks/bench_verdict_stats.py` ({os.cpu_count()} CPU cores shared with other workers, "
         "OMP_NUM_THREADS as set by the caller). One-sided Mann-Whitney test that members score higher, "
         "p = (1 + #{relabelled AUC >= observed}) / (1 + 2,000)."), "",
        "## Speed: 2,000 relabellings (median of 5 calls)", "",
        "| labelled scores | image-level | patient-level (10 slices per patient) |", "|---|---|---|",
        *timing, "", verdict_line, "",
        f"## False alarms on signal-free data ({reps} repetitions each, alpha {ALPHA})", "",
        ("Leakage shown at most 9 times in 100 is what a calibrated test gives (P(Binomial(100, 0.05) >= 10) "
         "= 0.03)."), "",
        "| case | leakage shown | time |", "|---|---|---|", *alarm_lines, "",
        ("Without groups, neighbouring slices of one patient are relabelled one by one: the test reads the "
         "patient effect (which differs between the two disjoint patient sets by chance) as membership. "
         "Permuting whole patients keeps the test at its nominal level."), "",
        f"## Power ({reps} repetitions each, leakage shown = p < {ALPHA})", "",
        "| case | leakage shown | time |", "|---|---|---|", *power_lines, "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verdict-stats.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'verdict-stats.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
