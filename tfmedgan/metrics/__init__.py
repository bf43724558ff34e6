"""Image-similarity metrics: skimage-compatible SSIM (single pair and fast one-against-many), PSNR,
MAE and histogram mutual information.

- :mod:`tfmedgan.metrics.structural_similarity`: :func:`ssim` and :func:`ssim_map` of one pair
  (2D/3D, masks), exactly skimage's ``structural_similarity`` with its defaults;
- :mod:`tfmedgan.metrics.search`: :func:`ssim_many` and :func:`best_match`, one image against a
  whole stack (vectorised, threaded, streaming);
- :mod:`tfmedgan.metrics.intensity`: :func:`psnr`, :func:`mae` and :func:`mutual_information`;
- :mod:`tfmedgan.metrics.gaussian`: :func:`gaussian_ssim`, the 11^3 Gaussian-window SSIM of the
  seed-001 evaluation.

Every public name is re-exported here, so ``from tfmedgan.metrics import ssim`` works. (The pair
module is not called ``ssim.py``: that name would clash with the function ``metrics.ssim``.)

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

from tfmedgan.metrics import gaussian, intensity, search, structural_similarity
from tfmedgan.metrics.gaussian import gaussian_ssim, gaussian_ssim_map, gaussian_window
from tfmedgan.metrics.intensity import mae, mutual_information, psnr
from tfmedgan.metrics.search import Precision, _default_workers, best_match, ssim_many
from tfmedgan.metrics.structural_similarity import K1, K2, WINDOW_SIZE, ssim, ssim_map

__all__ = [*structural_similarity.__all__, *search.__all__, *intensity.__all__, *gaussian.__all__]
