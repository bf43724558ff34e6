"""OASIS-like 2D axial brain slices as 8-bit PNG files, made offline from the MNI152 template.

:func:`make_png_slices` writes slices that look like the OASIS ``keras_png_slices`` set (256 x 256,
black background, brain centred); :func:`sample_slices_dir` caches such a folder under
:func:`tfmedgan.data.samples.template.cache_root`. Each image is the template with a random warp,
bias field, gamma change and Rician noise (see :mod:`tfmedgan.data.samples.template`): good for
demos and tests, not for research results.

Example:
    >>> from tfmedgan.data.samples import sample_slices_dir
    >>> slices = sample_slices_dir(resolution=64, n_images=32)        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shutil
import tempfile

import numpy as np
from scipy import ndimage

from tfmedgan.data.samples.template import (
    BRAINWEB_T1,
    _check_positive_int,
    _check_seed,
    _random_sampling_coordinates,
    _rician,
    smooth_random_field,
    _warp,
    cache_root,
    load_mni152,
    synthetic_t1_t2,
)
from tfmedgan.errors import TfmedganError

__all__ = ["make_png_slices", "sample_slices_dir"]

# Fraction of the square canvas taken by the largest brain extent in the PNG slices.
_BRAIN_FILL = 0.85
# An axial slice is used when its brain area is at least this fraction of the canvas area.
_MIN_SLICE_BRAIN_FRACTION = 0.10


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

    bias = np.exp(rng.uniform(0.05, 0.2) * smooth_random_field(rng, (resolution, resolution), 3))
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
