"""Set-level distances: histogram (saturation), radial spectrum (checkerboard, blur), pairwise SSIM."""

import numpy as np
import pytest
from scipy import ndimage

from tfmedgan.errors import TfmedganError
from tfmedgan.metrics import distribution


def _blobs(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random 'anatomy-like' images in [-1, 1]."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(count, size, size))
    smooth = np.stack([ndimage.gaussian_filter(image, 1.5) for image in noise])
    smooth /= np.abs(smooth).max(axis=(1, 2), keepdims=True)
    return (smooth + 0.02 * rng.normal(size=smooth.shape)).astype(np.float32)  # plus acquisition noise


def test_histogram_distance_zero_for_same_and_grows_with_saturation():
    real = _blobs(16)
    assert distribution.intensity_histogram_distance(real, real) == 0.0
    mild = distribution.intensity_histogram_distance(real, np.clip(real + 0.2, -1, 1))
    saturated = distribution.intensity_histogram_distance(real, np.ones_like(real))
    assert 0.1 < mild < saturated
    # All mass at +1 against all at -1: the full width of the range.
    assert distribution.intensity_histogram_distance(-np.ones((2, 8, 8)), np.ones((2, 8, 8))) == pytest.approx(2.0, abs=0.02)


def test_spectrum_distance_catches_checkerboard_and_blur():
    real, other = _blobs(16, seed=0), _blobs(16, seed=1)
    baseline = distribution.spectrum_distance(real, other)
    checker = other + 0.05 * np.where(np.indices((32, 32)).sum(axis=0) % 2 == 0, 1.0, -1.0)
    blurred = np.stack([ndimage.gaussian_filter(image, 1.0) for image in other])
    assert baseline < 0.1
    assert distribution.spectrum_distance(real, checker) > 3 * baseline
    assert distribution.spectrum_distance(real, blurred) > 3 * baseline


def test_radial_spectrum_is_normalised_and_contrast_free():
    images = _blobs(4)
    frequencies, power = distribution.radial_power_spectrum(images)
    assert np.all(np.diff(frequencies) > 0) and frequencies[-1] > 0.5  # reaches the corner frequencies
    assert power.sum() == pytest.approx(1.0, rel=1e-6)
    _, scaled = distribution.radial_power_spectrum(images * 0.1 + 0.3)
    np.testing.assert_allclose(power, scaled, rtol=1e-4)
    # A pure checkerboard puts all its power in the last (corner) ring.
    _, checker = distribution.radial_power_spectrum((np.indices((16, 16)).sum(axis=0) % 2)[None].astype(float))
    assert checker[-1] == pytest.approx(1.0)


def test_mean_pairwise_ssim_detects_collapse():
    diverse = _blobs(12)
    collapsed = np.repeat(diverse[:1], 12, axis=0) + 0.01 * np.random.default_rng(2).normal(size=diverse.shape)
    assert distribution.mean_pairwise_ssim(collapsed) > 0.9
    assert distribution.mean_pairwise_ssim(diverse) < 0.5
    assert distribution.mean_pairwise_ssim(diverse, max_pairs=10) == distribution.mean_pairwise_ssim(diverse, max_pairs=10)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(TfmedganError):
        distribution.spectrum_distance(np.zeros((2, 16, 16)), np.zeros((2, 8, 8)))
    with pytest.raises(TfmedganError):
        distribution.mean_pairwise_ssim(np.zeros((1, 16, 16)))
    with pytest.raises(TfmedganError):
        distribution.intensity_histogram_distance(np.full((1, 8, 8), np.nan), np.zeros((1, 8, 8)))
    with pytest.raises(TfmedganError):
        distribution.radial_power_spectrum(np.zeros((16, 16)))
