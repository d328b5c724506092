"""Build the development leak ladder from iqoth-256 and audit every rung with the quick methods.

    python benchmarks/build_ladder.py OUT_DIR [--rungs 1000,2000,3000,4000] [--members 100] [--image-size 32]
        [--n-generated 600] [--preset cpu] [--seed 0] [--bootstrap 500] [--force]

Writes OUT_DIR (one benchmark per rung, `synthleak build-bench --generator ddpm --rungs ...`, the
library call behind it, so what is measured is what a user gets) and benchmarks/results/ladder-iqoth.md:
per rung the memorisation meter (memorised_share, member_closer_share, pixel nearest AUC at the
training resolution, the control) and every quick method's test AUC / TPR@1%FPR / kappa with
patient-bootstrap CIs, plus the timings and a check that leakage rises along the rungs.

Patients: iqoth-256 has no patient ids; the pseudo-patients of build_dev_benches.py are used (runs of
consecutive, similar slices), so members are whole pseudo-patients and neighbouring slices count
as one in the memorised share. The ladder is resumable: re-running the same command after an
interruption continues from OUT_DIR.partial/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_dev_benches import SHARED, iqoth_pseudo_patients  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _ci(metric: dict | None) -> str:
    return "-" if metric is None else f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def _minutes(ladder: list[dict], key: str) -> str:
    return f"{sum(e[key] for e in ladder) / 60:.1f}"


def audit_rung(folder: Path, seed: int, n_boot: int, methods: str) -> tuple[list[dict], float]:
    """Every quick method on one rung, test metrics from its labels (read only to score)."""
    from synthleak.config import MethodConfig
    from synthleak.pipeline import run_audit

    t0 = time.perf_counter()
    report = run_audit(folder, methods=methods, cfg=MethodConfig(seed=seed, quiet=True, cache_dir="none"),
                       labels=folder / "test_labels.csv", groups=folder / "groups.csv", n_boot=n_boot)
    rows = []
    for m in report.rows():
        t = m.test or {}
        pick = lambda k: {"value": t[k].value, "low": t[k].low, "high": t[k].high} if k in t else None
        rows.append({"method": m.name + (" (reference)" if m is report.control and m not in report.methods else ""),
                     "error": m.error, "auc": pick("auc"), "tpr@1%fpr": pick("tpr@1%fpr"), "kappa": pick("kappa"),
                     "seconds": round(m.seconds, 1)})
    return rows, time.perf_counter() - t0


def leakage_rises(ladder: list[dict]) -> list[str]:
    """The done-when checks: member_closer_share and pixel AUC never fall; last AUC CI above the first."""
    closer = [e["member_closer_share"] for e in ladder]
    auc = [e["nearest_test_auc"] for e in ladder]
    checks = [
        ("member_closer_share does not decrease", all(b >= a for a, b in zip(closer, closer[1:]))),
        ("pixel nearest test AUC does not decrease", all(b["value"] >= a["value"] for a, b in zip(auc, auc[1:]))),
        ("last rung's AUC CI lies above the first rung's", auc[-1]["low"] > auc[0]["high"]),
    ]
    return [f"- {'yes' if ok else '**no**'}: {text}" for text, ok in checks]


def markdown(summary: dict, audits: dict[int, list[dict]], settings: dict, timings: dict) -> str:
    ladder = summary["ladder"]
    lines = [
        f"# Leak ladder: iqoth-256, DDPM ({summary.get('preset')} preset)", "",
        f"- data: `{settings['data']}` ({settings['images']} images, {settings['groups']} pseudo-patients); "
        f"members {summary['members']} images of {summary['member_groups']} pseudo-patients, "
        f"non-members {summary['non_members']}; one member split for every rung",
        f"- generator: ddpm, preset {summary.get('preset')}, {summary['image_size']} px, "
        f"{ladder[0]['parameters'] / 1e6:.2f}M parameters; {summary['n_generated']} samples per rung "
        f"(DDIM, upsampled to 256); seed {summary['seed']}",
        f"- command: `{settings['command']}`",
        f"- machine: {platform.machine()}, {settings['threads']} torch thread(s), shared with other jobs; "
        f"date {datetime.date.today().isoformat()}",
        f"- wall time: build {timings['build'] / 60:.1f} min (training {_minutes(ladder, 'train_seconds')}, "
        f"sampling {_minutes(ladder, 'sample_seconds')}, meter {_minutes(ladder, 'meter_seconds')}), "
        f"quick audits {timings['audits'] / 60:.1f} min, "
        f"total {timings['total'] / 60:.1f} min", "",
        "## Memorisation meter (builder's view, pixels at the training resolution)", "",
        "memorised = nearest member closer than 1/3 of the second nearest member of another pseudo-patient "
        "(Gu et al. 2023); member-closer = nearer some member than any non-member, equal-size sets (chance 0.5); "
        "AUCs on the test reals with pseudo-patient bootstrap 95% CIs.", "",
        "| rung (steps) | memorised_share | member_closer_share | nearest test AUC | nearest TPR@1%FPR | "
        "control test AUC | control CV AUC | train s | steps/s | sample s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in ladder:
        lines.append(f"| {e['steps']} | {e['memorised_share']:.3f} | {e['member_closer_share']:.3f} | "
                     f"{_ci(e['nearest_test_auc'])} | {_ci(e.get('nearest_test_tpr@1%fpr'))} | "
                     f"{_ci(e.get('control_test_auc'))} | {_ci(e.get('control_cv_auc'))} | {e['train_seconds']:.0f} | "
                     f"{e['steps_per_s']:.2f} | {e['sample_seconds']:.0f} |")
    lines += ["", "Does leakage rise along the rungs?", "", *leakage_rises(ladder), "",
              "## Quick methods per rung (test reals; 95% CIs)", "",
              "| rung | method | test AUC | TPR@1%FPR | kappa | time |", "|---|---|---|---|---|---|"]
    for steps, rows in audits.items():
        for r in rows:
            if r["error"]:
                lines.append(f"| {steps} | {r['method']} | skipped: {r['error']} | | | |")
            else:
                lines.append(f"| {steps} | {r['method']} | {_ci(r['auc'])} | {_ci(r['tpr@1%fpr'])} | "
                             f"{_ci(r['kappa'])} | {r['seconds']:.0f}s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from synthleak.bench.folder import build_from_folder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--data", default=str(SHARED / "iqoth-256"), help="the iqoth-256 folder")
    p.add_argument("--rungs", default="1000,2000,3000,4000")
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--labelled-fraction", type=float, default=0.3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--n-generated", type=int, default=600)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples of the quick audits' CIs")
    p.add_argument("--methods", default="quick")
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default=str(RESULTS / "ladder-iqoth.md"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    from synthleak.runtime import choose_device

    iqoth = Path(args.data)
    if not iqoth.exists():
        print(f"{iqoth} not present", file=sys.stderr)
        return 1
    out = Path(args.out)
    t0 = time.perf_counter()
    groups = iqoth_pseudo_patients(iqoth)
    groups_csv = Path(tempfile.mkdtemp(prefix="ladder-")) / "iqoth-groups.csv"
    groups_csv.write_text("".join(f"{k},{v}\n" for k, v in sorted(groups.items())))
    print(f"{len(groups)} images, {len(set(groups.values()))} pseudo-patients", file=sys.stderr, flush=True)
    if (out / "ladder.json").exists() and not args.force:
        # a finished ladder: audit it again (e.g. after a failed audit) instead of refusing or rebuilding
        summary = json.loads((out / "ladder.json").read_text())
        print(f"{out}: ladder already built; auditing it again (--force rebuilds)", file=sys.stderr)
    else:
        summary = build_from_folder(iqoth, out, groups=groups_csv, members=args.members,
                                    labelled_fraction=args.labelled_fraction, n_generated=args.n_generated,
                                    generator="ddpm", preset=args.preset, image_size=args.image_size,
                                    rungs=args.rungs, seed=args.seed, device=choose_device(args.device),
                                    force=args.force)
    t_build = time.perf_counter() - t0
    audits: dict[int, list[dict]] = {}
    t_audits = 0.0
    for entry in summary["ladder"]:
        rows, seconds = audit_rung(out / entry["folder"], args.seed, args.bootstrap, args.methods)
        audits[entry["steps"]] = rows
        t_audits += seconds
        print(f"audited rung {entry['steps']} in {seconds:.0f}s", file=sys.stderr, flush=True)
    settings = {"data": iqoth, "images": len(groups), "groups": len(set(groups.values())),
                "threads": torch.get_num_threads(),
                "command": "python benchmarks/build_ladder.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    timings = {"build": t_build, "audits": t_audits, "total": time.perf_counter() - t0}
    text = markdown(summary, audits, settings, timings)
    Path(args.results).write_text(text)
    (out / "quick_audits.json").write_text(json.dumps({str(k): v for k, v in audits.items()}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
