"""Skimage-compatible SSIM of one image pair (or a batch of pairs), 2D or 3D, with masks.

SSIM here is exactly the quantity ``skimage.metrics.structural_similarity(x, y, data_range=R)``
computes with its defaults, which is what the seed-003 evaluation used (spec A7):

- a 7-pixel uniform window (7x7 in 2D, 7x7x7 in 3D), ``gaussian_weights=False``;
- ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``;
- sample covariance (``use_sample_covariance=True``): variances are scaled by ``NP / (NP - 1)``
  with ``NP = 7**ndim``;
- the SSIM map is cropped by ``(7 - 1) // 2 = 3`` pixels on every side before the mean. Because
  of this crop the padding mode of skimage's filter never matters, so the windowed means are
  computed on the "valid" region only.

:func:`ssim` and :func:`ssim_map` compute in float64 and agree with skimage to about 1e-12.
Scoring one image against a whole stack is :mod:`tfmedgan.metrics.search`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.metrics._validation import _as_array, _check_data_range, _check_mask, _check_same_shape

__all__ = ["WINDOW_SIZE", "K1", "K2", "ssim", "ssim_map"]

WINDOW_SIZE = 7
"""Side of the uniform SSIM window (skimage's default when ``gaussian_weights=False``)."""
K1 = 0.01
"""SSIM luminance constant (skimage default)."""
K2 = 0.03
"""SSIM contrast/structure constant (skimage default)."""

_PAD = (WINDOW_SIZE - 1) // 2


def _check_spatial_shape(name: str, shape: Sequence[int]) -> None:
    if any(size < WINDOW_SIZE for size in shape):
        raise TfmedganError(
            f"{name} has spatial shape {tuple(shape)}; SSIM needs at least {WINDOW_SIZE} pixels per axis"
        )



def _resolve_spatial_dims(ndim: int, spatial_dims: int | None) -> int:
    if spatial_dims is None:
        if ndim not in (2, 3):
            raise TfmedganError(
                f"ssim expects a 2D or 3D image when spatial_dims is not given, got {ndim} dimensions"
            )
        return ndim
    if spatial_dims not in (2, 3):
        raise TfmedganError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if ndim < spatial_dims:
        raise TfmedganError(f"an image with {ndim} dimensions cannot have spatial_dims={spatial_dims}")
    return spatial_dims


def _valid_window_mean(array: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Mean over every complete 7-wide window along ``axes`` ("valid" region), in float64.

    Uses running sums: window sum at ``k`` = ``cumsum[k + 7] - cumsum[k]`` with a leading zero.
    """
    result = np.asarray(array, np.float64)
    for axis in axes:
        pad = [(0, 0)] * result.ndim
        pad[axis] = (1, 0)
        cumulative = np.pad(np.cumsum(result, axis=axis), pad)
        size = result.shape[axis]
        upper = [slice(None)] * result.ndim
        lower = [slice(None)] * result.ndim
        upper[axis] = slice(WINDOW_SIZE, size + 1)
        lower[axis] = slice(0, size + 1 - WINDOW_SIZE)
        result = cumulative[tuple(upper)] - cumulative[tuple(lower)]
    return result / float(WINDOW_SIZE ** len(axes))


def ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    spatial_dims: int | None = None,
) -> np.ndarray:
    """The SSIM map of skimage's ``structural_similarity`` (defaults), already border-cropped.

    Args:
        x: First image, 2D ``[H, W]`` or 3D ``[D, H, W]``; with ``spatial_dims`` set, any leading
            axes are batch axes (for example ``spatial_dims=2`` on a volume gives slice-wise 2D SSIM).
        y: Second image, same shape as ``x``.
        data_range: Value range ``R`` used in ``C1 = (0.01 R)^2`` and ``C2 = (0.03 R)^2``. Required.
        spatial_dims: 2 or 3, the number of trailing spatial axes; default ``x.ndim`` (2 or 3).

    Returns:
        float64 array of shape ``x.shape`` with every spatial axis shortened by 6 (3 on each side):
        the map that skimage averages.

    Raises:
        TfmedganError: On mismatched shapes, a bad ``data_range`` or images smaller than 7 pixels.
    """
    x_array = _as_array("x", x)
    y_array = _as_array("y", y)
    _check_same_shape(x_array, y_array)
    dims = _resolve_spatial_dims(x_array.ndim, spatial_dims)
    _check_spatial_shape("x", x_array.shape[-dims:])
    data_range = _check_data_range(data_range)

    x64 = x_array.astype(np.float64, copy=False)
    y64 = y_array.astype(np.float64, copy=False)
    axes = tuple(range(x64.ndim - dims, x64.ndim))
    window_pixels = WINDOW_SIZE**dims
    covariance_scale = window_pixels / (window_pixels - 1.0)

    mean_x = _valid_window_mean(x64, axes)
    mean_y = _valid_window_mean(y64, axes)
    var_x = covariance_scale * (_valid_window_mean(x64 * x64, axes) - mean_x * mean_x)
    var_y = covariance_scale * (_valid_window_mean(y64 * y64, axes) - mean_y * mean_y)
    cov_xy = covariance_scale * (_valid_window_mean(x64 * y64, axes) - mean_x * mean_y)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    spatial_dims: int | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Mean SSIM, identical to ``skimage.metrics.structural_similarity(x, y, data_range=...)``.

    Uses skimage's defaults (7-pixel uniform window, K1=0.01, K2=0.03, sample covariance) and its
    crop of 3 pixels at every border before averaging. Computed in float64 whatever the input
    dtype (skimage computes float32 inputs in float32; the two agree to ~1e-6 or better).

    Args:
        x: First image, 2D ``[H, W]`` or 3D ``[D, H, W]``; with ``spatial_dims`` set, leading axes
            are batch axes and the result is the mean over all of them (equal to the mean of the
            per-image skimage values, since every image has the same size).
        y: Second image, same shape as ``x`` (SSIM is symmetric).
        data_range: Value range ``R`` (e.g. 2.0 for images in [-1, 1]). Required, never guessed.
        spatial_dims: 2 or 3, the number of trailing spatial axes; default ``x.ndim``.
        mask: Optional boolean array of ``x``'s shape. The result is then the mean of the SSIM map
            over the pixels where the mask is True, after the same 3-pixel border crop (a window is
            counted by its centre pixel).

    Returns:
        The mean SSIM as a Python float.

    Raises:
        TfmedganError: On mismatched shapes, a bad ``data_range``, images smaller than 7 pixels per
            axis, or a mask that selects no pixel of the cropped map.

    Example:
        >>> import numpy as np
        >>> image = np.linspace(0, 1, 64 * 64).reshape(64, 64)
        >>> ssim(image, image, data_range=1.0)
        1.0
    """
    values = ssim_map(x, y, data_range, spatial_dims)
    if mask is None:
        return float(values.mean(dtype=np.float64))
    mask_array = _check_mask(mask, np.shape(x))
    dims = values.ndim if spatial_dims is None else spatial_dims
    crop = (slice(None),) * (values.ndim - dims) + (slice(_PAD, -_PAD),) * dims
    selected = values[mask_array[crop]]
    if selected.size == 0:
        raise TfmedganError("mask selects no pixel of the SSIM map (3 pixels are cropped at every border)")
    return float(selected.mean(dtype=np.float64))
