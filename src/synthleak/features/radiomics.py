"""Handcrafted radiomic features of 8-bit gray slices (the seed paper's handcrafted vector).

Per image: first-order statistics, GLCM texture, wavelet sub-band energies, a Gabor filter bank and
Otsu-mask morphology. Built from OpenCV, scikit-image and PyWavelets rather than pyradiomics, whose
2D feature classes are slow and do not install cleanly here. Images are processed in parallel
threads: OpenCV, scikit-image's GLCM loop and NumPy release the GIL for their heavy parts.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
import pywt
from skimage.feature import graycomatrix, graycoprops

from ..cache import make_key
from ..config import MethodConfig
from ..data.images import ImageSet
from ..errors import SynthleakError
from ..options import Options, option
from .base import FeatureExtractor

#: bump when the feature definitions change, so cached features are recomputed
VERSION = 1

PERCENTILES = (10, 50, 90)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "correlation", "energy", "homogeneity")
WAVELET = "db1"
WAVELET_LEVELS = 2
GABOR_FREQUENCIES = (0.1, 0.3, 0.5)
GABOR_THETAS = (0.0, np.pi / 4, np.pi / 2)
# Gaussian width for a one-octave bandwidth, as skimage.filters.gabor chooses it:
# sigma = sqrt(ln 2 / 2) / pi * (2^b + 1) / (2^b - 1) / f with b = 1.
GABOR_SIGMA_TIMES_F = np.sqrt(np.log(2) / 2) / np.pi * 3.0
#: images per task handed to a worker thread (amortises scheduling overhead)
CHUNK = 16


@dataclass(frozen=True)
class GaborKernel:
    frequency: float
    theta: float
    real: np.ndarray
    imag: np.ndarray


def gabor_bank() -> list[GaborKernel]:
    """Quadrature (even/odd) OpenCV Gabor kernels; |response| is the local energy at (f, theta)."""
    bank = []
    for f in GABOR_FREQUENCIES:
        sigma = GABOR_SIGMA_TIMES_F / f
        size = int(2 * np.ceil(3 * sigma) + 1)  # +-3 sigma, like skimage's default n_stds
        for theta in GABOR_THETAS:
            args = dict(ksize=(size, size), sigma=sigma, theta=theta, lambd=1.0 / f, gamma=1.0,
                        ktype=cv2.CV_32F)
            bank.append(GaborKernel(f, theta, cv2.getGaborKernel(psi=0.0, **args),
                                    cv2.getGaborKernel(psi=np.pi / 2, **args)))
    return bank


def feature_names(glcm_levels: int = 64) -> list[str]:
    """Names of the radiomics vector, in order."""
    names = ["fo_mean", "fo_variance", "fo_skewness", "fo_kurtosis", "fo_entropy"]
    names += [f"fo_p{p}" for p in PERCENTILES]
    for prop in GLCM_PROPS:
        names += [f"glcm{glcm_levels}_{prop}_{round(np.degrees(a))}deg" for a in GLCM_ANGLES]
    names.append(f"wavelet_{WAVELET}_L{WAVELET_LEVELS}_approx_energy")
    for level in range(WAVELET_LEVELS, 0, -1):
        names += [f"wavelet_{WAVELET}_L{level}_{band}_energy" for band in ("horizontal", "vertical", "diagonal")]
    for f in GABOR_FREQUENCIES:
        for theta in GABOR_THETAS:
            tag = f"gabor_f{f:g}_{round(np.degrees(theta))}deg"
            names += [f"{tag}_mean", f"{tag}_variance"]
    names += ["morph_components", "morph_area_mean", "morph_area_std", "morph_foreground_fraction"]
    return names


def first_order(img: np.ndarray) -> list[float]:
    """Mean, variance, skewness, excess kurtosis, entropy (bits) and percentiles of [0, 1] intensities.

    Moments come from the 256-bin histogram (exact for 8-bit images, and O(256) instead of O(pixels));
    a constant image has zero skewness and kurtosis rather than NaN.
    """
    hist = np.bincount(img.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    levels = np.arange(256) / 255.0
    mean = float(p @ levels)
    centred = levels - mean
    var = float(p @ centred**2)
    if var > 1e-12:
        skew = float(p @ centred**3) / var**1.5
        kurt = float(p @ centred**4) / var**2 - 3.0
    else:
        skew = kurt = 0.0
    nz = p[p > 0]
    entropy = float(-(nz * np.log2(nz)).sum())
    cdf = np.cumsum(p)
    pct = [np.searchsorted(cdf, q / 100.0) / 255.0 for q in PERCENTILES]
    return [mean, var, skew, kurt, entropy, *pct]


def glcm_features(img: np.ndarray, levels: int) -> list[float]:
    """GLCM (distance 1, four angles, symmetric, normalised) on `levels` quantised gray levels."""
    quantised = (img.astype(np.uint16) * levels // 256).astype(np.uint8)
    glcm = graycomatrix(quantised, distances=[1], angles=list(GLCM_ANGLES), levels=levels,
                        symmetric=True, normed=True)
    # graycoprops gives [n_distances, n_angles]; a flat image yields correlation 1 (defined, not NaN).
    return [float(v) for prop in GLCM_PROPS for v in graycoprops(glcm, prop)[0]]


def wavelet_energies(x: np.ndarray) -> list[float]:
    """Mean squared coefficient of the approximation and each detail band of a 2-level db1 transform."""
    coeffs = pywt.wavedec2(x, WAVELET, level=WAVELET_LEVELS)
    out = [float(np.mean(coeffs[0] ** 2))]
    for details in coeffs[1:]:  # coarsest level first, as wavedec2 returns them
        out += [float(np.mean(band**2)) for band in details]
    return out


def gabor_features(x: np.ndarray, bank: list[GaborKernel]) -> list[float]:
    """Mean and variance of the quadrature Gabor magnitude for each (frequency, orientation)."""
    out = []
    for k in bank:
        re = cv2.filter2D(x, cv2.CV_32F, k.real, borderType=cv2.BORDER_REFLECT)
        im = cv2.filter2D(x, cv2.CV_32F, k.imag, borderType=cv2.BORDER_REFLECT)
        mean, std = cv2.meanStdDev(cv2.magnitude(re, im))
        out += [float(mean[0, 0]), float(std[0, 0]) ** 2]
    return out


def morphology(img: np.ndarray) -> list[float]:
    """Otsu foreground mask: number of 8-connected components, their mean / std area, foreground share."""
    _, mask = cv2.threshold(img, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)  # label 0 is the background
    if len(areas) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(n - 1), float(areas.mean()), float(areas.std()), float(mask.mean())]


def radiomics_vector(img: np.ndarray, bank: list[GaborKernel], glcm_levels: int = 64) -> np.ndarray:
    """The whole handcrafted vector of one uint8 [H, W] image (float64, finite)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    x = img.astype(np.float32) / 255.0
    values = (first_order(img) + glcm_features(img, glcm_levels) + wavelet_energies(x)
              + gabor_features(x, bank) + morphology(img))
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class RadiomicsOptions(Options):
    glcm_levels: int = option(64, "grey levels of the co-occurrence matrices (2-256)")


