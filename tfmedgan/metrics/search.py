"""One image against many: fast skimage-compatible SSIM of a reference against a stack.

:func:`ssim_many` and :func:`best_match` score one image against a whole stack (the seed scores
one fake against all 11,328 training slices). They share the terms that depend only on the
reference image, run the windowed sums as a handful of contiguous shifted additions on a flattened
chunk of images (so every pass stays in cache and there is no per-image Python work), and split
the chunks over worker threads (numpy releases the GIL). By default they compute in float32 after
a common shift of both images (none for images that straddle 0, such as [-1, 1] slices; SSIM's
variance terms do not change under a common shift and the mean terms are corrected exactly), which
agrees with skimage to about 1e-7, and switch to float64 automatically for a batch whose values are
large compared with ``data_range`` (see :func:`ssim_many`). The SSIM definition is the one of
:mod:`tfmedgan.metrics.structural_similarity`.

``data_range`` is always either a required argument or documented as derived from the fake image
(as in the seed); it is never guessed from the dtype.

Example:
    >>> import numpy as np
    >>> from tfmedgan.metrics import search
    >>> rng = np.random.default_rng(0)
    >>> stack = rng.uniform(-1, 1, size=(50, 32, 32))
    >>> fake = stack[7] + 0.01 * rng.normal(size=(32, 32))
    >>> best_ssim, best_index, scores = search.best_match(fake, stack)
    >>> best_index
    7
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.metrics._validation import _as_array, _check_data_range
from tfmedgan.metrics.structural_similarity import K1, K2, WINDOW_SIZE, _check_spatial_shape

__all__ = ["Precision", "ssim_many", "best_match"]

_DEFAULT_BATCH_PIXELS = 2 * 256 * 256  # pixels per worker batch: two 256x256 slices
_FLOAT32_SAFETY = 2.0  # auto precision: float32 while max|value - shift| <= 2 * data_range

Precision = Literal["auto", "float32", "float64"]


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
