"""seed-dclgan on a labelled benchmark: metrics of (a) critic, (b) overlap, (c) features vs `nearest`.

Used for the CPU run (benchmarks/results/seed-dclgan.md) and by dclgan_256.sh on a GPU. Test
labels are read only to report metrics, after every score has been computed.

    python benchmarks/gpu/dclgan_bench.py DATA --image-size 64 --base-filters 16 --epochs 20 \
        --max-train-images 400 --out results/ [--device cuda] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-train-images", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--set", action="append", default=[], dest="options")
    ap.add_argument("--skip-critic-nearest", action="store_true")
    args = ap.parse_args()

    from synthleak.config import MethodConfig
    from synthleak.data import discover
    from synthleak.data.runfile import read_labels
    from synthleak.methods import run_method

    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = discover(args.data)
    print(f"loaded {args.data} in {time.perf_counter() - t0:.1f}s", flush=True)
    options = dict(kv.split("=", 1) for kv in args.options)
    cfg = MethodConfig(device=args.device, epochs=args.epochs, image_size=args.image_size,
                       base_filters=args.base_filters, batch_size=args.batch_size,
                       max_train_images=args.max_train_images, cache_dir=args.cache_dir, n_folds=args.folds,
                       artifacts_dir=out / "saliency" if out else None, options=options)
    labels = read_labels(Path(args.data) / "test_labels.csv")
    y_test = np.array([labels[i] for i in data.real_unknown.ids])
    _, y_lab = data.labelled()

    rows = []

    def report(name: str, labelled, test, seconds: float | None = None) -> None:
        cv = roc_auc_score(y_lab, labelled) if labelled is not None else float("nan")
        te = roc_auc_score(y_test, test) if test is not None else float("nan")
        rows.append({"signal": name, "cv_auc_labelled": round(float(cv), 4), "test_auc": round(float(te), 4),
                     "seconds": None if seconds is None else round(seconds, 1)})
        print(f"{name:32s} CV AUC {cv:.3f}  test AUC {te:.3f}" + (f"  ({seconds:.0f}s)" if seconds else ""),
              flush=True)

    t = time.perf_counter()
    res = run_method("seed-dclgan", data, cfg)
    dclgan_s = time.perf_counter() - t
    for note in res.notes:
        print("note:", note)
    print("trained on:", res.trained_on)
    report("seed-dclgan (main, nested CV)", res.labelled_scores, res.test_scores, dclgan_s)
    for name, sig in res.variants.items():
        report(f"  variant {name}", sig.labelled, sig.test)

    t = time.perf_counter()
    base = run_method("nearest", data, MethodConfig(device=args.device, feature_space="pixels",
                                                    cache_dir=args.cache_dir, n_folds=args.folds))
    report("nearest (pixels 64x64)", base.labelled_scores, base.test_scores, time.perf_counter() - t)
    if not args.skip_critic_nearest:
        for method in ("nearest", "nearest-calibrated"):
            c = MethodConfig(**{**cfg.__dict__, "feature_space": "dclgan-critic", "artifacts_dir": None})
            r = run_method(method, data, c)  # reuses the cached halves critic
            report(f"{method} (dclgan-critic space)", r.labelled_scores, r.test_scores)
    total = time.perf_counter() - t0
    print(f"total wall time {total:.0f}s")
    if out:
        summary = {"args": vars(args), "total_seconds": round(total, 1), "seed_dclgan_seconds": round(dclgan_s, 1),
                   "notes": res.notes, "trained_on": res.trained_on, "rows": rows,
                   "artifacts": [str(p) for p in res.artifacts], "host_cpus": os.cpu_count()}
        (out / "dclgan_metrics.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
