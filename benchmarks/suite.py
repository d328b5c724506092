"""The development suite: benchmarks that span generator families, data shapes and shifts; the default is judged on all.

    python benchmarks/suite.py build WORK_DIR [--only NAME,...]     # builds what is missing (cached, resumable)
    python benchmarks/suite.py run WORK_DIR [--only NAME,...]       # audits every built benchmark, writes suite.md

Every benchmark is written by `synthleak build-bench` (the library call behind it), so what is
measured is what a user gets; a benchmark folder that exists is reused (DDPM ladders resume from
their .partial folder). Data: ../shared/data/iqoth-256 (pseudo-patients of build_dev_benches.py) and
real CT volumes prepared by benchmarks/prepare_ct_volumes.py (default /work/data/ct-volumes, or
$SYNTHLEAK_CT_VOLUMES); benchmarks whose data are absent are listed as not built.

`run` audits each benchmark once with the default recipe, the plain baseline (`nearest`, 64 px), the
previous default (`density-ratio+neighbours`, 64 px) and the real-only control, and reads each of the
default's pre-registered candidates (at the measured resolution) from its variants. Test labels only
fill the tables. The selection rule (SELECTION_RULE) is printed at the top of suite.md and was written
before any candidate was run on these benchmarks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_dev_benches import SHARED, iqoth_pseudo_patients, anatomy_clusters, _write_csv  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CT_VOLUMES = Path(os.environ.get("SYNTHLEAK_CT_VOLUMES", "/work/data/ct-volumes"))

SELECTION_RULE = """\
Written before the candidates were run on this suite (stop 23):

1. Score. Among the pre-registered default candidates (density-ratio+neighbours, nearest,
   nearest+neighbours, each at the measured comparison side) and the two 64 px references (nearest =
   the plain baseline, density-ratio+neighbours = the previous default), the *regret* of a recipe on a
   benchmark is (best test AUC of any of them) - (its test AUC). The default must have regret <= 0.03
   on every benchmark; between recipes, the smaller worst-case regret wins, then the smaller mean.
2. Decision under shift. On every benchmark where the shift check fires, the default's scores are
   binarised by each rule that does not rest on the labelled reals' score values (quantile, mixture,
   rate at the labelled member rate); the rule with the largest *worst-case* run-file kappa over those
   benchmarks is the default's shift rule (ties: the larger mean kappa). It must reach at least
   nearest's kappa (paired bootstrap over test patients, CI lower bound of the difference >= -0.05 is
   reported; a CI above 0 is the aim).
