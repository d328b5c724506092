"""bench-iqoth numbers for `seed-resnet-radiomics` vs `nearest` (pixels, radiomics, resnet-ae spaces).

CV AUC on the labelled reals (out-of-fold scores) and test AUC (test_labels.csv read only to report).
Writes benchmarks/results/seed-resnet-radiomics.md. CPU settings by default (small AE budget):

    OMP_NUM_THREADS=2 nice python benchmarks/bench_seed_resnet_radiomics.py --epochs 5 --image-size 64 \
        --max-train-images 800
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.data.runfile import read_labels
from synthleak.methods import run_method

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "bench-iqoth"


def auc(y: np.ndarray, s: np.ndarray | None) -> float:
    return float("nan") if s is None else float(roc_auc_score(y, s))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--max-train-images", type=int, default=800)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "seed-resnet-radiomics.md")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = discover(args.data)
    labels = read_labels(args.data / "test_labels.csv")
    y_test = np.array([labels[i] for i in data.real_unknown.ids])
    _, y_lab = data.labelled()
    print(f"loaded in {time.perf_counter() - t0:.0f}s", flush=True)

    cfg = MethodConfig(epochs=args.epochs, image_size=args.image_size, max_train_images=args.max_train_images,
                       workers=args.workers)
    rows, timings, extra = [], {}, {}
    runs = [
        ("seed-resnet-radiomics", cfg),
        ("seed-resnet-radiomics", replace(cfg, options={"rf_raw_features": "1"})),
        ("nearest", replace(cfg, feature_space="pixels")),
        ("nearest", replace(cfg, feature_space="radiomics")),
        ("nearest", replace(cfg, feature_space="resnet-ae")),
        ("nearest-calibrated", replace(cfg, feature_space="radiomics")),
    ]
    for method, c in runs:
        label = f"{method} [{c.feature_space}]" if method.startswith("nearest") else method
        if c.options:
            label += " " + ",".join(f"{k}={v}" for k, v in c.options.items())
        t = time.perf_counter()
        result = run_method(method, data, c)
        timings[label] = time.perf_counter() - t
        rows.append((label, auc(y_lab, result.labelled_scores), auc(y_test, result.test_scores)))
        print(rows[-1], f"{timings[label]:.0f}s", flush=True)
        if method == "seed-resnet-radiomics":
            extra[label] = {"notes": result.notes, "trained_on": result.trained_on}
            if c.options:  # the meta-signal variants do not depend on the forest's inputs: list them once
                continue
            for name, sig in result.variants.items():
                rows.append((f"  variant {name}", auc(y_lab, sig.labelled), auc(y_test, sig.test)))
                print(rows[-1], flush=True)

    from synthleak.features.resnet_ae import ResNetAESettings, train_resnet_ae
    from synthleak.features.embedding import training_synthetic

    _, meta = train_resnet_ae(training_synthetic(data, cfg)[0], cfg, ResNetAESettings.from_config(cfg))
    lines = [
        "# seed-resnet-radiomics on bench-iqoth (CPU)",
        "",
        f"Settings: epochs={args.epochs}, image_size={args.image_size}, max_train_images={args.max_train_images} "
        f"(AE trained on a seeded random subset of train/generated), batch 32, Adam 1e-4, L1, seed 0, "
        f"5-fold stratified CV on the 200 labelled reals; reference distribution = all 2000 train/generated.",
        f"AE: {meta.get('seconds_per_epoch') or float('nan'):.1f} s/epoch on {meta.get('n_images')} images at "
        f"{args.image_size}x{args.image_size} (2 shared CPU cores; cached model reused by the later runs), "
        f"final L1 {meta.get('final_l1', float('nan')):.4f}.",
        "",
        "| method | CV AUC (labelled, out-of-fold) | test AUC | wall s |",
        "|---|---|---|---|",
    ]
    for label, cv, test in rows:
        wall = f"{timings[label]:.0f}" if label in timings else ""
        lines.append(f"| {label} | {cv:.3f} | {test:.3f} | {wall} |")
    lines += ["", "Notes of the method run:", ""]
    for label, info in extra.items():
        lines += [f"- {label}: " + "; ".join(info["notes"]), f"- trained_on: {json.dumps(info['trained_on'])}"]
    lines += ["", "Command: `OMP_NUM_THREADS=2 nice python benchmarks/bench_seed_resnet_radiomics.py "
              f"--epochs {args.epochs} --image-size {args.image_size} --max-train-images {args.max_train_images}`",
              f"Total wall time: {time.perf_counter() - t0:.0f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "timings": timings, "meta": meta}, default=str, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
