"""CPU companion to `synthleak audit --method seed-vit-ae,...` on bench-iqoth (see results/seed-vit-ae.md).

nearest: reuses the cached autoencoder of an earlier audit run with the same settings and scores the
reals by the distance to the nearest of a seeded random subset of the synthetic pool in vit-ae space
(encoding all 3,000 synthetic images is out of reach of a shared 2-core CPU).
base: one training epoch of ViT-B/16 on a few generated images, timed, then a forward pass.

    python benchmarks/bench_seed_vit_ae.py nearest --vit-size small --max-train-images 300 --epochs 1 --subset 400
    python benchmarks/bench_seed_vit_ae.py base --images 32
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synthleak.attacks.knn import NeighbourIndex
from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.data.runfile import read_labels
from synthleak.features.vit_ae import ViTAEExtractor
from synthleak.features.embedding import training_synthetic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench-iqoth"


def nearest(args) -> None:
    data = discover(DATA)
    cfg = MethodConfig(vit_size=args.vit_size, epochs=args.epochs, max_train_images=args.max_train_images)
    extractor = ViTAEExtractor(cfg)
    extractor.fit(training_synthetic(data, cfg)[0])  # cached by the audit run with the same settings
    pool = data.synthetic("all")
    idx = np.sort(np.random.default_rng(0).choice(len(pool), args.subset, replace=False))
    t0 = time.perf_counter()
    syn = extractor.extract(pool.subset(idx))
    lab_images, y = data.labelled()
    lab, test = extractor.extract(lab_images), extractor.extract(data.real_unknown)
    print(f"encoded {args.subset} synthetic + {len(y) + len(test)} reals in {time.perf_counter() - t0:.0f}s")
    mu, sd = syn.mean(0), syn.std(0) + 1e-8  # z-score on the synthetic set, as embed() does
    index = NeighbourIndex((syn - mu) / sd)
    labels = read_labels(DATA / "test_labels.csv")
    y_test = np.array([labels[i] for i in data.real_unknown.ids])
    s_lab = -index.search((lab - mu) / sd, 1)[0][:, 0]
    s_test = -index.search((test - mu) / sd, 1)[0][:, 0]
    print(f"nearest (vit-ae, {args.subset} synthetic): labelled AUC {roc_auc_score(y, s_lab):.3f}, "
          f"test AUC {roc_auc_score(y_test, s_test):.3f}")


def base(args) -> None:
    data = discover(DATA)
    cfg = MethodConfig(vit_size="base", epochs=1, max_train_images=args.images, batch_size=8, cache_dir="none")
    extractor = ViTAEExtractor(cfg)
    t0 = time.perf_counter()
    extractor.fit(training_synthetic(data, cfg)[0])
    print(f"ViT-B/16 autoencoder: 1 epoch on {args.images} images in {time.perf_counter() - t0:.0f}s, "
          f"loss {extractor.record['losses'][-1]:.4f}")
    t0 = time.perf_counter()
    feats = extractor.latent_and_error(data.real_unknown.subset(np.arange(8)))
    print(f"encoded 8 reals in {time.perf_counter() - t0:.1f}s: latent {feats.shape[1] - 1}-d, "
          f"recon MSE {feats[:, -1].mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("nearest")
    p.add_argument("--vit-size", default="small")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train-images", type=int, default=300)
    p.add_argument("--subset", type=int, default=400)
    p = sub.add_parser("base")
    p.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    {"nearest": nearest, "base": base}[args.cmd](args)


if __name__ == "__main__":
    main()
