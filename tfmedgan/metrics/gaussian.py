"""SSIM with a Gaussian window and zero padding, as the seed-001 evaluation (``util/ssim.py``).

The seed-001 test script scored each synthetic 3D volume with an SSIM that differs from
skimage's default (:func:`tfmedgan.metrics.ssim`):

- a Gaussian window of 11 voxels per axis with sigma 1.5, normalised to sum 1, applied
  separably (the 3D window is the outer product of the 1D one);
- the windowed means are computed with zero padding of 5 voxels ("same" size output), so
  voxels near the border see zeros;
- population (biased) variances: ``sigma_x^2 = G*(x^2) - (G*x)^2``;
- ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2`` with the data range ``R`` (the original assumed 1);
- the mean of the SSIM map over every voxel (or over a mask).

:func:`gaussian_ssim` computes this in float64 with :func:`scipy.ndimage.correlate1d`
(``mode="constant"``, i.e. the zero padding of the original ``conv3d(padding=5)``).
"""

from __future__ import annotations

import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.metrics._validation import _as_array, _check_data_range, _check_mask, _check_same_shape

__all__ = ["gaussian_window", "gaussian_ssim_map", "gaussian_ssim"]


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1D Gaussian window ``exp(-(i - size // 2)^2 / (2 sigma^2))`` (float64).

    Example:
        >>> round(float(gaussian_window().sum()), 12)
        1.0
    """
    if int(size) < 1 or not sigma > 0:
        raise TfmedganError(f"window size must be >= 1 and sigma > 0, got {size} and {sigma}")
    offsets = np.arange(int(size), dtype=np.float64) - int(size) // 2
    window = np.exp(-(offsets**2) / (2.0 * float(sigma) ** 2))
    return window / window.sum()


def _filter(array: np.ndarray, window: np.ndarray, axes) -> np.ndarray:
    from scipy import ndimage

    out = array
    for axis in axes:
        out = ndimage.correlate1d(out, window, axis=axis, mode="constant", cval=0.0)
    return out


def gaussian_ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> np.ndarray:
    """The SSIM map (same shape as the images) of the seed-001 Gaussian-window SSIM.

    Args:
        x: First image, any number of spatial axes (2D or 3D in practice).
        y: Second image, same shape.
        data_range: ``R`` in ``C1 = (0.01 R)^2`` and ``C2 = (0.03 R)^2`` (1 for images in [0, 1]).
        window_size: Window length per axis (11).
        sigma: Standard deviation of the Gaussian (1.5).

    Returns:
        float64 array of ``x.shape``.
    """
    x_array = _as_array("x", x)
    y_array = _as_array("y", y)
    _check_same_shape(x_array, y_array)
    data_range = _check_data_range(data_range)
    if x_array.ndim < 1 or x_array.size == 0:
        raise TfmedganError(f"gaussian_ssim needs a non-empty image, got shape {x_array.shape}")
    window = gaussian_window(window_size, sigma)
    axes = range(x_array.ndim)
    x64 = x_array.astype(np.float64, copy=False)
    y64 = y_array.astype(np.float64, copy=False)
    mean_x = _filter(x64, window, axes)
    mean_y = _filter(y64, window, axes)
    var_x = _filter(x64 * x64, window, axes) - mean_x * mean_x
    var_y = _filter(y64 * y64, window, axes) - mean_y * mean_y
    cov_xy = _filter(x64 * y64, window, axes) - mean_x * mean_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def gaussian_ssim(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float = 1.0,
    mask: np.ndarray | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean Gaussian-window SSIM of seed 001's ``util/ssim.py`` (see the module docstring).

    Args:
        x: First image (e.g. the real T1 volume ``[D, H, W]`` in [0, 1]).
        y: Second image, same shape.
        data_range: Value range ``R`` (the original: 1).
        mask: Optional boolean array of ``x``'s shape: the mean is taken over these voxels of
            the map (every window still sees the whole image).
        window_size: Window length per axis (11).
        sigma: Gaussian standard deviation (1.5).

    Returns:
        The mean SSIM as a Python float.

    Example:
        >>> volume = np.linspace(0, 1, 16**3).reshape(16, 16, 16)
        >>> gaussian_ssim(volume, volume)
        1.0
    """
    values = gaussian_ssim_map(x, y, data_range, window_size, sigma)
    if mask is None:
        return float(values.mean(dtype=np.float64))
    mask_array = _check_mask(mask, values.shape)
    if not mask_array.any():
        raise TfmedganError("mask selects no voxel for gaussian_ssim")
    return float(values[mask_array].mean(dtype=np.float64))
