"""Ensemble: average of the component methods' score ranks.

Ranks are taken over all scored real images together (labelled and test, labels unused), so the
components' different scales do not matter and nothing is fitted on labels: the ensemble's CV
metrics stay honest without nested cross-validation. Components: `--set ensemble=a,b,c` (default
nearest and nearest-local); each runs with the audit's feature space unless written `method@space`,
and with a calibration when written `method+calibration` (e.g. `density-ratio+neighbours@pixels`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import rankdata

from ..config import MethodConfig
from ..errors import SynthleakError
from ..options import Options, option
from .base import Method, MethodResult, Signal
from .context import AuditContext

DEFAULT_COMPONENTS = "nearest,nearest-local"


@dataclass(frozen=True)
class EnsembleOptions(Options):
    ensemble: str = option(DEFAULT_COMPONENTS, "comma list of the components, each METHOD[+CALIBRATION][@SPACE]")


def components(cfg: MethodConfig) -> list[tuple[str, str, MethodConfig]]:
    """(component as written, method name, its configuration) of every component of `--set ensemble`."""
    from . import get_method

    written = [c.strip() for c in EnsembleOptions.read(cfg.options).ensemble.split(",") if c.strip()]
    if not written:
        raise SynthleakError("--set ensemble=...: give at least one method")
    out = []
    for comp in written:
        name, _, space = comp.partition("@")
        try:
            spec = get_method(name)
        except SynthleakError:
            spec = None
        if spec is None or spec.name == "ensemble":
            raise SynthleakError(f"--set ensemble: unknown component {name!r}")
        # components calibrate only when their own name says so (nearest+neighbours): the ensemble's
        # --calibrate applies once, to the mean rank
        out.append((comp, name, replace(cfg, feature_space=space or cfg.feature_space, calibrate=None)))
    return out


def component_options(cfg: MethodConfig) -> list:
    """The option classes of every component (the ensemble passes its --set keys to each)."""
    from . import option_classes

    return [cls for _, name, sub_cfg in components(cfg) for cls in option_classes(name, sub_cfg)]


class Ensemble(Method):
    """A composite: the mean score rank of its component methods (each a method object of its own)."""

    Settings = EnsembleOptions

    def __init__(self, cfg: MethodConfig):
        from . import make_method

        super().__init__(cfg)
        self.components = [(written, make_method(name, sub_cfg)) for written, name, sub_cfg in components(cfg)]

    def run(self, audit: AuditContext) -> MethodResult:
        from . import get_method

        result = MethodResult(test_scores=None)
        n_lab = len(audit.y) if audit.data.has_labelled else 0
        ranks = []
        for written, method in self.components:
            if get_method(method.name).needs_labelled and not n_lab:
                raise SynthleakError(f"--set ensemble: component {written} needs labelled reals "
                                     "(real_used/ and real_not_used/)")
            res = method.run(audit)
            parts = [a for a in (res.labelled_scores if n_lab else None, res.test_scores) if a is not None]
            ranks.append(rankdata(np.concatenate(parts)) / sum(len(p) for p in parts))
            result.variants[written] = Signal(res.labelled_scores if n_lab else None, res.test_scores)
            result.trained_on.update({f"{written}: {k}": v for k, v in res.trained_on.items()})
            if res.neighbours is not None and result.neighbours is None:
                result.neighbours = res.neighbours
        mean = np.mean(ranks, axis=0)
        if n_lab:
            result.labelled_scores = mean[:n_lab]
        if audit.data.real_unknown is not None:
            result.test_scores = mean[n_lab:]
        result.notes.append(f"mean rank of {', '.join(written for written, _ in self.components)}")
        return result
