"""Image-similarity metrics: skimage-compatible SSIM (single pair and fast one-against-many), PSNR,
MAE and histogram mutual information.

SSIM here is exactly the quantity ``skimage.metrics.structural_similarity(x, y, data_range=R)``
computes with its defaults, which is what the seed-003 evaluation used (spec A7):

- a 7-pixel uniform window (7x7 in 2D, 7x7x7 in 3D), ``gaussian_weights=False``;
- ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``;
- sample covariance (``use_sample_covariance=True``): variances are scaled by ``NP / (NP - 1)``
  with ``NP = 7**ndim``;
- the SSIM map is cropped by ``(7 - 1) // 2 = 3`` pixels on every side before the mean. Because
  of this crop the padding mode of skimage's filter never matters, so the windowed means are
  computed on the "valid" region only.

:func:`ssim` and :func:`ssim_map` compute one image pair (or a batch of pairs) in float64 and
agree with skimage to about 1e-12. :func:`ssim_many` and :func:`best_match` score one image
against a whole stack (the seed scores one fake against all 11,328 training slices). They share
the terms that depend only on the reference image, run the windowed sums as a handful of
contiguous shifted additions on a flattened chunk of images (so every pass stays in cache and
there is no per-image Python work), and split the chunks over worker threads (numpy releases the
GIL). By default they compute in float32 after a common shift of both images (none for images
that straddle 0, such as [-1, 1] slices; SSIM's variance terms do not change under a common shift
and the mean terms are corrected exactly), which agrees with skimage to about 1e-7, and switch to
float64 automatically for a batch whose values are large compared with ``data_range`` (see
:func:`ssim_many`).

``data_range`` is always either a required argument or documented as derived from the fake image
(as in the seed); it is never guessed from the dtype.

Example:
    >>> import numpy as np
    >>> from tfmedgan import metrics
    >>> rng = np.random.default_rng(0)
    >>> stack = rng.uniform(-1, 1, size=(50, 32, 32))
    >>> fake = stack[7] + 0.01 * rng.normal(size=(32, 32))
    >>> best_ssim, best_index, scores = metrics.best_match(fake, stack)
    >>> best_index
    7
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np

from tfmedgan.errors import TfmedganError

__all__ = [
    "WINDOW_SIZE",
    "K1",
    "K2",
    "ssim",
    "ssim_map",
    "ssim_many",
    "best_match",
    "psnr",
    "mae",
    "mutual_information",
]

WINDOW_SIZE = 7
"""Side of the uniform SSIM window (skimage's default when ``gaussian_weights=False``)."""
K1 = 0.01
"""SSIM luminance constant (skimage default)."""
K2 = 0.03
"""SSIM contrast/structure constant (skimage default)."""

_PAD = (WINDOW_SIZE - 1) // 2
_DEFAULT_BATCH_PIXELS = 2 * 256 * 256  # pixels per worker batch: two 256x256 slices
_FLOAT32_SAFETY = 2.0  # auto precision: float32 while max|value - shift| <= 2 * data_range

Precision = Literal["auto", "float32", "float64"]


# ------------------------------------------------------------------------------------------------
# checks


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


def _check_spatial_shape(name: str, shape: Sequence[int]) -> None:
    if any(size < WINDOW_SIZE for size in shape):
        raise TfmedganError(
            f"{name} has spatial shape {tuple(shape)}; SSIM needs at least {WINDOW_SIZE} pixels per axis"
        )


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


# ------------------------------------------------------------------------------------------------
# single pair (float64, straightforward)


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


# ------------------------------------------------------------------------------------------------
# one reference against many images (flattened shifted sums, threads)


class _Workspace:
    """Per-thread scratch buffers for a batch of ``count`` images of ``pixels`` pixels each."""

    def __init__(self, count: int, pixels: int, dtype: np.dtype) -> None:
        length = count * pixels
        # zeros (not empty): positions outside the valid region are computed on and discarded;
        # starting them at harmless values avoids NaN/denormal arithmetic there.
        self.products = np.zeros((3, length), dtype)  # y', y'^2, x' y'
        self.work_a = np.zeros((3, length), dtype)
        self.work_b = np.zeros((3, length), dtype)
        self.work_c = np.zeros((3, length), dtype)
        self.count = count


def _window_sums_flat(
    source: np.ndarray, work: np.ndarray, target: np.ndarray, stride: int, length: int
) -> int:
    """7-wide sums along one axis of images flattened into rows of ``source`` (shape [q, >=length]).

    ``target[:, k] = sum_{j<7} source[:, k + j * stride]`` for ``k < length - 6 * stride``, done as
    four contiguous additions (windows of 2, 3, 6, 7). Positions whose window crosses an image's
    edge hold sums of unrelated pixels; callers only read positions whose window is complete.

    Returns:
        The number of positions written, ``length - 6 * stride``.
    """
    n1 = length - stride
    np.add(source[:, :n1], source[:, stride : stride + n1], out=work[:, :n1])
    n2 = length - 2 * stride
    np.add(work[:, :n2], source[:, 2 * stride : 2 * stride + n2], out=work[:, :n2])
    n3 = length - 5 * stride
    np.add(work[:, :n3], work[:, 3 * stride : 3 * stride + n3], out=target[:, :n3])
    n4 = length - 6 * stride
    np.add(target[:, :n4], source[:, 6 * stride : 6 * stride + n4], out=target[:, :n4])
    return n4


def _window_sums(workspace: _Workspace, strides: Sequence[int], length: int) -> np.ndarray:
    """Windowed sums over every spatial axis of ``workspace.products``; returns the result buffer."""
    source = workspace.products
    spare = [workspace.work_b, workspace.work_c]
    for stride in strides:
        target = spare.pop(0)
        length = _window_sums_flat(source, workspace.work_a, target, stride, length)
        if source is not workspace.products:
            spare.append(source)
        source = target
    return source


class _ReferenceTerms:
    """Everything in the SSIM formula that depends only on the reference image and ``data_range``.

    With window sums ``s_y``, ``s_yy``, ``s_xy`` of the shifted images ``y' = y - shift``,
    ``x' = x - shift`` and ``n = NP`` pixels per window (so ``u_y' = s_y / n``):

    - ``A1 = 2 u_x u_y + C1 = lum_scale * s_y + lum_offset``
    - ``(n - 1) / 2 * A2 = s_xy - u_x' s_y + (n - 1) / 2 * C2``
    - ``B1 = u_x^2 + u_y^2 + C1 = u_y' (u_y' + 2 shift) + b1_offset`` (``b1_offset = u_x^2 + C1 + shift^2``)
    - ``(n - 1) * B2 = s_yy - u_y' s_y + (n - 1) (v_x + C2)``

    so ``SSIM = 2 * [A1 * (n-1)/2 A2] / [B1 * (n-1) B2]`` per pixel.
    """

    def __init__(self, reference: np.ndarray, data_range: float, dtype: np.dtype, shift: float) -> None:
        spatial_shape = reference.shape
        dims = len(spatial_shape)
        pixels = int(np.prod(spatial_shape))
        window_pixels = WINDOW_SIZE**dims
        self.window_pixels = window_pixels
        self.spatial_shape = spatial_shape
        self.pixels = pixels
        self.strides = [int(np.prod(spatial_shape[axis + 1 :])) for axis in range(dims)]
        self.dtype = dtype
        self.shift = shift

        shifted = reference.astype(np.float64) - shift
        workspace = _Workspace(1, pixels, np.dtype(np.float64))
        workspace.products[0] = shifted.ravel()
        workspace.products[1] = (shifted * shifted).ravel()
        sums = _window_sums(workspace, self.strides, pixels)
        mean_shifted = sums[0] / window_pixels  # u_x' (valid positions only are meaningful)
        mean_x = mean_shifted + shift
        var_x = (sums[1] - sums[0] * mean_shifted) / (window_pixels - 1.0)
        c1 = (K1 * data_range) ** 2
        c2 = (K2 * data_range) ** 2
        half = (window_pixels - 1.0) / 2.0

        self.reference_shifted = shifted.ravel().astype(dtype)
        self.mean_shifted = mean_shifted.astype(dtype)
        self.lum_scale = (2.0 * mean_x / window_pixels).astype(dtype)
        self.lum_offset = (2.0 * shift * mean_x + c1).astype(dtype)
        self.b1_offset = (mean_x * mean_x + c1 + shift * shift).astype(dtype)
        self.b2_offset = ((window_pixels - 1.0) * (var_x + c2)).astype(dtype)
        self.a2_offset = dtype.type(half * c2)
        self.inverse_window = dtype.type(1.0 / window_pixels)
        self.two_shift = dtype.type(2.0 * shift)
        valid = tuple(size - WINDOW_SIZE + 1 for size in spatial_shape)
        self.valid_slices = tuple(slice(0, size) for size in valid)
        self.valid_count = int(np.prod(valid))


def _scores_for_batch(
    terms: _ReferenceTerms,
    batch: np.ndarray,
    workspace: _Workspace,
    square_limit: float | None = None,
) -> np.ndarray | None:
    """SSIM of the reference against each image of ``batch`` ``[m, *spatial]`` (m <= workspace.count).

    If ``square_limit`` is given and some ``(value - shift)^2`` of the batch exceeds it (or is NaN),
    returns None so that the caller can redo the batch in float64.
    """
    count = batch.shape[0]
    pixels = terms.pixels
    length = count * pixels
    products = workspace.products
    shifted = products[0, :length].reshape(count, pixels)
    if terms.shift == 0.0:
        np.copyto(shifted, batch.reshape(count, pixels), casting="unsafe")
    else:
        np.subtract(batch.reshape(count, pixels), terms.shift, out=shifted, casting="unsafe")
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(shifted, shifted, out=products[1, :length].reshape(count, pixels))
    if square_limit is not None and not float(np.max(products[1, :length])) <= square_limit:
        return None
    np.multiply(shifted, terms.reference_shifted, out=products[2, :length].reshape(count, pixels))
    sums = _window_sums(workspace, terms.strides, length)

    def view(array: np.ndarray) -> np.ndarray:
        return array[:length].reshape(count, pixels)

    sum_y, sum_yy, sum_xy = view(sums[0]), view(sums[1]), view(sums[2])
    scratch = workspace.work_a
    mean_y, a2, b2 = view(scratch[0]), view(scratch[1]), view(scratch[2])
    with np.errstate(all="ignore"):  # positions outside the valid region may hold anything
        np.multiply(sum_y, terms.inverse_window, out=mean_y)
        # (n-1)/2 A2 = s_xy - u_x' s_y + (n-1)/2 C2
        np.multiply(sum_y, terms.mean_shifted, out=a2)
        np.subtract(sum_xy, a2, out=a2)
        np.add(a2, terms.a2_offset, out=a2)
        # (n-1) B2 = s_yy - u_y' s_y + (n-1)(v_x + C2)
        np.multiply(sum_y, mean_y, out=b2)
        np.subtract(sum_yy, b2, out=b2)
        np.add(b2, terms.b2_offset, out=b2)
        # A1 = lum_scale s_y + lum_offset  (into sum_xy, no longer needed)
        np.multiply(sum_y, terms.lum_scale, out=sum_xy)
        np.add(sum_xy, terms.lum_offset, out=sum_xy)
        # B1 = u_y' (u_y' + 2 shift) + b1_offset  (into sum_yy)
        if terms.shift == 0.0:
            np.multiply(mean_y, mean_y, out=sum_yy)
        else:
            np.add(mean_y, terms.two_shift, out=sum_yy)
            np.multiply(sum_yy, mean_y, out=sum_yy)
        np.add(sum_yy, terms.b1_offset, out=sum_yy)
        np.multiply(sum_xy, a2, out=sum_xy)
        np.multiply(sum_yy, b2, out=sum_yy)
        np.divide(sum_xy, sum_yy, out=sum_xy)
    # Mean over the valid region: rows first (numpy's pairwise sum, whose order does not depend on
    # where an image sits in the buffer, so duplicate images get bit-identical scores and ties
    # resolve to the first index), then the rows in float64.
    ssim_values = sum_xy.reshape((count,) + terms.spatial_shape)[(slice(None),) + terms.valid_slices]
    row_sums = ssim_values.sum(axis=-1)
    totals = row_sums.sum(axis=tuple(range(1, row_sums.ndim)), dtype=np.float64)
    return totals * (2.0 / terms.valid_count)


def _default_workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


class _ManyScorer:
    """Scores chunks of images against one reference, with per-thread workspaces."""

    def __init__(
        self,
        reference: np.ndarray,
        data_range: float,
        precision: Precision,
        batch_size: int | None,
        workers: int | None,
    ) -> None:
        if precision not in ("auto", "float32", "float64"):
            raise TfmedganError(f"precision must be 'auto', 'float32' or 'float64', got {precision!r}")
        if reference.ndim not in (2, 3):
            raise TfmedganError(f"the reference image must be 2D or 3D, got shape {reference.shape}")
        _check_spatial_shape("the reference image", reference.shape)
        if not np.all(np.isfinite(reference)):
            raise TfmedganError("the reference image contains NaN or infinite values")
        self.reference = reference
        self.data_range = data_range
        self.precision = precision
        pixels = int(np.prod(reference.shape))
        self.batch_size = batch_size or max(1, _DEFAULT_BATCH_PIXELS // pixels)
        if self.batch_size < 1:
            raise TfmedganError(f"batch_size must be >= 1, got {batch_size!r}")
        self.workers = workers or _default_workers()
        if self.workers < 1:
            raise TfmedganError(f"workers must be >= 1, got {workers!r}")
        # Shift both images so that the reference's values straddle 0 (no shift when they already
        # do): SSIM's (co)variance terms only see differences, the mean terms are corrected
        # exactly, and small magnitudes keep float32 sums of squares accurate. The shift is a
        # float32 number so that both precisions subtract exactly the same value.
        low, high = float(np.min(reference)), float(np.max(reference))
        self.shift = 0.0 if low <= 0.0 <= high else float(np.float32((low + high) / 2.0))
        self.reference_spread = max(abs(low - self.shift), abs(high - self.shift))
        self.square_limit = (_FLOAT32_SAFETY * data_range) ** 2
        self._terms: dict[str, _ReferenceTerms] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "_ManyScorer":
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tfmedgan-ssim")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _terms_for(self, dtype: np.dtype) -> _ReferenceTerms:
        with self._lock:
            if dtype.name not in self._terms:
                self._terms[dtype.name] = _ReferenceTerms(self.reference, self.data_range, dtype, self.shift)
            return self._terms[dtype.name]

    def _workspace(self, dtype: np.dtype) -> _Workspace:
        spaces = getattr(self._local, "spaces", None)
        if spaces is None:
            spaces = self._local.spaces = {}
        if dtype.name not in spaces:
            spaces[dtype.name] = _Workspace(self.batch_size, int(np.prod(self.reference.shape)), dtype)
        return spaces[dtype.name]

    def _batch(self, batch: np.ndarray) -> np.ndarray:
        use_float32 = self.precision == "float32" or (
            self.precision == "auto" and self.reference_spread <= _FLOAT32_SAFETY * self.data_range
        )
        if use_float32:
            limit = self.square_limit if self.precision == "auto" else None
            dtype = np.dtype(np.float32)
            scores = _scores_for_batch(self._terms_for(dtype), batch, self._workspace(dtype), limit)
            if scores is not None:
                return scores
        dtype = np.dtype(np.float64)
        scores = _scores_for_batch(self._terms_for(dtype), batch, self._workspace(dtype))
        return np.full(batch.shape[0], np.nan) if scores is None else scores  # None only with a limit

    def submit(self, chunk: np.ndarray) -> list:
        """Start scoring ``chunk`` [n, *spatial]; returns futures (or finished arrays) in order."""
        starts = range(0, chunk.shape[0], self.batch_size)
        if self._pool is None:
            return [self._batch(chunk[start : start + self.batch_size]) for start in starts]
        return [self._pool.submit(self._batch, chunk[start : start + self.batch_size]) for start in starts]

    @staticmethod
    def collect(pending: list) -> list[np.ndarray]:
        return [item if isinstance(item, np.ndarray) else item.result() for item in pending]


def _iter_chunks(name: str, images: object, spatial_shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Yield ``[n, *spatial_shape]`` arrays from an array or an iterable of arrays/images."""
    dims = len(spatial_shape)
    if isinstance(images, np.ndarray):
        sources: Iterable[object] = [images]
    else:
        sources = images  # type: ignore[assignment]
        if not hasattr(sources, "__iter__"):
            raise TfmedganError(
                f"{name} must be an array [N, ...] or an iterable of arrays, got {type(images).__name__}"
            )
    for position, item in enumerate(sources):
        chunk = _as_array(f"{name} chunk {position}", item)
        if chunk.ndim == dims:
            chunk = chunk[None]
        if chunk.ndim != dims + 1 or chunk.shape[1:] != spatial_shape:
            raise TfmedganError(
                f"{name} chunk {position} has shape {chunk.shape}; "
                f"expected [n, {', '.join(map(str, spatial_shape))}]"
                " to match the reference image"
            )
        yield chunk


def _score_stream(
    reference: np.ndarray,
    images: object,
    data_range: float,
    precision: Precision,
    batch_size: int | None,
    workers: int | None,
    name: str,
) -> np.ndarray:
    spatial_shape = tuple(reference.shape)
    with _ManyScorer(reference, data_range, precision, batch_size, workers) as scorer:
        results: list[np.ndarray] = []
        pending: list = []
        for chunk in _iter_chunks(name, images, spatial_shape):
            # submit this chunk, then collect the previous one: reading the next chunk from the
            # caller's iterator (e.g. decoding files) overlaps with the computation.
            submitted = scorer.submit(chunk)
            results.extend(scorer.collect(pending))
            pending = submitted
        results.extend(scorer.collect(pending))
    if not results:
        return np.zeros((0,), np.float64)
    return np.concatenate(results)


def ssim_many(
    reference: np.ndarray,
    stack: np.ndarray | Iterable[np.ndarray],
    data_range: float,
    precision: Precision = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """SSIM of one image against every image of a stack (skimage defaults, vectorised).

    ``result[i] == skimage.metrics.structural_similarity(stack[i], reference, data_range=data_range)``
    to about 1e-7 (float32) or 1e-12 (float64) on images of moderate dynamic range.

    Args:
        reference: The image every stack image is compared with, 2D ``[H, W]`` or 3D ``[D, H, W]``.
        stack: ``[N, *reference.shape]`` array, or an iterable of such arrays (chunks; a single
            image of ``reference.shape`` is also accepted as a chunk of one). Chunks are consumed
            one at a time, so a generator can stream images from disk with bounded memory.
        data_range: Value range ``R`` for ``C1``/``C2``. Required.
        precision: ``"float32"``, ``"float64"``, or ``"auto"`` (default): float32 for a batch of
            ``batch_size`` images when every value of the batch and of the reference, minus a common
            shift (0 if the reference's values straddle 0, else the middle of its range), is within
            ``2 * data_range`` in magnitude (float32 rounding of the windowed sums of squares then
            stays small against ``C2``: differences from skimage of ~1e-8 on typical images and
            below ~1e-5 on adversarial nearly-flat ones); float64 otherwise (the batch is redone).
        batch_size: Images per worker task; default two 256x256 slices worth of pixels. Memory is
            about ``12 * batch_size * pixels * itemsize`` bytes per worker.
        workers: Threads; default the number of CPUs available to this process (at most 8).

    Returns:
        float64 array ``[N]`` of SSIM values in stack order.

    Raises:
        TfmedganError: On a bad ``data_range``, shape mismatches, or images smaller than 7 pixels.
    """
    reference_array = _as_array("reference", reference)
    data_range = _check_data_range(data_range)
    return _score_stream(reference_array, stack, data_range, precision, batch_size, workers, "stack")


def best_match(
    fake: np.ndarray,
    stack_or_iterable: np.ndarray | Iterable[np.ndarray],
    data_range: float | None = None,
    precision: Precision = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
) -> tuple[float, int, np.ndarray]:
    """The training image most similar to a generated one, as in the seed-003 evaluation.

    The seed computed ``structural_similarity(real[i], fake, data_range=fake.max() - fake.min())``
    for every training image and took ``max`` and ``list.index(max)``; this does the same in one
    vectorised pass (see :func:`ssim_many`).

    Args:
        fake: The generated image, ``[H, W]`` (or ``[D, H, W]``).
        stack_or_iterable: ``[N, H, W]`` array or an iterable of ``[n, H, W]`` chunks.
        data_range: SSIM value range; default ``fake.max() - fake.min()`` like the seed (a generator
            output is unbounded, so the fake's own range is used).
        precision: See :func:`ssim_many`.
        batch_size: See :func:`ssim_many`.
        workers: See :func:`ssim_many`.

    Returns:
        ``(best_ssim, best_index, all_scores)``: the maximum SSIM, the index of its first
        occurrence (ties go to the lowest index, like ``list.index(max(...))``; NaN scores are
        skipped), and the float64 array of every score.

    Raises:
        TfmedganError: If the stack is empty or every score is NaN, if the fake is constant and no
            ``data_range`` is given, or on shape mismatches.

    Example:
        >>> import numpy as np
        >>> stack = np.random.default_rng(0).uniform(-1, 1, size=(20, 32, 32))
        >>> best_ssim, best_index, scores = best_match(stack[3], stack)
        >>> best_index, round(best_ssim, 6)
        (3, 1.0)
    """
    fake_array = _as_array("fake", fake)
    if data_range is None:
        if fake_array.size == 0:
            raise TfmedganError("the fake image is empty")
        data_range = float(np.max(fake_array)) - float(np.min(fake_array))
        if not data_range > 0:
            raise TfmedganError(
                "the fake image is constant (max - min = 0), so its data range cannot be used; "
                "pass data_range"
            )
    data_range = _check_data_range(data_range)
    scores = _score_stream(fake_array, stack_or_iterable, data_range, precision, batch_size, workers,
                           "stack_or_iterable")
    if scores.size == 0:
        raise TfmedganError("no images to compare with: the stack is empty")
    if np.all(np.isnan(scores)):
        raise TfmedganError("every SSIM score is NaN (the images contain NaN values)")
    best_index = int(np.nanargmax(scores))
    return float(scores[best_index]), best_index, scores


# ------------------------------------------------------------------------------------------------
# PSNR, MAE, mutual information


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
