"""Every method (recipe) synthleak can run, by name. Modules are imported only when a method runs.

A name may carry a difficulty calibration as a variant: `nearest+neighbours` is `nearest` with
`--calibrate neighbours` (see synthleak.calibration), so one `--method` list can compare a method
with and without calibration.
"""
from __future__ import annotations

from ..calibration import CALIBRATIONS, Calibration
from ..config import SETTINGS_AS_OPTIONS, MethodConfig
from ..data.layout import AuditData
from ..errors import SynthleakError
from ..features import load_object
from ..options import Options, check_options
from ..runtime import verbosity
from .base import Method, MethodResult, MethodSpec
from .calibrated import Calibrated
from .context import AuditContext, as_context

CONTROL = "control-real-only"
#: what `synthleak audit` runs without --method (chosen on the evidence in benchmarks/results/calibration.md)
DEFAULT_METHOD = "default"
#: the default recipe's decision rule when the shift check fires: flag the labelled reals' member rate among the
#: test reals (criterion 2 of benchmarks/results/suite.md)
SHIFT_DECISION = "rate"

_M = "synthleak.methods."
_CLUSTER_OPTIONS = dict(option_classes=(f"{_M}seed_ae_cluster:ClusterOptions",), reads_feature_space=False,
                        more_options=f"{_M}seed_ae_cluster:clustered_space_options")
_VIT_OPTIONS = dict(option_classes=(f"{_M}seed_vit_ae:SeedViTAEOptions", "synthleak.features.vit_ae:ViTAEOptions"),
                    reads_feature_space=False)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in [
    MethodSpec("nearest", f"{_M}nearest:Nearest",
               "GAN-Leaks full black-box: minus the distance to the nearest synthetic image (--feature-space)",
               option_classes=(f"{_M}nearest:NearestOptions",)),
    MethodSpec("nearest-calibrated", f"{_M}nearest:NearestCalibrated",
               "nearest-synthetic distance minus nearest distance to labelled non-members (cross-fitted)",
               needs_labelled=True, option_classes=(f"{_M}nearest:NearestOptions",)),
    MethodSpec("nearest-local", f"{_M}density:NearestLocal",
               "nearest-synthetic distance relative to the k-th nearest (local synthetic density; no reference)",
               option_classes=(f"{_M}density:NearestLocalOptions",)),
    MethodSpec(DEFAULT_METHOD, f"{_M}adaptive:AdaptiveDefault",
               "the default recipe: pixels at the synthetic set's measured resolution (never finer than 64x64); "
               "density-ratio+neighbours unless the labelled reals show that nearest or nearest+neighbours ranks them "
               f"better (nested CV); kappa-best threshold, or the {SHIFT_DECISION} rule when the labelled reals are "
               "unlike the test reals",
               feature_space="pixels", calibration="none", decision="kappa", shift_decision=SHIFT_DECISION,
               option_classes=(f"{_M}adaptive:AdaptiveOptions",), reads_feature_space=False),
    MethodSpec("density-ratio", f"{_M}density:DensityRatio",
               "k-NN DOMIAS: log(distance to the k-th nearest real, labels unused) - log(distance to the nearest "
               "synthetic image)", option_classes=(f"{_M}density:DensityRatioOptions",)),
    MethodSpec("domias", f"{_M}density:Domias",
               "DOMIAS density ratio p_synthetic / p_reference (KDE in PCA space; reference: all reals, unlabelled)",
               option_classes=(f"{_M}density:DomiasOptions",)),
    MethodSpec("ensemble", f"{_M}ensemble:Ensemble",
               "mean score rank of several methods (--set ensemble=nearest,nearest-local,nearest@radiomics)",
               option_classes=(f"{_M}ensemble:EnsembleOptions",), reads_feature_space=False,
               more_options=f"{_M}ensemble:component_options"),
    MethodSpec(CONTROL, f"{_M}nearest:ControlRealOnly",
               "control: 1-NN between labelled used / not-used reals; never looks at synthetic images",
               uses_synthetic=False, needs_labelled=True, option_classes=(f"{_M}nearest:NearestOptions",)),
    MethodSpec("seed-resnet-radiomics", f"{_M}seed_resnet_radiomics:SeedResNetRadiomics",
               "paper method 3: ResNet AE latent + radiomics, Mahalanobis/recon/cosine meta-signals, Random Forest",
               slow=True, reads_feature_space=False,
               option_classes=(f"{_M}seed_resnet_radiomics:SeedResNetRadiomicsOptions",
                               "synthleak.features.resnet_ae:ResNetAEOptions",
                               "synthleak.features.radiomics:RadiomicsOptions")),
    MethodSpec("seed-ae-kmeans", f"{_M}seed_ae_cluster:SeedAEKMeans",
               "paper method 2: residual conv AE encoder features, KMeans into used / not used", slow=True,
               **_CLUSTER_OPTIONS),
    MethodSpec("seed-ae-gmm", f"{_M}seed_ae_cluster:SeedAEGMM",
               "paper method 2: residual conv AE encoder features, Gaussian mixture posterior", slow=True,
               **_CLUSTER_OPTIONS),
    MethodSpec("seed-ae-spectral", f"{_M}seed_ae_cluster:SeedAESpectral",
               "paper method 2: residual conv AE encoder features, spectral clustering", slow=True,
               **_CLUSTER_OPTIONS),
    MethodSpec("seed-vit-ae", f"{_M}seed_vit_ae:SeedViTAEClassifier",
               "paper method 1: ViT autoencoder encoder features, CV-chosen classifier", needs_labelled=True,
               slow=True, **_VIT_OPTIONS),
    MethodSpec("seed-vit-ae-recon", f"{_M}seed_vit_ae:SeedViTAERecon",
               "paper method 1: ViT autoencoder reconstruction error", slow=True, **_VIT_OPTIONS),
    MethodSpec("seed-dclgan", f"{_M}seed_dclgan:SeedDCLGAN",
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
    check_options(cfg.options, classes, ", ".join(names), flags=SETTINGS_AS_OPTIONS)


def make_method(name: str, cfg: MethodConfig) -> Method:
    """The method object `name` (a variant name too) runs as with cfg: its own defaults where the user set none,
    wrapped in its difficulty calibration when it has one."""
    spec = get_method(name)
    cfg = method_config(name, cfg)
    method = load_object(spec.target)(cfg)
    method.name = name
    calibration = Calibration(cfg.calibrate or "none", k=cfg.calibrate_k)
    return Calibrated(method, calibration) if calibration.active else method


def run_method(name: str, data: AuditData | AuditContext, cfg: MethodConfig) -> MethodResult:
    """Run method `name` on an audit (bare AuditData: a context of its own, for library callers of one method)."""
    audit = as_context(data, cfg)
    if get_method(name).needs_labelled and not audit.data.has_labelled:
        raise SynthleakError(f"method {name} needs labelled reals (real_used/ and real_not_used/)")
    with verbosity(cfg.quiet):
        return make_method(name, cfg).run(audit)


__all__ = ["CONTROL", "DEFAULT_METHOD", "SHIFT_DECISION", "METHODS", "AuditContext", "Calibrated", "Method",
           "MethodResult", "MethodSpec", "check_method_options", "get_method", "make_method", "method_config",
           "option_classes", "run_method", "split_variant"]
