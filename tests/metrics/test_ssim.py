"""Tests for tfmedgan.metrics.structural_similarity (ssim, ssim_map): agreement with scikit-image, masks."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tfmedgan import metrics
from tfmedgan.errors import TfmedganError
from tfmedgan.metrics import structural_similarity as structural_similarity_module
from tests.metrics.images import smooth_images


@pytest.mark.parametrize("data_range", [2.0, 0.5, 255.0])
def test_ssim_2d_matches_skimage(data_range):
    rng = np.random.default_rng(0)
    structured = smooth_images(rng, 2, (40, 37))
    noise = rng.uniform(-1, 1, size=(2, 40, 37))
    pairs = [
        (structured[0], structured[1]),
        (structured[0], structured[0] + 0.1 * noise[0]),
        (noise[0], noise[1]),
        (structured[1] * 100 + 50, structured[0] * 100 + 50),
    ]
    for x, y in pairs:
        expected = structural_similarity(x, y, data_range=data_range)
        assert metrics.ssim(x, y, data_range=data_range) == pytest.approx(expected, abs=1e-10)


def test_ssim_float32_and_integer_inputs():
    rng = np.random.default_rng(1)
    x, y = smooth_images(rng, 2, (33, 33)).astype(np.float32)
    # skimage computes float32 inputs in float32; we compute in float64
    assert metrics.ssim(x, y, 2.0) == pytest.approx(structural_similarity(x, y, data_range=2.0), abs=1e-6)
    assert metrics.ssim(x, y, 2.0) == pytest.approx(
        structural_similarity(x.astype(np.float64), y.astype(np.float64), data_range=2.0), abs=1e-12
    )
    a, b = rng.integers(0, 256, size=(2, 20, 24), dtype=np.uint8)
    assert metrics.ssim(a, b, 255) == pytest.approx(structural_similarity(a, b, data_range=255), abs=1e-10)


@pytest.mark.parametrize("shape", [(16, 16, 16), (20, 9, 17)])
def test_ssim_3d_matches_skimage(shape):
    rng = np.random.default_rng(2)
    x = smooth_images(rng, 1, shape, sigma=1.5)[0]
    y = x + 0.2 * rng.standard_normal(shape)
    for data_range in (2.0, 3.7):
        expected = structural_similarity(x, y, data_range=data_range)
        assert metrics.ssim(x, y, data_range) == pytest.approx(expected, abs=1e-10)


def test_ssim_identical_images_is_one_and_symmetric():
    rng = np.random.default_rng(3)
    x, y = smooth_images(rng, 2, (32, 32))
    assert metrics.ssim(x, x, 2.0) == 1.0
    assert metrics.ssim(x, y, 2.0) == pytest.approx(metrics.ssim(y, x, 2.0), abs=1e-15)


def test_ssim_spatial_dims_2_on_a_volume_is_mean_of_slices():
    rng = np.random.default_rng(4)
    x = smooth_images(rng, 1, (8, 24, 24))[0]
    y = x + 0.3 * rng.standard_normal(x.shape)
    slice_scores = [structural_similarity(x[k], y[k], data_range=2.0) for k in range(8)]
    assert metrics.ssim(x, y, 2.0, spatial_dims=2) == pytest.approx(np.mean(slice_scores), abs=1e-12)
    volume_ssim = metrics.ssim(x, y, 2.0)  # 7x7x7 window: a different number
    assert metrics.ssim(x, y, 2.0, spatial_dims=2) != pytest.approx(volume_ssim, abs=1e-3)


def test_ssim_map_matches_skimage_full_map_cropped():
    rng = np.random.default_rng(5)
    x, y = smooth_images(rng, 2, (30, 28))
    _, full = structural_similarity(x, y, data_range=2.0, full=True)
    ours = metrics.ssim_map(x, y, 2.0)
    assert ours.shape == (24, 22)
    np.testing.assert_allclose(ours, full[3:-3, 3:-3], atol=1e-12)


def test_ssim_mask():
    rng = np.random.default_rng(6)
    x = smooth_images(rng, 1, (20, 20, 20))[0]
    y = x + 0.3 * rng.standard_normal(x.shape)
    everything = np.ones(x.shape, bool)
    assert metrics.ssim(x, y, 2.0, mask=everything) == pytest.approx(metrics.ssim(x, y, 2.0), abs=1e-15)

    mask = np.zeros(x.shape, bool)
    mask[5:12, 4:15, 3:9] = True
    values = metrics.ssim_map(x, y, 2.0)
    expected = values[mask[3:-3, 3:-3, 3:-3]].mean()
    assert metrics.ssim(x, y, 2.0, mask=mask) == pytest.approx(expected, abs=1e-15)
    # noise only inside the mask lowers the masked score, not the score outside it
    noisy = x.copy()
    noisy[mask] += rng.standard_normal(mask.sum())
    inside = metrics.ssim(x, noisy, 2.0, mask=mask)
    outside = metrics.ssim(x, noisy, 2.0, mask=~mask)
    assert inside < metrics.ssim(x, noisy, 2.0) < outside

    border_only = np.zeros(x.shape, bool)
    border_only[:3] = True
    with pytest.raises(TfmedganError, match="mask selects no pixel"):
        metrics.ssim(x, y, 2.0, mask=border_only)
    with pytest.raises(TfmedganError, match="boolean"):
        metrics.ssim(x, y, 2.0, mask=mask.astype(np.uint8))


def test_ssim_errors():
    image = np.zeros((16, 16))
    with pytest.raises(TfmedganError, match="data_range"):
        metrics.ssim(image, image, 0.0)
    with pytest.raises(TfmedganError, match="data_range"):
        metrics.ssim(image, image, float("nan"))
    with pytest.raises(TfmedganError, match="same shape"):
        metrics.ssim(image, np.zeros((16, 15)), 1.0)
    with pytest.raises(TfmedganError, match="at least 7"):
        metrics.ssim(np.zeros((6, 16)), np.zeros((6, 16)), 1.0)
    with pytest.raises(TfmedganError, match="2D or 3D"):
        metrics.ssim(np.zeros((2, 8, 8, 8)), np.zeros((2, 8, 8, 8)), 1.0)
    with pytest.raises(TfmedganError, match="spatial_dims"):
        metrics.ssim(image, image, 1.0, spatial_dims=4)



def test_module_docstring_examples():
    results = doctest.testmod(structural_similarity_module, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0 and results.attempted >= 3
