"""Tests for tfmedgan.metrics.intensity: PSNR and MAE against scikit-image and by hand, mutual information."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from tfmedgan import metrics
from tfmedgan.errors import TfmedganError
from tests.metrics.images import smooth_images


def test_psnr_matches_skimage():
    rng = np.random.default_rng(16)
    x = rng.uniform(-1, 1, size=(16, 20, 12))
    y = x + 0.05 * rng.standard_normal(x.shape)
    for data_range in (2.0, 1.0, 255.0):
        expected = peak_signal_noise_ratio(x, y, data_range=data_range)
        assert metrics.psnr(x, y, data_range) == pytest.approx(expected, abs=1e-10)
    assert metrics.psnr(x, x, 2.0) == float("inf")
    mask = np.zeros(x.shape, bool)
    mask[2:10] = True
    assert metrics.psnr(x, y, 2.0, mask=mask) == pytest.approx(
        peak_signal_noise_ratio(x[mask], y[mask], data_range=2.0), abs=1e-10
    )
    with pytest.raises(TfmedganError, match="data_range"):
        metrics.psnr(x, y, -1.0)


def test_mae_with_and_without_mask():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    y = np.array([[1.0, 1.0], [0.0, 7.0]])
    assert metrics.mae(x, y) == pytest.approx((1 + 0 + 2 + 4) / 4)
    mask = np.array([[True, False], [False, True]])
    assert metrics.mae(x, y, mask=mask) == pytest.approx((1 + 4) / 2)
    assert metrics.mae(x.astype(np.uint8), y.astype(np.uint8)) == pytest.approx(7 / 4)  # no uint8 wrap-around
    with pytest.raises(TfmedganError, match="mask selects no pixel"):
        metrics.mae(x, y, mask=np.zeros((2, 2), bool))
    with pytest.raises(TfmedganError, match="does not match"):
        metrics.mae(x, y, mask=np.ones((3, 2), bool))


def test_mutual_information_properties():
    rng = np.random.default_rng(17)
    x = smooth_images(rng, 1, (24, 24, 24), sigma=1.0)[0]
    independent = rng.standard_normal(x.shape)
    bins = 32

    counts, _ = np.histogram(x, bins=bins)
    probabilities = counts[counts > 0] / counts.sum()
    entropy = -np.sum(probabilities * np.log(probabilities))
    assert metrics.mutual_information(x, x, bins=bins) == pytest.approx(entropy, abs=1e-12)

    dependent = metrics.mutual_information(x, -3 * x + 1, bins=bins)  # invertible map: same partition
    assert dependent == pytest.approx(entropy, abs=1e-12)
    unrelated = metrics.mutual_information(x, independent, bins=bins)
    assert 0 <= unrelated < 0.2 * entropy
    noisy = metrics.mutual_information(x, x + 0.3 * independent, bins=bins)
    assert unrelated < noisy < entropy
    assert metrics.mutual_information(independent, x, bins=bins) == pytest.approx(unrelated, abs=1e-12)

    # masks: only the masked voxels are counted
    mask = x > 0
    sub = x[mask]
    counts, _ = np.histogram(sub, bins=bins)
    probabilities = counts[counts > 0] / counts.sum()
    assert metrics.mutual_information(x, x, bins=bins, mask=mask) == pytest.approx(
        -np.sum(probabilities * np.log(probabilities)), abs=1e-12
    )
    # explicit ranges: a constant image has zero information
    assert metrics.mutual_information(np.ones((8, 8)), np.ones((8, 8))) == 0.0
    with_range = metrics.mutual_information(x, x, bins=bins, value_ranges=((-1, 1), (-1, 1)))
    counts, _ = np.histogram(x, bins=bins, range=(-1, 1))
    probabilities = counts[counts > 0] / counts.sum()
    assert with_range == pytest.approx(-np.sum(probabilities * np.log(probabilities)), abs=1e-12)
    with pytest.raises(TfmedganError, match="bins"):
        metrics.mutual_information(x, x, bins=1)
