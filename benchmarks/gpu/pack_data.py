"""Pack the shared data for a GPU device run into ./.device/ (git-ignored, carried by the device tool).

The device tool carries at most 64 MiB, so bench-iqoth goes with all its reals but a seeded subset of
train/generated (no test/generated), and chest-ct-4class is stored at 128x128 (the models resize).

    python benchmarks/gpu/pack_data.py [--generated 1000] [--sets bench-iqoth,chest-ct-4class]

`--sets iqoth-256` packs the 1,055 iqoth-256 slices as they are (20 MB) for benchmarks/gpu/ladder.sh.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / ".device" / "data"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--generated", type=int, default=1000)
    p.add_argument("--sets", default="bench-iqoth,chest-ct-4class",
                   help="comma-separated: bench-iqoth, chest-ct-4class, iqoth-256")
    args = p.parse_args()
    sets = {s.strip() for s in args.sets.split(",") if s.strip()}
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    if "iqoth-256" in sets:
        shutil.copytree(SHARED / "iqoth-256", OUT / "iqoth-256")
    if "bench-iqoth" in sets:
        src, dst = SHARED / "bench-iqoth", OUT / "bench-iqoth"
        for sub in ("train/real_used", "train/real_not_used", "test/real_unknown"):
            shutil.copytree(src / sub, dst / sub)
        shutil.copy(src / "test_labels.csv", dst / "test_labels.csv")
        gen = sorted((src / "train/generated").iterdir())
        keep = np.random.default_rng(0).choice(len(gen), min(args.generated, len(gen)), replace=False)
        (dst / "train/generated").mkdir(parents=True)
        for i in sorted(keep):
            shutil.copy(gen[i], dst / "train/generated" / gen[i].name)
    for f in (SHARED / "chest-ct-4class").rglob("*") if "chest-ct-4class" in sets else ():
        if f.suffix.lower() in (".png", ".jpg", ".jpeg"):
            target = OUT / "chest-ct-4class" / f.relative_to(SHARED / "chest-ct-4class")
            target = target.with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(target), cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA))
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"packed {OUT}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
