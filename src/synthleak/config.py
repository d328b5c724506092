"""The run configuration the CLI fills and the library accepts (MethodConfig), and `synthleak pretrain`'s."""
from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from pathlib import Path


#: settings of the learned feature spaces and of the clustering methods that the CLI offers as flags (--epochs,
#: --batch-size, ...) and MethodConfig accepts as keywords; they live in `options`, declared by the spaces and
#: methods that read them (features.base.TrainingOptions, ClusterOptions), so that a method that does not read
#: one rejects it like any unknown `--set` key
SETTINGS_AS_OPTIONS = ("epochs", "batch_size", "image_size", "base_filters", "vit_size", "weights", "encoder",
                       "clusters")


@dataclass
class MethodConfig:
    """The run context of an audit: what every method shares (seed, device, caches, search, folds, what the
    models may train on, verbosity), the method choice (feature space, calibration), and `options`, the settings
    each method and feature space declares and reads itself (synthleak.options).

    `epochs=`, `batch_size=`, `image_size=`, `base_filters=`, `vit_size=`, `weights=`, `encoder=` and `clusters=`
    are accepted as keywords (the CLI's flags) and stored in `options` (SETTINGS_AS_OPTIONS)."""

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
    epochs: InitVar[int | None] = None
    batch_size: InitVar[int | None] = None
    image_size: InitVar[int | None] = None
    base_filters: InitVar[int | None] = None
    vit_size: InitVar[str | None] = None
    weights: InitVar[str | None] = None
    encoder: InitVar[str | None] = None
    clusters: InitVar[int | None] = None

    def __post_init__(self, epochs, batch_size, image_size, base_filters, vit_size, weights, encoder, clusters):
        given = dict(zip(SETTINGS_AS_OPTIONS, (epochs, batch_size, image_size, base_filters, vit_size, weights,
                                               encoder, clusters)))
        # a new dict: a replace() of this config must not write into the original's options
        self.options = {**self.options, **{k: str(v) for k, v in given.items() if v is not None}}


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
