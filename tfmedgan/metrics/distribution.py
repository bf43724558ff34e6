"""Set-level metrics for generated images that need no pretrained network: intensity-histogram and
radial power-spectrum distances between a real and a fake set, and the mean pairwise SSIM of a set.

- :func:`intensity_histogram_distance`: earth mover's (Wasserstein-1) distance between the pooled
  intensity histograms of the two sets, in intensity units. Saturated or washed-out fakes raise it.
- :func:`radial_power_spectrum` and :func:`spectrum_distance`: the mean radially averaged power
  spectrum of each set (normalised per image, so contrast alone does not count) and the mean
  absolute difference of their log10 curves. Checkerboards, blur and high-frequency noise raise it.
- :func:`mean_pairwise_ssim`: the diversity of a set; compare the fakes' value with the reals'
  (mode collapse pushes the fakes' value up towards 1).

Example:
    >>> import numpy as np
    >>> from tfmedgan.metrics import distribution
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(8, 32, 32))
    >>> checker = real + 2.0 * (np.indices((32, 32)).sum(axis=0) % 2)
    >>> distribution.spectrum_distance(real, checker) > distribution.spectrum_distance(real, real[::-1])
    True
"""

from __future__ import annotations

import itertools

import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.metrics._validation import _as_array, _check_data_range
from tfmedgan.metrics.search import ssim_many

__all__ = ["intensity_histogram_distance", "radial_power_spectrum", "spectrum_distance", "mean_pairwise_ssim"]


