"""Argument checks shared by the SSIM, one-against-many and intensity metrics."""

from __future__ import annotations

import math

import numpy as np

from tfmedgan.errors import TfmedganError


def _as_array(name: str, value: object) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TfmedganError(f"{name} must be a real-valued numeric array, got dtype {array.dtype}")
    return array


def _check_data_range(data_range: object) -> float:
    try:
        value = float(data_range)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TfmedganError(f"data_range must be a positive number, got {data_range!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise TfmedganError(f"data_range must be a positive finite number, got {data_range!r}")
    return value


def _check_same_shape(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise TfmedganError(f"x and y must have the same shape, got {x.shape} and {y.shape}")


def _check_mask(mask: object, shape: tuple[int, ...]) -> np.ndarray:
    mask_array = np.asarray(mask)
    if mask_array.dtype != bool:
        raise TfmedganError(f"mask must be a boolean array, got dtype {mask_array.dtype}")
    if mask_array.shape != shape:
        raise TfmedganError(f"mask shape {mask_array.shape} does not match image shape {shape}")
    return mask_array

