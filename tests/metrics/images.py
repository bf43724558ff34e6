"""Test images and scikit-image reference loops shared by the metrics tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity


def smooth_images(
    rng: np.random.Generator, count: int, shape: tuple[int, ...], sigma: float = 2.0
) -> np.ndarray:
    """Random smooth images scaled to [-1, 1] (structured, unlike white noise)."""
    noise = rng.standard_normal((count,) + shape)
    images = ndimage.gaussian_filter(noise, (0,) + (sigma,) * len(shape))
    return images / np.abs(images).max(axis=tuple(range(1, images.ndim)), keepdims=True)


def brain_like(rng: np.random.Generator, count: int, size: int = 32) -> np.ndarray:
    """Background exactly -1 with a textured disc, like skull-stripped slices scaled to [-1, 1]."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    images = np.full((count, size, size), -1.0)
    texture = smooth_images(rng, count, (size, size), sigma=1.5)
    images[:, disc] = 0.6 * texture[:, disc] + 0.2
    return images


def skimage_scores(reference: np.ndarray, stack: np.ndarray, data_range: float) -> np.ndarray:
    """The seed's loop: structural_similarity(real, fake, data_range=...) for every real image.

    skimage computes float32 inputs in float32, so this is the seed's exact arithmetic only up to
    float32 rounding; compare float64 results with ``skimage_scores_float64``.
    """
    return np.array([structural_similarity(real, reference, data_range=data_range) for real in stack])


def skimage_scores_float64(reference: np.ndarray, stack: np.ndarray, data_range: float) -> np.ndarray:
    return skimage_scores(reference.astype(np.float64), stack.astype(np.float64), data_range)
