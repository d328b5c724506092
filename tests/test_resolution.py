"""Effective resolution from the spectrum: downsampled-and-upsampled sets are found, sharp sets keep full resolution."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from synthleak.bench.phantoms import make_phantoms
from synthleak.resolution import comparison_side_for, estimate_resolution


@pytest.fixture(scope="module")
def phantom_sets():
    images, _ = make_phantoms(80, 2, seed=3)  # 160 slices of 80 procedural chest phantoms
    return images[:80], images[80:]


def _blur_to(images: np.ndarray, side: int, up: int) -> np.ndarray:
    return np.stack([cv2.resize(cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA), x.shape[::-1],
                                interpolation=up) for x in images])


@pytest.mark.parametrize("side", [16, 32, 64, 128])
@pytest.mark.parametrize("up", [cv2.INTER_LINEAR, cv2.INTER_CUBIC])
def test_downsampled_sets_are_recovered_within_a_factor_of_1_5(phantom_sets, side, up):
    real, other = phantom_sets
    found = estimate_resolution(_blur_to(other, side, up), real)
    assert side / 1.5 <= found.effective_side <= side * 1.5, found
    assert found.comparison_side <= min(found.effective_side, 64)


@pytest.mark.parametrize("side", [16, 32, 64])
def test_nearest_neighbour_upsampling_is_recognised_by_its_notches(phantom_sets, side):
    real, other = phantom_sets
    found = estimate_resolution(_blur_to(other, side, cv2.INTER_NEAREST), real)
    assert side / 1.5 <= found.effective_side <= side * 1.5, found


def test_sharp_sets_keep_full_resolution(phantom_sets):
    real, other = phantom_sets
    found = estimate_resolution(other, real)
    assert found.full and found.effective_side == 256 and found.comparison_side == 64
    noisy = np.clip(other + np.random.default_rng(0).normal(0, 4, other.shape), 0, 255).astype(np.uint8)
    assert estimate_resolution(noisy, real).full


def test_comparison_side_is_never_finer_than_the_effective_side():
    assert comparison_side_for(256) == 64
    assert comparison_side_for(40) == 32
    assert comparison_side_for(18) == 16
    assert comparison_side_for(3) == 8
    assert all(comparison_side_for(e) <= max(e, 8) for e in range(1, 300))


def test_shapes_must_match():
    with pytest.raises(ValueError):
        estimate_resolution(np.zeros((3, 32, 32), np.uint8), np.zeros((3, 64, 64), np.uint8))
