"""The feature-extractor interface every feature space implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..cache import cached_array, make_key
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import SynthleakError
from ..models.checkpoint import state_digest
from ..options import Options, option
from ..runtime import log


@dataclass(frozen=True)
class TrainingOptions(Options):
    """How a learned feature space trains (the CLI's --epochs, --batch-size, --image-size); unset: its default."""

    epochs: int | None = option(None, "training epochs (--epochs; unset: the space's default)")
    batch_size: int | None = option(None, "batch size (--batch-size; unset: the space's default)")
    image_size: int | None = option(None, "input side the network sees (--image-size; unset: the space's default)")


@dataclass(frozen=True)
class FiltersOption(Options):
    base_filters: int | None = option(None, "width of the first convolution (--base-filters; unset: the default)")


@dataclass(frozen=True)
class WeightsOption(Options):
    weights: str | None = option(None, "local weights file (--weights): a trained network of the space, or the "
                                       "pre-trained network it starts from")


@dataclass(frozen=True)
class EncoderOption(Options):
    encoder: str | None = option(None, "encoder checkpoint from `synthleak pretrain` (--encoder)")


class FeatureExtractor(ABC):
    """Maps uint8 gray images [n, 256, 256] to float32 features [n, d].

    `fit` may train a model on synthetic images (never on labelled or test reals); extractors that
    need no training ignore it. `cache_key` must change whenever the features would change
    (config, trained weights), so features can be cached by image content hash.
    """

    name: str = "base"
    #: standardise features (z-score on the synthetic set) before distances
    scale: bool = False
    #: True when fit() trains something (then fit is required before transform)
    trainable: bool = False

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def fit(self, synthetic: ImageSet) -> "FeatureExtractor":
        return self

    @abstractmethod
    def transform(self, images: ImageSet) -> np.ndarray:
        """float32 [n, d] features."""

    def feature_names(self) -> list[str] | None:
        return None

    def cache_key(self) -> str:
        """Identity of the feature mapping (config + weights); override for trained extractors."""
        return make_key(self.name)

    def extract(self, images: ImageSet) -> np.ndarray:
        """transform() with the on-disk cache keyed by extractor identity and image content."""
        key = make_key(self.cache_key(), images.content_key())
        feats = cached_array(self.cfg.cache_dir, f"features/{self.name}", key, lambda: self.transform(images))
        return np.asarray(feats, dtype=np.float32)


class TrainedModelExtractor(FeatureExtractor):
    """The base of every learned feature space: features read out of one network trained on the synthetic images.

    Subclasses implement `train_model(synthetic, description)` -> (model, meta): train, or load what the model
    cache holds for these images, settings and seed (one `cache.cached_model` step each), and set `version`
    (bumped when the network or its training changes). Spaces whose `--weights` is a finished network of their
    own (`loads_weights`) implement `load_model(path)`; the others may read `--weights` otherwise (an encoder's
    initialisation). `model_digest()` names the trained model; the feature cache key is (name, version, digest).
    """

    trainable = True
    version: int = 1
    #: whether `--weights FILE` is a trained network of this space, used instead of training
    loads_weights: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.model: Any = None
        self.meta: dict = {}
        self._digest = ""

    @abstractmethod
    def train_model(self, synthetic: ImageSet, description: str) -> tuple[Any, dict]:
        """(trained model, meta), trained on these synthetic images or loaded from the model cache."""

    def load_model(self, path: str) -> tuple[Any, dict]:
        """(model, meta) from a checkpoint file (--weights), for spaces that `loads_weights`."""
        raise NotImplementedError(f"{self.name} does not load a trained network from --weights")

    def model_digest(self) -> str:
        """A name of the trained model that changes whenever its features would (default: its weights' digest)."""
        return state_digest(self.model)

    def fit(self, synthetic: ImageSet, description: str = "") -> "TrainedModelExtractor":
        weights = WeightsOption.read(self.cfg.options).weights
        if weights and self.loads_weights:
            self.model, self.meta = self.load_model(weights)
            log(f"[{self.name}] using trained weights {weights} (no training)")
        else:
            self.model, self.meta = self.train_model(synthetic, description)
        self._digest = self.model_digest()
        return self

    def _require_model(self) -> Any:
        if self.model is None:
            raise SynthleakError(f"{self.name}: fit() must train or load the model before extracting features")
        return self.model

    def cache_key(self) -> str:
        self._require_model()
        return make_key(self.name, self.version, self._digest)


class AutoencoderExtractor(TrainedModelExtractor):
    """An autoencoder's latent as the feature space, and its reconstruction error from the same forward pass (the
    paper's methods read both).

    Subclasses implement `encode_pass(model, images)` -> [n, latent + 1] (latent, then the error); the pass is
    cached by the trained model's key and the images' content (`cache.cached_array` under `pass_cache`). The last
    pass is also kept in memory, so that a method reading the latent and then the error of one set runs it once
    with `--cache-dir none` too; one, not all: the feature store streams large sets through `transform` chunk by
    chunk and must not keep them."""

    #: feature-cache folder of the two-output pass
    pass_cache: ClassVar[str] = ""
    #: dtype of the reconstruction error the space reports
    error_dtype: ClassVar[type] = np.float32

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self._last_pass: tuple[str, np.ndarray] | None = None

    @abstractmethod
    def encode_pass(self, model: Any, images: ImageSet) -> np.ndarray:
        """[n, latent + 1]: each image's latent and its reconstruction error."""

    def latent_and_error(self, images: ImageSet) -> np.ndarray:
        model = self._require_model()
        key = make_key(self.cache_key(), images.content_key())
        if self._last_pass is None or self._last_pass[0] != key:
            self._last_pass = (key, cached_array(self.cfg.cache_dir, self.pass_cache, key,
                                                 lambda: self.encode_pass(model, images)))
        return self._last_pass[1]

    def transform(self, images: ImageSet) -> np.ndarray:
        return np.ascontiguousarray(self.latent_and_error(images)[:, :-1], dtype=np.float32)

    def reconstruction_error(self, images: ImageSet) -> np.ndarray:
        """Each image's reconstruction error (the autoencoder's own loss, per image)."""
        return self.latent_and_error(images)[:, -1].astype(self.error_dtype)


@dataclass
class EncoderSpec:
    """What an encoder architecture hands to `synthleak pretrain` (see features.ENCODER_ARCHS).

    `encoder` maps float tensors [B, 1, S, S] in [0, 1] (S = input_size) to [B, out_dim] features and
    has an `out_dim` attribute. `meta` is whatever is needed to rebuild the same encoder (stored in
    the checkpoint). Optimiser / schedule / augmentation defaults are per architecture.
    """

    encoder: Any
    input_size: int
    meta: dict
    lr: float = 1e-3
    weight_decay: float = 0.0
    step_size: int = 10
    gamma: float = 0.5
    augment: str = "light"  # 'light': affine + intensity jitter; 'strong': + blur + random erasing
