"""Speed of the `radiomics` feature space: ms per 256x256 image, per component and for 1..N worker threads.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_radiomics_speed.py [--images 96] [--workers 1 2]

Writes benchmarks/results/radiomics-speed.md. Uses bench-iqoth generated images when present, else
random textured images. The machine's load average is recorded: on a shared machine it inflates times.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet, load_folder
from synthleak.features import radiomics as R

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "bench-iqoth" / "train" / "generated"


def load_images(n: int) -> tuple[ImageSet, str]:
    if DATA.exists():
        images = load_folder(DATA)
        return images.subset(np.arange(min(n, len(images)))), f"{DATA.relative_to(REPO.parent)} (first {n})"
    rng = np.random.default_rng(0)
    return ImageSet.from_arrays(rng.integers(0, 256, (n, 256, 256), dtype=np.uint8)), f"{n} random images"


def per_image_ms(fn, pixels: np.ndarray, repeats: int = 1) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for img in pixels:
            fn(img)
        best = min(best, time.perf_counter() - t)
    return 1000 * best / len(pixels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "radiomics-speed.md")
    args = ap.parse_args()
    images, source = load_images(args.images)
    pixels = images.pixels
    bank = R.gabor_bank()
    components = {
        "first-order (8)": lambda im: R.first_order(im),
        "GLCM, 64 levels (16)": lambda im: R.glcm_features(im, 64),
        "GLCM, 256 levels (16)": lambda im: R.glcm_features(im, 256),
        "wavelet db1 L2 (7)": lambda im: R.wavelet_energies(im.astype(np.float32) / 255),
        "Gabor 3x3 quadrature, cv2 (18)": lambda im: R.gabor_features(im.astype(np.float32) / 255, bank),
        "morphology (4)": lambda im: R.morphology(im),
        "whole vector (53)": lambda im: R.radiomics_vector(im, bank, 64),
    }
    sub = pixels[: min(32, len(pixels))]
    rows = [(name, per_image_ms(fn, sub)) for name, fn in components.items()]
    try:
        from skimage.filters import gabor

        def sk_gabor(im):
            x = im.astype(np.float32) / 255
            for k in bank:
                gabor(x, frequency=k.frequency, theta=k.theta)

        rows.append(("(reference) Gabor with skimage.filters.gabor (9 complex)", per_image_ms(sk_gabor, sub[:4])))
    except ImportError:  # pragma: no cover
        pass
    scaling = []
    for w in args.workers:
        ext = R.RadiomicsExtractor(MethodConfig(cache_dir="none", workers=w))
        t = time.perf_counter()
        ext.transform(images)
        wall = time.perf_counter() - t
        scaling.append((w, 1000 * wall / len(images), len(images) / wall))
    load = os.getloadavg()
    lines = [
        "# radiomics feature extraction speed",
        "",
        f"Images: {source}, 256x256. CPU: {os.cpu_count()} cores, load average during the run "
        f"{load[0]:.1f} (shared machine: other jobs inflate these numbers). Single-thread BLAS/OpenMP.",
        "",
        "| component (features) | ms / image, one thread |",
        "|---|---|",
        *[f"| {name} | {ms:.1f} |" for name, ms in rows],
        "",
        "| worker threads (cfg.workers) | wall ms / image | images / s |",
        "|---|---|---|",
        *[f"| {w} | {ms:.1f} | {ips:.1f} |" for w, ms, ips in scaling],
        "",
        "Target: <= 100 ms per image per core for the whole vector.",
        "Command: `OMP_NUM_THREADS=1 nice python benchmarks/bench_radiomics_speed.py`",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
