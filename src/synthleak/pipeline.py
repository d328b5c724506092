"""The audit: load data, run methods, decide, measure, write run files. The CLI is a thin shell over this."""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .attacks.knn import SearchLog
from .config import MethodConfig
from .data.layout import AuditData, discover
from .data.runfile import atomic_write_text, check_writable, read_labels, run_text, scores_text
from .decide import AUTO, DecisionRule, cv_decisions
from .errors import DataError, SynthleakError, UnreadableInputError, one_line
from .methods import (CONTROL, DEFAULT_METHOD, METHODS, MethodResult, check_method_options, get_method, method_config,
                      run_method)
from .methods.context import AuditContext
from .metrics import Metric, evaluate, score_metrics
from .runtime import log, seed_everything, verbosity
from .shift import ShiftCheck, check_shift

if TYPE_CHECKING:
    from .leakage import Verdict

#: relabellings of the verdict's permutation test (the issue's floor: at least 2,000)
DEFAULT_PERMUTATIONS = 2000

#: control AUC (CV on labelled reals) above which the audit warns that labels leak through the reals
CONTROL_WARN_AUC = 0.6


@dataclass
class MethodReport:
    name: str
    rule: DecisionRule = field(default_factory=DecisionRule)
    seconds: float = 0.0
    result: MethodResult | None = None
    cv: dict[str, Metric] | None = None
    threshold: float | None = None
    test_pred: np.ndarray | None = None
    test: dict[str, Metric] | None = None
    error: str | None = None
    variants_cv_auc: dict[str, float] = field(default_factory=dict)
    variants_test_auc: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    #: what the method's neighbour searches did (exact / approximate, recall), see attacks/knn.py
    search: list[dict] = field(default_factory=list)
    #: the full traceback when the method failed with an unexpected exception (a bug, not a user error)
    traceback: str | None = None
    #: why this decision rule (the user's, the method's own, or its rule for shifted test reals)
    decision_why: str = ""

    def succeeded(self) -> "MethodReport":
        """This report, or a RuntimeError naming the failure (for library callers that need the result)."""
        if self.error is not None:
            raise RuntimeError(f"method {self.name} failed: {self.error}")
        return self


@dataclass
class Failure:
    """An unexpected exception caught in one part of the audit so that the rest still runs."""

    what: str
    #: one line: the exception type and message
    error: str
    traceback: str


@dataclass
class AuditReport:
    data: AuditData
    methods: list[MethodReport]
    decision: DecisionRule
    warnings: list[str] = field(default_factory=list)
    control: MethodReport | None = None
    #: are the labelled reals like the test reals? (None without both)
    shift: ShiftCheck | None = None
    #: dataset-level verdict from the default recipe's label-free scores (None without labelled reals)
    verdict: "Verdict | None" = None
    #: why no verdict could be given (e.g. a patient carrying both labels)
    verdict_error: str | None = None
    #: unexpected exceptions caught in a method, the control or the verdict (RUN.errors.log)
    failures: list[Failure] = field(default_factory=list)
    #: the audit's shared folds and embeddings (the report's evidence reuses its pixel embedding)
    audit: AuditContext | None = None

    def rows(self) -> list[MethodReport]:
        """The requested methods, then the reference control when it was run only as a check."""
        if self.control is not None and self.control not in self.methods:
            return [*self.methods, self.control]
        return list(self.methods)

    def by_name(self, name: str) -> MethodReport:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)


def expand_methods(spec: str | list[str]) -> list[str]:
    """'all' = every method; 'quick' = every method not marked slow; else a comma-separated list
    (names may carry a calibration variant: 'nearest+neighbours')."""
    names = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",") if s.strip()]
    out: list[str] = []
    for n in names:
        if n == "all":
            out += list(METHODS)
        elif n == "quick":
            out += [m for m, s in METHODS.items() if not s.slow]
        else:
            get_method(n)
            out.append(n)
    seen: set[str] = set()
    return [m for m in out if not (m in seen or seen.add(m))]


def copies_path(out: Path) -> Path:
    """RUN.copies.csv: one per audit, beside the run file(s)."""
    base = out.with_suffix("") if out.suffix else out
    return Path(f"{base}.copies.csv")


