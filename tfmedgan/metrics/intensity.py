"""Intensity metrics of an image pair: PSNR, MAE and histogram mutual information."""

from __future__ import annotations

import math

import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.metrics._validation import _as_array, _check_data_range, _check_mask, _check_same_shape

__all__ = ["psnr", "mae", "mutual_information"]


def _masked_values(name: str, array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return array
    mask_array = _check_mask(mask, array.shape)
    if not mask_array.any():
        raise TfmedganError(f"mask selects no pixel for {name}")
    return array[mask_array]


def psnr(x: np.ndarray, y: np.ndarray, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB, like skimage's ``peak_signal_noise_ratio``.

    Args:
        x: Reference ("true") image, any shape.
        y: Test image, same shape.
        data_range: ``R``, the value range of the images (e.g. 2.0 for [-1, 1]). Required.
        mask: Optional boolean array; the MSE is taken over the masked pixels only.

    Returns:
        PSNR in dB (float64); ``inf`` when the images are identical.

    Raises:
        TfmedganError: On mismatched shapes, a bad ``data_range`` or an empty mask.
    """
    x_array = _as_array("x", x)
    y_array = _as_array("y", y)
    _check_same_shape(x_array, y_array)
    data_range = _check_data_range(data_range)
    difference = x_array.astype(np.float64) - y_array.astype(np.float64)
    squared = _masked_values("psnr", difference * difference, mask)
    mean_squared_error = float(np.mean(squared))
    if mean_squared_error == 0.0:
        return math.inf
    return float(10.0 * np.log10(data_range * data_range / mean_squared_error))


def mae(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error ``mean(|x - y|)`` in float64, optionally over a boolean mask.

    Args:
        x: First image, any shape.
        y: Second image, same shape.
        mask: Optional boolean array of the same shape; only True pixels count.

    Returns:
        The mean absolute difference, in the images' units.

    Raises:
        TfmedganError: On mismatched shapes or an empty mask.
    """
    x_array = _as_array("x", x)
    y_array = _as_array("y", y)
    _check_same_shape(x_array, y_array)
    difference = np.abs(x_array.astype(np.float64) - y_array.astype(np.float64))
    return float(np.mean(_masked_values("mae", difference, mask)))


def _bin_indices(values: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Bin index in [0, bins) like ``np.histogram`` (right edge included), -1 outside [low, high]."""
    if high > low:
        scaled = (values - low) * (bins / (high - low))
        indices = np.floor(scaled).astype(np.int64)
        indices[values == high] = bins - 1
    else:
        indices = np.zeros(values.shape, np.int64)
    indices[(values < low) | (values > high)] = -1
    return indices


def mutual_information(
    x: np.ndarray,
    y: np.ndarray,
    bins: int = 64,
    mask: np.ndarray | None = None,
    value_ranges: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> float:
    """Mutual information of two images from their joint intensity histogram, in nats.

    ``MI = sum_ij p_ij log(p_ij / (p_i p_j))`` where ``p_ij`` is the fraction of pixels whose ``x``
    value falls in bin ``i`` and ``y`` value in bin ``j`` (``bins`` equal-width bins per image).
    ``MI(x, x)`` equals the (binned) entropy of ``x``; independent images give values near 0
    (slightly positive: the plug-in estimator is biased upwards by about
    ``(bins - 1)^2 / (2 N)`` nats for ``N`` pixels). Natural logarithm, so divide by ``log(2)`` for bits.

    Args:
        x: First image, any shape.
        y: Second image, same shape.
        bins: Number of histogram bins per image (>= 2).
        mask: Optional boolean array; only True pixels are counted.
        value_ranges: ``((x_low, x_high), (y_low, y_high))`` bin ranges; pixels outside are not
            counted. Default: each image's own min and max over the counted pixels, i.e. the
            histogram adapts to each image, as ``np.histogram2d`` does by default.

    Returns:
        Mutual information in nats (float64, >= 0).

    Raises:
        TfmedganError: On mismatched shapes, ``bins < 2``, an empty mask or no pixel inside the ranges.
    """
    x_array = _as_array("x", x)
    y_array = _as_array("y", y)
    _check_same_shape(x_array, y_array)
    if not isinstance(bins, (int, np.integer)) or bins < 2:
        raise TfmedganError(f"bins must be an integer >= 2, got {bins!r}")
    x_values = _masked_values("mutual_information", x_array, mask).astype(np.float64).ravel()
    y_values = _masked_values("mutual_information", y_array, mask).astype(np.float64).ravel()
    if x_values.size == 0:
        raise TfmedganError("mutual_information needs at least one pixel")
    if value_ranges is None:
        ranges = (
            (float(x_values.min()), float(x_values.max())),
            (float(y_values.min()), float(y_values.max())),
        )
    else:
        try:
            (x_low, x_high), (y_low, y_high) = value_ranges
            ranges = ((float(x_low), float(x_high)), (float(y_low), float(y_high)))
        except (TypeError, ValueError):
            raise TfmedganError(
                f"value_ranges must be ((x_low, x_high), (y_low, y_high)), got {value_ranges!r}"
            ) from None
        if ranges[0][1] < ranges[0][0] or ranges[1][1] < ranges[1][0]:
            raise TfmedganError(f"value_ranges must have low <= high, got {value_ranges!r}")
    x_bins = _bin_indices(x_values, ranges[0][0], ranges[0][1], int(bins))
    y_bins = _bin_indices(y_values, ranges[1][0], ranges[1][1], int(bins))
    inside = (x_bins >= 0) & (y_bins >= 0)
    if not inside.any():
        raise TfmedganError("no pixel falls inside value_ranges")
    joint = np.bincount(x_bins[inside] * int(bins) + y_bins[inside], minlength=int(bins) ** 2)
    joint = joint.reshape(int(bins), int(bins)).astype(np.float64)
    joint /= joint.sum()
    marginal_x = joint.sum(axis=1, keepdims=True)
    marginal_y = joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    expected = (marginal_x * marginal_y)[nonzero]
    information = float(np.sum(joint[nonzero] * np.log(joint[nonzero] / expected)))
    return max(information, 0.0)
