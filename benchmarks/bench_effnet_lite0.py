"""EfficientNet-Lite0 (ImageNet) feature space on bench-iqoth (see results/effnet-lite0.md).

taps:    extract every tap of LAYERS once (per normalisation / image size) into an .npz, timing it.
select:  `nearest` AUC on the labelled reals (the only tuning signal) for a small, pre-declared list
         of layer sets; test AUC printed beside it for the report only, never used to choose.
methods: nearest, nearest-calibrated, nearest-local, domias through run_method in effnet-lite0 vs
         pixels space (registers the feature space in this process only).

    OMP_NUM_THREADS=1 nice python benchmarks/bench_effnet_lite0.py taps --norm tf-lite --size 224
    OMP_NUM_THREADS=1 nice python benchmarks/bench_effnet_lite0.py select --npz /tmp/effnet_taps_tf-lite_224.npz
    OMP_NUM_THREADS=1 nice python benchmarks/bench_effnet_lite0.py methods
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from synthleak.attacks.knn import NeighbourIndex
from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.data.runfile import read_labels
from synthleak.features import FEATURE_SPACES
from synthleak.features.imagenet import LAYERS, ImageNetLiteExtractor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench-iqoth"
REGISTRY_LINE = ("synthleak.features.imagenet:ImageNetLiteExtractor",
                 "ImageNet EfficientNet-Lite0, pooled multi-stage features (offline weights)")
CANDIDATES = [
    ("head",), ("stride32",), ("stride16",), ("stride8",), ("stride4",),
    ("stride32", "head"), ("stride16", "stride32", "head"), ("stride8", "stride16", "stride32", "head"),
    ("stride4", "stride8", "stride16", "stride32", "head"), ("stride8", "stride16"),
    ("stride8", "stride16", "stride32"),
    tuple(LAYERS),
]


def _test_labels(data) -> np.ndarray:
    labels = read_labels(DATA / "test_labels.csv")
    return np.array([labels[i] for i in data.real_unknown.ids])


def taps(args) -> None:
    data = discover(DATA)
    cfg = MethodConfig(image_size=args.size, cache_dir="none", quiet=False, batch_size=32,
                       options={"effnet_layers": args.layers, "effnet_norm": args.norm, "effnet_grid": str(args.grid)})
    ex = ImageNetLiteExtractor(cfg)
    sets = {"syn": data.synthetic("all"), "lab": data.labelled()[0], "test": data.real_unknown}
    out, n, t0 = {}, 0, time.perf_counter()
    for key, images in sets.items():
        feats = ex.transform(images)  # per-layer unit vectors / sqrt(#layers), split back per layer
        start = 0
        for name in ex.layers:
            width = LAYERS[name][1] * args.grid ** 2
            block = feats[:, start:start + width] * np.sqrt(len(ex.layers))
            out[f"{key}:{name}"] = block.astype(np.float16 if args.grid > 1 else np.float32)
            start += width
        n += len(images)
    dt = time.perf_counter() - t0
    print(f"{n} images, taps {args.layers}, grid {args.grid}, {args.size}px, {torch.get_num_threads()} thread(s): "
          f"{dt:.0f}s = {n / dt:.1f} images/s")
    np.savez(args.npz or f"/tmp/effnet_taps_{args.norm}_{args.size}_g{args.grid}.npz", **out)


def _coarsen(block: np.ndarray, grid: int, to: int) -> np.ndarray:
    """[n, C*grid*grid] (channel-major) -> [n, C*to*to] by averaging cells, L2-normalised."""
    n, f = block.shape[0], grid // to
    cells = block.astype(np.float32).reshape(n, -1, to, f, to, f).mean((3, 5)).reshape(n, -1)
    return cells / np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)


def select(args) -> None:
    data = discover(DATA)
    z = np.load(args.npz)
    y_lab, y_test = data.labelled()[1], _test_labels(data)
    available = {k.split(":")[1] for k in z.files}
    print("| layers | grid | dim | labelled AUC (selection) | test AUC (report only) |\n|---|---|---|---|---|")
    for grid in sorted({g for g in (1, 2, 4) if g <= args.grid and args.grid % g == 0}):
        for layers in CANDIDATES:
            if not set(layers) <= available:
                continue

            def stack(key: str) -> np.ndarray:
                return np.concatenate([_coarsen(z[f"{key}:{n}"], args.grid, grid) for n in layers], 1)

            syn, lab, test = stack("syn"), stack("lab"), stack("test")
            index = NeighbourIndex(syn)
            s_lab = -index.search(lab, 1)[0][:, 0]
            s_test = -index.search(test, 1)[0][:, 0]
            print(f"| {','.join(layers)} | {grid} | {lab.shape[1]} | {roc_auc_score(y_lab, s_lab):.3f} | "
                  f"{roc_auc_score(y_test, s_test):.3f} |", flush=True)


def methods(args) -> None:
    from synthleak.methods import run_method

    FEATURE_SPACES.setdefault("effnet-lite0", REGISTRY_LINE)
    data = discover(DATA)
    y_lab, y_test = data.labelled()[1], _test_labels(data)
    options = {"effnet_layers": args.layers} if args.layers else {}
    print("| method | space | labelled AUC | test AUC | time |\n|---|---|---|---|---|")
    for space in args.spaces.split(","):
        for name in args.methods.split(","):
            cfg = MethodConfig(feature_space=space, quiet=True, options=dict(options), cache_dir=args.cache_dir)
            t0 = time.perf_counter()
            res = run_method(name, data, cfg)
            print(f"| {name} | {space} | {roc_auc_score(y_lab, res.labelled_scores):.3f} | "
                  f"{roc_auc_score(y_test, res.test_scores):.3f} | {time.perf_counter() - t0:.0f}s |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("taps")
    p.add_argument("--norm", default="tf-lite")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--grid", type=int, default=1)
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--npz")
    p = sub.add_parser("select")
    p.add_argument("--npz", required=True)
    p.add_argument("--grid", type=int, default=1, help="grid the npz was extracted with")
    p = sub.add_parser("methods")
    p.add_argument("--methods", default="nearest,nearest-calibrated,nearest-local,domias")
    p.add_argument("--spaces", default="effnet-lite0,pixels")
    p.add_argument("--layers")
    p.add_argument("--cache-dir")
    args = ap.parse_args()
    {"taps": taps, "select": select, "methods": methods}[args.cmd](args)


if __name__ == "__main__":
    main()