def errors_log_path(out: Path) -> Path:
    """RUN.errors.log: the tracebacks of whatever failed unexpectedly, beside the run file(s)."""
    base = out.with_suffix("") if out.suffix else out
    return Path(f"{base}.errors.log")


def output_paths(out: Path, method: str, multiple: bool, scores: Path | None) -> dict[str, Path]:
    """RUN.csv (+ RUN.scores.csv, RUN.json); with several methods RUN.<method>.csv and so on."""
    base = out.with_suffix("") if out.suffix else out
    stem = f"{base}.{method}" if multiple else str(base)
    return {
        "run": Path(f"{stem}.csv") if multiple else out,
        "scores": Path(f"{stem}.scores.csv") if (multiple or scores is None) else scores,
        "summary": Path(f"{stem}.json"),
    }


def test_labels(labels: str | Path | dict | None, data: AuditData) -> np.ndarray | None:
    """Test labels aligned with real_unknown, read only to report metrics, never given to a method."""
    if labels is None or data.real_unknown is None:
        return None
    table = labels if isinstance(labels, dict) else read_labels(labels)
    missing = [i for i in data.real_unknown.ids if i not in table]
    if missing:
        raise DataError(f"{labels}: {len(missing)} test image{'s have' if len(missing) > 1 else ' has'} no label "
                        f"(first: {missing[0]!r})")
    return np.array([table[i] for i in data.real_unknown.ids])


def _score(report: MethodReport, audit: AuditContext, cfg: MethodConfig, y_test: np.ndarray | None,
           n_boot: int) -> None:
    res, rule, data = report.result, report.rule, audit.data
    y_lab = data.labelled()[1] if data.has_labelled else None
    if res.labelled_scores is not None and y_lab is not None:
        folds = audit.folds(cfg)
        cv_pred = cv_decisions(res.labelled_scores, y_lab, rule, folds)
        report.cv = evaluate(y_lab, cv_pred, res.labelled_scores, n_boot=n_boot, seed=cfg.seed,
                             groups=data.labelled_groups())
        fit_on = res.threshold_scores if res.threshold_scores is not None else res.labelled_scores
        report.threshold = rule.fit(fit_on, y_lab, res.test_scores)
    elif res.test_scores is not None:
        report.threshold = rule.fit(None, None, res.test_scores)
    if res.test_scores is not None:
        report.test_pred = (res.test_scores >= report.threshold).astype(int)
        if y_test is not None:
            report.test = evaluate(y_test, report.test_pred, res.test_scores, n_boot=n_boot, seed=cfg.seed,
                                   groups=_test_groups(data))
    for name, sig in res.variants.items():
        if sig.labelled is not None and y_lab is not None:
            report.variants_cv_auc[name] = score_metrics(y_lab, sig.labelled)["auc"]
        if sig.test is not None and y_test is not None:
            report.variants_test_auc[name] = score_metrics(y_test, sig.test)["auc"]


def _test_groups(data: AuditData) -> np.ndarray | None:
    """Groups of the test reals when the groups file covers them (for the patient bootstrap)."""
    if data.groups is None or data.real_unknown is None:
        return None
    ids = data.real_unknown.ids
    if not all(i in data.groups for i in ids):
        return None
    return np.array([data.groups[i] for i in ids])


def method_rule(name: str, rule: DecisionRule, shift: ShiftCheck | None, labelled_rate: float | None = None
                ) -> tuple[DecisionRule, str]:
    """The rule method `name` decides with, and why: the user's, else the method's own, else (when the
    shift check fired and the method has one) its rule for shifted test reals; a `rate` rule chosen for the
    shift flags the labelled reals' member rate (`labelled_rate`) among the test reals."""
    spec = get_method(name)
    if rule.mode != AUTO:
        return rule, f"--decision {rule.mode}"
    if shift is not None and shift.shifted and spec.shift_decision:
        shifted = replace(rule, mode=spec.shift_decision)
        how = spec.shift_decision
        if spec.shift_decision == "rate" and labelled_rate is not None and 0 < labelled_rate < 1:
            shifted = replace(shifted, member_rate=labelled_rate)
            how = f"rate (the labelled member rate, {labelled_rate:.0%}, flagged among the test reals)"
        return (shifted, f"the shift check fired (domain AUC {shift.auc:.2f}): a threshold fitted to the labelled "
                         f"reals' score values would not transfer, so {how} instead of {spec.decision}")
    return rule.resolve(spec.decision), f"{name}'s own rule" + (
        f" (the shift check did not fire, domain AUC {shift.auc:.2f})" if shift is not None and spec.shift_decision
        else "")


