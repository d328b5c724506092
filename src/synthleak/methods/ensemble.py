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
from ..data.layout import AuditData
from ..errors import SynthleakError
from ..options import Options, option
from .base import MethodResult, Signal

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


def run_ensemble(data: AuditData, cfg: MethodConfig) -> MethodResult:
    from . import run_method

    parts_of = components(cfg)
    result = MethodResult(test_scores=None)
    n_lab = len(data.labelled()[0]) if data.has_labelled else 0
    ranks = []
    for comp, name, sub_cfg in parts_of:
        res = run_method(name, data, sub_cfg)
        parts = [a for a in (res.labelled_scores if n_lab else None, res.test_scores) if a is not None]
        r = rankdata(np.concatenate(parts)) / sum(len(p) for p in parts)
        ranks.append(r)
        result.variants[comp] = Signal(res.labelled_scores if n_lab else None, res.test_scores)
        result.trained_on.update({f"{comp}: {k}": v for k, v in res.trained_on.items()})
        if res.neighbours is not None and result.neighbours is None:
            result.neighbours = res.neighbours
    mean = np.mean(ranks, axis=0)
    if n_lab:
        result.labelled_scores = mean[:n_lab]
    if data.real_unknown is not None:
        result.test_scores = mean[n_lab:]
    result.notes.append(f"mean rank of {', '.join(comp for comp, _, _ in parts_of)}")
    return result
