"""The dataset-level verdict through the whole audit: false alarms on signal-free data, power on real leaks.

    python benchmarks/bench_verdict.py [--reps 100] [--bench DIR ...] [--diffusion DIR ...]

Writes benchmarks/results/verdict.md. Signal-free repetitions use procedural phantoms (known
patients) and a generator trained on *other* patients, so no labelled real image was used:
(a) non-members relabelled "used" / "not used" at random, image by image; (b) "used" and "not used"
drawn from disjoint patients, audited with `--groups` (whole patients relabelled) and without (the
image-level test, anti-conservative when slices of one patient are alike). Each repetition is one
`run_audit` on a fresh labelled / test draw with the default recipe; both p-values are counted: the
verdict's and the member-closer statistic's. Then the verdict, copies and descriptive statistics on
the demo data and on each benchmark given with --bench. Each --diffusion benchmark (built by
`synthleak build-bench`, with groups.csv and test_labels.csv) is also audited with every member
labelled (the builder's knowledge: what the memorisation statistics see when the labelled members are
the training set rather than a few of its patients) and 5 times with its non-members alone, split at
random by patient into "used" and "not used" (signal-free: no labelled image trained the generator).
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
from synthleak.leakage import format_p
from synthleak.pipeline import run_audit

RESULTS = Path(__file__).resolve().parent / "results"


def signal_free(reps: int, cache: str) -> list[str]:
    names = {"a": "(a) non-members relabelled at random, image by image (no groups)",
             "b-groups": "(b) disjoint non-member patients, `--groups` (patients relabelled)",
             "b-images": "(b) the same data without groups (images relabelled)"}
    ps: dict[str, list[float]] = {c: [] for c in CASES}
    closer: dict[str, list[float]] = {c: [] for c in CASES}
    start = time.perf_counter()
    for rep, case, v in signal_free_verdicts(reps, cache):
        if v.member_closer_p is None:
            raise RuntimeError(f"no member-closer p in repetition {rep} ({case}): {v.notes}")
        ps[case].append(v.p_value)
        closer[case].append(v.member_closer_p)
        if case == CASES[-1] and (rep + 1) % 10 == 0:
            counts = {c: (sum(p < 0.05 for p in ps[c]), sum(p < 0.05 for p in closer[c])) for c in CASES}
            print(f"[verdict] {rep + 1}/{reps} repetitions, {time.perf_counter() - start:.0f}s; "
                  f"(verdict, member-closer) p < 0.05 so far: {counts}", file=sys.stderr, flush=True)
    rows = ["| signal-free case | leakage shown (alpha 0.05) | median p | member-closer p < 0.05 | median member-closer p |",
            "|---|---|---|---|---|"]
    for key, label in names.items():
        rows.append(f"| {label} | {sum(p < 0.05 for p in ps[key])} / {reps} | {np.median(ps[key]):.3f} | "
                    f"{sum(p < 0.05 for p in closer[key])} / {reps} | {np.median(closer[key]):.3f} |")
    return rows + ["", f"{reps} repetitions each, {time.perf_counter() - start:.0f}s in all."]


def _row(name: str, v) -> str:
    """One table row: the verdict, its labelled AUC, and every memorisation statistic."""
    from synthleak.report.summary import summarise

    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    pct = lambda x, ci: "-" if x is None else f"{100 * x:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    closer = "-" if v.member_closer_share is None else (
        f"{pct(v.member_closer_share, v.member_closer_ci)}, p = {format_p(v.member_closer_p)}")
    return (f"| {name} | {v.summary()} | {v.auc:.3f} | {pct(v.copy_share, v.copy_share_ci)} | {fmt(v.ct)} | "
            f"{fmt(v.authenticity)} ({fmt(v.authenticity_held_out)}) | {fmt(v.memorised_share)} "
            f"({fmt(v.memorised_share_held_out)}) | {closer} | {summarise(v).headline} |")


HEAD = ["| data | verdict | labelled AUC | copy share [95% CI] | C_T | authenticity (held-out reals) | "
        "memorised share (held-out reals) | member-closer share [95% CI], p | memorisation summary |",
        "|---|---|---|---|---|---|---|---|---|"]


def with_signal(benches: list[Path], cache: str) -> list[str]:
    rows = list(HEAD)
    for root in benches:
        groups = root / "groups.csv"
        start = time.perf_counter()
        report = run_audit(root, cfg=MethodConfig(cache_dir=cache, quiet=True), check_control=False, n_boot=20,
                           groups=groups if groups.exists() else None)
        print(f"[verdict] {root}: {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
        rows.append(_row(f"{root.name}{' (groups)' if groups.exists() else ''}", report.verdict))
    return rows


def _diffusion_sets(root: Path):
    """(data as built, every real image with its id, patient and membership) of a built benchmark."""
    from synthleak.data import discover
    from synthleak.data.runfile import read_labels

    data = discover(root, groups=root / "groups.csv")
    truth = read_labels(root / "test_labels.csv")
    test = data.real_unknown
    member = np.array([truth[i] for i in test.ids]) == 1
    return data, test, member


def diffusion_views(root: Path, cache: str, report_dir: Path | None, relabellings: int = 5) -> list[str]:
    """The benchmark audited with every member labelled, and `relabellings` signal-free audits of its
    non-members alone (split at random by patient), each through run_audit with groups."""
    from synthleak.data.images import ImageSet
    from synthleak.data.layout import AuditData
    from synthleak.report import write_report
    from synthleak.report.summary import conclusion, summarise

    data, test, member = _diffusion_sets(root)
    groups = data.groups
    patient = lambda s: np.array([groups[i] for i in s.ids])
    rows = list(HEAD)
    # (1) every member labelled: labelled members + test members as real_used; non-member patients split
    # in two halves, one labelled real_not_used, the other left as test reals
    rng = np.random.default_rng(0)
    test_non = test.subset(np.flatnonzero(~member))
    pats = rng.permutation(np.unique(patient(test_non)))
    held = np.isin(patient(test_non), pats[: len(pats) // 2])
    used = ImageSet.concat([data.real_used, test.subset(np.flatnonzero(member))])
    not_used = ImageSet.concat([data.real_not_used, test_non.subset(np.flatnonzero(held))])
    unknown = test_non.subset(np.flatnonzero(~held))
    view = AuditData(generated=data.generated, test_generated=data.test_generated, real_used=used,
                     real_not_used=not_used, real_unknown=unknown, groups=groups,
                     source=f"{root} (every member labelled)")
    start = time.perf_counter()
    report = run_audit(view, cfg=MethodConfig(cache_dir=cache, quiet=True), check_control=False, n_boot=20)
    print(f"[verdict] {root} with every member labelled: {time.perf_counter() - start:.0f}s", file=sys.stderr,
          flush=True)
    v = report.verdict
    rows.append(_row(f"{root.name}, every member labelled ({len(used)} images) (groups)", v))
    lines = [f"- {root.name}, every member labelled: the report's memorisation summary says: "
             f"\"{conclusion(summarise(v))}\" ({summarise(v).headline})."]
    if report_dir is not None:
        index = write_report(report, report_dir, force=True, y_test=None)
        lines.append(f"  (report written to `{index}`)")
    # (2) signal-free: non-members only, relabelled at random by patient (about as many "used" patients as
    # the benchmark labelled members), the rest "not used" and test
    non = ImageSet.concat([data.real_not_used, test_non])
    pats_all = np.unique(patient(non))
    n_used = max(2, len(np.unique(patient(data.real_used))))
    closer_ps = []
    for rep in range(relabellings):
        order = np.random.default_rng([1, rep]).permutation(pats_all)
        which = patient(non)
        fake_used = np.flatnonzero(np.isin(which, order[:n_used]))
        fake_not = np.flatnonzero(np.isin(which, order[n_used:n_used + len(order) // 2]))
        rest = np.flatnonzero(np.isin(which, order[n_used + len(order) // 2:]))
        null = AuditData(generated=data.generated, test_generated=data.test_generated, real_used=non.subset(fake_used),
                         real_not_used=non.subset(fake_not), real_unknown=non.subset(rest) if len(rest) else None,
                         groups=groups, source=f"{root} (non-members relabelled {rep})")
        r = run_audit(null, cfg=MethodConfig(cache_dir=cache, quiet=True, seed=rep), check_control=False, n_boot=20)
        rows.append(_row(f"{root.name}, non-members only, relabelled by patient #{rep + 1} (groups)", r.verdict))
        closer_ps.append(r.verdict.member_closer_p)
    lines.append(f"- {root.name}, {relabellings} signal-free relabellings of its non-members: member-closer p = "
                 + ", ".join(format_p(p) for p in closer_ps)
                 + f"; {sum(p >= 0.05 for p in closer_ps)} of {relabellings} at or above 0.05.")
    return rows + [""] + lines


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
    p.add_argument("--diffusion", nargs="*", default=[],
                   help="built diffusion benchmarks: also audited with every member labelled and 5 times with their "
                        "non-members relabelled")
    p.add_argument("--report-dir", help="write the every-member-labelled report of each --diffusion benchmark here")
    p.add_argument("--name", default="verdict")
    args = p.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="synthleak-verdict-") as tmp:
        tmp = Path(tmp)
        null_rows = signal_free(args.reps, str(tmp / "cache"))
        signal_rows = with_signal([demo_bench(tmp), *map(Path, args.bench), *map(Path, args.diffusion)],
                                  str(tmp / "cache"))
        diffusion_rows = []
        for root in map(Path, args.diffusion):
            report_dir = Path(args.report_dir) / Path(root).name if args.report_dir else None
            diffusion_rows += ["", f"### {root.name}", "", *diffusion_views(root, str(tmp / "cache"), report_dir)]
    command = (f"python benchmarks/bench_verdict.py --reps {args.reps}"
               + (f" --bench {' '.join(args.bench)}" if args.bench else "")
               + (f" --diffusion {' '.join(args.diffusion)}" if args.diffusion else ""))
    text = [f"# The dataset-level verdict through the audit ({datetime.date.today().isoformat()})", "",
            f"`{command}`: the default recipe's label-free scores, 2,000 relabellings (the member-closer "
            f"p: 500), alpha 0.05; {time.perf_counter() - start:.0f}s in all.", "",
            "## False alarms on signal-free data", "",
            "Phantom patients (3 slices each); the generator (RAE-GMM) was trained on 80 *other* patients, so no "
            "labelled image was used (`synthleak.bench.null`). A calibrated test shows leakage in about 5 of 100. "
            "Both p-values of each audit are counted: the verdict's (Mann-Whitney on the recipe's scores) and the "
            "member-closer share's (relabelling the labelled reals, whole patients with groups).", "", *null_rows, "",
            "## Real leaks", "", "`demo` is the demo's data (phantoms, RAE-GMM trained on the members, split by "
            "patient, groups.csv). Every statistic is computed in the default recipe's space (pixels at the "
            "resolution the synthetic images resolve); beside authenticity and the memorised share, in brackets, "
            "the same statistic for the labelled non-members (what a generator that copies nothing gets).", "",
            *signal_rows, *(["", "## Diffusion benchmarks: every member labelled, and non-members relabelled",
                             *diffusion_rows] if diffusion_rows else []), ""]
    out = RESULTS / f"{args.name}.md"
    out.write_text("\n".join(text))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
