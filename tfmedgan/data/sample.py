"""Built-in sample data made offline from the MNI ICBM152 templates.

The research code this library rebuilds was trained on data we cannot ship: OASIS brain slices for
the 2D GANs, and paired, skull-stripped T1w/T2w volumes for the 3D CycleGAN. This module makes
small stand-ins so that examples, tests and smoke runs work with no download:

* :func:`make_png_slices` / :func:`sample_slices_dir` write 2D axial brain slices as 8-bit PNGs
  that look like the OASIS ``keras_png_slices`` set (256 x 256, black background, brain centred).
* :func:`make_paired_subjects` writes co-registered T1w/T2w "subjects" as gzipped NIfTI in the
  ``trainA`` / ``trainB`` layout that the 3D CycleGAN expects.

Every image is one anatomy (the template) with a random smooth deformation (small affine plus
elastic warp), a multiplicative smooth bias field and Rician noise, so the images differ but all
come from 1-2 anatomies. They are good for demos and tests, not for research results.

The T2 contrast and the synthetic T1 come from the grey- and white-matter probability maps, with
CSF = brain mask - GM - WM, and BrainWeb-like tissue intensities (T1: WM 154, GM 106, CSF 48;
T2: WM 70, GM 100, CSF 250).

Credits:
    MNI ICBM152 non-linear symmetric 2009a templates (T1, GM and WM probability maps),
    Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
    Institute, McGill University. Fonov et al., NeuroImage 47 (2009) S102 and NeuroImage 54 (2011)
    313-327. We load the copies distributed with nilearn (``nilearn.datasets.load_mni152_*``),
    which are read from nilearn's installed package files, so no network is used.

Example:
    >>> from tfmedgan.data.sample import sample_slices_dir, make_paired_subjects
    >>> slices = sample_slices_dir(resolution=64, n_images=32)        # doctest: +SKIP
    >>> subjects = make_paired_subjects("/tmp/t1t2", n_subjects=4)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shutil
import tempfile
import warnings

import numpy as np
from scipy import ndimage

from tfmedgan.errors import TfmedganError

__all__ = [
    "BRAINWEB_T1",
    "BRAINWEB_T2",
    "MNI152Templates",
    "load_mni152",
    "tissue_probabilities",
    "synthetic_t1_t2",
    "make_png_slices",
    "sample_slices_dir",
    "make_paired_subjects",
    "cache_root",
]

#: BrainWeb-like T1-weighted tissue intensities (white matter, grey matter, CSF).
BRAINWEB_T1: dict[str, float] = {"wm": 154.0, "gm": 106.0, "csf": 48.0}
#: BrainWeb-like T2-weighted tissue intensities (white matter, grey matter, CSF).
BRAINWEB_T2: dict[str, float] = {"wm": 70.0, "gm": 100.0, "csf": 250.0}

# Fraction of the square canvas taken by the largest brain extent in the PNG slices.
_BRAIN_FILL = 0.85
# An axial slice is used when its brain area is at least this fraction of the canvas area.
_MIN_SLICE_BRAIN_FRACTION = 0.10


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


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], coarse: int
) -> np.ndarray:
    """A smooth random field of unit standard deviation.

    Coarse Gaussian noise on a ``coarse``-per-axis grid is upsampled with cubic splines to an
    intermediate grid (about a quarter of the size per axis), then linearly to ``shape``; the
    linear step is cheap and invisible because the field barely changes between samples.
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
            coordinates[axis] += elastic_std * _smooth_field(rng, shape, elastic_coarse)
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


# --------------------------------------------------------------------------------------------------
# 2D PNG slices (OASIS-like)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SliceStack:
    real_t1: np.ndarray  # (n_slices, R, R), white matter ~ 1
    synthetic_t1: np.ndarray  # (n_slices, R, R), white matter ~ 1
    mask: np.ndarray  # (n_slices, R, R) in {0, 1}


