"""Command line: parses arguments, calls the library, prints. No audit logic lives here."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import SynthleakError, one_line
from .runtime import verbosity

EXIT_USER_ERROR = 2


def _parse_set(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SynthleakError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def _calibration(value: str) -> str:
    """--calibrate value; the American spelling 'neighbors' is accepted for 'neighbours'."""
    return "neighbours" if value == "neighbors" else value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available; default), cpu or cuda[:N]")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress lines (default: print them)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method options (defaults are each method's own)")
    g.add_argument("--feature-space",
                   help="feature space of the distance and density methods (default: each method's own; "
                        "pixels for most; see `synthleak methods`)")
    g.add_argument("--calibrate", choices=("none", "neighbours", "clusters", "non-members"), type=_calibration,
                   help="difficulty calibration of the scores with unlabelled real images (default: each "
                        "method's own: none, except the default recipe; 'neighbors' works too); "
                        "'METHOD+neighbours' in --method does the same for one method")
    g.add_argument("--calibrate-k", type=int, default=100,
                   help="nearest real images in each image's reference (--calibrate neighbours; default 100)")
    g.add_argument("--synthetic-pool", choices=("all", "train"), default="all",
                   help="compare with train+test generated images (all, default) or train/generated only")
    g.add_argument("--epochs", type=int, help="training epochs of the method's model (default: each method's own)")
    g.add_argument("--batch-size", type=int,
                   help="training batch size of the method's model (default: each method's own: 32 for most, "
                        "8 for seed-dclgan, 128 for the copy space)")
    g.add_argument("--image-size", type=int,
                   help="model input size (default: each method's own; smaller is faster on CPU)")
    g.add_argument("--base-filters", type=int,
                   help="width (first layer's filters) of the method's convolutional model (default: each "
                        "method's own: 32 for resnet-ae, 64 for seed-dclgan, 16 for the copy space)")
    g.add_argument("--vit-size", choices=("tiny", "small", "base"),
                   help="ViT of the seed-vit-ae methods: tiny, small or base (ViT-B/16, default)")
    g.add_argument("--weights", help="local pre-trained weights (safetensors or weights-only torch file; default: "
                                     "none, or the method's offline weights)")
    g.add_argument("--encoder", help="encoder checkpoint from `synthleak pretrain` (default: none, trained here)")
    g.add_argument("--clusters", type=int, help="clusters for the seed-ae-* methods (default 2)")
    g.add_argument("--fit-on-test-generated", action="store_true",
                   help="also train models on test/generated (recorded in the output; default: train/ only)")
    g.add_argument("--max-train-images", type=int,
                   help="train models on a seeded subset of this size (default: every synthetic image)")
    g.add_argument("--folds", type=int, default=5,
                   help="cross-validation folds on labelled reals (default 5; fewer when there are fewer "
                        "labelled images or patients per class)")
    g.add_argument("--cache-dir", help="feature/model cache (default ~/.cache/synthleak; 'none' disables)")
    g.add_argument("--workers", type=int, default=2, help="CPU worker threads/processes (default 2)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="decode synthetic images and extract their features here (local, default) or on a Ray "
                        "cluster (ray: RAY_ADDRESS or a local instance; pip install 'synthleak[ray]')")
    g.add_argument("--search", choices=("auto", "exact", "approx"), default="auto",
                   help="nearest-neighbour search: auto (default) is exact unless both the database (>= 100,000) "
                        "and the queries (>= 5,000) are large, then approximate (FAISS IVF-SQ8, recall against exact "
                        "search measured on a sample and written to RUN.json); or always exact / approx")
    g.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="method-specific option (repeatable; default: none; see README, Methods)")


def _add_audit(sub) -> None:
    a = sub.add_parser("audit", help="score and label test reals; print CV (and test) metrics")
    a.add_argument("data", nargs="?", help="challenge-layout folder (or use --train/--test)")
    a.add_argument("--train", help="folder with generated/ and optionally real_used/, real_not_used/ (default: DATA's train/, "
                        "or DATA itself)")
    a.add_argument("--test", help="folder with real_unknown/ (and optionally generated/; default: DATA's test/, or DATA "
                        "itself)")
    a.add_argument("--method",
                   help="method name (default: the default recipe), comma-separated list, 'quick' (all fast ones) "
                        "or 'all'; NAME+neighbours / NAME+clusters adds a difficulty calibration")
    a.add_argument("--out", help="run file to write (<id>,<0|1>), with RUN.scores.csv, RUN.json and RUN.copies.csv "
                                 "beside it; several methods: RUN.<method>.csv (default: nothing is saved)")
    a.add_argument("--scores", help="scores file (<id>,<score>; default RUN.scores.csv)")
    a.add_argument("--labels", help="test labels (<id>,<0|1>) read only to report test metrics (default: none)")
    a.add_argument("--groups", help="<id>,<group> (e.g. patient) for group-aware cross-validation and the "
                                    "verdict's whole-patient relabelling (default: every image its own group)")
    a.add_argument("--groups-from", choices=("dicom",),
                   help="take groups from the DICOM PatientID of each real image (instead of --groups; default: "
                        "off)")
    a.add_argument("--window", default="lung",
                   help="CT window for DICOM CT images: lung (W1500 L-600, default), mediastinum (W350 L50) or W,L")
    a.add_argument("--decision", choices=("auto", "kappa", "f1", "fpr", "rate", "quantile", "mixture", "tail"),
                   default="auto",
                   help="threshold rule (default auto: each method's own: kappa, and for the default recipe "
                        "rate at the labelled member rate when the shift check fires): max kappa / F1 on the "
                        "labelled reals, target FPR, member rate (--member-rate), quantile (the labelled "
                        "threshold's rank carried to the test scores), mixture "
                        "(member rate estimated from the test scores), tail (only above every labelled non-member)")
    a.add_argument("--target-fpr", type=float, default=0.01,
                   help="false-positive rate on the labelled non-members that --decision fpr aims at (default 0.01)")
    a.add_argument("--member-rate", type=float, default=0.5,
                   help="expected share of members among the test reals: the rate rule's, and the fallback "
                        "without labelled reals (default 0.5)")
    a.add_argument("--id-style", choices=("stem", "name"), default="stem",
                   help="run-file ids: stem, the file name without extension (default), or name, with it")
    a.add_argument("--report", help="write an HTML report with visual evidence to this folder (default: none)")
    a.add_argument("--report-single-file", action="store_true",
                   help="inline the report's images (one index.html that can be mailed; default: PNGs beside it)")
    a.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples behind every metric's 95%% CI (default 1000)")
    a.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the dataset-level verdict (default 0.05)")
    a.add_argument("--permutations", type=int, default=2000,
                   help="random relabellings (of whole patients with --groups) behind the verdict's p-value "
                        "(default 2000; the member-closer p uses at most 500)")
    a.add_argument("--debug", action="store_true",
                   help="print the full traceback of a method that fails unexpectedly (without it: one line, the "
                        "traceback in RUN.errors.log, the default); the other methods run on either way")
    _add_common(a)
    _add_model_options(a)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="metrics of a run or scores file against labels")
    e.add_argument("run", help="run file (<id>,<0|1>) or scores file (<id>,<score>)")
    e.add_argument("--labels", required=True, help="labels file <id or file name>,<0|1>")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples behind each 95%% CI (default 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def _add_validate(sub) -> None:
    v = sub.add_parser("validate", help="check a run file against a test folder")
    v.add_argument("run", help="run file (<id>,<0|1>) to check")
    v.add_argument("--test", required=True,
                   help="the folder holding real_unknown/ (DATA/test for a train/test layout, DATA for a one-folder "
                        "layout) or the real_unknown/ folder itself")


def _add_methods(sub) -> None:
    m = sub.add_parser("methods", help="list methods and feature spaces")
    m.add_argument("--details", metavar="NAME", help="a method's (or feature space's) --set keys: type, default, help")


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="build a phantom benchmark, train a small generator, audit it")
    d.add_argument("--out", help="folder for the demo data and outputs (default: a temporary folder)")
    d.add_argument("--epochs", type=int, default=60, help="generator training epochs (default 60)")
    _add_common(d)


def _add_build_bench(sub) -> None:
    b = sub.add_parser("build-bench", help="build a ground-truth benchmark from real images")
    b.add_argument("real", help="folder of real images (recursively), or a class-folder dataset")
    b.add_argument("--out", required=True, help="folder to write the benchmark to (must not exist or be empty)")
    b.add_argument("--groups", help="<id>,<group> (patients); default: each image its own group")
    b.add_argument("--label-groups", help="<id>,<label group> file, or 'folders' (first subfolder): labelled and "
                   "test reals come from disjoint label groups (a shifted benchmark; default: none)")
    b.add_argument("--member-fraction", type=float, default=0.3,
                   help="share of the patients whose images train the generator (default 0.3)")
    b.add_argument("--members", type=int, help="member images (whole groups, as near this count as they allow); "
                   "overrides --member-fraction (default: none)")
    b.add_argument("--labelled-fraction", type=float, default=0.2,
                   help="share of the patients (members and non-members alike) that are labelled (default 0.2)")
    b.add_argument("--n-generated", type=int, default=3000,
                   help="synthetic images (per rung with --rungs; default 3000)")
    b.add_argument("--epochs", type=int, default=300,
                   help="generator training epochs (rae-gmm, dcgan; default 300; ddpm counts steps: its preset's, "
                        "or --rungs)")
    b.add_argument("--generator", choices=("rae-gmm", "dcgan", "ddpm", "noisy-copies"), default="rae-gmm",
                   help="generator trained on the members (default rae-gmm; see README)")
    b.add_argument("--image-size", type=int, help="generator training resolution (dcgan: power of two, default 128; "
                   "ddpm: the preset's, 32 for cpu, 256 for gpu)")
    b.add_argument("--preset", help="ddpm size preset: cpu (default; 32 px, 1.1M-parameter UNet) or gpu "
                   "(256 px, a larger UNet)")
    b.add_argument("--rungs", help="leak ladder (ddpm, dcgan): training step counts, e.g. 500,1500,4000; writes "
                   "OUT/rung-<steps>/ per rung and OUT/ladder.json with the memorisation meter (default: one benchmark)")
    _add_common(b)


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="supervised encoder pre-training on a class-folder dataset")
    p.add_argument("--data", required=True, help="DIR/{train,valid,test}/<class>/* or DIR/<class>/*")
    p.add_argument("--arch", required=True, help="encoder architecture (conv-res, vit)")
    p.add_argument("--out", required=True, help="encoder checkpoint to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    p.add_argument("--image-size", type=int, help="input size (default: the architecture's own)")
    p.add_argument("--lr", type=float, help="learning rate (default: the architecture's own)")
    p.add_argument("--vit-size", choices=("tiny", "small", "base"), default="base",
                   help="ViT size for --arch vit: tiny, small or base (default)")
    p.add_argument("--weights", help="local pre-trained weights to start from (default: none)")
    p.add_argument("--max-images", type=int, help="seeded subset per split (quick runs; default: every image)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="architecture-specific option (repeatable; default: none)")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthleak",
        description="Was this real image used to train the generator that made these synthetic images?")
    parser.add_argument("--version", action="version", version=f"synthleak {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_audit(sub)
    _add_evaluate(sub)
    _add_validate(sub)
    _add_methods(sub)
    _add_demo(sub)
    _add_build_bench(sub)
    _add_pretrain(sub)
    return parser


def _method_config(args):
    from .config import MethodConfig
    from .runtime import choose_device

    return MethodConfig(
        seed=args.seed, device=choose_device(args.device), feature_space=args.feature_space,
        calibrate=args.calibrate, calibrate_k=args.calibrate_k,
        synthetic_pool=args.synthetic_pool, epochs=args.epochs, batch_size=args.batch_size,
        image_size=args.image_size, base_filters=args.base_filters, vit_size=args.vit_size,
        weights=args.weights, encoder=args.encoder, clusters=args.clusters,
        fit_on_test_generated=args.fit_on_test_generated, max_train_images=args.max_train_images,
        cache_dir=args.cache_dir, engine=args.engine, search=args.search, n_folds=args.folds, workers=args.workers,
        quiet=args.quiet,
        artifacts_dir=Path(args.report) if args.report else None, options=_parse_set(args.set),
    )


def cmd_audit(args) -> int:
    from .decide import DecisionRule
    from .methods import DEFAULT_METHOD
    from .pipeline import format_table, run_audit, verdict_lines

    if args.data is None and not (args.train and args.test):
        raise SynthleakError("give a data folder, or both --train DIR and --test DIR")
    cfg = _method_config(args)
    if args.report:
        report_dir = Path(args.report)
        if report_dir.exists() and any(report_dir.iterdir()) and not args.force:
            raise SynthleakError(f"{report_dir}: report folder exists and is not empty (use --force)")
    rule = DecisionRule(args.decision, args.target_fpr, args.member_rate)
    report = run_audit(args.data, train=args.train, test=args.test, methods=args.method or DEFAULT_METHOD, cfg=cfg,
                       decision=rule, labels=args.labels, groups=args.groups, groups_from=args.groups_from,
                       window=args.window, out=args.out, alpha=args.alpha, permutations=args.permutations,
                       scores_out=args.scores, force=args.force, id_style=args.id_style, n_boot=args.bootstrap)
    d = report.data
    for line in verdict_lines(report):
        print(line)
    print(f"data: {d.source}")
    print(f"  generated {len(d.generated)}" + (f" + test generated {len(d.test_generated)}" if d.test_generated else "")
          + (f", labelled reals {len(d.real_used)} used / {len(d.real_not_used)} not used" if d.has_labelled else "")
          + (f", test reals {len(d.real_unknown)}" if d.real_unknown else ""))
    n_dicom = d.count_converted("DICOM")
    if n_dicom:
        print(f"  {n_dicom} DICOM images; CT ones read through the window {d.window}"
              + (", groups from PatientID" if args.groups_from else ""))
    if d.has_labelled:
        from .methods.context import labelled_folds

        print(f"CV: {len(labelled_folds(d, cfg))}-fold stratified" + (" group-aware" if d.groups else "")
              + " on labelled reals")
        if report.shift is not None:
            print(("warning: " if report.shift.shifted else "shift check: ") + report.shift.message())
    if args.labels:
        print(f"test labels: {args.labels} (read only to report test metrics)")
    print()
    print(format_table(report))
    for m in report.methods:
        if m.result is None:
            continue
        print(f"decision [{m.name}]: {m.rule.describe()}" + (f"; why: {m.decision_why}" if m.decision_why else ""))
        for note in m.result.notes:
            print(f"note [{m.name}]: {note}")
        for what, where in m.result.trained_on.items():
            print(f"trained [{m.name}]: {what} on {where}")
        for what, where in m.outputs.items():
            print(f"wrote [{m.name}]: {where}")
    if report.verdict is not None:
        v = report.verdict
        print(f"verdict: {v.test}; from the default recipe's label-free scores (the largest over its candidates, "
              f"in every relabelling too); labelled AUC {v.auc:.3f}")
        if args.out:
            from .pipeline import copies_path

            print(f"wrote copies: {copies_path(Path(args.out))} ({len(v.copies)} synthetic images judged copies "
                  "of labelled members)")
    for w in report.warnings:
        if report.shift is None or w != report.shift.message():  # the shift warning is printed above
            print(f"warning: {w}")
    if args.report:
        from .report import write_report

        from .pipeline import test_labels

        from .pipeline import copies_path

        copies_file = copies_path(Path(args.out)) if args.out and report.verdict is not None else None
        path = write_report(report, Path(args.report), force=args.force, y_test=test_labels(args.labels, report.data),
                            single_file=args.report_single_file, copies_file=copies_file)
        print(f"report: {path}")
    if not args.out:
        print(("only the report was saved" if args.report else "nothing saved") + ": no --out was given, so no run "
              "file, scores, RUN.json or copies list was written (add --out RUN.csv)")
    _print_failures(report, args)
    if all(m.error for m in report.methods):
        return 1
    return 0


def _print_failures(report, args) -> None:
    """One line per unexpected failure (a bug in a method, the control or the verdict); the traceback is
    in RUN.errors.log, or here with --debug."""
    from .pipeline import errors_log_path

    where = [f"traceback in {errors_log_path(Path(args.out))}"] if args.out else []
    where = ["traceback below"] + where if args.debug else where or ["rerun with --debug for the traceback"]
    for f in report.failures:
        print(f"synthleak: error: {f.what} failed: {f.error} ({', '.join(where)})", file=sys.stderr)
        if args.debug:
            print(f.traceback, end="", file=sys.stderr)


def cmd_evaluate(args) -> int:
    from .data.runfile import align, read_labels, read_scores_or_run
    from .metrics import evaluate, format_metrics

    values, binary = read_scores_or_run(args.run)
    labels = read_labels(args.labels)
    _, v, y = align(values, labels, args.run)
    if binary:
        metrics = evaluate(y, pred=v.astype(int), n_boot=args.bootstrap, seed=args.seed)
        kind = "run file (0/1 decisions; give a scores file for AUC and TPR at low FPR)"
    else:
        metrics = evaluate(y, scores=v, n_boot=args.bootstrap, seed=args.seed)
        kind = "scores file (ranking metrics; decision metrics need a run file)"
    print(f"{args.run}: {len(y)} images ({int(y.sum())} used), {kind}")
    print(format_metrics(metrics))
    return 0


def cmd_validate(args) -> int:
    from .data.runfile import validate_run

    n = validate_run(args.run, args.test)
    print(f"{args.run}: valid ({n} rows)")
    return 0


def _method_details(name: str) -> int:
    """`synthleak methods --details NAME`: what NAME is and every --set key it reads."""
    from .config import MethodConfig
    from .features import FEATURE_SPACES, feature_space_options
    from .methods import get_method, option_classes

    if name in FEATURE_SPACES:
        description, classes = FEATURE_SPACES[name][1], feature_space_options(name)
        print(f"feature space {name}: {description}")
    else:
        spec = get_method(name)
        description, classes = spec.description, option_classes(name, MethodConfig())
        print(f"{name}: {description}")
        space = "its own" if not spec.reads_feature_space else f"--feature-space, default {spec.feature_space}"
        print(f"  feature space: {space}; calibration: {spec.calibration}; decision: {spec.decision}"
              + (f" ({spec.shift_decision} when the shift check fires)" if spec.shift_decision else ""))
    lines = [line for cls in dict.fromkeys(classes) for line in cls.describe()]
    print("  --set keys:" if lines else "  --set keys: none")
    for line in lines:
        print(f"    {line}")
    return 0


def cmd_methods(args) -> int:
    from .features import FEATURE_SPACES
    from .methods import DEFAULT_METHOD, METHODS

    if args.details:
        return _method_details(args.details)

    width = max(len(n) for n in METHODS)
    print("methods (--method NAME; 'quick' = all not marked slow, 'all' = every method):")
    # the default recipe first: it is what `audit` runs without --method
    for name in sorted(METHODS, key=lambda n: n != DEFAULT_METHOD):
        spec = METHODS[name]
        tag = " [slow]" if spec.slow else ""
        tag += " (what audit runs without --method)" if name == DEFAULT_METHOD else ""
        print(f"  {name:<{width}}  {spec.description}{tag}")
    width = max(len(n) for n in FEATURE_SPACES)
    print("\nfeature spaces (--feature-space NAME, for nearest, nearest-calibrated, nearest-local, domias, ensemble, "
          "control-real-only):")
    for name, (_, desc) in FEATURE_SPACES.items():
        print(f"  {name:<{width}}  {desc}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .runtime import choose_device

    return run_demo(out=Path(args.out) if args.out else None, seed=args.seed, device=choose_device(args.device),
                    epochs=args.epochs, force=args.force, quiet=args.quiet)


def cmd_build_bench(args) -> int:
    from .bench.folder import build_from_folder
    from .runtime import choose_device

    summary = build_from_folder(
        Path(args.real), Path(args.out), groups=args.groups, member_fraction=args.member_fraction,
        labelled_fraction=args.labelled_fraction, n_generated=args.n_generated, epochs=args.epochs,
        generator=args.generator, seed=args.seed, device=choose_device(args.device), quiet=args.quiet,
        force=args.force, label_groups=args.label_groups, image_size=args.image_size, members=args.members,
        preset=args.preset, rungs=args.rungs)
    for rung in summary.get("ladder", []):
        auc = rung["nearest_test_auc"]
        print(f"rung-{rung['steps']}: memorised_share {rung['memorised_share']:.3f}, member_closer_share "
              f"{rung['member_closer_share']:.3f}, nearest test AUC {auc['value']:.3f} "
              f"[{auc['low']:.3f}, {auc['high']:.3f}]")
    return 0


def cmd_pretrain(args) -> int:
    from .config import PretrainConfig
    from .features import ENCODER_ARCHS, load_object
    from .runtime import choose_device

    if args.arch not in ENCODER_ARCHS:
        raise SynthleakError(f"--arch {args.arch!r}: unknown (choose from {', '.join(ENCODER_ARCHS)})")
    cfg = PretrainConfig(data=Path(args.data), arch=args.arch, out=Path(args.out), epochs=args.epochs,
                         batch_size=args.batch_size, image_size=args.image_size, lr=args.lr,
                         vit_size=args.vit_size, weights=args.weights, seed=args.seed,
                         device=choose_device(args.device), force=args.force, quiet=args.quiet,
                         max_images=args.max_images, options=_parse_set(args.set))
    summary = load_object("synthleak.features.pretrain:run_pretrain")(cfg)
    for k, v in summary.items():
        print(f"{k}: {v}")
    return 0


COMMANDS = {"audit": cmd_audit, "evaluate": cmd_evaluate, "validate": cmd_validate, "methods": cmd_methods,
            "demo": cmd_demo, "build-bench": cmd_build_bench, "pretrain": cmd_pretrain}


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"synthleak: warning: {one_line(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warnings
    try:
        with verbosity(getattr(args, "quiet", False)):  # --quiet: the "synthleak" logger's level for the command
            return COMMANDS[args.command](args)
    except SynthleakError as exc:
        print(f"synthleak: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("synthleak: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
