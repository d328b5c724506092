"""A self-contained HTML report a privacy officer can read: the verdict first, then the evidence.

Order of the page: the dataset-level verdict in plain words; the synthetic images judged copies of
labelled training images, each beside its real image and their difference; one metrics table
(every method, the real-only control, CIs); the labelled-vs-test shift check and any warnings; then
per method its ROC curve and score histograms (with test labels) and the most strongly flagged test
images beside their nearest synthetic images, every tile captioned. `single_file` inlines every
image as a data URI so the page can be mailed as one file. A small inline script marks the page
(`data-broken-images` on <body>) when an image fails to load, so a browser check can tell a
complete report from a broken one.
"""
from __future__ import annotations

import base64
import html
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ..attacks.knn import NeighbourIndex
from ..config import MethodConfig
from ..data.images import ImageSet
from ..data.runfile import atomic_write_text
from ..features.pixels import PixelExtractor
from ..methods import CONTROL
from ..methods.context import AuditContext
from ..pipeline import AuditReport, MethodReport

N_EVIDENCE = 8
N_NEIGHBOURS = 3
N_COPIES = 12
TILE = 160

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1240px;margin:auto;padding:0 12px;color:#222}
.verdict{padding:14px 18px;border-radius:6px;font-size:1.15em;margin:16px 0}
.shown{background:#fde8e4;border:2px solid #c0392b}.notshown{background:#e8f4ea;border:2px solid #2e7d32}
.none{background:#f1f1f1;border:2px solid #999}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
#metrics{font-size:.85em}#metrics td{white-space:nowrap}#metrics th{vertical-align:bottom}
#metrics td,#metrics th{padding:3px 6px}#metrics td.err{white-space:normal;text-align:left}
.ci{color:#555;font-size:.88em}
#memorisation li{margin:4px 0}.note{background:#fff6db;border-left:4px solid #d9a400;padding:6px 10px}
figure{display:inline-block;margin:6px;text-align:center;vertical-align:top}
figcaption{font-size:.85em;color:#444;max-width:%dpx}
.warn{color:#a40}.small{font-size:.9em;color:#555}
""" % (3 * TILE + 12)

IMAGE_CHECK = """<script>
window.addEventListener('load', function () {
  var broken = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-broken-images', String(broken.length));
  broken.forEach(function (i) { console.error('synthleak report: image failed to load: ' + i.getAttribute('src').slice(0, 80)); });
  // layout facts for the browser check: the page's height, and whether the metrics table fits the window
  // with every cell (a value and its CI) on one line
  document.body.setAttribute('data-page-height', String(document.documentElement.scrollHeight));
  var table = document.getElementById('metrics');
  if (table) {
    var overflow = table.getBoundingClientRect().right > document.documentElement.clientWidth;
    var wrapped = Array.prototype.filter.call(table.querySelectorAll('td:not(.err)'), function (td) {
      var line = parseFloat(getComputedStyle(td).lineHeight) || 1.2 * parseFloat(getComputedStyle(td).fontSize);
      var pad = parseFloat(getComputedStyle(td).paddingTop) + parseFloat(getComputedStyle(td).paddingBottom);
      return td.clientHeight - pad > 1.6 * line;
    });
    document.body.setAttribute('data-metrics-overflow', String(overflow));
    document.body.setAttribute('data-metrics-wrapped', String(wrapped.length));
  }
});
</script>"""


class _Assets:
    """Images of the page: written beside index.html, or inlined as data URIs (single-file report)."""

    def __init__(self, folder: Path, inline: bool):
        self.folder, self.inline = folder, inline

    def png(self, name: str, image: np.ndarray) -> str:
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError(f"could not encode {name}")
        return self.raw(name, buf.tobytes())

    def raw(self, name: str, data: bytes) -> str:
        if self.inline:
            return "data:image/png;base64," + base64.b64encode(data).decode()
        (self.folder / name).write_bytes(data)
        return name


def _tile(image: np.ndarray) -> np.ndarray:
    small = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(small, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=255)


def _figure(src: str, caption: str, alt: str) -> str:
    return (f"<figure><img src='{src}' alt='{html.escape(alt)}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def verdict_html(report: AuditReport) -> str:
    """The verdict banner: what was found, in plain words, with the p-value and the copy share."""
    v = report.verdict
    if v is None:
        why = report.verdict_error or "it needs labelled reals (real_used/ and real_not_used/)"
        return (f"<div class='verdict none' id='verdict'><b>No dataset-level verdict</b>: {html.escape(why)}.</div>")
    from ..leakage import format_p

    p = html.escape(format_p(v.p_value, v.alpha))
    copies = ""
    if v.copy_share is not None and v.copy_share_ci is not None:
        low, high = v.copy_share_ci
        copies = (f" {100 * v.copy_share:.1f}% [{100 * low:.1f}, {100 * high:.1f}] of the synthetic images are judged "
                  "copies of labelled training images (a generator that copies nothing still gets about 5% by this "
                  "rule, which held-out real images meet 5% of the time).")
    if v.leakage_shown:
        head = "Leakage shown"
        body = (f"the images known to be in the generator's training set lie measurably closer to what the "
                f"generator produces than the images known to be outside it (p = {p}, alpha {v.alpha:g}).")
        css = "shown"
    else:
        head = "Leakage not shown"
        body = (f"this test found no evidence that the training images are closer to the generator's output than "
                f"held-out images (p = {p}, alpha {v.alpha:g}). That is not proof of privacy: a weaker leak, or one "
                "this test cannot see, remains possible.")
        css = "notshown"
    lines = [v.summary()] + ([v.member_closer_line()] if v.member_closer_line() else [])
    return (f"<div class='verdict {css}' id='verdict'><b>{head}</b>: {body}{html.escape(copies)}"
            + "".join(f"<div class='small'>{html.escape(line)}</div>" for line in lines) + "</div>")


def memorisation_html(report: AuditReport) -> str:
    """Each memorisation statistic in one plain sentence, the two questions they answer, and why they
    disagree when they do (see report/summary.py)."""
    from .summary import conclusion, summarise

    v = report.verdict
    if v is None:
        return ""
    s = summarise(v)
    if not s.readings:
        return ""
    parts = ["<div id='memorisation'><h2>Memorisation: what each statistic says</h2>",
             f"<p><b>{html.escape(conclusion(s))}</b></p>",
             f"<p class='headline'>{html.escape(s.headline[0].upper() + s.headline[1:])}.</p>"]
    for note in s.notes:
        parts.append(f"<p class='note'>Why they differ: {html.escape(note)}</p>")
    parts.append("<ul>")
    for r in s.readings:
        mark = "points to memorisation" if r.points_to_copying else "does not point to memorisation"
        parts.append(f"<li><b>{html.escape(r.name)}</b> ({html.escape(r.question)}; {mark}): "
                     f"{html.escape(r.sentence)}</li>")
    parts.append("</ul>")
    parts.append("<p class='small'>All of them compare the synthetic images with the <i>labelled</i> training and "
                 "held-out images only, in the default recipe's space (pixels at the resolution the synthetic images "
                 "resolve): a copy of an unlabelled training image is not seen.</p></div>")
    return "\n".join(parts)


def metrics_table(report: AuditReport) -> str:
    """Every method and the control: CV metrics on labelled reals, test metrics when labels were given."""
    rows = [m for m in report.rows()]
    has_cv = any(m.cv for m in rows)
    has_test = any(m.test for m in rows)
    head = ["method", "calibration", "decision"]
    ci = "<br><span class='ci'>[95% CI]</span>"
    if has_cv:
        head += [f"CV AUC{ci}", "CV kappa"]
    if has_test:
        head += [f"test AUC{ci}", f"TPR@1%FPR{ci}", f"kappa{ci}", "F1", "accuracy"]
    head += ["time"]
    out = ["<table id='metrics'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for m in rows:
        name = m.name + (" (reference)" if m.name == CONTROL else "")
        if m.error:
            out.append(f"<tr><td>{html.escape(name)}</td><td class='err' colspan='{len(head) - 1}'>"
                       f"{'failed' if m.traceback else 'skipped'}: {html.escape(m.error)}</td></tr>")
            continue
        cells = [html.escape(m.name) + (" <span class='ci'>(reference)</span>" if m.name == CONTROL else ""),
                 *(html.escape(str(c)) for c in (m.result.calibration if m.result else "", m.rule.mode))]
        if has_cv:
            cells += [_with_ci(m.cv["auc"]), f"{m.cv['kappa'].value:.3f}"] if m.cv else ["-", "-"]
        if has_test:
            cells += ([_with_ci(m.test["auc"]), _with_ci(m.test["tpr@1%fpr"]), _with_ci(m.test["kappa"]),
                       f"{m.test['f1'].value:.3f}", f"{m.test['accuracy'].value:.3f}"] if m.test else ["-"] * 5)
        cells.append(f"{m.seconds:.1f}s")
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _with_ci(metric) -> str:
    """A metric's value and, smaller beside it on the same line, its 95% CI (HTML)."""
    if np.isnan(metric.value):
        return "n/a"
    return f"{metric.value:.3f} <span class='ci'>[{metric.low:.3f}, {metric.high:.3f}]</span>"


def _copies_section(report: AuditReport, assets: _Assets, copies_file: Path | None = None) -> list[str]:
    v = report.verdict
    if v is None or not v.copies:
        return []
    data = report.data
    synthetic = data.synthetic("all")
    syn_index = {i: k for k, i in enumerate(synthetic.ids)}
    real_index = {i: k for k, i in enumerate(data.real_used.ids)}
    parts = [f"<h2>Copies: synthetic images that reproduce a training image ({len(v.copies)})</h2>",
             "<p>Each row: the synthetic image, the labelled training image it is closest to, and their absolute "
             "difference (dark = identical). A copy is a synthetic image more similar to a training image than 95% "
             "of training images are to their nearest held-out real image. The caption says how near: against "
             "those pairs of two patients' images, and as a distance relative to their median (0 = identical, "
             "1 = as far apart as two patients' images typically are).</p>"]
    for rank, row in enumerate(v.copies[:N_COPIES]):
        fake = synthetic.read([syn_index[row.synthetic_id]])[0]  # synthetic images are read from their files
        real = data.real_used.pixels[real_index[row.real_id]]
        diff = cv2.absdiff(fake, real)
        strip = np.hstack([_tile(fake), _tile(real), _tile(diff)])
        src = assets.png(f"copy_{rank + 1}.png", strip)
        caption = (f"synthetic <b>{html.escape(row.synthetic_id)}</b> | real <b>{html.escape(row.real_id)}</b> | "
                   f"difference; {html.escape(closeness(row))}")
        parts.append(_figure(src, caption, f"copy {rank + 1}"))
    if len(v.copies) > N_COPIES:
        more = len(v.copies) - N_COPIES
        where = (f"in <code>{html.escape(str(copies_file))}</code>" if copies_file is not None else
                 "not listed here: no copies file was written (audit with --out to write RUN.copies.csv)")
        parts.append(f"<p class='small'>{more} more {'copy' if more == 1 else 'copies'} {where}.</p>")
    elif copies_file is not None:
        parts.append(f"<p class='small'>The list: <code>{html.escape(str(copies_file))}</code>.</p>")
    return parts


def closeness(row) -> str:
    """How close a copy is to its training image, in units a reader can weigh: against the pairs of a
    training image and its nearest held-out image (two different patients)."""
    if row.percentile is None:
        return f"similarity {row.similarity:.4f}"
    text = ("nearer than every training image comes to a held-out image" if row.percentile >= 100 else
            f"nearer than {row.percentile:.0f}% of training images come to a held-out image")
    if row.distance_ratio is not None:
        text += f"; distance {row.distance_ratio:.2f} x their median"
    return text


def _plots(m: MethodReport, y_test: np.ndarray, assets: _Assets) -> str:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    s = m.result.test_scores
    fpr, tpr, _ = roc_curve(y_test, s)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].plot(fpr, tpr, label=f"AUC {m.test['auc'].value:.3f}")
    chance = np.r_[0.0, np.logspace(-3, 0, 60)]  # many points: the chance line is curved on a symlog axis
    ax[0].plot(chance, chance, "k:", lw=0.8)
    ax[0].set_xscale("symlog", linthresh=0.01)
    ax[0].set(xlabel="false positive rate (log above 1%)", ylabel="true positive rate", title="ROC (test)")
    ax[0].legend(loc="lower right")
    bins = np.linspace(s.min(), s.max(), 30)
    ax[1].hist(s[y_test == 0], bins, alpha=0.6, label="not used")
    ax[1].hist(s[y_test == 1], bins, alpha=0.6, label="used")
    ax[1].axvline(m.threshold, color="k", ls="--", lw=1, label="threshold")
    ax[1].set(xlabel="score (higher = more likely used)", title="test scores")
    ax[1].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return assets.raw(f"{m.name}_roc.png", buf.getvalue())


def _evidence(report: AuditReport, m: MethodReport, neighbours: np.ndarray, test_pixels: np.ndarray,
              pixel_space: PixelExtractor, assets: _Assets) -> list[str]:
    """The most strongly flagged test images, each beside its nearest synthetic images (read from their
    files, with their distance in 64x64 pixels), captioned."""
    data = report.data
    synthetic = data.synthetic("all")
    scores = m.result.test_scores
    flagged = np.flatnonzero(m.test_pred == 1)
    top = flagged[np.argsort(-scores[flagged])][:N_EVIDENCE]
    parts = []
    for rank, i in enumerate(top):
        real_src = assets.png(f"{m.name}_evidence_{rank + 1}_real.png", _tile(data.real_unknown.pixels[i]))
        parts.append("<div class='evidence'>")
        parts.append(_figure(real_src, f"real <b>{html.escape(data.real_unknown.ids[i])}</b><br>score {scores[i]:.4g}",
                             f"real image {rank + 1}"))
        shown = neighbours[i][:N_NEIGHBOURS]
        tiles = synthetic.read(shown)
        distances = np.linalg.norm(pixel_space.transform(ImageSet.from_arrays(tiles)) - test_pixels[i], axis=1)
        for k, (j, tile) in enumerate(zip(shown, tiles)):
            src = assets.png(f"{m.name}_evidence_{rank + 1}_syn{k + 1}.png", _tile(tile))
            parts.append(_figure(src, f"synthetic #{k + 1} {html.escape(synthetic.ids[j])}<br>pixel distance "
                                      f"{distances[k]:.3f}", f"synthetic neighbour {k + 1}"))
        parts.append("</div>")
    return parts


def write_report(report: AuditReport, folder: Path, force: bool = False, y_test: np.ndarray | None = None,
                 single_file: bool = False, copies_file: Path | None = None) -> Path:
    """Write folder/index.html (with its PNGs beside it, or inlined when single_file). `copies_file` is
    the RUN.copies.csv the audit wrote (None: none was written), named where the page lists copies."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    assets = _Assets(folder, single_file)
    data = report.data
    synthetic = data.synthetic("all")
    pixel_space = PixelExtractor(MethodConfig(cache_dir="none"), side=64)
    # the audit's own 64 px embedding when one of its methods made it; else the reals alone (the synthetic
    # images are embedded only for a method without neighbours of its own)
    audit = report.audit or AuditContext(data, MethodConfig(cache_dir="none"))
    evidence_cfg = replace(audit.cfg, feature_space="pixels", synthetic_pool="all", options={"pixel_side": "64"})
    index = None
    pixels64 = audit.cached_embedding(evidence_cfg) or audit.embedding(evidence_cfg, need_synthetic=False)
    test_pixels = pixels64.test if data.real_unknown is not None else None
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>synthleak audit report</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>synthleak audit report</h1>",
             f"<p>Data: <code>{html.escape(data.source)}</code>: {len(synthetic)} synthetic images"
             + (f", {len(data.real_used)} labelled training (used) and {len(data.real_not_used)} labelled held-out "
                "(not used) real images" if data.has_labelled else "")
             + (f", {len(data.real_unknown)} test real images" if data.real_unknown is not None else "") + ".</p>",
             verdict_html(report), memorisation_html(report)]
    parts += _copies_section(report, assets, copies_file)
    several = len(report.methods) > 1
    parts.append(f"<h2>{'Method comparison' if several else 'Metrics'}</h2>")
    parts.append(metrics_table(report))
    parts.append("<p class='small'>Scores: higher = more likely used in training. CV metrics come from the labelled "
                 "reals only, every threshold chosen without the held-out fold; test metrics need test labels and "
                 "were not used by any method. The real-only control never looks at synthetic images: a method that "
                 "does not beat it shows no evidence of a generator signal. Cohen's kappa judges the 0/1 run file "
                 "(0 = chance); TPR@1%FPR is how many training images are named while almost no held-out image "
                 "is accused.</p>")
    if report.shift is not None:
        css = "warn" if report.shift.shifted else "small"
        parts.append(f"<p class='{css}' id='shift'>Shift check: {html.escape(report.shift.message())}</p>")
    for w in report.warnings:
        if report.shift is None or w != report.shift.message():
            parts.append(f"<p class='warn'>Warning: {html.escape(w)}</p>")
    for m in report.methods:
        if m.result is None or m.result.test_scores is None or m.test_pred is None:
            continue
        parts.append(f"<h2>{html.escape(m.name)}</h2>")
        parts.append(f"<p>Decision: {html.escape(m.rule.describe())}; threshold {m.threshold:.4g}.</p>")
        for note in m.result.notes:
            parts.append(f"<p class='small'>{html.escape(note)}</p>")
        for what, where in m.result.trained_on.items():
            parts.append(f"<p class='small'>Trained: {html.escape(str(what))} on {html.escape(str(where))}</p>")
        if m.test is not None and y_test is not None:
            parts.append(f"<p><img src='{_plots(m, y_test, assets)}' alt='ROC curve and score histograms'></p>")
        if test_pixels is None:
            continue
        neighbours = m.result.neighbours
        if neighbours is None:
            if index is None:
                index = NeighbourIndex(audit.embedding(evidence_cfg).synthetic, mode=audit.cfg.search)
            neighbours = index.search(test_pixels, N_NEIGHBOURS)[1]
            parts.append("<p class='small'>Neighbours below are searched in pixel space (this method has no own "
                         "neighbours).</p>")
        evidence = _evidence(report, m, neighbours, test_pixels, pixel_space, assets)
        if evidence:
            parts.append("<h3>Evidence: the most strongly flagged test images</h3>"
                         "<p>Left: the real image; right: its nearest synthetic images (distance in 64x64 pixels, "
                         "intensities in [0, 1]). A near-copy is direct visual evidence of memorisation; a merely "
                         "similar anatomy is not.</p>")
            parts += evidence
        for art in m.result.artifacts:
            parts.append(f"<p class='small'>Artifact: <code>{html.escape(str(art))}</code></p>")
    parts += [IMAGE_CHECK, "</body></html>"]
    out = folder / "index.html"
    atomic_write_text(out, "\n".join(parts) + "\n", force=True)
    return out
