"""Speed of `synthleak audit --method nearest` on a challenge-size set (7,000 synthetic + 700 real).

    python benchmarks/bench_speed.py [--synthetic 7000] [--real 700]

Writes PNG phantoms (256x256) to a temporary folder, then times the CLI end to end (image decoding,
features, neighbour search, decisions, outputs) and writes benchmarks/results/speed-nearest.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from synthleak.bench.phantoms import make_phantoms

RESULTS = Path(__file__).resolve().parent / "results"


def write(folder: Path, images: np.ndarray, prefix: str) -> None:
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{prefix}_{i:05d}.png"), im)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--synthetic", type=int, default=7000)
    p.add_argument("--real", type=int, default=700)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        n_real = args.real
        images, _ = make_phantoms((args.synthetic + n_real) // 4 + 1, 4, seed=0)
        syn, real = images[:args.synthetic], images[args.synthetic:args.synthetic + n_real]
        write(root / "generated", syn, "generated")
        write(root / "real_used", real[:50], "real_used")
        write(root / "real_not_used", real[50:100], "real_not_used")
        write(root / "real_unknown", real[100:], "real_unknown")
        rows = []
        for method in ("nearest", "nearest-calibrated"):
            cmd = [sys.executable, "-m", "synthleak.cli", "audit", str(root), "--method", method, "--out",
                   str(Path(tmp) / f"{method}.csv"), "--quiet", "--cache-dir", "none", "--bootstrap", "200"]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            rows.append((method, time.perf_counter() - start))
    lines = ["# Speed: nearest-synthetic audit on a challenge-size set", "",
             f"- {args.synthetic} synthetic + {args.real} real 256x256 PNGs (700 = 100 labelled + 600 test), "
             f"pixel feature space (64x64), exact k-NN, cache disabled, {os.cpu_count()} CPU cores",
             "- wall time of the whole CLI call: start-up, PNG decoding, features, neighbour search, CV "
             "decisions, 200 bootstrap resamples, writing outputs", "",
             "| method | wall time |", "|---|---|"] + [f"| {m} | {s:.1f}s |" for m, s in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed-nearest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