@functools.lru_cache(maxsize=2)
def _axial_slice_stack(resolution: int) -> _SliceStack:
    """Axial brain slices of the 1 mm templates on a centred square canvas of ``resolution``."""
    templates = load_mni152(1)
    mask = templates.mask > 0.5
    synthetic_t1, _ = synthetic_t1_t2(templates.gm, templates.wm, templates.mask)
    white_matter = templates.wm > 0.9
    real_t1 = templates.t1 * mask / float(np.median(templates.t1[white_matter]))
    synthetic_t1 = synthetic_t1 / BRAINWEB_T1["wm"]

    # Square canvas (in voxels) centred on the brain's in-plane bounding box.
    in_plane = np.argwhere(mask.any(axis=2))
    low, high = in_plane.min(axis=0), in_plane.max(axis=0) + 1
    centre = (low + high) / 2.0
    side = int(np.ceil((high - low).max() / _BRAIN_FILL))
    area = mask.sum(axis=(0, 1))
    slices = np.flatnonzero(area >= _MIN_SLICE_BRAIN_FRACTION * side * side)

    # Sampling grid: image rows go from anterior (top) to posterior, columns along x.
    step = side / resolution
    offsets = (np.arange(resolution) + 0.5) * step - side / 2.0
    rows_y = centre[1] - offsets  # anterior at the top
    columns_x = centre[0] + offsets
    x_grid, y_grid = np.meshgrid(columns_x, rows_y, indexing="xy")
    sigma = max(0.0, 0.5 * (step - 1.0))  # anti-alias when shrinking

    def resample(volume: np.ndarray, order: int) -> np.ndarray:
        out = np.empty((len(slices), resolution, resolution), dtype=np.float32)
        for index, z in enumerate(slices):
            plane = volume[:, :, z].astype(np.float32)
            if sigma > 0:
                plane = ndimage.gaussian_filter(plane, sigma)
            out[index] = ndimage.map_coordinates(
                plane, [x_grid, y_grid], order=order, mode="constant", cval=0.0
            )
        return out

    mask_stack = (resample(mask.astype(np.float32), 1) > 0.5).astype(np.float32)
    real_stack = np.clip(resample(real_t1, 1), 0.0, None) * mask_stack
    synthetic_stack = np.clip(resample(synthetic_t1, 1), 0.0, None) * mask_stack
    for array in (real_stack, synthetic_stack, mask_stack):
        array.setflags(write=False)
    return _SliceStack(real_t1=real_stack, synthetic_t1=synthetic_stack, mask=mask_stack)


