"""Feature spaces for copy detection and membership: pixels, radiomics, effnet-lite0 and copy (see results/copy-space.md).

For every benchmark and feature space:
(a) membership: test AUC (95% bootstrap CI, by patient when groups are known) of `nearest` and
    `density-ratio`, through run_method exactly as `synthleak audit --feature-space SPACE` runs them;
(b) the copy finder and the verdict (synthleak.leakage.verdict) with member = train/real_used,
    non-member = train/real_not_used: the permutation p of the `nearest` scores of the labelled reals
    (label-free), copy share with its CI, memorised share, authenticity and C_T.

Benchmarks:
- bench-iqoth: ../shared/data/bench-iqoth (rae-gmm generator; weak leakage).
- noisy-copies: iqoth-256 split by pseudo-patient, generator "noisy-copies" (every synthetic image IS a
  perturbed member: 0.85 x member + 0.15 x another member, shifted up to 6 px, blurred, noisy), so the
  copy share should approach the share of synthetic images whose source is a *labelled* member.
- noisy-copies-null: the same reals, but the synthetic images are noisy copies of *outsider* patients
  (neither members nor non-members): nothing was copied, so copy share and verdict must stay low.
- dev (when present): /work/devbench/* and /work/devbench-dcgan/* (rae-gmm / DCGAN generators).

Features and trained models are cached (--cache-dir), so a rerun costs minutes. `--benches core` (the
default) runs the first three with all four spaces; `--benches all` adds every dev benchmark, or name
them (`--benches devbench-dcgan/iqoth-random,...`). Dev benchmarks get the spaces of --dev-spaces
(pixels, copy): effnet-lite0 (5-14 images/s on 2 busy cores) and radiomics (no copies found and chance
membership AUC on the core benchmarks) would add ~15 min each.

    OMP_NUM_THREADS=2 nice python benchmarks/bench_copy_space.py [--benches core|all|NAME,...] [--timing]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthleak.bench.build import BenchSpec, build_benchmark
from synthleak.bench.generator import NoisyCopyGenerator
from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.data.images import load_folder
from synthleak.leakage import verdict
from synthleak.methods import run_method
from synthleak.features.embedding import training_synthetic
from synthleak.methods.context import AuditContext
from synthleak.metrics import evaluate
from synthleak.pipeline import test_labels

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
SPACES = ("pixels", "radiomics", "effnet-lite0", "copy")
DEV_SPACES = ("pixels", "copy")
CORE = ("bench-iqoth", "noisy-copies", "noisy-copies-null")
DEV_ROOTS = (Path("/work/devbench"), Path("/work/devbench-dcgan"))
NOISY_SPEC = BenchSpec(member_fraction=0.5, labelled_fraction=0.35, n_generated_train=1000, n_generated_test=500,
                       generator="noisy-copies", seed=0)


@dataclass
class Row:
    space: str
    nearest: str = ""
    density: str = ""
    p: str = ""
    copy_share: str = ""
    memorised: str = ""
    authenticity: str = ""
    ct: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- benchmarks

def _iqoth_reals() -> tuple[np.ndarray, np.ndarray]:
    """iqoth-256 images and pseudo-patient ids (benchmarks/build_dev_benches.py's grouping)."""
    sys.path.insert(0, str(HERE))
    from build_dev_benches import iqoth_pseudo_patients

    root = SHARED / "iqoth-256"
    groups = iqoth_pseudo_patients(root)
    sets = [load_folder(folder, warn=False) for folder in sorted(p for p in root.iterdir() if p.is_dir())]
    pixels = np.concatenate([s.pixels for s in sets])
    ids = [i for s in sets for i in s.ids]
    return pixels, np.array([groups[i] for i in ids])


def build_noisy(work: Path, name: str) -> Path:
    """noisy-copies (copies of members) or noisy-copies-null (copies of outsider patients), built once."""
    out = work / name
    if (out / "test_labels.csv").exists():
        return out
    images, groups = _iqoth_reals()
    if name == "noisy-copies":
        build_benchmark(images, groups, out, NOISY_SPEC, quiet=True)
        return out
    rng = np.random.default_rng(NOISY_SPEC.seed + 1)
    patients = rng.permutation(np.unique(groups))
    outsider = np.isin(groups, patients[: len(patients) // 3])
    synthetic = NoisyCopyGenerator(seed=NOISY_SPEC.seed).fit(images[outsider]).sample(
        NOISY_SPEC.n_generated_train + NOISY_SPEC.n_generated_test)
    build_benchmark(images[~outsider], groups[~outsider], out, NOISY_SPEC, quiet=True, synthetic=synthetic)
    return out


def benchmarks(choice: str, work: Path) -> list[tuple[str, Path, tuple[str, ...]]]:
    """(name, folder, spaces) of the chosen benchmarks that exist (dev ones only when built)."""
    dev = [(f"{root.name}/{d.name}", d) for root in DEV_ROOTS if root.is_dir()
           for d in sorted(root.iterdir()) if d.is_dir() and (d / "test_labels.csv").exists()]
    wanted = set(CORE) if choice == "core" else set(CORE) | {n for n, _ in dev} if choice == "all" \
        else {c.strip() for c in choice.split(",")}
    out = []
    if "bench-iqoth" in wanted:
        out.append(("bench-iqoth", SHARED / "bench-iqoth", SPACES))
    for name in ("noisy-copies", "noisy-copies-null"):
        if name in wanted:
            out.append((name, build_noisy(work, name), SPACES))
    out += [(n, d, DEV_SPACES) for n, d in dev if n in wanted]
    return out


# ---------------------------------------------------------------------------------- measurements

def _ci(metric) -> str:
    return f"{metric.value:.3f} [{metric.low:.2f}, {metric.high:.2f}]"


def measure(folder: Path, space: str, args) -> tuple[Row, dict]:
    groups = folder / "groups.csv"
    data = discover(folder, groups=groups if groups.exists() else None)
    y_test = test_labels(folder / "test_labels.csv", data)
    test_groups = np.array([data.groups.get(i, i) for i in data.real_unknown.ids]) if data.groups else None
    cfg = MethodConfig(feature_space=space, cache_dir=args.cache_dir, quiet=not args.verbose, seed=0,
                       options=dict(args.set))
    row, info = Row(space), {}
    t0 = time.perf_counter()
    audit = AuditContext(data, cfg)
    embedding = audit.embedding(cfg)  # trains / loads the model; every method below shares it
    syn, lab = embedding.synthetic, embedding.labelled
    info["features_s"] = time.perf_counter() - t0
    if space == "copy":
        info["copy_model"] = {k: embedding.model_meta.get(k) for k in
                              ("n_images", "epochs", "image_size", "final_nt_xent", "final_pair_acc",
                               "seconds_per_epoch")}
    scores = {}
    for method in ("nearest", "density-ratio"):
        res = run_method(method, audit, cfg)
        scores[method] = res.labelled_scores
        metric = evaluate(y_test, scores=res.test_scores, n_boot=1000, seed=0, groups=test_groups)["auc"]
        setattr(row, "nearest" if method == "nearest" else "density", _ci(metric))
    y_lab = data.labelled()[1]
    lab_groups = data.labelled_groups()
    v = verdict(scores["nearest"], y_lab, groups=lab_groups, synthetic_features=syn,
                member_features=lab[y_lab == 1], nonmember_features=lab[y_lab == 0],
                member_groups=None if lab_groups is None else lab_groups[y_lab == 1], seed=0)
    row.p = f"{v.p_value:.4f}"
    low, high = v.copy_share_ci
    row.copy_share = f"{100 * v.copy_share:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
    row.memorised = f"{100 * v.memorised_share:.1f}%"
    row.authenticity = f"{100 * v.authenticity:.1f}%"
    row.ct = "n/a" if v.ct is None else f"{v.ct:.1f}"
    row.seconds = time.perf_counter() - t0
    info["n_synthetic"] = len(syn)
    return row, info


def copy_share_ceiling(folder: Path) -> str:
    """Noisy copies pick a member uniformly: the expected share of synthetic images copying a labelled one."""
    source = json.loads((folder / "SOURCE.json").read_text())
    if source.get("generator") != "noisy-copies":
        return ""
    return f"{100 * source['train/real_used'] / source['members']:.0f}%"


def timing_run(args) -> str:
    """Train the default copy encoder on the 3,000 synthetic images of bench-iqoth (train + test
    generated) without cache, and report the wall time: the CPU budget claim of features/copy.py."""
    data = discover(SHARED / "bench-iqoth")
    cfg = MethodConfig(feature_space="copy", fit_on_test_generated=True, cache_dir="none", quiet=not args.verbose)
    from synthleak.features import get_extractor

    images, desc = training_synthetic(data, cfg)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    ext = get_extractor("copy", cfg).fit(images, desc)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = len(ext.transform(data.synthetic("all")))
    read_s = time.perf_counter() - t1
    epochs = ext.meta["epochs"]
    return (f"Training the default copy encoder ({epochs} epochs, {ext.settings.image_size} px, "
            f"{ext.settings.depth} widths {ext.settings.base_filters}-{8 * ext.settings.base_filters}, batch "
            f"{ext.settings.batch_size}) on {desc}: **{seconds / 60:.1f} min** wall "
            f"({len(images) * epochs / seconds:.0f} images/s; load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; final NT-Xent {ext.meta['final_nt_xent']:.3f}, pair accuracy "
            f"{ext.meta['final_pair_acc']:.3f}). Read-out: {n} images in {read_s:.1f} s.")


# ---------------------------------------------------------------------------------- report

HEADER = """# Feature spaces for copy detection: pixels, radiomics, effnet-lite0, copy

Last generated by `{command}` ({when}; {machine}); sections of benchmarks not in that run are kept from
earlier runs (each says when it ran). Every number comes from one seed (0).

- **nearest / density-ratio**: test AUC with its 95% bootstrap CI (by patient where groups are known), the
  method run by `run_method` exactly as `synthleak audit --feature-space SPACE` runs it.
- **p**: the verdict's permutation p-value (2,000 relabellings, by patient where known) for `nearest` scores of the
  labelled reals (label-free scores).
- **copy share** (Dar et al.'s threshold: 95th percentile of member-to-nearest-non-member similarity) with its CI,
  **memorised** (Gu et al.), **authenticity** (Alaa et al.; lower = more copying), **C_T** (Meehan et al.; << 0 =
  copying): synthetic images against member = train/real_used, non-member = train/real_not_used (leakage.py).
- **s**: wall seconds for the space on that benchmark on this run (model training and feature extraction are
  cached: a space read from the cache shows only the audit's cost).
"""


TIMING_TITLE = "Training time (copy space)"
READING = "Reading"


def _sections(text: str) -> dict[str, str]:
    """'## title' sections of a previous report, by title (the header above the first one dropped)."""
    return {chunk.split("\n", 1)[0].strip(): "## " + chunk.rstrip() + "\n" for chunk in text.split("\n## ")[1:]}


def write_report(path: Path, sections: dict[str, str], timing: str | None) -> None:
    """The header, then the previous report's sections with the ones measured now replaced (a rerun of
    some benchmarks keeps the others), the hand-written 'Reading' section last."""
    machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, load average {os.getloadavg()[0]:.1f} at the end"
    command = "python benchmarks/bench_copy_space.py " + " ".join(sys.argv[1:])
    merged = _sections(path.read_text()) if path.exists() else {}
    if timing:
        merged[TIMING_TITLE] = f"## {TIMING_TITLE}\n\n{timing}\n"
    merged.update(sections)
    reading = merged.pop(READING, None)
    rank = {TIMING_TITLE: 0, **{name: 1 + i for i, name in enumerate(CORE)}}
    order = sorted(merged, key=lambda title: rank.get(title, len(rank)))  # timing, core, then dev in run order
    text = HEADER.format(command=command.strip(), when=time.strftime("%Y-%m-%d"), machine=machine)
    text += "".join("\n" + merged[title] for title in order)
    if reading:
        text += "\n" + reading
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benches", default="core", help="core, all, or a comma list of names")
    ap.add_argument("--spaces", help="override the spaces (comma list) for every benchmark")
    ap.add_argument("--dev-spaces", default=",".join(DEV_SPACES))
    ap.add_argument("--cache-dir", default=None, help="feature / model cache (default: synthleak's)")
    ap.add_argument("--work", default="/tmp/synthleak-copy-bench", help="where the noisy-copies benchmarks are built")
    ap.add_argument("--timing", action="store_true", help="also time an uncached 3,000-image training run")
    ap.add_argument("--out", default=str(HERE / "results" / "copy-space.md"))
    ap.add_argument("--set", action="append", default=[], type=lambda kv: tuple(kv.split("=", 1)),
                    metavar="KEY=VALUE", help="a --set option for every space (e.g. copy_depth=resnet10)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    for name, folder, spaces in benchmarks(args.benches, work):
        if args.spaces:
            spaces = tuple(args.spaces.split(","))
        elif name not in CORE:
            spaces = tuple(args.dev_spaces.split(","))
        t_bench = time.perf_counter()
        rows, infos = [], {}
        for space in spaces:
            print(f"{name}: {space} ...", file=sys.stderr, flush=True)
            row, info = measure(folder, space, args)
            rows.append(row)
            infos[space] = info
            print(f"  {row}", file=sys.stderr, flush=True)
        source = folder / "SOURCE.json"
        about = json.loads(source.read_text()) if source.exists() else {}
        lines = [f"## {name}\n", f"Run {time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}. "
                 f"`{folder}`: {infos[spaces[0]]['n_synthetic']} synthetic images; "
                 f"generator {about.get('generator', 'rae-gmm (see SOURCE.md)')}."]
        ceiling = copy_share_ceiling(folder) if source.exists() else ""
        if ceiling:
            lines.append(f"Expected copy share if every copy of a labelled member were found: about {ceiling} "
                         "(labelled members / members).")
        if "copy" in infos:
            m = infos["copy"]["copy_model"]
            lines.append(f"Copy encoder: {m['n_images']} training images, {m['epochs']} epochs at {m['image_size']} px, "
                         f"final NT-Xent {m['final_nt_xent']:.3f}, pair accuracy {m['final_pair_acc']:.3f}, "
                         f"{m['seconds_per_epoch'] * m['epochs'] / 60:.1f} min training when it was trained.")
        lines += ["", "| space | nearest AUC | density-ratio AUC | p (nearest) | copy share | memorised | authenticity "
                      "| C_T | s |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.space} | {r.nearest} | {r.density} | {r.p} | {r.copy_share} | {r.memorised} | "
                  f"{r.authenticity} | {r.ct} | {r.seconds:.0f} |" for r in rows]
        lines.append(f"\n({time.perf_counter() - t_bench:.0f} s for this benchmark)\n")
        sections[name] = "\n".join(lines)
    timing = timing_run(args) if args.timing else None
    write_report(Path(args.out), sections, timing)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
