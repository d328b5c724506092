"""Are the labelled reals like the test reals? A domain classifier says how far CV metrics can be trusted.

CV metrics on the labelled reals predict test performance only when the test reals come from the
same population. A classifier trained to tell labelled from test reals answers that directly: its
cross-validated ROC AUC is 0.5 when the two are exchangeable and approaches 1 when they come from
other patients' anatomy, another scanner or another window (the classifier two-sample test of
Lopez-Paz & Oquab, ICLR 2017). The classifier is deliberately low-capacity (logistic regression on
a 5-d PCA of thumbnails and intensity histograms): it must see population differences, not learn
to recognise individual patients, whose slices would otherwise betray a mere patient-level split.
For the same reason its cross-validation keeps look-alike images together: without patient ids,
images are grouped into tight k-means clusters (about PSEUDO_PATIENT_SIZE images each, a stand-in
for "slices of one patient"), so a fold never tests on the siblings of its training images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: domain-classifier AUC above which the labelled reals are reported as unlike the test reals
SHIFT_WARN_AUC = 0.65
#: images per look-alike cluster that stands in for a patient in the classifier's cross-validation
PSEUDO_PATIENT_SIZE = 20
#: principal components the classifier sees: enough for window, body size and anatomy, too few to
#: recognise individual patients (measured: 5 keeps patient-level random splits at chance)
SHIFT_PCA_DIMS = 5


@dataclass
class ShiftCheck:
    auc: float
    low: float
    high: float
    shifted: bool
    n_labelled: int
    n_test: int
    method: str = ("logistic regression telling labelled from test reals (16x16 thumbnails + histograms, PCA 5), "
                   "5-fold cross-validated with look-alike images (or patients) kept in one fold")

    def to_json(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        head = (f"labelled reals vs test reals: domain-classifier AUC {self.auc:.2f} [{self.low:.2f}, {self.high:.2f}] "
                "(0.5 = indistinguishable)")
        if not self.shifted:
            return head
        return (f"{head}: the labelled reals come from a different population than the test reals, so CV metrics "
                "on them may not hold for the test set and a threshold chosen on them may not transfer "
                "(the default recipe then flags the labelled member rate among the test reals; for another method "
                "prefer a calibrated score and --decision rate, quantile or mixture)")


def shift_features(pixels: np.ndarray) -> np.ndarray:
    """Per image: a 16x16 area-downsampled thumbnail and a 16-bin intensity histogram, in [0, 1]."""
    out = np.empty((len(pixels), 16 * 16 + 16), np.float32)
    for i, img in enumerate(pixels):
        out[i, :256] = cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0
        out[i, 256:] = np.bincount(img.reshape(-1) >> 4, minlength=16) / img.size
    return out


def check_shift(labelled_pixels: np.ndarray, test_pixels: np.ndarray, groups: np.ndarray | None = None,
                seed: int = 0, n_boot: int = 500) -> ShiftCheck:
    """Cross-validated AUC of telling labelled (0) from test (1) reals; groups keep patients in one fold."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .decide import cv_folds
    from .metrics import evaluate

    x = shift_features(np.concatenate([labelled_pixels, test_pixels]))
    y = np.r_[np.zeros(len(labelled_pixels), int), np.ones(len(test_pixels), int)]
    dims = int(min(SHIFT_PCA_DIMS, x.shape[1], len(x) // 5))
    if groups is None:
        groups = look_alike_groups(x, seed)
    prob = np.zeros(len(y))
    for train, val in cv_folds(y, groups, 5, seed):
        model = make_pipeline(StandardScaler(), PCA(max(dims, 1), random_state=seed),
                              LogisticRegression(C=0.1, max_iter=2000))
        model.fit(x[train], y[train])
        prob[val] = model.predict_proba(x[val])[:, 1]
    auc = evaluate(y, scores=prob, n_boot=n_boot, seed=seed, groups=groups)["auc"]
    return ShiftCheck(auc=float(auc.value), low=float(auc.low), high=float(auc.high),
                      shifted=bool(auc.value > SHIFT_WARN_AUC), n_labelled=len(labelled_pixels),
                      n_test=len(test_pixels))


def look_alike_groups(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Tight k-means clusters (about PSEUDO_PATIENT_SIZE images each) standing in for unknown patients."""
    from sklearn.cluster import KMeans

    n_clusters = max(2, len(features) // PSEUDO_PATIENT_SIZE)
    if n_clusters >= len(features):
        return np.arange(len(features))
    return KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(features)