def _image_stack(name: str, images: object) -> np.ndarray:
    """[N, H, W] float64 from [N, H, W] or [N, H, W, 1]."""
    array = _as_array(name, images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or min(array.shape) < 1:
        raise TfmedganError(f"{name} must be a stack [N, H, W] (or [N, H, W, 1]), got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise TfmedganError(f"{name} contains NaN or infinite values")
    return array


def intensity_histogram_distance(
    real: np.ndarray, fake: np.ndarray, bins: int = 128, value_range: tuple[float, float] = (-1.0, 1.0)
) -> float:
    """Wasserstein-1 distance between the pooled intensity histograms of two image sets.

    Values outside ``value_range`` fall into the first or last bin (a saturated generator piles
    its mass there). The result is in intensity units: 0 for equal histograms, at most the width of
    ``value_range``.

    Args:
        real: images [N, H, W] (or [N, H, W, 1]), any N.
        fake: images [M, H', W'], any M and size.
        bins: histogram bins over ``value_range``.
        value_range: (low, high) of the histogram.

    Returns:
        sum over bins of |CDF_real - CDF_fake| * bin width.

    Example:
        >>> intensity_histogram_distance(np.zeros((2, 4, 4)), np.ones((2, 4, 4)), value_range=(0, 1)) > 0.9
        True
    """
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise TfmedganError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    if int(bins) < 2:
        raise TfmedganError(f"bins must be >= 2, got {bins!r}")
    cdfs = []
    for name, images in (("real", real), ("fake", fake)):
        values = np.clip(_image_stack(name, images).ravel(), low, high)
        counts, _ = np.histogram(values, bins=int(bins), range=(low, high))
        cdfs.append(np.cumsum(counts) / counts.sum())
    width = (high - low) / int(bins)
    return float(np.sum(np.abs(cdfs[0] - cdfs[1])) * width)


def radial_power_spectrum(images: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean radially averaged power spectrum of an image set.

    Each image has its mean removed; its 2D power spectrum |FFT|^2 is divided by its total power
    (so the curve describes texture, not contrast), averaged over rings of equal spatial frequency
    (radius in cycles per pixel, from 0 to the corner at sqrt(2)/2, so the (0.5, 0.5) checkerboard
    frequency is included), then averaged over the set. A constant image contributes zeros.

    Args:
        images: [N, H, W] (or [N, H, W, 1]).
        bins: number of rings (default: max(H, W) // 2 + 1).

    Returns:
        (frequencies [bins] ring centres in cycles per pixel, power [bins] summing to about 1).

    Example:
        >>> frequencies, power = radial_power_spectrum(np.random.default_rng(0).normal(size=(2, 16, 16)))
        >>> frequencies.shape == power.shape == (9,)
        True
    """
    stack = _image_stack("images", images)
    _, height, width = stack.shape
    bins = int(bins or max(height, width) // 2 + 1)
    if bins < 2:
        raise TfmedganError(f"bins must be >= 2, got {bins!r}")
    frequency_y = np.fft.fftfreq(height)[:, None]
    frequency_x = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(frequency_y**2 + frequency_x**2)
    edges = np.linspace(0.0, np.sqrt(0.5) + 1e-9, bins + 1)
    ring = np.clip(np.digitize(radius.ravel(), edges) - 1, 0, bins - 1)
    ring_sizes = np.bincount(ring, minlength=bins).astype(np.float64)
    centred = stack - stack.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred)) ** 2
    totals = power.sum(axis=(1, 2))
    normalised = np.where(totals[:, None, None] > 0, power / np.where(totals > 0, totals, 1.0)[:, None, None], 0.0)
    mean_power = normalised.mean(axis=0).ravel()
    ring_power = np.bincount(ring, weights=mean_power, minlength=bins)
    ring_mean = np.where(ring_sizes > 0, ring_power / np.maximum(ring_sizes, 1.0), 0.0)
    centres = (edges[:-1] + edges[1:]) / 2.0
    keep = ring_sizes > 0
    return centres[keep], ring_mean[keep] * ring_sizes[keep]


def spectrum_distance(real: np.ndarray, fake: np.ndarray, bins: int | None = None, floor: float = 1e-10) -> float:
    """Mean absolute difference of the log10 radial power spectra of two sets of equal image size.

    Args:
        real: images [N, H, W] (or [N, H, W, 1]).
        fake: images [M, H, W].
        bins: rings of :func:`radial_power_spectrum`.
        floor: added before the logarithm (rings with no power).

    Returns:
        mean over rings of |log10(P_real + floor) - log10(P_fake + floor)|; 0 for equal spectra,
        0.3 means the fakes' power is off by a factor of 2 on average.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> spectrum_distance(rng.normal(size=(4, 16, 16)), rng.normal(size=(4, 16, 16))) < 0.2
        True
    """
    real_stack, fake_stack = _image_stack("real", real), _image_stack("fake", fake)
    if real_stack.shape[1:] != fake_stack.shape[1:]:
        raise TfmedganError(f"real and fake images must have the same size, got {real_stack.shape[1:]} and {fake_stack.shape[1:]}")
    _, real_power = radial_power_spectrum(real_stack, bins)
    _, fake_power = radial_power_spectrum(fake_stack, bins)
    return float(np.mean(np.abs(np.log10(real_power + floor) - np.log10(fake_power + floor))))


def mean_pairwise_ssim(
    images: np.ndarray, data_range: float = 2.0, max_pairs: int | None = 500, seed: int = 0
) -> float:
    """Mean SSIM over pairs of distinct images of a set (skimage defaults): the set's self-similarity.

    Compare a generator's value with that of the real images: a mode-collapsed generator scores
    near 1, a diverse one close to the reals.

    Args:
        images: [N, H, W] (or [N, H, W, 1]), N >= 2.
        data_range: SSIM data range, the same for every pair (2.0 for images in [-1, 1]).
        max_pairs: score a random subset of this many pairs (None: all N(N-1)/2).
        seed: seed of the pair subset.

    Returns:
        the mean SSIM of the scored pairs.

    Example:
        >>> mean_pairwise_ssim(np.zeros((3, 8, 8)) + np.arange(8.0) / 8) == 1.0
        True
    """
    stack = _image_stack("images", images)
    data_range = _check_data_range(data_range)
    if stack.shape[0] < 2:
        raise TfmedganError(f"mean_pairwise_ssim needs at least 2 images, got {stack.shape[0]}")
    pairs = list(itertools.combinations(range(stack.shape[0]), 2))
    if max_pairs is not None and len(pairs) > int(max_pairs):
        chosen = np.random.default_rng(seed).choice(len(pairs), size=int(max_pairs), replace=False)
        pairs = [pairs[index] for index in sorted(chosen)]
    scores = []
    for first in sorted({i for i, _ in pairs}):
        partners = [j for i, j in pairs if i == first]
        scores.append(ssim_many(stack[first], stack[partners], data_range=data_range))
    return float(np.mean(np.concatenate(scores)))