def _render_slice(stack: _SliceStack, rng: np.random.Generator) -> np.ndarray:
    """One randomly augmented slice as uint8 (resolution x resolution)."""
    n_slices, resolution, _ = stack.real_t1.shape
    index = int(rng.integers(n_slices))
    blend = rng.uniform(0.0, 0.5)  # mix in the tissue-map T1 for contrast variety
    image = (1.0 - blend) * stack.real_t1[index] + blend * stack.synthetic_t1[index]
    mask = stack.mask[index]

    centre = np.full(2, (resolution - 1) / 2.0)
    coordinates = _random_sampling_coordinates(
        rng,
        (resolution, resolution),
        centre,
        max_rotation_degrees=8.0,
        max_scale=0.07,
        max_shear=0.04,
        max_translation=0.03 * resolution,
        elastic_std=0.008 * resolution,
        elastic_coarse=6,
    )
    image = _warp(image, coordinates)
    mask = _warp(mask, coordinates)

    bias = np.exp(rng.uniform(0.05, 0.2) * _smooth_field(rng, (resolution, resolution), 3))
    image = np.clip(image, 0.0, None) * bias
    image = image ** rng.uniform(0.85, 1.15)
    # less noise per pixel at lower resolution, as if the 256 px slice had been averaged down
    noise_scale = min(1.0, resolution / 256.0)
    image = _rician(rng, image, sigma=rng.uniform(0.01, 0.035) * noise_scale)
    image = image * mask  # skull-stripped look: exactly black outside the brain

    inside = image[mask > 0.5]
    top = float(np.percentile(inside, 99.8)) if inside.size else 1.0
    top = top / rng.uniform(0.9, 1.0) if top > 0 else 1.0
    return np.round(np.clip(image / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_png_slices(
    out_dir: str | os.PathLike,
    n_images: int = 256,
    resolution: int = 256,
    seed: int = 0,
    channels: int = 1,
) -> pathlib.Path:
    """Write OASIS-like 2D axial brain slices as 8-bit PNG files.

    Each image is an axial slice of the MNI152 1 mm T1 template (blended with a random share of
    the tissue-map T1) on a square canvas with the brain centred and a black background, then a
    random small affine + elastic warp, a smooth multiplicative bias field, a small gamma change
    and Rician noise. Image ``i`` depends only on ``(seed, i)``, so the output is deterministic and
    a larger ``n_images`` only adds files.

    Args:
        out_dir: Folder to write into (created if missing). Existing ``slice_*.png`` with the same
            names are overwritten.
        n_images: Number of PNG files, named ``slice_00000.png``, ``slice_00001.png``, ...
        resolution: Width and height in pixels (OASIS slices are 256).
        seed: Non-negative random seed.
        channels: 1 for grayscale (mode ``L``) or 3 for RGB with equal channels.

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.

    Raises:
        TfmedganError: On a bad ``n_images``, ``resolution``, ``seed`` or ``channels``.

    Example:
        >>> folder = make_png_slices("/tmp/slices", n_images=16, resolution=64)  # doctest: +SKIP
    """
    from PIL import Image

    n_images = _check_positive_int("n_images", n_images)
    resolution = _check_positive_int("resolution", resolution, minimum=16)
    seed = _check_seed(seed)
    if channels not in (1, 3):
        raise TfmedganError(f"channels must be 1 or 3, got {channels!r}")

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = _axial_slice_stack(resolution)
    for image_index in range(n_images):
        rng = np.random.default_rng([seed, image_index])
        pixels = _render_slice(stack, rng)
        if channels == 3:
            picture = Image.fromarray(np.repeat(pixels[:, :, None], 3, axis=2))
        else:
            picture = Image.fromarray(pixels)
        picture.save(out_dir / f"slice_{image_index:05d}.png", format="PNG", compress_level=6)
    return out_dir


def cache_root() -> pathlib.Path:
    """The cache folder: ``$TFMEDGAN_CACHE`` if set, else ``~/.cache/tfmedgan``."""
    configured = os.environ.get("TFMEDGAN_CACHE")
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path.home() / ".cache" / "tfmedgan"


def _is_complete(folder: pathlib.Path, n_images: int) -> bool:
    if not folder.is_dir():
        return False
    return all((folder / f"slice_{index:05d}.png").is_file() for index in range(n_images))


def sample_slices_dir(resolution: int = 256, n_images: int = 256, seed: int = 0) -> pathlib.Path:
    """A cached folder of :func:`make_png_slices` output, generated on first use.

    The folder is ``<cache>/slices_r{resolution}_n{n_images}_s{seed}`` under :func:`cache_root`.
    It is written to a temporary folder next to it and moved into place with one ``os.replace``,
    so a concurrent process never sees a half-written folder; if two processes race, the first
    finished folder wins and the other's copy is deleted.

    Args:
        resolution: Width and height of the PNGs in pixels.
        n_images: Number of PNGs.
        seed: Non-negative random seed.

    Returns:
        Path of the folder holding ``slice_00000.png`` ... (grayscale PNGs only).

    Example:
        >>> folder = sample_slices_dir(resolution=64, n_images=32)  # doctest: +SKIP
    """
    resolution = _check_positive_int("resolution", resolution, minimum=16)
    n_images = _check_positive_int("n_images", n_images)
    seed = _check_seed(seed)
    root = cache_root()
    final = root / f"slices_r{resolution}_n{n_images}_s{seed}"
    if _is_complete(final, n_images):
        return final

    try:
        root.mkdir(parents=True, exist_ok=True)
        temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    except OSError as error:
        raise TfmedganError(
            f"cannot create the sample-data cache folder {root}: {error}"
        ) from error
    try:
        make_png_slices(temporary, n_images=n_images, resolution=resolution, seed=seed)
        if final.exists() and not _is_complete(final, n_images):
            shutil.rmtree(final, ignore_errors=True)  # a damaged earlier copy
        try:
            os.replace(temporary, final)
        except OSError:
            if not _is_complete(final, n_images):  # not a lost race: a real problem
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------------
# 3D paired T1w / T2w subjects
# --------------------------------------------------------------------------------------------------


def _brain_centre(mask: np.ndarray) -> np.ndarray:
    voxels = np.argwhere(mask > 0.5)
    return (voxels.min(axis=0) + voxels.max(axis=0)) / 2.0


def _finish_contrast(
    rng: np.random.Generator, image: np.ndarray, brain: np.ndarray, reference: float
) -> np.ndarray:
    """Apply a bias field and Rician noise, zero the background, return float32."""
    bias = np.exp(rng.uniform(0.05, 0.15) * _smooth_field(rng, image.shape, 4))
    sigma = rng.uniform(0.01, 0.03) * reference
    noisy = _rician(rng, np.clip(image, 0.0, None) * bias, sigma=sigma)
    return (noisy * brain).astype(np.float32)


def make_paired_subjects(
    out_dir: str | os.PathLike,
    n_subjects: int = 4,
    seed: int = 0,
    resolution_mm: float = 2.0,
    name_prefix: str = "sub",
) -> pathlib.Path:
    """Write co-registered T1w/T2w subject pairs as gzipped NIfTI (CycleGAN ``trainA/trainB``).

    For each subject one random 3D deformation (small affine: rotations up to 4 degrees, scale
    +-5 %, shear, shift up to 3 mm; plus a smooth elastic warp of about 1.5 mm) is applied to the
    MNI152 T1 template and to the GM, WM and brain-mask maps. The T1w image is the warped real
    template on the BrainWeb scale (white matter ~ 154); the T2w image is made from the warped
    tissue maps with :func:`synthetic_t1_t2` (CSF 250 > GM 100 > WM 70). Each contrast then gets
    its own smooth bias field and Rician noise, and everything outside the warped brain mask is
    exactly 0 (skull-stripped). Subject ``k`` depends only on ``(seed, k)``.

    Files: ``out_dir/trainA/<prefix>-000_T1w.nii.gz`` and ``out_dir/trainB/<prefix>-000_T2w.nii.gz``
    (pairs match by sorted file name). Data are float32; the affine is the template's (zooms =
    ``resolution_mm``), so the world geometry is correct.

    Args:
        out_dir: Output folder (created if missing).
        n_subjects: Number of subject pairs.
        seed: Non-negative random seed.
        resolution_mm: 1 (197x233x189 voxels) or 2 (99x117x95 voxels).
        name_prefix: File name prefix, without path separators.

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.

    Raises:
        TfmedganError: On a bad ``n_subjects``, ``seed``, ``resolution_mm`` or ``name_prefix``.

    Example:
        >>> root = make_paired_subjects("/tmp/t1t2", n_subjects=2)  # doctest: +SKIP
        >>> sorted(p.name for p in (root / "trainA").iterdir())      # doctest: +SKIP
        ['sub-000_T1w.nii.gz', 'sub-001_T1w.nii.gz']
    """
    import nibabel as nib

    n_subjects = _check_positive_int("n_subjects", n_subjects)
    seed = _check_seed(seed)
    resolution = _check_resolution_mm(resolution_mm)
    if (
        not isinstance(name_prefix, str)
        or not name_prefix
        or "/" in name_prefix
        or os.sep in name_prefix
    ):
        raise TfmedganError(
            f"name_prefix must be a non-empty name without '/', got {name_prefix!r}"
        )

    templates = load_mni152(resolution)
    white_matter = templates.wm > 0.9
    t1_template = templates.t1 * (BRAINWEB_T1["wm"] / float(np.median(templates.t1[white_matter])))
    t1_template = t1_template * templates.mask
    centre = _brain_centre(templates.mask)
    shape = templates.t1.shape

    out_dir = pathlib.Path(out_dir)
    folder_a, folder_b = out_dir / "trainA", out_dir / "trainB"
    folder_a.mkdir(parents=True, exist_ok=True)
    folder_b.mkdir(parents=True, exist_ok=True)
    affine = np.array(templates.affine)

    for subject in range(n_subjects):
        rng = np.random.default_rng([seed, subject])
        coordinates = _random_sampling_coordinates(
            rng,
            shape,
            centre,
            max_rotation_degrees=4.0,
            max_scale=0.05,
            max_shear=0.02,
            max_translation=3.0 / resolution,
            elastic_std=1.5 / resolution,
            elastic_coarse=5,
        )
        brain_soft = _warp(templates.mask, coordinates)
        brain = (brain_soft > 0.5).astype(np.float32)
        t1 = _warp(t1_template, coordinates)
        gm = _warp(templates.gm, coordinates)
        wm = _warp(templates.wm, coordinates)
        del coordinates
        _, t2 = synthetic_t1_t2(gm, wm, brain_soft)

        t1 = _finish_contrast(rng, t1, brain, BRAINWEB_T1["wm"])
        t2 = _finish_contrast(rng, t2, brain, BRAINWEB_T2["gm"])

        name = f"{name_prefix}-{subject:03d}"
        outputs = ((t1, folder_a / f"{name}_T1w.nii.gz"), (t2, folder_b / f"{name}_T2w.nii.gz"))
        for data, path in outputs:
            image = nib.Nifti1Image(data, affine)
            image.header.set_xyzt_units("mm")
            image.header.set_data_dtype(np.float32)
            nib.save(image, str(path))
    return out_dir
