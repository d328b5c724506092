"""Scale: wall time and peak memory of a streamed audit with 7k, 50k and 200k synthetic images.

    python benchmarks/bench_scale.py [--sizes 7000,50000,200000] [--reals ../shared/data/bench-iqoth]
                                     [--tmp DIR] [--in-memory-max 50000]

For each size, the synthetic set is the labelled benchmark's own generated images plus procedural
images (benchmarks/scale_data.py) written as PNGs to a temporary folder, beside the benchmark's
reals (symlinked). Each audit is `synthleak audit --method nearest --feature-space pixels` in a
fresh process under /usr/bin/time (peak RSS): streamed with exact search, streamed with approximate
search, a second exact audit that finds its features in the store, and (up to --in-memory-max) the
same audit with every synthetic image loaded into memory through the library, whose scores must
equal the streamed exact ones. Writes benchmarks/results/scale.md; temporary folders are removed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import publish  # noqa: E402
from scale_data import synthetic_images  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
DIMS = 64 * 64
#: the issue's memory budget beyond the float32 feature matrix
HEADROOM_GB = 1.5

IN_MEMORY = """
import sys
from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.pipeline import run_audit
data = discover(sys.argv[1])
data.generated = data.generated.materialise()
if data.test_generated is not None:
    data.test_generated = data.test_generated.materialise()
run_audit(data, methods="nearest", cfg=MethodConfig(feature_space="pixels", cache_dir="none", quiet=True,
          search="exact"), labels=sys.argv[2], out=sys.argv[3], n_boot=200)
"""


def build_layout(root: Path, reals: Path, n: int) -> int:
    """train/ and test/ folders: the benchmark's reals and generated images (links) + procedural PNGs."""
    for split, folders in (("train", ("real_used", "real_not_used")), ("test", ("real_unknown",))):
        (root / split).mkdir(parents=True)
        for f in folders:
            (root / split / f).symlink_to((reals / split / f).resolve(), target_is_directory=True)
        (root / split / "generated").mkdir()
        for p in sorted((reals / split / "generated").iterdir()):
            (root / split / "generated" / p.name).symlink_to(p.resolve())
    own = sum(1 for _ in (reals / "train" / "generated").iterdir()) + sum(1 for _ in (reals / "test" / "generated").iterdir())
    made = 0
    for batch in synthetic_images(max(0, n - own)):
        for im in batch:
            cv2.imwrite(str(root / "train" / "generated" / f"proc_{made:07d}.png"), im)
            made += 1
    return own + made


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS GiB, CPU seconds: user + system) of one command under /usr/bin/time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M CPU_S=%U+%S", *cmd], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss, user, system = re.findall(r"MAXRSS_KB=(\d+) CPU_S=([\d.]+)\+([\d.]+)", proc.stderr)[-1]
    return wall, int(rss) / 2**20, float(user) + float(system)