def run_one(name: str, audit: AuditContext, cfg: MethodConfig, rule: DecisionRule, y_test, n_boot: int,
            keep_going: bool, shift: ShiftCheck | None = None) -> MethodReport:
    resolved, why = method_rule(name, rule, shift, audit.labelled_rate)
    report = MethodReport(name, resolved, decision_why=why)
    seed_everything(cfg.seed)
    start = time.perf_counter()
    try:
        audit.searches = SearchLog(cfg.search)
        report.result = run_method(name, audit, cfg)
        report.search = audit.searches.summary()
        report.seconds = time.perf_counter() - start
        _check_result(name, report.result, audit.data)
        _score(report, audit, cfg, y_test, n_boot)
    except SynthleakError as exc:
        if not keep_going or isinstance(exc, UnreadableInputError):  # an unreadable input stops every method
            raise
        with verbosity(cfg.quiet):
            log(f"{name}: skipped: {exc}")
        return MethodReport(name, report.rule, seconds=time.perf_counter() - start, error=str(exc),
                            decision_why=why)
    except Exception as exc:
        # A bug in one method (or in scoring its output) is that method's failure, never the audit's: the
        # other methods, the verdict and their files still come; the traceback goes to RUN.errors.log.
        # A fresh report, so that nothing half-scored is ever written.
        return MethodReport(name, report.rule, seconds=time.perf_counter() - start, error=error_line(exc),
                            traceback=traceback.format_exc(), decision_why=why)
    return report


def error_line(exc: BaseException) -> str:
    """The exception's type and message on one line."""
    return one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _check_result(name: str, res: MethodResult, data: AuditData) -> None:
    """A method returning misaligned or non-finite scores is a bug: fail loudly, never write it."""
    if data.real_unknown is not None:
        if res.test_scores is None or len(res.test_scores) != len(data.real_unknown):
            raise RuntimeError(f"method {name} returned no or misaligned test scores")
        if not np.all(np.isfinite(res.test_scores)):
            raise RuntimeError(f"method {name} returned non-finite test scores")
    if res.labelled_scores is not None:
        if len(res.labelled_scores) != len(data.labelled()[0]) or not np.all(np.isfinite(res.labelled_scores)):
            raise RuntimeError(f"method {name} returned misaligned or non-finite labelled scores")


def run_audit(
    data: str | Path | AuditData | None = None,
    *,
    train: str | Path | None = None,
    test: str | Path | None = None,
    methods: str | list[str] = DEFAULT_METHOD,
    cfg: MethodConfig | None = None,
    decision: DecisionRule | None = None,
    labels: str | Path | dict | None = None,
    groups: str | Path | None = None,
    groups_from: str | None = None,
    window: str | None = None,
    out: str | Path | None = None,
    scores_out: str | Path | None = None,
    force: bool = False,
    id_style: str = "stem",
    n_boot: int = 1000,
    check_control: bool = True,
    with_verdict: bool = True,
    alpha: float = 0.05,
    permutations: int = DEFAULT_PERMUTATIONS,
) -> AuditReport:
    """Audit a challenge-layout folder. Returns the report; writes run/score files when `out` is given.

    `decision` None (or mode 'auto') lets each method use its own rule (MethodSpec.decision). With
    labelled reals and `with_verdict`, the dataset-level verdict (synthleak.leakage) is computed from
    the default recipe's label-free scores (run for it when not requested) and, with `out`, written
    to every method's JSON, its copies to RUN.copies.csv."""
    with verbosity(cfg is not None and cfg.quiet):
        cfg = cfg or MethodConfig()
        rule = decision or DecisionRule(AUTO)
        names = expand_methods(methods)
        check_method_options(names, cfg, with_default=with_verdict)
        paths = _checked_output_paths(names, out, scores_out, force, with_verdict)
        audit_data = data if isinstance(data, AuditData) else discover(
            data, train, test, groups, window=window, groups_from=groups_from)
        if out is not None and audit_data.real_unknown is None:
            raise DataError("no real_unknown/ images to write a run file for")
        if rule.mode in ("fpr", "tail") and not audit_data.has_labelled:
            raise SynthleakError(f"--decision {rule.mode} needs labelled reals (real_used/ and real_not_used/) "
                                 "to measure false positives")
        y_test = test_labels(labels, audit_data)
        report = _new_report(audit_data, rule, cfg)
        report.audit = audit = AuditContext(audit_data, cfg)
        for n in names:
            log(f"running {n} ...")
            report.methods.append(run_one(n, audit, cfg, rule, y_test, n_boot, keep_going=len(names) > 1,
                                          shift=report.shift))
            audit.release_large()
            _note_failure(report, report.methods[-1], f"method {n}")
        if check_control and audit_data.has_labelled:
            _add_control(report, audit, cfg, rule, y_test, n_boot)
        if with_verdict and audit_data.has_labelled:
            _add_verdict(report, audit, cfg, rule, y_test, n_boot, alpha, permutations)
        if out is not None:
            _write_all(report, paths, Path(out), cfg, force, id_style)
        return report


