"""MNI152 templates, tissue contrasts and the random fields, warps and noise of the sample data.

The built-in sample data (:mod:`tfmedgan.data.samples`) are all made from one anatomy, the MNI
ICBM152 template, with a random smooth deformation (small affine plus elastic warp), a
multiplicative smooth bias field and Rician noise. This module holds those shared pieces: the
templates (:func:`load_mni152`), tissue fractions and synthetic contrasts, smooth random fields,
warps, noise, argument checks and the cache folder (:func:`cache_root`).

The T2 contrast and the synthetic T1 come from the grey- and white-matter probability maps, with
CSF = brain mask - GM - WM, and BrainWeb-like tissue intensities (T1: WM 154, GM 106, CSF 48;
T2: WM 70, GM 100, CSF 250).

Credits:
    MNI ICBM152 non-linear symmetric 2009a templates (T1, GM and WM probability maps),
    Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
    Institute, McGill University. Fonov et al., NeuroImage 47 (2009) S102 and NeuroImage 54 (2011)
    313-327. We load the copies distributed with nilearn (``nilearn.datasets.load_mni152_*``),
    which are read from nilearn's installed package files, so no network is used.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import warnings

import numpy as np
from scipy import ndimage

from tfmedgan.errors import TfmedganError

__all__ = [
    "smooth_random_field",
    "BRAINWEB_T1",
    "BRAINWEB_T2",
    "MNI152Templates",
    "load_mni152",
    "tissue_probabilities",
    "synthetic_t1_t2",
    "cache_root",
]

#: BrainWeb-like T1-weighted tissue intensities (white matter, grey matter, CSF).
BRAINWEB_T1: dict[str, float] = {"wm": 154.0, "gm": 106.0, "csf": 48.0}
#: BrainWeb-like T2-weighted tissue intensities (white matter, grey matter, CSF).
BRAINWEB_T2: dict[str, float] = {"wm": 70.0, "gm": 100.0, "csf": 250.0}


# --------------------------------------------------------------------------------------------------
# Templates and tissue contrasts
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MNI152Templates:
    """The MNI ICBM152 2009a templates on one grid (arrays are read-only, float32).

    Attributes:
        t1: Skull-stripped T1w template, scaled to [0, 1] (as nilearn returns it).
        gm: Grey-matter probability in [0, 1].
        wm: White-matter probability in [0, 1].
        mask: Binary brain mask (T1 > 0.2, nilearn's definition), 0 or 1.
        affine: 4x4 voxel-to-world (RAS, mm) affine of the grid.
        resolution_mm: Isotropic voxel size in mm (1 or 2).
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    resolution_mm: int


def _check_resolution_mm(resolution_mm: float) -> int:
    if resolution_mm not in (1, 2):
        raise TfmedganError(
            f"resolution_mm must be 1 or 2 (the MNI152 template grids), got {resolution_mm!r}"
        )
    return int(resolution_mm)


@functools.lru_cache(maxsize=2)
def _load_mni152_cached(resolution_mm: int) -> MNI152Templates:
    from nilearn import datasets  # imported lazily: nilearn is slow to import

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1_image = datasets.load_mni152_template(resolution=resolution_mm)
        gm_image = datasets.load_mni152_gm_template(resolution=resolution_mm)
        wm_image = datasets.load_mni152_wm_template(resolution=resolution_mm)
        mask_image = datasets.load_mni152_brain_mask(resolution=resolution_mm)

    def as_array(image, clip: bool = True) -> np.ndarray:
        array = np.asarray(image.get_fdata(dtype=np.float32), dtype=np.float32)
        if clip:  # resampling to 2 mm uses splines, which give small negative values
            array = np.clip(array, 0.0, 1.0)
        array.setflags(write=False)
        return array

    affine = np.array(t1_image.affine, dtype=np.float64)
    affine.setflags(write=False)
    return MNI152Templates(
        t1=as_array(t1_image),
        gm=as_array(gm_image),
        wm=as_array(wm_image),
        mask=as_array(mask_image),
        affine=affine,
        resolution_mm=resolution_mm,
    )


def load_mni152(resolution_mm: float = 2.0) -> MNI152Templates:
    """Load the MNI152 T1, GM, WM and brain-mask templates shipped inside nilearn (offline).

    The result is cached per resolution; its arrays are read-only (copy them to modify).

    Args:
        resolution_mm: Voxel size, 1 (grid 197x233x189) or 2 (grid 99x117x95).

    Returns:
        An :class:`MNI152Templates` with float32 arrays and the grid's affine.

    Raises:
        TfmedganError: If ``resolution_mm`` is not 1 or 2.

    Example:
        >>> templates = load_mni152(2)
        >>> templates.t1.shape
        (99, 117, 95)
    """
    return _load_mni152_cached(_check_resolution_mm(resolution_mm))


def tissue_probabilities(
    gm: np.ndarray, wm: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey matter, white matter and CSF fractions that sum to at most 1 inside the brain.

    No CSF map ships with nilearn, so CSF is what the brain mask holds beyond GM and WM:
    ``csf = clip(mask - gm - wm, 0, 1)``. All three are zero outside the mask.

    Args:
        gm: Grey-matter probability map, values in [0, 1].
        wm: White-matter probability map, same shape.
        mask: Brain mask (binary or soft, in [0, 1]), same shape.

    Returns:
        ``(gm, wm, csf)`` as float32 arrays of the input shape.
    """
    gm = np.asarray(gm, dtype=np.float32)
    wm = np.asarray(wm, dtype=np.float32)
    mask = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if not gm.shape == wm.shape == mask.shape:
        raise TfmedganError(
            f"gm, wm and mask must have the same shape, got {gm.shape}, {wm.shape}, {mask.shape}"
        )
    gm = np.clip(gm, 0.0, 1.0) * mask
    wm = np.clip(wm, 0.0, 1.0) * mask
    total = gm + wm
    # keep gm + wm <= 1 (the templates overshoot slightly at a few voxels)
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    return gm, wm, csf


def synthetic_t1_t2(
    gm: np.ndarray, wm: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic T1w and T2w images from tissue maps with BrainWeb-like intensities.

    Each voxel is the tissue-fraction-weighted sum of the tissue intensities in
    :data:`BRAINWEB_T1` and :data:`BRAINWEB_T2` (T1: WM > GM > CSF; T2: CSF > GM > WM).

    Args:
        gm: Grey-matter probability map in [0, 1].
        wm: White-matter probability map in [0, 1].
        mask: Brain mask in [0, 1]; the output is zero outside it.

    Returns:
        ``(t1, t2)`` float32 arrays of the input shape (T1 up to 154, T2 up to 250).

    Example:
        >>> templates = load_mni152(2)
        >>> t1, t2 = synthetic_t1_t2(templates.gm, templates.wm, templates.mask)
    """
    gm, wm, csf = tissue_probabilities(gm, wm, mask)
    t1 = BRAINWEB_T1["wm"] * wm + BRAINWEB_T1["gm"] * gm + BRAINWEB_T1["csf"] * csf
    t2 = BRAINWEB_T2["wm"] * wm + BRAINWEB_T2["gm"] * gm + BRAINWEB_T2["csf"] * csf
    return t1.astype(np.float32), t2.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Random smooth fields and warps (shared by 2D and 3D)
# --------------------------------------------------------------------------------------------------


def smooth_random_field(
    rng: np.random.Generator, shape: tuple[int, ...], coarse: int
) -> np.ndarray:
    """A smooth random field of unit standard deviation (bias fields, warps).

    Coarse Gaussian noise on a ``coarse``-per-axis grid is upsampled with cubic splines to an
    intermediate grid (about a quarter of the size per axis), then linearly to ``shape``; the
    linear step is cheap and invisible because the field barely changes between samples.

    Args:
        rng: The random generator drawn from.
        shape: Output shape (2D or 3D).
        coarse: Grid points per axis of the coarse noise (about the number of bumps + 1).

    Example:
        >>> field = smooth_random_field(np.random.default_rng(0), (32, 40, 24), 4)
        >>> field.shape, round(float(field.std()), 3)
        ((32, 40, 24), 1.0)
    """
    grid = rng.standard_normal((coarse,) * len(shape))
    middle = tuple(min(size, max(4 * coarse, -(-size // 4))) for size in shape)
    field = ndimage.zoom(grid, [m / coarse for m in middle], order=3, mode="nearest")
    if field.shape != tuple(shape):
        field = ndimage.zoom(
            field, [size / m for size, m in zip(shape, field.shape)], order=1, mode="nearest"
        )
    field = field[tuple(slice(0, size) for size in shape)]  # guard against rounding
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def _random_rotation(rng: np.random.Generator, ndim: int, max_degrees: float) -> np.ndarray:
    """A rotation matrix with angles drawn uniformly in +-max_degrees (per axis pair in 3D)."""
    rotation = np.eye(ndim)
    axis_pairs = [(0, 1)] if ndim == 2 else [(0, 1), (0, 2), (1, 2)]
    for first, second in axis_pairs:
        angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
        step = np.eye(ndim)
        step[first, first] = step[second, second] = np.cos(angle)
        step[first, second] = -np.sin(angle)
        step[second, first] = np.sin(angle)
        rotation = rotation @ step
    return rotation


def _random_sampling_coordinates(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    centre: np.ndarray,
    max_rotation_degrees: float,
    max_scale: float,
    max_shear: float,
    max_translation: float,
    elastic_std: float,
    elastic_coarse: int,
) -> np.ndarray:
    """Input coordinates for every output voxel of a random affine + elastic warp.

    Distances (translation, elastic displacement) are in voxels. The returned array has shape
    ``(ndim, *shape)`` and is meant for :func:`scipy.ndimage.map_coordinates`.
    """
    ndim = len(shape)
    rotation = _random_rotation(rng, ndim, max_rotation_degrees)
    scale = rng.uniform(1.0 - max_scale, 1.0 + max_scale) * (
        1.0 + rng.uniform(-max_scale / 3.0, max_scale / 3.0, size=ndim)
    )
    shear = np.eye(ndim)
    for row in range(ndim):
        for column in range(ndim):
            if row != column:
                shear[row, column] = rng.uniform(-max_shear, max_shear)
    matrix = rotation @ np.diag(scale) @ shear
    translation = rng.uniform(-max_translation, max_translation, size=ndim)

    grid = np.indices(shape, dtype=np.float32).reshape(ndim, -1)
    relative = grid - centre.reshape(ndim, 1).astype(np.float32)
    coordinates = (matrix.astype(np.float32) @ relative).reshape((ndim, *shape))
    coordinates += (centre + translation).reshape((ndim,) + (1,) * ndim).astype(np.float32)
    if elastic_std > 0:
        for axis in range(ndim):
            coordinates[axis] += elastic_std * smooth_random_field(rng, shape, elastic_coarse)
    return coordinates


def _warp(volume: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(
        volume, coordinates, order=1, mode="constant", cval=0.0, prefilter=False
    ).astype(np.float32)


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    real = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def _check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TfmedganError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed: int) -> int:
    return _check_positive_int("seed", seed, minimum=0)



def cache_root() -> pathlib.Path:
    """The cache folder: ``$TFMEDGAN_CACHE`` if set, else ``~/.cache/tfmedgan``."""
    configured = os.environ.get("TFMEDGAN_CACHE")
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path.home() / ".cache" / "tfmedgan"