def scores(path: Path) -> np.ndarray:
    return np.array([float(line.split(",")[1]) for line in path.read_text().split()])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="7000,50000,200000")
    p.add_argument("--reals", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "bench-iqoth"))
    p.add_argument("--tmp", default=None, help="folder for the temporary images (default: the system's)")
    p.add_argument("--in-memory-max", type=int, default=50_000)
    args = p.parse_args()
    reals = Path(args.reals)
    if not (reals / "test_labels.csv").exists():
        raise SystemExit(f"{reals}: not a labelled benchmark (no test_labels.csv)")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    rows, notes = [], []
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="synthleak-scale-") as tmp:
            tmp = Path(tmp)
            start = time.perf_counter()
            n_syn = build_layout(tmp / "data", reals, n)
            written = time.perf_counter() - start
            print(f"{n_syn} synthetic images written in {written:.0f}s", flush=True)
            feature_gb = n_syn * DIMS * 4 / 2**30
            base = [sys.executable, "-m", "synthleak.cli", "audit", str(tmp / "data"), "--method", "nearest",
                    "--feature-space", "pixels", "--labels", str(reals / "test_labels.csv"), "--bootstrap", "200",
                    "--quiet"]
            runs = {}
            for name, extra in (("exact", ["--search", "exact", "--cache-dir", "none"]),
                                ("approx", ["--search", "approx", "--cache-dir", "none"]),
                                ("exact, store built", ["--search", "exact", "--cache-dir", str(tmp / "cache")]),
                                ("exact, store cached", ["--search", "exact", "--cache-dir", str(tmp / "cache")])):
                out = tmp / f"{name.split(',')[0]}-{len(runs)}.csv"
                wall, rss, cpu = timed_run([*base, *extra, "--out", str(out)], env)
                summary = json.loads(out.with_suffix(".json").read_text())
                runs[name] = (wall, rss, out, summary, cpu)
                print(f"{n_syn} {name}: {wall:.1f}s wall, {cpu:.1f}s CPU, {rss:.2f} GiB", flush=True)
            in_memory = None
            if n_syn <= args.in_memory_max:
                out = tmp / "in-memory.csv"
                wall, rss, cpu = timed_run([sys.executable, "-c", IN_MEMORY, str(tmp / "data"),
                                            str(reals / "test_labels.csv"), str(out)], env)
                in_memory = (wall, rss, np.array_equal(scores(out), scores(runs["exact"][2])), cpu)
                print(f"{n_syn} in memory: {wall:.1f}s, {cpu:.1f}s CPU, {rss:.2f} GiB, equal={in_memory[2]}",
                      flush=True)
            shutil.rmtree(tmp / "data")
        exact, approx = runs["exact"][3], runs["approx"][3]
        search = next(s for s in approx["neighbour_search"] if s["mode"] == "approx")
        rows.append({
            "n": n_syn, "feature_gb": feature_gb, "write_s": written,
            "exact_s": runs["exact"][0], "exact_gb": runs["exact"][1], "exact_cpu": runs["exact"][4],
            "approx_s": runs["approx"][0], "approx_gb": runs["approx"][1], "approx_cpu": runs["approx"][4],
            "built_s": runs["exact, store built"][0], "cached_s": runs["exact, store cached"][0],
            "cached_gb": runs["exact, store cached"][1], "cached_cpu": runs["exact, store cached"][4],
            "build_s": search.get("build_seconds"), "nprobe": f"{search.get('nprobe')}/{search.get('nlist')}",
            "auc_exact": exact["test"]["auc"]["value"], "auc_approx": approx["test"]["auc"]["value"],
            "recall": search["recall"], "index": search["index"],
            "in_memory": in_memory,
        })
    lines = [
        "# Scale: streamed synthetic images, exact and approximate search", "",
        f"- `synthleak audit --method nearest --feature-space pixels` (64x64 = {DIMS}-d), 200 bootstrap resamples, "
        f"{os.cpu_count()} CPU cores shared with other work (times vary by 10-20% between runs)",
        f"- synthetic = {reals.name}'s 3,000 generated images + procedural PNGs (benchmarks/scale_data.py); reals: "
        f"{reals.name}'s 200 labelled + 400 test images; test AUC from its test_labels.csv",
        "- each audit is a fresh process; peak RSS and CPU time (user + system) from /usr/bin/time; `--cache-dir "
        "none` (store in a temporary folder) unless noted; 'store cached': a second audit with a cache folder "
        "whose store a first one built (not decoding any synthetic image)",
        f"- load average during the run: {os.getloadavg()[0]:.1f} (2 cores shared with other workers): wall times "
        "are inflated and noisy, CPU times much less so",
        f"- budget: peak RSS <= float32 feature matrix + {HEADROOM_GB} GB (GiB here)", "",
        "| synthetic | features GiB | exact: wall s / CPU s / peak GiB | within budget | approx: wall s / CPU s / "
        "peak GiB | index build s, nprobe/nlist | recall (sample) | test AUC exact / approx | store cached: wall s / CPU s "
        "/ peak GiB | in memory: wall s / CPU s / peak GiB, scores equal |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = r["feature_gb"] + HEADROOM_GB
        # exact search (the default) and approximate search judged apart: an IVF index holds its own codes
        ok = (f"exact {'yes' if max(r['exact_gb'], r['cached_gb']) <= budget else 'NO'}, "
              f"approx {'yes' if r['approx_gb'] <= budget else 'NO'}")
        mem = (f"{r['in_memory'][0]:.1f} / {r['in_memory'][3]:.1f} / {r['in_memory'][1]:.2f}, "
               f"{'yes' if r['in_memory'][2] else 'NO'}" if r["in_memory"] else "not run (the pixels alone would "
               f"take {r['n'] * 65536 / 2**30:.1f} GiB)")
        lines.append(f"| {r['n']:,} | {r['feature_gb']:.2f} | {r['exact_s']:.1f} / {r['exact_cpu']:.1f} / "
                     f"{r['exact_gb']:.2f} | {ok} (<= {budget:.2f}) | {r['approx_s']:.1f} / {r['approx_cpu']:.1f} / "
                     f"{r['approx_gb']:.2f} | {r['build_s']:.0f}, {r['nprobe']} | {r['recall']:.4f} | "
                     f"{r['auc_exact']:.4f} / {r['auc_approx']:.4f} | {r['cached_s']:.1f} / {r['cached_cpu']:.1f} / "
                     f"{r['cached_gb']:.2f} | {mem} |")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        cpu_slope = (b["exact_cpu"] - a["exact_cpu"]) / (b["n"] - a["n"])
        lines += ["", f"CPU time of the exact audit grows by {cpu_slope * 1000:.2f} s per 1,000 synthetic images "
                      f"between {a['n']:,} and {b['n']:,} (decoding dominates); at 1,000,000 that is about "
                      f"{(b['exact_cpu'] + cpu_slope * (1_000_000 - b['n'])) / 3600:.1f} CPU hours."]
        slope = (b["exact_s"] - a["exact_s"]) / (b["n"] - a["n"])
        rss_slope = (b["exact_gb"] - a["exact_gb"]) / (b["n"] - a["n"])
        at_1m = b["exact_s"] + slope * (1_000_000 - b["n"])
        gb_1m = b["exact_gb"] + rss_slope * (1_000_000 - b["n"])
        lines += ["", f"Extrapolation to 1,000,000 synthetic images (exact search, slope between {a['n']:,} and "
                      f"{b['n']:,}): {slope * 1000:.2f} s per 1,000 images -> about {at_1m / 60:.0f} minutes; peak "
                      f"RSS slope {rss_slope * 1e6:.2f} GB per million -> about {gb_1m:.1f} GB (the float32 pixel "
                      f"features alone are {1_000_000 * DIMS * 4 / 2**30:.1f} GB on disk)."]
    written = ", ".join(f"{r['write_s']:.0f}s" for r in rows)
    notes.append(f"Writing the procedural PNGs took {written} (not part of the audit times).")
    publish("scale.md", [*lines, "", *notes])
    return 0


if __name__ == "__main__":
    sys.exit(main())
