"""`synthleak demo`: a complete audit on data synthleak makes itself, with no files and no network.

Procedural chest phantoms (120 patients x 2 slices) are split by patient into members and
non-members; a small generator (regularised autoencoder + latent Gaussian mixture) is trained on the
members for a fixed 60 epochs (under a minute on 2 CPU cores); its samples, the labelled reals and the test reals are written in the
challenge layout with ground truth, then the fast methods are audited against it.
"""
from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path

from .bench.build import BenchSpec, build_benchmark
from .bench.phantoms import make_phantoms
from .config import MethodConfig
from .runtime import log, seed_everything, verbosity

DEMO_METHODS = "default,nearest,nearest-calibrated,control-real-only"


def run_demo(out: Path | None = None, seed: int = 0, device: str = "cpu", epochs: int = 60,
             force: bool = False, quiet: bool = False, n_patients: int = 120, slices: int = 2) -> int:
    with verbosity(quiet):
        from .pipeline import format_table, run_audit, verdict_lines

        start = time.perf_counter()
        if out is None:
            out = Path(tempfile.mkdtemp(prefix="synthleak-demo-"))
        out = Path(out)
        data_dir = out / "data"
        seed_everything(seed)
        log(f"demo: making {n_patients} phantom patients x {slices} slices")
        images, groups = make_phantoms(n_patients, slices, seed=seed)
        spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.35, n_generated_train=300, n_generated_test=100,
                         generator="rae-gmm", generator_epochs=epochs, seed=seed)
        build_benchmark(images, groups, data_dir, spec, device=device, force=force)
        cfg = MethodConfig(seed=seed, device=device, cache_dir="none")
        report = run_audit(data_dir, methods=DEMO_METHODS, cfg=cfg, labels=data_dir / "test_labels.csv",
                           groups=data_dir / "groups.csv", out=out / "runs" / "run.csv", force=True)
        for line in verdict_lines(report):
            print(line)
        print(f"demo data: {data_dir} (train/, test/, test_labels.csv, groups.csv)")
        print(f"run files: {out / 'runs'}")
        print()
        print(format_table(report))
        for w in report.warnings:
            print(f"warning: {w}")
        best = report.by_name("nearest").succeeded().test
        print()
        print(f"members are {'detectable' if best['auc'].low > 0.5 else 'NOT clearly detectable'}: "
              f"nearest-synthetic test AUC {best['auc']} (0.5 = chance); "
              f"demo took {time.perf_counter() - start:.0f}s")
        print()
        print(next_command(data_dir, out))
        return 0


def next_command(data_dir: Path, out: Path) -> str:
    """What to run next on the demo's data: the README's headline audit with the patient groups (without
    them the real-only control rightly warns: two slices of one patient on both sides of a fold leak) and
    the test labels (for test metrics and the report's ROC curves)."""
    q = lambda p: shlex.quote(str(p))
    return ("next: audit the demo's data yourself, with its patient groups (without --groups the real-only control "
            "warns that slices of one patient leak across folds) and its test labels:\n"
            f"  synthleak audit {q(data_dir)} --groups {q(data_dir / 'groups.csv')} "
            f"--labels {q(data_dir / 'test_labels.csv')} --out {q(out / 'runs' / 'mine.csv')} "
            f"--report {q(out / 'report')}")
