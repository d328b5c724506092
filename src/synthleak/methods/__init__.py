"""Every method (recipe) synthleak can run, by name. Modules are imported only when a method runs.

A name may carry a difficulty calibration as a variant: `nearest+neighbours` is `nearest` with
`--calibrate neighbours` (see synthleak.calibration), so one `--method` list can compare a method
with and without calibration.
"""
from __future__ import annotations

import numpy as np

from ..calibration import CALIBRATIONS, Calibration
from ..config import MethodConfig
from ..data.layout import AuditData
from ..errors import SynthleakError
from ..features import load_object
from ..options import Options, check_options
from .base import MethodResult, MethodSpec

CONTROL = "control-real-only"
#: what `synthleak audit` runs without --method (chosen on the evidence in benchmarks/results/calibration.md)
DEFAULT_METHOD = "default"
#: the default recipe's decision rule when the shift check fires: flag the labelled reals' member rate among the
#: test reals (criterion 2 of benchmarks/results/suite.md, re-read on stop 25's rebuilt suite; was mixture)
SHIFT_DECISION = "rate"

_M = "synthleak.methods."
_CLUSTER_OPTIONS = dict(option_classes=(f"{_M}seed_ae_cluster:ClusterOptions",), reads_feature_space=False,
                        more_options=f"{_M}seed_ae_cluster:clustered_space_options")
_VIT_OPTIONS = dict(option_classes=(f"{_M}seed_vit_ae:SeedViTAEOptions", "synthleak.features.vit_ae:ViTAEOptions"),
                    reads_feature_space=False)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in [
    MethodSpec("nearest", "synthleak.methods.nearest:run_nearest",
               "GAN-Leaks full black-box: minus the distance to the nearest synthetic image (--feature-space)",
               option_classes=(f"{_M}nearest:NearestOptions",)),
    MethodSpec("nearest-calibrated", "synthleak.methods.nearest:run_nearest_calibrated",
               "nearest-synthetic distance minus nearest distance to labelled non-members (cross-fitted)",
               needs_labelled=True, option_classes=(f"{_M}nearest:NearestOptions",)),
    MethodSpec("nearest-local", "synthleak.methods.density:run_nearest_local",
               "nearest-synthetic distance relative to the k-th nearest (local synthetic density; no reference)",
               option_classes=(f"{_M}density:NearestLocalOptions",)),
    MethodSpec(DEFAULT_METHOD, "synthleak.methods.adaptive:run_adaptive",
               "the default recipe: pixels at the synthetic set's measured resolution (never finer than 64x64); "
               "density-ratio+neighbours unless the labelled reals show that nearest or nearest+neighbours ranks them "
               f"better (nested CV); kappa-best threshold, or the {SHIFT_DECISION} rule when the labelled reals are "
               "unlike the test reals",
               feature_space="pixels", calibration="none", decision="kappa", shift_decision=SHIFT_DECISION,
               option_classes=(f"{_M}adaptive:AdaptiveOptions",), reads_feature_space=False),
    MethodSpec("density-ratio", "synthleak.methods.density:run_density_ratio",
               "k-NN DOMIAS: log(distance to the k-th nearest real, labels unused) - log(distance to the nearest "
               "synthetic image)", option_classes=(f"{_M}density:DensityRatioOptions",)),
    MethodSpec("domias", "synthleak.methods.density:run_domias",
               "DOMIAS density ratio p_synthetic / p_reference (KDE in PCA space; reference: all reals, unlabelled)",
               option_classes=(f"{_M}density:DomiasOptions",)),
    MethodSpec("ensemble", "synthleak.methods.ensemble:run_ensemble",
               "mean score rank of several methods (--set ensemble=nearest,nearest-local,nearest@radiomics)",
               option_classes=(f"{_M}ensemble:EnsembleOptions",), reads_feature_space=False,
               more_options=f"{_M}ensemble:component_options"),
    MethodSpec(CONTROL, "synthleak.methods.nearest:run_control_real_only",
               "control: 1-NN between labelled used / not-used reals; never looks at synthetic images",
               uses_synthetic=False, needs_labelled=True, option_classes=(f"{_M}nearest:NearestOptions",)),
    MethodSpec("seed-resnet-radiomics", "synthleak.methods.seed_resnet_radiomics:run",
               "paper method 3: ResNet AE latent + radiomics, Mahalanobis/recon/cosine meta-signals, Random Forest",
               slow=True, reads_feature_space=False,
               option_classes=(f"{_M}seed_resnet_radiomics:SeedResNetRadiomicsOptions",
                               "synthleak.features.resnet_ae:ResNetAEOptions",
                               "synthleak.features.radiomics:RadiomicsOptions")),
    MethodSpec("seed-ae-kmeans", "synthleak.methods.seed_ae_cluster:run_kmeans",
               "paper method 2: residual conv AE encoder features, KMeans into used / not used", slow=True,
               **_CLUSTER_OPTIONS),
    MethodSpec("seed-ae-gmm", "synthleak.methods.seed_ae_cluster:run_gmm",
               "paper method 2: residual conv AE encoder features, Gaussian mixture posterior", slow=True,
               **_CLUSTER_OPTIONS),
    MethodSpec("seed-ae-spectral", "synthleak.methods.seed_ae_cluster:run_spectral",
               "paper method 2: residual conv AE encoder features, spectral clustering", slow=True,
               **_CLUSTER_OPTIONS),
    MethodSpec("seed-vit-ae", "synthleak.methods.seed_vit_ae:run_classifier",
               "paper method 1: ViT autoencoder encoder features, CV-chosen classifier", needs_labelled=True,
               slow=True, **_VIT_OPTIONS),
    MethodSpec("seed-vit-ae-recon", "synthleak.methods.seed_vit_ae:run_recon",
               "paper method 1: ViT autoencoder reconstruction error", slow=True, **_VIT_OPTIONS),
    MethodSpec("seed-dclgan", "synthleak.methods.seed_dclgan:run",
               "paper method 4: DCLGAN critic output / activation overlap / critic features, chosen by CV",
               slow=True, reads_feature_space=False,
               option_classes=(f"{_M}seed_dclgan:SeedDCLGANOptions", "synthleak.features.dclgan:DCLGANOptions")),
]}


