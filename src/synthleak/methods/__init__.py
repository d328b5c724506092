"""Every method (recipe) synthleak can run, by name. Modules are imported only when a method runs."""
from __future__ import annotations

from ..config import MethodConfig
from ..data.layout import AuditData
from ..errors import SynthleakError
from ..features import load_object
from .base import MethodResult, MethodSpec

CONTROL = "control-real-only"

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in [
    MethodSpec("nearest", "synthleak.methods.nearest:run_nearest",
               "GAN-Leaks full black-box: minus the distance to the nearest synthetic image (--feature-space)"),
    MethodSpec("nearest-calibrated", "synthleak.methods.nearest:run_nearest_calibrated",
               "nearest-synthetic distance minus nearest distance to labelled non-members (cross-fitted)",
               needs_labelled=True),
    MethodSpec("nearest-local", "synthleak.methods.density:run_nearest_local",
               "nearest-synthetic distance relative to the k-th nearest (local synthetic density; no reference)"),
    MethodSpec("domias", "synthleak.methods.density:run_domias",
               "DOMIAS density ratio p_synthetic / p_reference (KDE in PCA space; reference: all reals, unlabelled)"),
    MethodSpec("ensemble", "synthleak.methods.ensemble:run_ensemble",
               "mean score rank of several methods (--set ensemble=nearest,nearest-local,nearest@radiomics)"),
    MethodSpec(CONTROL, "synthleak.methods.nearest:run_control_real_only",
               "control: 1-NN between labelled used / not-used reals; never looks at synthetic images",
               uses_synthetic=False, needs_labelled=True),
    MethodSpec("seed-resnet-radiomics", "synthleak.methods.seed_resnet_radiomics:run",
               "paper method 3: ResNet AE latent + radiomics, Mahalanobis/recon/cosine meta-signals, Random Forest",
               slow=True),
    MethodSpec("seed-ae-kmeans", "synthleak.methods.seed_ae_cluster:run_kmeans",
               "paper method 2: residual conv AE encoder features, KMeans into used / not used", slow=True),
    MethodSpec("seed-ae-gmm", "synthleak.methods.seed_ae_cluster:run_gmm",
               "paper method 2: residual conv AE encoder features, Gaussian mixture posterior", slow=True),
    MethodSpec("seed-ae-spectral", "synthleak.methods.seed_ae_cluster:run_spectral",
               "paper method 2: residual conv AE encoder features, spectral clustering", slow=True),
    MethodSpec("seed-vit-ae", "synthleak.methods.seed_vit_ae:run_classifier",
               "paper method 1: ViT autoencoder encoder features, CV-chosen classifier", needs_labelled=True,
               slow=True),
    MethodSpec("seed-vit-ae-recon", "synthleak.methods.seed_vit_ae:run_recon",
               "paper method 1: ViT autoencoder reconstruction error", slow=True),
    MethodSpec("seed-dclgan", "synthleak.methods.seed_dclgan:run",
               "paper method 4: DCLGAN critic output / activation overlap / critic features, chosen by CV",
               slow=True),
]}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise SynthleakError(f"unknown method {name!r} (see `synthleak methods`)")
    return METHODS[name]


def run_method(name: str, data: AuditData, cfg: MethodConfig) -> MethodResult:
    spec = get_method(name)
    if spec.needs_labelled and not data.has_labelled:
        raise SynthleakError(f"method {name} needs labelled reals (real_used/ and real_not_used/)")
    fn = load_object(spec.target)
    return fn(data, cfg)


__all__ = ["CONTROL", "METHODS", "MethodResult", "MethodSpec", "get_method", "run_method"]
