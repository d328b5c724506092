"""Downsampled pixels: the GAN-Leaks baseline feature space."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..cache import make_key
from ..config import MethodConfig
from ..data.images import ImageSet
from ..options import Options, option
from .base import FeatureExtractor


@dataclass(frozen=True)
class PixelOptions(Options):
    pixel_side: int = option(64, "side of the downsampled image in the 'pixels' space (the default recipe: "
                                 "the measured resolution)", minimum=2)


class PixelExtractor(FeatureExtractor):
    """Bilinear (area) downsampling to side x side, intensities in [0, 1], flattened."""

    name = "pixels"

    def __init__(self, cfg: MethodConfig, side: int | None = None):
        super().__init__(cfg)
        self.side = side or PixelOptions.read(cfg.options).pixel_side

    def transform(self, images: ImageSet) -> np.ndarray:
        out = np.empty((len(images), self.side * self.side), dtype=np.float32)
        for i, img in enumerate(images.pixels):
            small = cv2.resize(img, (self.side, self.side), interpolation=cv2.INTER_AREA)
            out[i] = small.reshape(-1).astype(np.float32) / 255.0
        return out

    def cache_key(self) -> str:
        return make_key(self.name, self.side)


class Pixel32Extractor(PixelExtractor):
    name = "pixels32"

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg, side=32)
