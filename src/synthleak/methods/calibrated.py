"""Difficulty calibration as a wrapper method: `Calibrated(method, calibration)` (see synthleak.calibration).

It runs the wrapped method, then replaces every real's score by the score minus a reference score of
real images like it (labels unused, labelled and test reals pooled), so that "how hard is this kind of
image for the generator" is not read as membership. Its neighbourhoods come from the wrapped method's own
feature space when the method reports one, else from 32x32 pixels (methods whose features are not a space
for real images, e.g. a classifier's).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..calibration import Calibration
from ..errors import SynthleakError
from .base import Method, MethodResult
from .context import AuditContext

#: the space of the calibration's neighbourhoods for methods that report no feature space of their own
FALLBACK_SPACE = "pixels32"


class Calibrated(Method):
    """`method` with its scores difficulty-calibrated."""

    def __init__(self, method: Method, calibration: Calibration):
        self.method, self.calibration = method, calibration
        self.cfg, self.settings, self.name = method.cfg, method.settings, method.name

    def run(self, audit: AuditContext) -> MethodResult:
        result = self.method.run(audit)
        parts = [s for s in (result.labelled_scores, result.test_scores) if s is not None]
        if not parts:
            return result
        features, space = result.real_features, self.cfg.feature_space
        if features is None:
            space = FALLBACK_SPACE
            embedding = audit.embedding(replace(self.cfg, feature_space=space), need_synthetic=False)
            features = np.concatenate([a for a in ((embedding.labelled if result.labelled_scores is not None else None),
                                                   (embedding.test if result.test_scores is not None else None))
                                       if a is not None])
        scores = np.concatenate(parts)
        if self.calibration.mode == "non-members":
            if result.labelled_scores is None:
                raise SynthleakError("--calibrate non-members needs labelled reals (real_used/ and real_not_used/)")
            scores = self.calibration.apply_with_labels(scores, features, audit.y, audit.folds(self.cfg), audit.index)
        else:
            scores = self.calibration.apply(scores, features, self.cfg.seed, audit.index)
        n_lab = len(result.labelled_scores) if result.labelled_scores is not None else 0
        if result.labelled_scores is not None:
            result.labelled_scores = scores[:n_lab]
        if result.test_scores is not None:
            result.test_scores = scores[n_lab:]
        result.notes.append(f"difficulty calibration: each score {self.calibration.describe()} in '{space}' space")
        result.calibration = self.calibration.mode
        return result
