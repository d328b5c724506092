"""A self-contained HTML report a privacy officer can read.

For each method: CV and test metrics with CIs, the ROC curve and score histograms (when test labels
were given), and the evidence — each of the most strongly flagged real images beside its nearest
synthetic neighbours, with the distances, so a person can judge whether the generator reproduced it.
"""
from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from ..attacks.knn import NeighbourIndex
from ..data.runfile import atomic_write_text
from ..data.stream import ImageSource
from ..features.pixels import PixelExtractor
from ..features.store import image_features
from ..config import MethodConfig
from ..pipeline import AuditReport, MethodReport, format_table

N_EVIDENCE = 8
N_NEIGHBOURS = 3


def _evidence_png(report: AuditReport, m: MethodReport, folder: Path, neighbours: np.ndarray,
                  synthetic: ImageSource) -> list[tuple[str, str, float]]:
    """One PNG per flagged image: the real image, then its nearest synthetic images."""
    data = report.data
    scores = m.result.test_scores
    flagged = np.flatnonzero(m.test_pred == 1)
    top = flagged[np.argsort(-scores[flagged])][:N_EVIDENCE]
    rows = []
    for rank, i in enumerate(top):
        tiles = [data.real_unknown.pixels[i], *synthetic.read(neighbours[i][:N_NEIGHBOURS])]
        strip = np.hstack([cv2.resize(t, (160, 160), interpolation=cv2.INTER_AREA) for t in tiles])
        strip = cv2.copyMakeBorder(strip, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=255)
        name = f"{m.name}_evidence_{rank + 1}.png"
        cv2.imwrite(str(folder / name), strip)
        rows.append((name, data.real_unknown.ids[i], float(scores[i])))
    return rows


def _plots(m: MethodReport, y_test: np.ndarray, folder: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    s = m.result.test_scores
    fpr, tpr, _ = roc_curve(y_test, s)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].plot(fpr, tpr, label=f"AUC {m.test['auc'].value:.3f}")
    ax[0].plot([0, 1], [0, 1], "k:", lw=0.8)
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
    name = f"{m.name}_roc.png"
    fig.savefig(folder / name, dpi=90)
    plt.close(fig)
    return name


def write_report(report: AuditReport, folder: Path, force: bool = False, y_test: np.ndarray | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = report.data
    synthetic = data.synthetic("all")
    pixel_space = PixelExtractor(MethodConfig(cache_dir="none"), side=64)
    fallback_neighbours = None
    parts = [
        "<!doctype html><meta charset='utf-8'><title>synthleak audit report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}pre{background:#f4f4f4;padding:8px;"
        "overflow-x:auto}img{max-width:100%}.warn{color:#a40}</style>",
        "<h1>synthleak audit report</h1>",
        f"<p>Data: <code>{html.escape(data.source)}</code>. Decision: {html.escape(report.decision.describe())}.</p>",
        "<h2>Summary</h2><pre>" + html.escape(format_table(report)) + "</pre>",
    ]
    for w in report.warnings:
        parts.append(f"<p class='warn'>Warning: {html.escape(w)}</p>")
    parts.append("<p>Scores: higher = more likely used in training. CV metrics come from the labelled reals only, "
                 "with every threshold chosen without the held-out fold. The real-only control never looks at "
                 "synthetic images: a method that does not beat it shows no evidence of a generator signal.</p>")
    for m in report.methods:
        if m.result is None or m.result.test_scores is None:
            continue
        parts.append(f"<h2>{html.escape(m.name)}</h2>")
        for note in m.result.notes:
            parts.append(f"<p>{html.escape(note)}</p>")
        for what, where in m.result.trained_on.items():
            parts.append(f"<p>Trained: {html.escape(str(what))} on {html.escape(str(where))}</p>")
        if m.test is not None and y_test is not None:
            parts.append(f"<img src='{_plots(m, y_test, folder)}' alt='ROC and score histograms'>")
        neighbours = m.result.neighbours
        if neighbours is None:
            if fallback_neighbours is None:
                idx = NeighbourIndex(image_features(pixel_space, synthetic, pixel_space.cfg))
                fallback_neighbours = idx.search(pixel_space.transform(data.real_unknown), N_NEIGHBOURS)[1]
            neighbours = fallback_neighbours
            parts.append("<p>Neighbours below are searched in pixel space (this method has no own neighbours).</p>")
        rows = _evidence_png(report, m, folder, neighbours, synthetic)
        if rows:
            parts.append(f"<h3>Evidence: the {len(rows)} most strongly flagged test images</h3>"
                         "<p>Left: the real image; right: its nearest synthetic images. A near-copy is direct "
                         "visual evidence of memorisation; a merely similar anatomy is not.</p>")
            for name, ident, score in rows:
                parts.append(f"<p><b>{html.escape(ident)}</b> score {score:.4g}<br><img src='{name}'></p>")
        for art in m.result.artifacts:
            parts.append(f"<p>Artifact: <code>{html.escape(str(art))}</code></p>")
    out = folder / "index.html"
    atomic_write_text(out, "\n".join(parts) + "\n", force=True)
    return out