class RadiomicsExtractor(FeatureExtractor):
    """Handcrafted radiomics vector per image (`--set glcm_levels=N`, default 64)."""

    name = "radiomics"
    scale = True  # features live on very different scales (areas vs. energies)

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.glcm_levels = RadiomicsOptions.read(cfg.options).glcm_levels
        if not 2 <= self.glcm_levels <= 256:
            raise SynthleakError(f"--set glcm_levels={self.glcm_levels}: must be between 2 and 256")

    @cached_property
    def _bank(self) -> list[GaborKernel]:
        return gabor_bank()

    def feature_names(self) -> list[str]:
        return feature_names(self.glcm_levels)

    def cache_key(self) -> str:
        return make_key(self.name, VERSION, self.glcm_levels)

    def _chunk(self, pixels: np.ndarray) -> np.ndarray:
        return np.stack([radiomics_vector(img, self._bank, self.glcm_levels) for img in pixels])

    def transform(self, images: ImageSet) -> np.ndarray:
        n, d = len(images), len(self.feature_names())
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        chunks = [images.pixels[i:i + CHUNK] for i in range(0, n, CHUNK)]
        workers = max(1, int(self.cfg.workers or 1))
        if workers == 1 or len(chunks) == 1:
            parts = [self._chunk(c) for c in chunks]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(self._chunk, chunks))
        return np.concatenate(parts).astype(np.float32)