3. Signal-free benchmark: the default's test AUC must lie within 0.5 +- 0.07.
No test label enters an audit; they fill these tables only.
"""

METHODS = "default,nearest,density-ratio+neighbours"
SHIFT_RULES = ("kappa", "quantile", "mixture", "rate", "tail")


@dataclass
class Bench:
    name: str
    family: str
    shape: str
    shift: str
    #: folder of the benchmark below WORK_DIR (a ladder rung: "<ladder>/rung-<steps>")
    folder: str
    build: dict = field(default_factory=dict)
    #: patients (groups of the `groups` file) the data must hold before the benchmark can be built
    min_patients: int = 0


def _specs() -> list[Bench]:
    iqoth = dict(source="iqoth", groups="iqoth-groups")
    ct_slab = dict(source="ct", groups="ct-slabs")
    return [
        Bench("ddpm32-early", "DDPM, 32 px training, early checkpoint (1,500 steps)", "iqoth pseudo-patients", "none",
              "ddpm32-iqoth/rung-1500", dict(iqoth, generator="ddpm", image_size=32, members=100, rungs="1500,3000",
                                             n_generated=1200, seed=1, ladder="ddpm32-iqoth")),
        Bench("ddpm32-late", "DDPM, 32 px training, 3,000 steps", "iqoth pseudo-patients", "none",
              "ddpm32-iqoth/rung-3000", dict(iqoth, generator="ddpm", image_size=32, members=100, rungs="1500,3000",
                                             n_generated=1200, seed=1, ladder="ddpm32-iqoth")),
        Bench("ddpm64", "DDPM, 64 px training, 1,200 steps", "iqoth pseudo-patients", "none",
              "ddpm64-iqoth/rung-1200", dict(iqoth, generator="ddpm", image_size=64, members=100, rungs="1200",
                                             n_generated=1200, seed=2, ladder="ddpm64-iqoth")),
        Bench("dcgan-ct-one-patient", "DCGAN 128 px", "CT volumes, members by slab",
              "labelled reals from one patient, test reals from the others", "dcgan-ct-one-patient",
              dict(ct_slab, label_groups="ct-patients", generator="dcgan", image_size=128, epochs=150,
                   member_fraction=0.5, labelled_fraction=0.3, n_generated=1500, seed=3)),
        Bench("rae-gmm-ct-one-patient", "RAE-GMM (the demo's)", "CT volumes, members by slab",
              "labelled reals from one patient, test reals from the others", "rae-gmm-ct-one-patient",
              dict(ct_slab, label_groups="ct-patients", generator="rae-gmm", epochs=300, member_fraction=0.5,
                   labelled_fraction=0.3, n_generated=1500, seed=4)),
        # members by patient: whole patients are members or not, and (patients never straddle a split) the labelled
        # reals come from other patients than the test reals. 10 patients at least: with this split fewer leave one
        # labelled patient per class (measured with draw_split, seed 9: 1/1 for 4-8 patients, 1/2 for 9, 2/2 from
        # 10), and then every CV fold trains on one class, so the real-only control cannot run and a labelled AUC is
        # one patient's anatomy
        Bench("rae-gmm-ct-by-patient", "RAE-GMM (the demo's)", "CT volumes, members by patient",
              "labelled and test reals from different patients", "rae-gmm-ct-by-patient",
              dict(source="ct", groups="ct-patients", generator="rae-gmm", epochs=300, member_fraction=0.5,
                   labelled_fraction=0.35, n_generated=1500, seed=9), min_patients=10),
        Bench("noisy-copies-ct", "noisy copies", "CT volumes, members by slab", "none", "noisy-copies-ct",
              dict(ct_slab, generator="noisy-copies", member_fraction=0.5, labelled_fraction=0.35,
                   n_generated=900, seed=5)),
        Bench("rae-gmm-iqoth", "RAE-GMM (the demo's)", "iqoth pseudo-patients", "none", "rae-gmm-iqoth",
              dict(iqoth, generator="rae-gmm", epochs=300, member_fraction=0.3, labelled_fraction=0.3,
                   n_generated=3000, seed=6)),
        Bench("rae-gmm-iqoth-anatomy", "RAE-GMM (the demo's)", "iqoth pseudo-patients",
              "labelled and test reals from different anatomy clusters", "rae-gmm-iqoth-anatomy",
              dict(iqoth, label_groups="iqoth-anatomy", generator="rae-gmm", epochs=300, member_fraction=0.3,
                   labelled_fraction=0.3, n_generated=3000, seed=7)),
        Bench("null-phantoms", "signal-free: a generator trained on other patients", "phantom populations",
              "labelled and test reals from different populations", "null-phantoms", dict(source="null", seed=8)),
    ]


def _meta(work: Path) -> dict[str, Path | None]:
    """Group and label-group files the builds need (written once into WORK_DIR/meta)."""
    meta = work / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path | None] = {}
    iqoth = SHARED / "iqoth-256"
    if iqoth.exists():
        if not (meta / "iqoth-groups.csv").exists():
            groups = iqoth_pseudo_patients(iqoth)
            _write_csv(meta / "iqoth-groups.csv", groups)
            _write_csv(meta / "iqoth-anatomy.csv", anatomy_clusters(iqoth, groups, seed=0))
        out["iqoth-groups"], out["iqoth-anatomy"] = meta / "iqoth-groups.csv", meta / "iqoth-anatomy.csv"
    if (CT_VOLUMES / "images").exists():
        out["ct-slabs"], out["ct-patients"] = CT_VOLUMES / "slabs.csv", CT_VOLUMES / "patients.csv"
    return out


def build(work: Path, only: set[str] | None) -> None:
    from synthleak.bench.folder import build_from_folder

    meta = _meta(work)
    done_ladders: set[str] = set()
    for b in _specs():
        if only and b.name not in only:
            continue
        target = work / b.folder
        if target.exists():
            print(f"{b.name}: built ({target})")
            continue
        spec = dict(b.build)
        source = spec.pop("source")
        if source == "null":
            _build_null(work / b.folder, spec["seed"])
            continue
        real = SHARED / "iqoth-256" if source == "iqoth" else CT_VOLUMES / "images"
        groups = meta.get(spec.pop("groups"))
        label_groups = meta.get(spec.pop("label_groups")) if "label_groups" in spec else None
        if not real.exists() or groups is None:
            print(f"{b.name}: data absent ({real}), not built")
            continue
        patients = _count_groups(groups)
        if patients < b.min_patients:
            print(f"{b.name}: needs at least {b.min_patients} patients, {groups} holds {patients}: not built")
            continue
        ladder = spec.pop("ladder", None)
        out = work / (ladder or b.folder)
        if ladder in done_ladders:
            continue
        t0 = time.perf_counter()
        print(f"{b.name}: building {out} ...", flush=True)
        build_from_folder(real, out, groups=groups, label_groups=label_groups, **spec)
        print(f"{b.name}: built in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        if ladder:
            done_ladders.add(ladder)


def _count_groups(path: Path) -> int:
    """Distinct groups (patients) of a `<id>,<group>` file (0 when it is absent)."""
    from synthleak.data.layout import read_groups

    return len(set(read_groups(Path(path)).values())) if Path(path).exists() else 0


def _build_null(out: Path, seed: int) -> None:
    """Members / non-members of phantom patients; the generator saw neither (other phantom patients)."""
    from synthleak.bench.build import BenchSpec, build_benchmark, make_generator
    from synthleak.bench.phantoms import make_population_phantoms

    images, patients, populations = make_population_phantoms(200, 4, seed=seed)
    spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.3, n_generated_train=2000, n_generated_test=1000,
                     generator="rae-gmm", generator_epochs=300, seed=seed)
    other, _, _ = make_population_phantoms(100, 4, seed=seed + 1000)
    synthetic = make_generator(spec).fit(other, epochs=spec.generator_epochs).sample(3000)
    build_benchmark(images, patients, out, BenchSpec(**{**spec.__dict__, "generator": "noisy-copies"}),
                    label_groups=np.array([f"population-{p}" for p in populations]), synthetic=synthetic,
                    source={"signal_free": "synthetic images from a generator trained on other phantom patients"})


# ------------------------------------------------------------------------------------------ run
def _paired_kappa_gain(y, pred_a, pred_b, groups, n_boot=1000, seed=0):
    """kappa(a) - kappa(b) with a 95% bootstrap CI (patients resampled when groups are given)."""
    from synthleak.metrics import confusion_counts, kappa_from_counts

    def kappa(idx, pred):
        tp, fp, fn, tn = confusion_counts(y[idx], pred[idx][None, :])
        return float(kappa_from_counts(tp, fp, fn, tn)[0])

    everything = np.arange(len(y))
    point = kappa(everything, pred_a) - kappa(everything, pred_b)
    rng = np.random.default_rng(seed)
    units = np.unique(groups) if groups is not None else everything
    members = {u: np.flatnonzero(groups == u) for u in units} if groups is not None else None
    gains = []
    for _ in range(n_boot):
        pick = rng.choice(units, len(units), replace=True)
        idx = np.concatenate([members[u] for u in pick]) if members is not None else pick
        if len(np.unique(y[idx])) < 2:
            continue
        gains.append(kappa(idx, pred_a) - kappa(idx, pred_b))
    low, high = np.percentile(gains, [2.5, 97.5])
    return point, float(low), float(high)


def audit_bench(folder: Path, seed: int = 0) -> dict:
    from synthleak.config import MethodConfig
    from synthleak.decide import DecisionRule
    from synthleak.metrics import evaluate
    from synthleak.pipeline import run_audit, test_labels, _test_groups

    t0 = time.perf_counter()
    report = run_audit(folder, methods=METHODS, cfg=MethodConfig(seed=seed, quiet=True, cache_dir="none"),
                       labels=folder / "test_labels.csv", groups=folder / "groups.csv", n_boot=300)
    seconds = time.perf_counter() - t0
    data = report.data
    y = test_labels(folder / "test_labels.csv", data)
    groups = _test_groups(data)
    default = report.by_name("default").succeeded()
    nearest = report.by_name("nearest").succeeded()
    previous = report.by_name("density-ratio+neighbours").succeeded()
    auc = {"default": default.test["auc"].value, "nearest (64 px)": nearest.test["auc"].value,
           "previous default (64 px)": previous.test["auc"].value}
    for name, value in default.variants_test_auc.items():
        auc[f"candidate {name}"] = value
    best = max(v for k, v in auc.items() if k != "default")
    y_lab = data.labelled()[1]
    res = default.result
    rules = {}
    for mode in SHIFT_RULES:
        rule = DecisionRule(mode, member_rate=float(np.mean(y_lab)))
        fit_on = res.threshold_scores if res.threshold_scores is not None else res.labelled_scores
        t = rule.fit(fit_on, y_lab, res.test_scores)
        pred = (res.test_scores >= t).astype(int)
        rules[mode] = evaluate(y, pred, n_boot=0)["kappa"].value
    gain = _paired_kappa_gain(y, default.test_pred, nearest.test_pred, groups, seed=seed)
    verdict = report.verdict
    return {
        "seconds": round(seconds, 1), "shift_auc": report.shift.auc if report.shift else None,
        "shifted": bool(report.shift and report.shift.shifted), "resolution": res.details["resolution"],
        "chosen": res.details.get("chosen"), "labelled_auc": res.details.get("labelled_auc"),
        "why": res.details.get("why"),
        "decision": default.rule.mode, "auc": auc, "best_auc": best, "regret": best - auc["default"],
        "default": {k: default.test[k].value for k in ("auc", "tpr@1%fpr", "kappa")},
        "default_ci": {k: [default.test[k].low, default.test[k].high] for k in ("auc", "tpr@1%fpr", "kappa")},
        "nearest": {k: nearest.test[k].value for k in ("auc", "tpr@1%fpr", "kappa")},
        "previous": {k: previous.test[k].value for k in ("auc", "tpr@1%fpr", "kappa")},
        "control_auc": report.control.test["auc"].value if report.control and report.control.test else None,
        "kappa_gain_vs_nearest": gain, "kappa_by_rule": rules,
        "verdict_p": verdict.p_value if verdict else None,
        "n_test": len(y), "n_labelled": len(y_lab),
    }


def _fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def write_markdown(rows: dict[str, dict], specs: list[Bench], path: Path, missing: list[str]) -> None:
    lines = ["# Development suite: the adaptive default across generator families, data shapes and shifts", "",
             "`python benchmarks/suite.py build WORK_DIR && python benchmarks/suite.py run WORK_DIR` "
             f"({time.strftime('%Y-%m-%d')}, 2 CPU cores).", "", "## Selection rule (pre-registered)", "",
             SELECTION_RULE, "## Benchmarks", "",
             "| benchmark | generator | data | shift | labelled / test reals | shift-check AUC |",
             "|---|---|---|---|---|---|"]
    by_name = {b.name: b for b in specs}
    for name, r in rows.items():
        b = by_name[name]
        lines.append(f"| {name} | {b.family} | {b.shape} | {b.shift} | {r['n_labelled']} / {r['n_test']} | "
                     f"{_fmt(r['shift_auc'], 2)}{' (fires)' if r['shifted'] else ''} |")
    if missing:
        lines += ["", "Not built this time (data or CPU time absent): " + ", ".join(missing) + "."]
    lines += ["", "## Scores: test AUC of every candidate (regret = best - default)", "",
              "| benchmark | resolution (effective / compared) | chosen on labelled reals | default | nearest@64 | "
              "previous default@64 | candidates at the compared side | regret |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        res = r["resolution"]
        cands = ", ".join(f"{k.removeprefix('candidate ')} {v:.3f}" for k, v in r["auc"].items()
                          if k.startswith("candidate "))
        lines.append(f"| {name} | {res['effective_side']} / {res['comparison_side']} | {r['chosen']} | "
                     f"{r['auc']['default']:.3f} | {r['auc']['nearest (64 px)']:.3f} | "
                     f"{r['auc']['previous default (64 px)']:.3f} | {cands} | {r['regret']:+.3f} |")
    lines += ["", "## Decisions: run-file kappa of the default (its rule) and of nearest; kappa of the default's "
              "scores under each rule", "",
              "| benchmark | default rule | default AUC / TPR@1%FPR / kappa | nearest AUC / TPR@1%FPR / kappa | "
              "kappa gain vs nearest [95% CI] | " + " | ".join(SHIFT_RULES) + " | control AUC | verdict p |",
              "|---|---|---|---|---|" + "---|" * len(SHIFT_RULES) + "---|---|"]
    for name, r in rows.items():
        d, n, g = r["default"], r["nearest"], r["kappa_gain_vs_nearest"]
        lines.append(f"| {name} | {r['decision']} | {d['auc']:.3f} / {d['tpr@1%fpr']:.3f} / {d['kappa']:.3f} | "
                     f"{n['auc']:.3f} / {n['tpr@1%fpr']:.3f} / {n['kappa']:.3f} | {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}] | "
                     + " | ".join(f"{r['kappa_by_rule'][m]:.3f}" for m in SHIFT_RULES)
                     + f" | {_fmt(r['control_auc'])} | {_fmt(r['verdict_p'], 4)} |")
    lines += ["", "## Reading", "", "(filled in by hand after the run; see the closing note of the stop that ran it)", ""]
    path.write_text("\n".join(lines))


def run(work: Path, only: set[str] | None, out: Path) -> None:
    specs = _specs()
    rows, missing = {}, []
    cache = work / "suite-results.json"
    previous = json.loads(cache.read_text()) if cache.exists() else {}
    for b in specs:
        if only and b.name not in only:
            if b.name in previous:
                rows[b.name] = previous[b.name]
            continue
        folder = work / b.folder
        if not (folder / "test_labels.csv").exists():
            missing.append(b.name)
            continue
        print(f"{b.name}: auditing ...", flush=True)
        rows[b.name] = audit_bench(folder)
        print(f"{b.name}: {json.dumps({k: rows[b.name][k] for k in ('auc', 'default', 'chosen', 'decision')})}",
              flush=True)
        cache.write_text(json.dumps({**previous, **rows}, indent=1, default=float))
    write_markdown(rows, specs, out, missing)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("build", "run"))
    p.add_argument("work", help="folder of the built benchmarks (outside the repository)")
    p.add_argument("--only", help="comma-separated benchmark names")
    p.add_argument("--out", default=str(RESULTS / "suite.md"))
    args = p.parse_args(argv)
    work = Path(args.work)
    only = {s.strip() for s in args.only.split(",")} if args.only else None
    if args.action == "build":
        build(work, only)
    else:
        run(work, only, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
