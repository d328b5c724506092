"""Radiomics feature space: names, shapes, invariances, known values, threading, registration."""
from __future__ import annotations

import numpy as np
import pytest

from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.errors import SynthleakError
from synthleak.features import get_extractor
from synthleak.features.radiomics import RadiomicsExtractor, feature_names


def _textured(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    disc = ((yy - 128) ** 2 + (xx - 128) ** 2 < 90**2) * 120.0
    return np.stack([np.clip(disc + rng.normal(60, 25, (256, 256)), 0, 255).astype(np.uint8) for _ in range(n)])


def _vector(ext: RadiomicsExtractor, img: np.ndarray) -> dict[str, float]:
    values = ext.transform(ImageSet.from_arrays(img[None]))[0]
    return dict(zip(ext.feature_names(), values))


def test_shapes_and_names():
    ext = RadiomicsExtractor(MethodConfig(cache_dir="none", workers=1))
    feats = ext.transform(ImageSet.from_arrays(_textured(3)))
    names = ext.feature_names()
    assert feats.shape == (3, len(names)) and feats.dtype == np.float32
    assert len(set(names)) == len(names) == 53  # 8 first-order + 16 GLCM + 7 wavelet + 18 Gabor + 4 morphology
    assert sum(n.startswith("glcm64_") for n in names) == 16
    assert sum(n.startswith("gabor_") for n in names) == 18
    assert np.isfinite(feats).all()
    assert ext.scale is True
    assert isinstance(get_extractor("radiomics", MethodConfig()), RadiomicsExtractor)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_image_is_finite(value):
    ext = RadiomicsExtractor(MethodConfig(cache_dir="none", workers=1))
    v = _vector(ext, np.full((256, 256), value, np.uint8))
    assert all(np.isfinite(list(v.values())))
    assert v["fo_mean"] == pytest.approx(value / 255, abs=1e-6)
    assert v["fo_variance"] == 0 and v["fo_skewness"] == 0 and v["fo_kurtosis"] == 0 and v["fo_entropy"] == 0
    assert v["glcm64_contrast_0deg"] == 0 and v["glcm64_homogeneity_90deg"] == pytest.approx(1)
    assert v["wavelet_db1_L1_diagonal_energy"] == pytest.approx(0, abs=1e-9)


def test_known_values_half_image():
    img = np.zeros((256, 256), np.uint8)
    img[:, 128:] = 200
    v = _vector(RadiomicsExtractor(MethodConfig(cache_dir="none", workers=1)), img)
    assert v["fo_mean"] == pytest.approx(100 / 255, rel=1e-5)
    assert v["fo_entropy"] == pytest.approx(1.0, rel=1e-5)  # two equally likely levels = 1 bit
    assert v["morph_components"] == 1 and v["morph_foreground_fraction"] == pytest.approx(0.5)
    assert v["morph_area_mean"] == pytest.approx(128 * 256)
    # the edge is vertical: horizontal neighbours (0 deg) differ across it, vertical ones (90 deg) never do
    assert v["glcm64_contrast_0deg"] > 0 and v["glcm64_contrast_90deg"] == 0


def test_gabor_follows_orientation():
    xx = np.arange(256)[None, :].repeat(256, 0)
    stripes = (127.5 + 100 * np.cos(2 * np.pi * 0.1 * xx)).astype(np.uint8)  # varies along x only
    v = _vector(RadiomicsExtractor(MethodConfig(cache_dir="none", workers=1)), stripes)
    assert v["gabor_f0.1_0deg_mean"] > 5 * v["gabor_f0.1_90deg_mean"]
    assert v["gabor_f0.1_0deg_mean"] > v["gabor_f0.5_0deg_mean"]


def test_threads_give_identical_features():
    images = ImageSet.from_arrays(_textured(24, seed=3))
    one = RadiomicsExtractor(MethodConfig(cache_dir="none", workers=1)).transform(images)
    two = RadiomicsExtractor(MethodConfig(cache_dir="none", workers=2)).transform(images)
    np.testing.assert_array_equal(one, two)


def test_glcm_levels_option():
    cfg = MethodConfig(options={"glcm_levels": "32"})
    ext = RadiomicsExtractor(cfg)
    assert ext.feature_names()[8].startswith("glcm32_") and ext.feature_names() == feature_names(32)
    assert ext.cache_key() != RadiomicsExtractor(MethodConfig()).cache_key()
    with pytest.raises(SynthleakError, match="glcm_levels"):
        RadiomicsExtractor(MethodConfig(options={"glcm_levels": "1"}))


def test_nearest_in_radiomics_space(tiny_audit_data):
    from synthleak.methods import run_method

    cfg = MethodConfig(feature_space="radiomics")
    result = run_method("nearest", tiny_audit_data, cfg)
    assert result.test_scores.shape == (len(tiny_audit_data.real_unknown),)
    assert np.isfinite(result.test_scores).all() and np.isfinite(result.labelled_scores).all()
    calibrated = run_method("nearest-calibrated", tiny_audit_data, cfg)
    assert np.isfinite(calibrated.labelled_scores).all()
