"""Configuration shared by every method: one dataclass the CLI fills and the library accepts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MethodConfig:
    """Options of one audit run. Method-specific knobs default to None = the method's own default."""

    seed: int = 0
    device: str = "cpu"
    #: None = the method's own default (pixels for the distance methods; the default recipe's choice)
    feature_space: str | None = None
    #: difficulty calibration (see synthleak.calibration); None = the method's own default (none for
    #: every method but the default recipe)
    calibrate: str | None = None
    calibrate_k: int = 100
    # 'all' pools train/ and test/ generated images (one generator); 'train' uses train/generated only.
    synthetic_pool: str = "all"
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    base_filters: int | None = None
    vit_size: str = "base"
    weights: str | None = None
    encoder: str | None = None
    clusters: int = 2
    fit_on_test_generated: bool = False
    # Cap on synthetic images used to *train* models (CPU runs); None = all.
    max_train_images: int | None = None
    cache_dir: str | None = None
    #: where synthetic images are decoded and turned into features: 'local' (threads) or 'ray' (Ray Data)
    engine: str = "local"
    #: nearest-neighbour search over large sets: 'auto' (exact below a size, approximate above), 'exact', 'approx'
    search: str = "auto"
    n_folds: int = 5
    workers: int = 2
    #: silence progress lines for this run (applied once, as the "synthleak" logger's level, where a run starts)
    quiet: bool = False
    artifacts_dir: Path | None = None
    #: `--set KEY=VALUE` strings; each method and feature space reads its declared keys (synthleak.options)
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class PretrainConfig:
    """`synthleak pretrain`: supervised encoder pre-training on a class-folder dataset."""

    data: Path
    arch: str
    out: Path
    epochs: int = 100
    batch_size: int = 32
    image_size: int | None = None
    lr: float | None = None
    vit_size: str = "base"
    weights: str | None = None
    seed: int = 0
    device: str = "cpu"
    force: bool = False
    quiet: bool = False
    max_images: int | None = None
    options: dict[str, str] = field(default_factory=dict)