def _checked_output_paths(names: list[str], out, scores_out, force: bool, with_verdict: bool
                          ) -> dict[str, dict[str, Path]]:
    """Each method's output paths, refused before any expensive work when they exist (without --force). The
    errors log too, though it is written only when something fails: which it is cannot be known before."""
    multiple = len(names) > 1
    if scores_out is not None and (out is None or multiple):
        raise SynthleakError("--scores needs --out and a single method (several methods write RUN.<method>.scores.csv)")
    paths: dict[str, dict[str, Path]] = {}
    if out is None:
        return paths
    for n in names:
        paths[n] = output_paths(Path(out), n, multiple, Path(scores_out) if scores_out else None)
        for p in paths[n].values():
            check_writable(p, force)
    if with_verdict:
        check_writable(copies_path(Path(out)), force)
    check_writable(errors_log_path(Path(out)), force)
    return paths


def _new_report(audit_data: AuditData, rule: DecisionRule, cfg: MethodConfig) -> AuditReport:
    """The report before any method: the data's notes, and the shift check of labelled vs test reals."""
    report = AuditReport(audit_data, [], rule)
    report.warnings += audit_data.notes
    if not audit_data.has_labelled:
        report.warnings.append("no labelled reals: thresholds use the expected member rate "
                               f"({rule.member_rate:.0%}) and no CV metrics can be given")
    elif audit_data.real_unknown is not None:
        report.shift = _shift_check(audit_data, cfg)
        if report.shift.shifted:
            report.warnings.append(report.shift.message())
    return report


def _add_control(report: AuditReport, audit: AuditContext, cfg: MethodConfig, rule: DecisionRule, y_test,
                 n_boot: int) -> None:
    """The real-only control: the pixel-space one unless the user ran it, a warning when it leaks."""
    control = next((m for m in report.methods if m.name == CONTROL and m.result is not None), None)
    if control is None:
        # the reference control is the pixel-space one (the same reference in every audit)
        control_cfg = replace(cfg, feature_space="pixels", calibrate=None, quiet=True, artifacts_dir=None)
        control = run_one(CONTROL, audit, control_cfg, rule, y_test, n_boot, keep_going=True)
        _note_failure(report, control, "the reference control")
    report.control = control
    if control.cv is not None and control.cv["auc"].value > CONTROL_WARN_AUC:
        report.warnings.append(
            f"the real-only control reaches CV AUC {control.cv['auc'].value:.2f} without looking at any "
            "synthetic image: membership leaks through the labelled reals (same patients or scanners "
            "in both splits?); a method must beat the control to show a generator signal")


def _write_all(report: AuditReport, paths: dict[str, dict[str, Path]], out: Path, cfg: MethodConfig, force: bool,
               id_style: str) -> None:
    for m in report.methods:
        if m.result is None or m.test_pred is None:
            continue
        _write_outputs(m, report.data, paths[m.name], method_config(m.name, cfg), report, force, id_style)
    if report.verdict is not None:
        atomic_write_text(copies_path(out), copies_text(report.verdict), force)
    if report.failures:
        atomic_write_text(errors_log_path(out), errors_log_text(report), force)


def _note_failure(report: AuditReport, m: MethodReport, what: str) -> None:
    if m.traceback is not None:
        report.failures.append(Failure(what, m.error, m.traceback))