def split_variant(name: str) -> tuple[str, str | None]:
    """'nearest+neighbours' -> ('nearest', 'neighbours'); 'nearest' -> ('nearest', None)."""
    base, sep, calibration = name.partition("+")
    if sep and calibration not in CALIBRATIONS:
        raise SynthleakError(f"method {name!r}: unknown calibration {calibration!r} "
                             f"(choose from {', '.join(CALIBRATIONS)})")
    return base, (calibration if sep else None)


def get_method(name: str) -> MethodSpec:
    base, _ = split_variant(name)
    if base not in METHODS:
        raise SynthleakError(f"unknown method {base!r} (see `synthleak methods`)")
    return METHODS[base]


def method_config(name: str, cfg: MethodConfig) -> MethodConfig:
    """cfg as method `name` (a variant name too) runs it: its own defaults where the user set none."""
    return get_method(name).configure(cfg, split_variant(name)[1])


def option_classes(name: str, cfg: MethodConfig) -> list[type[Options]]:
    """The `--set` option classes method `name` (a variant name too) reads when run with cfg."""
    from ..features import feature_space_options

    spec = get_method(name)
    cfg = method_config(name, cfg)
    classes = [load_object(path) for path in spec.option_classes]
    if spec.reads_feature_space:
        classes += feature_space_options(cfg.feature_space)
    if spec.more_options:
        classes += load_object(spec.more_options)(cfg)
    return classes


def check_method_options(names: list[str], cfg: MethodConfig, with_default: bool = False) -> None:
    """Every `--set` key is read by one of the methods (by the default recipe too when it runs for the
    verdict), and every value has its declared type: else a one-line user error naming the valid keys."""
    if not cfg.options:
        return
    runs = list(names) + ([DEFAULT_METHOD] if with_default and DEFAULT_METHOD not in names else [])
    classes = [cls for n in runs for cls in option_classes(n, cfg)]
    check_options(cfg.options, classes, ", ".join(names))


def run_method(name: str, data: AuditData, cfg: MethodConfig) -> MethodResult:
    spec = get_method(name)
    if spec.needs_labelled and not data.has_labelled:
        raise SynthleakError(f"method {name} needs labelled reals (real_used/ and real_not_used/)")
    cfg = method_config(name, cfg)
    result = load_object(spec.target)(data, cfg)
    calibration = Calibration(cfg.calibrate or "none", k=cfg.calibrate_k)
    if calibration.active:
        calibrate_result(result, data, cfg, calibration)
    return result


def calibrate_result(result: MethodResult, data: AuditData, cfg: MethodConfig, calibration: Calibration) -> None:
    """Replace the result's scores by difficulty-calibrated ones (labelled and test reals pooled, no labels).

    The reference neighbourhoods come from the method's own feature space when it reports one, else
    from 32x32 pixels (methods whose features are not a space for real images, e.g. a classifier)."""
    from ..features import get_extractor

    parts = [s for s in (result.labelled_scores, result.test_scores) if s is not None]
    if not parts:
        return
    features = result.real_features
    space = cfg.feature_space
    if features is None:
        space = "pixels32"
        extractor = get_extractor(space, cfg)
        images = [s for s in ((data.labelled()[0] if result.labelled_scores is not None else None),
                              (data.real_unknown if result.test_scores is not None else None)) if s is not None]
        features = np.concatenate([extractor.extract(s) for s in images])
    if calibration.mode == "non-members":
        if result.labelled_scores is None:
            raise SynthleakError("--calibrate non-members needs labelled reals (real_used/ and real_not_used/)")
        from .base import labelled_folds

        scores = calibration.apply_with_labels(np.concatenate(parts), features, data.labelled()[1],
                                               labelled_folds(data, cfg))
    else:
        scores = calibration.apply(np.concatenate(parts), features, cfg.seed)
    n_lab = len(result.labelled_scores) if result.labelled_scores is not None else 0
    if result.labelled_scores is not None:
        result.labelled_scores = scores[:n_lab]
    if result.test_scores is not None:
        result.test_scores = scores[n_lab:]
    result.notes.append(f"difficulty calibration: each score {calibration.describe()} in '{space}' space")
    result.calibration = calibration.mode


__all__ = ["CONTROL", "DEFAULT_METHOD", "SHIFT_DECISION", "METHODS", "MethodResult", "MethodSpec",
           "check_method_options", "get_method", "method_config", "option_classes", "run_method", "split_variant"]
