"""The seed-001 Gaussian-window SSIM against a direct 3D convolution with the full 11^3 window."""

import numpy as np
import pytest
from scipy import ndimage

from tfmedgan import metrics
from tfmedgan.errors import TfmedganError
from tfmedgan.metrics.gaussian import gaussian_ssim, gaussian_ssim_map, gaussian_window


def _reference_map(x, y, size=11, sigma=1.5):
    """conv3d(padding=size // 2) with the outer-product window, as the original util/ssim.py."""
    one = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    one /= one.sum()
    window = one[:, None, None] * one[None, :, None] * one[None, None, :]

    def conv(a):
        return ndimage.convolve(a, window, mode="constant", cval=0.0)

    mu1, mu2 = conv(x), conv(y)
    s1, s2, s12 = conv(x * x) - mu1**2, conv(y * y) - mu2**2, conv(x * y) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))


def test_matches_the_direct_3d_convolution_and_masks():
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.uniform(size=(14, 18, 12)), 1.0)
    y = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1)
    expected = _reference_map(x, y)
    np.testing.assert_allclose(gaussian_ssim_map(x, y), expected, rtol=1e-10, atol=1e-12)
    assert gaussian_ssim(x, y) == pytest.approx(expected.mean(), rel=1e-12)
    mask = x > np.median(x)
    assert gaussian_ssim(x, y, mask=mask) == pytest.approx(expected[mask].mean(), rel=1e-12)
    assert gaussian_ssim(x, x) == pytest.approx(1.0)
    assert gaussian_ssim(x, y) < 0.99
    assert metrics.gaussian_ssim is gaussian_ssim
    assert gaussian_window(11, 1.5).sum() == pytest.approx(1.0)


def test_errors():
    with pytest.raises(TfmedganError, match="same shape"):
        gaussian_ssim(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(TfmedganError, match="no voxel"):
        gaussian_ssim(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), mask=np.zeros((4, 4, 4), bool))