def errors_log_text(report: AuditReport) -> str:
    """RUN.errors.log: one section per failure, its one-line error, then its full traceback."""
    parts = [f"synthleak audit of {report.data.source}: {len(report.failures)} unexpected failure(s)"]
    for f in report.failures:
        parts += ["", f"== {f.what}: {f.error}", f.traceback.rstrip()]
    return "\n".join(parts) + "\n"


def _add_verdict(report: AuditReport, audit: AuditContext, cfg: MethodConfig, rule: DecisionRule, y_test,
                 n_boot: int, alpha: float, permutations: int) -> None:
    """The verdict from the default recipe's scores: never the control's, never the best of several."""
    from .leakage import verdict

    data = report.data
    recipe = next((m for m in report.methods if m.name == DEFAULT_METHOD), None)
    if recipe is None:
        recipe = run_one(DEFAULT_METHOD, audit, replace(cfg, quiet=True, artifacts_dir=None), rule, y_test, n_boot,
                         keep_going=True, shift=report.shift)
        _note_failure(report, recipe, "the default recipe (run for the verdict)")
    if recipe.result is None or recipe.result.labelled_scores is None:
        report.verdict_error = f"the default recipe did not run ({recipe.error})"
        report.warnings.append(f"no verdict: {report.verdict_error}")
        return
    recipe_cfg = method_config(DEFAULT_METHOD, cfg)
    n_used = len(data.real_used)
    groups = data.labelled_groups()
    try:
        res = recipe.result
        if res.synthetic_features is not None and res.real_features is not None:
            # the recipe's own space (its measured resolution): no second embedding
            synthetic, labelled = res.synthetic_features, res.real_features[:len(data.labelled()[1])]
        else:
            embedding = audit.embedding(recipe_cfg)
            synthetic, labelled = embedding.synthetic, embedding.labelled
        # scores the labels did not choose: every candidate's, when the recipe chose among them
        scores = res.verdict_scores if res.verdict_scores is not None else res.labelled_scores
        try:
            report.verdict = verdict(
                scores, data.labelled()[1], groups=groups, synthetic_features=synthetic,
                member_features=labelled[:n_used], nonmember_features=labelled[n_used:],
                synthetic_ids=data.synthetic(cfg.synthetic_pool).ids, member_ids=data.real_used.ids,
                member_groups=groups[:n_used] if groups is not None else None, alpha=alpha,
                permutations=permutations, seed=cfg.seed, copy_reference="both")
        except SynthleakError as exc:  # no verdict on these data (e.g. a patient carrying both labels)
            report.verdict_error = str(exc)
            report.warnings.append(f"no verdict: {exc}")
    except SynthleakError:
        raise  # reading the images (an unreadable one) stops the audit, as in a method
    except Exception as exc:
        # as in a method: a bug in the verdict leaves the methods' results and files standing
        report.verdict_error = error_line(exc)
        report.warnings.append(f"no verdict: {report.verdict_error}")
        report.failures.append(Failure("the verdict", report.verdict_error, traceback.format_exc()))


def verdict_lines(report: AuditReport) -> list[str]:
    """The verdict's summary and its member-closer line, as the CLI and the demo print them (none without one)."""
    if report.verdict is None:
        return []
    closer = report.verdict.member_closer_line()
    return [report.verdict.summary()] + ([closer] if closer else [])


def copies_text(v) -> str:
    """RUN.copies.csv: header, then one row per synthetic image judged a copy of a labelled member."""
    rows = ["synthetic_id,real_id,similarity"] + [f"{c.synthetic_id},{c.real_id},{c.similarity:.6f}" for c in v.copies]
    return "\n".join(rows) + "\n"


def tidy_floats(value, key: str = ""):
    """Floats rounded for reading (0.43506249999999963 -> 0.4351): 4 significant digits (metrics, shares,
    p-values, C_T); the copy threshold keeps 6 decimals, as in RUN.copies.csv. Not for values that
    reproduce a decision (the threshold is written whole)."""
    if isinstance(value, dict):
        return {k: tidy_floats(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy_floats(v, key) for v in value]
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return round(float(value), 6) if key == "copy_threshold" else float(f"{float(value):.4g}")
    return value


def _verdict_json(report: AuditReport) -> dict | None:
    if report.verdict is None:
        return {"error": report.verdict_error} if report.verdict_error else None
    out = report.verdict.to_json()
    out["copies"] = len(report.verdict.copies)  # the rows themselves are in RUN.copies.csv
    out["scores_from"] = f"{DEFAULT_METHOD} (the default recipe's label-free scores of the labelled reals)"
    return tidy_floats(out)


def _shift_check(data: AuditData, cfg: MethodConfig) -> ShiftCheck:
    """Labelled vs test reals; patients kept in one fold when the groups file covers every real image."""
    images, _ = data.labelled()
    groups = None
    if data.groups is not None:
        ids = images.ids + data.real_unknown.ids
        if all(i in data.groups for i in ids):
            groups = np.array([data.groups[i] for i in ids])
    return check_shift(images.pixels, data.real_unknown.pixels, groups=groups, seed=cfg.seed)


def _write_outputs(m: MethodReport, data: AuditData, paths: dict[str, Path], cfg: MethodConfig,
                   report: AuditReport, force: bool, id_style: str) -> None:
    shift = report.shift
    ids = data.real_unknown.ids if id_style == "stem" else data.real_unknown.names
    atomic_write_text(paths["run"], run_text(ids, m.test_pred), force)
    atomic_write_text(paths["scores"], scores_text(ids, m.result.test_scores), force)
    summary = {
        "method": m.name,
        "data": data.source,
        "seed": cfg.seed,
        "feature_space": cfg.feature_space,
        "calibration": m.result.calibration,
        "decision": m.rule.describe(),
        "decision_rule": m.rule.mode,
        "decision_why": m.decision_why,
        "recipe": tidy_floats(m.result.details) or None,
        "threshold": m.threshold,
        "trained_on": m.result.trained_on,
        "notes": m.result.notes,
        "seconds": round(m.seconds, 2),
        "cv_on_labelled": tidy_floats({k: vars(v) for k, v in (m.cv or {}).items()}),
        "test": tidy_floats({k: vars(v) for k, v in (m.test or {}).items()}),
        "variants_cv_auc": tidy_floats(m.variants_cv_auc),
        "variants_test_auc": tidy_floats(m.variants_test_auc),
        "artifacts": [str(a) for a in m.result.artifacts],
        "shift": tidy_floats(shift.to_json()) if shift is not None else None,
        "verdict": _verdict_json(report),
        "neighbour_search": m.search,
    }
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2, default=str) + "\n", force)
    m.outputs = {k: str(v) for k, v in paths.items()}


def format_table(report: AuditReport) -> str:
    """One row per method: CV metrics on labelled reals, test metrics when labels were given, time."""
    has_cv = any(m.cv for m in report.methods)
    has_test = any(m.test for m in report.methods)
    head = ["method"]
    if has_cv:
        head += ["CV AUC [95% CI]", "CV kappa", "CV F1"]
    if has_test:
        head += ["test AUC [95% CI]", "TPR@1%FPR", "kappa", "F1", "acc"]
    head += ["time"]
    rows = []
    for m in report.rows():
        name = m.name + (" (reference)" if m.name == CONTROL else "")
        if m.error:
            rows.append([name] + ["-"] * (len(head) - 2) + [f"{'failed' if m.traceback else 'skipped'}: {m.error}"])
            continue
        row = [name]
        if has_cv:
            row += ([str(m.cv["auc"]), f"{m.cv['kappa'].value:.3f}", f"{m.cv['f1'].value:.3f}"]
                    if m.cv else ["-"] * 3)
        if has_test:
            row += ([str(m.test["auc"]), f"{m.test['tpr@1%fpr'].value:.3f}", f"{m.test['kappa'].value:.3f}",
                     f"{m.test['f1'].value:.3f}", f"{m.test['accuracy'].value:.3f}"] if m.test else ["-"] * 5)
        row.append(f"{m.seconds:.1f}s")
        rows.append(row)
        for v in sorted(set(m.variants_cv_auc) | set(m.variants_test_auc)):
            vrow = [f"  · {v}"]
            if has_cv:
                vrow += [f"{m.variants_cv_auc.get(v, float('nan')):.3f}", "", ""]
            if has_test:
                vrow += [f"{m.variants_test_auc.get(v, float('nan')):.3f}", "", "", "", ""]
            vrow.append("")
            rows.append(vrow)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
