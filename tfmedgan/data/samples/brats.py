"""BraTS-layout sample cases from two simulated "institutions" with a real domain shift.

:func:`make_brats_cases` writes T1, T2 and FLAIR volumes (plus a lesion ``seg`` map) in the
layout of seed 001 (``ROOT/domain{1,2}_{train,val,test}/<case>/<case>_{t1,t2,flair,seg}.nii.gz``),
made offline from the MNI ICBM152 tissue maps (:mod:`tfmedgan.data.samples.template`). Every case
is the template anatomy with its own random warp, a random lesion (necrotic core + oedema, as
in glioma data), small per-case intensity variations, and then the acquisition of its
institution. The two institutions differ the way scanners do (:data:`INSTITUTIONS`):

=====================  ==========================================  =============================================
                       institution A (``domain1``)                 institution B (``domain2``)
=====================  ==========================================  =============================================
contrast (tissue       T1 WM 154 / GM 106 / CSF 48; T2 70/100/250;  T1 150/115/70 (less GM-WM contrast);
intensities, WM/GM/    FLAIR 85/115/12 (CSF fully suppressed)       T2 85/110/210; FLAIR 95/112/55 (CSF only
CSF)                                                                partly suppressed)
contrast curve         linear                                       gamma 0.85 (T1), 0.75 (T2), 1.25 (FLAIR)
bias field             weak: log-amplitude 0.05-0.10                strong: 0.15-0.25
noise (Rician sigma)   1-2 % of the reference intensity             3-5 %
resolution / blur      none (sharp)                                 Gaussian PSF, sigma 1.0 mm in-plane and
                                                                    2.5 mm through-plane (thick axial slices)
intensity units        x 1                                          x 2.5
=====================  ==========================================  =============================================

The volumes are written like BraTS files: float32, skull-stripped (exactly 0 outside the
brain), on an LPS voxel grid (affine ``diag(-v, -v, v)`` up to the origin), so the IPL
reorientation of :mod:`tfmedgan.data.brats` really runs. The grid is the brain's bounding box
plus a margin at ``voxel_size_mm`` (2 mm: 81 x 98 x 82 voxels, IPL 82 x 98 x 81, so a centred
80 x 96 x 80 crop fits). Case ``k`` of a split depends only on
``(seed, domain, split, k)``. Good for demos, tests and CPU-budget benchmarks, not for research
results.

Example:
    >>> from tfmedgan.data.samples.brats import make_brats_cases
    >>> root = make_brats_cases("/tmp/brats_sample", n_per_split=2)   # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())                          # doctest: +SKIP
    ['domain1_test', 'domain1_train', 'domain1_val', 'domain2_test', 'domain2_train', 'domain2_val']
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from tfmedgan.data.samples.template import (
    _check_seed,
    _random_sampling_coordinates,
    _rician,
    smooth_random_field,
    _warp,
    load_mni152,
    tissue_probabilities,
)
from tfmedgan.errors import TfmedganError

__all__ = [
    "Institution",
    "INSTITUTIONS",
    "TISSUES",
    "BRATS_SAMPLE_MODALITIES",
    "synthesize_contrast",
    "make_brats_cases",
]

TISSUES: tuple[str, ...] = ("wm", "gm", "csf", "edema", "core")
"""Tissue classes of the simulation (brain tissues plus the lesion's oedema and necrotic core)."""

BRATS_SAMPLE_MODALITIES: tuple[str, ...] = ("t1", "t2", "flair")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Institution:
    """How one simulated site acquires images.

    Attributes:
        name: Short name used in the case names.
        intensities: Modality -> tissue -> intensity (before the curve and the unit scale).
        gamma: Modality -> exponent of the contrast curve ``ref * (x / ref) ** gamma``
            (``ref`` = the largest tissue intensity of the modality).
        bias_strength: ``(low, high)`` of the log-amplitude of the smooth multiplicative bias field.
        noise: ``(low, high)`` of the Rician noise sigma as a fraction of the modality's median
            tissue intensity.
        blur_mm: Gaussian PSF sigma in mm along (left-right, posterior-anterior, inferior-superior);
            zeros = sharp.
        scale: Global intensity unit factor.
    """

    name: str
    intensities: Mapping[str, Mapping[str, float]]
    gamma: Mapping[str, float]
    bias_strength: tuple[float, float]
    noise: tuple[float, float]
    blur_mm: tuple[float, float, float]
    scale: float


INSTITUTIONS: tuple[Institution, Institution] = (
    Institution(
        name="SITEA",
        intensities={
            "t1": {"wm": 154.0, "gm": 106.0, "csf": 48.0, "edema": 88.0, "core": 40.0},
            "t2": {"wm": 70.0, "gm": 100.0, "csf": 250.0, "edema": 185.0, "core": 220.0},
            "flair": {"wm": 85.0, "gm": 115.0, "csf": 12.0, "edema": 195.0, "core": 70.0},
        },
        gamma={"t1": 1.0, "t2": 1.0, "flair": 1.0},
        bias_strength=(0.05, 0.10),
        noise=(0.01, 0.02),
        blur_mm=(0.0, 0.0, 0.0),
        scale=1.0,
    ),
    Institution(
        name="SITEB",
        intensities={
            "t1": {"wm": 150.0, "gm": 115.0, "csf": 70.0, "edema": 100.0, "core": 60.0},
            "t2": {"wm": 85.0, "gm": 110.0, "csf": 210.0, "edema": 170.0, "core": 200.0},
            "flair": {"wm": 95.0, "gm": 112.0, "csf": 55.0, "edema": 165.0, "core": 80.0},
        },
        gamma={"t1": 0.85, "t2": 0.75, "flair": 1.25},
        bias_strength=(0.15, 0.25),
        noise=(0.03, 0.05),
        blur_mm=(1.0, 1.0, 2.5),
        scale=2.5,
    ),
)
"""Institution A (written as ``domain1``, the source) and B (``domain2``, the target)."""


def synthesize_contrast(
    fractions: Mapping[str, np.ndarray],
    intensities: Mapping[str, float],
    gamma: float = 1.0,
) -> np.ndarray:
    """Noise-free image of one modality: tissue-fraction-weighted intensities, then the curve.

    Args:
        fractions: Tissue (keys of :data:`TISSUES`, missing = 0) -> fraction map; the fractions
            of a voxel should sum to at most 1 (the rest is background, intensity 0).
        intensities: Tissue -> intensity.
        gamma: Exponent of the contrast curve ``ref * (x / ref) ** gamma``, ``ref`` = the largest
            intensity.

    Returns:
        float32 image of the maps' shape.

    Example:
        >>> synthesize_contrast({"csf": np.ones(2)}, {"csf": 50.0, "wm": 200.0}, gamma=0.5).tolist()
        [100.0, 100.0]
    """
    shape = next(iter(fractions.values())).shape
    image = np.zeros(shape, np.float32)
    for tissue, fraction in fractions.items():
        if tissue not in TISSUES:
            raise TfmedganError(f"unknown tissue {tissue!r}; known: {', '.join(TISSUES)}")
        image += float(intensities.get(tissue, 0.0)) * np.asarray(fraction, np.float32)
    if gamma != 1.0:
        reference = max(float(value) for value in intensities.values())
        image = reference * np.power(np.clip(image / reference, 0.0, None), gamma)
    return image.astype(np.float32)


# ------------------------------------------------------------------------------------------------
def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise TfmedganError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _split_counts(n_per_split) -> dict[str, int]:
    if isinstance(n_per_split, Mapping):
        unknown = set(n_per_split) - set(SPLITS)
        if unknown:
            raise TfmedganError(f"n_per_split keys must be among {SPLITS}, got {sorted(unknown)}")
        counts = {split: _check_count(f"n_per_split[{split!r}]", n_per_split.get(split, 0)) for split in SPLITS}
    else:
        count = _check_count("n_per_split", n_per_split)
        counts = {split: count for split in SPLITS}
    if not any(counts.values()):
        raise TfmedganError("n_per_split asks for no case at all")
    return counts


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Output voxel grid: shape, template-index origin and step, affine (RAS, before the LPS flip)."""

    shape: tuple[int, int, int]
    origin: np.ndarray
    step: float
    affine: np.ndarray


def _output_grid(templates, voxel_size_mm: float, margin_mm: float) -> _Grid:
    resolution = float(templates.resolution_mm)
    voxels = np.argwhere(templates.mask > 0.5)
    margin = margin_mm / resolution
    low = np.maximum(voxels.min(axis=0) - margin, 0.0)
    high = np.minimum(voxels.max(axis=0) + margin, np.array(templates.mask.shape) - 1.0)
    step = voxel_size_mm / resolution
    shape = tuple(int(math.floor((hi - lo) / step)) + 1 for lo, hi in zip(low, high))
    index_to_template = np.diag([step, step, step, 1.0])
    index_to_template[:3, 3] = low
    return _Grid(shape, low, step, np.asarray(templates.affine, np.float64) @ index_to_template)


def _lps(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[::-1, ::-1, :])


def _lps_affine(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    return affine @ flip


def _lesion(rng: np.random.Generator, wm: np.ndarray, brain: np.ndarray, voxel_size_mm: float):
    """Smooth ellipsoidal necrotic core and oedema shell centred in white matter."""
    candidates = np.argwhere((wm > 0.7) & (brain > 0.5))
    if len(candidates) == 0:
        candidates = np.argwhere(brain > 0.5)
    centre = candidates[int(rng.integers(len(candidates)))].astype(np.float32)
    core_radius = rng.uniform(5.0, 10.0, size=3) / voxel_size_mm
    edema_radius = core_radius * rng.uniform(1.6, 2.3)
    grid = np.indices(wm.shape, dtype=np.float32)
    offsets = grid - centre.reshape(3, 1, 1, 1)

    def smooth_ball(radius):
        distance = np.sqrt(sum((offsets[axis] / radius[axis]) ** 2 for axis in range(3)))
        return 1.0 / (1.0 + np.exp(np.clip((distance - 1.0) * 8.0, -50, 50)))

    core = smooth_ball(core_radius) * brain
    edema = np.clip(smooth_ball(edema_radius) * brain - core, 0.0, 1.0)
    return core.astype(np.float32), edema.astype(np.float32)


def _render_case(templates, grid: _Grid, institution: Institution, rng: np.random.Generator, voxel_size_mm: float):
    """(volumes per modality, seg) on the RAS output grid."""
    centre = (np.argwhere(templates.mask > 0.5).mean(axis=0) - grid.origin) / grid.step
    coordinates = _random_sampling_coordinates(
        rng,
        grid.shape,
        centre,
        max_rotation_degrees=4.0,
        max_scale=0.05,
        max_shear=0.02,
        max_translation=3.0 / voxel_size_mm,
        elastic_std=1.5 / voxel_size_mm,
        elastic_coarse=5,
    )
    coordinates = coordinates * np.float32(grid.step) + grid.origin.reshape(3, 1, 1, 1).astype(np.float32)
    brain_soft = _warp(templates.mask, coordinates)
    gm = _warp(templates.gm, coordinates)
    wm = _warp(templates.wm, coordinates)
    del coordinates
    brain = (brain_soft > 0.5).astype(np.float32)
    gm, wm, csf = tissue_probabilities(gm, wm, brain_soft)
    core, edema = _lesion(rng, wm, brain, voxel_size_mm)
    normal = 1.0 - core - edema
    fractions = {"wm": wm * normal, "gm": gm * normal, "csf": csf * normal, "edema": edema, "core": core}
    sigma_voxels = [blur / voxel_size_mm for blur in institution.blur_mm]
    volumes = {}
    for modality in BRATS_SAMPLE_MODALITIES:
        jitter = {tissue: value * rng.uniform(0.95, 1.05) for tissue, value in institution.intensities[modality].items()}
        image = synthesize_contrast(fractions, jitter, institution.gamma[modality])
        if any(sigma > 0 for sigma in sigma_voxels):
            image = ndimage.gaussian_filter(image, sigma_voxels, mode="constant")
        bias = np.exp(rng.uniform(*institution.bias_strength) * smooth_random_field(rng, grid.shape, 4))
        reference = float(np.median(list(institution.intensities[modality].values())))
        noisy = _rician(rng, image * bias, sigma=rng.uniform(*institution.noise) * reference)
        volumes[modality] = (noisy * brain * institution.scale).astype(np.float32)
    seg = np.zeros(grid.shape, np.uint8)
    seg[edema > 0.5] = 2
    seg[core > 0.5] = 1
    return volumes, seg


def make_brats_cases(
    out_dir: str | os.PathLike,
    n_per_split: int | Mapping[str, int] = 2,
    voxel_size_mm: float = 2.0,
    seed: int = 0,
    margin_mm: float = 8.0,
    write_seg: bool = True,
) -> pathlib.Path:
    """Write simulated BraTS-layout cases of two institutions (``domain1`` = A, ``domain2`` = B).

    Args:
        out_dir: Output root (created if missing). Its split folders must not exist yet or be
            empty: existing data are never overwritten.
        n_per_split: Cases per split folder, one int for all of train/val/test or a mapping such
            as ``{"train": 6, "val": 2, "test": 3}`` (missing splits: 0, not written).
        voxel_size_mm: Isotropic voxel size (1 to 8 mm; 2 mm gives 81 x 98 x 82 voxels).
        seed: Non-negative seed; case ``k`` depends only on ``(seed, domain, split, k)``.
        margin_mm: Margin around the template brain's bounding box.
        write_seg: Also write ``<case>_seg.nii.gz`` (uint8: 1 necrotic core, 2 oedema), which the
            pipeline ignores, as in BraTS.

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.

    Raises:
        TfmedganError: Bad arguments, or a split folder that already holds files.
    """
    import nibabel as nib

    from tfmedgan.io.nifti import write_volume

    counts = _split_counts(n_per_split)
    seed = _check_seed(seed)
    try:
        voxel_size_mm = float(voxel_size_mm)
        margin_mm = float(margin_mm)
    except (TypeError, ValueError):
        raise TfmedganError(f"voxel_size_mm and margin_mm must be numbers, got {voxel_size_mm!r}, {margin_mm!r}") from None
    if not 1.0 <= voxel_size_mm <= 8.0:
        raise TfmedganError(f"voxel_size_mm must be between 1 and 8, got {voxel_size_mm}")
    if margin_mm < 0:
        raise TfmedganError(f"margin_mm must be >= 0, got {margin_mm}")
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TfmedganError(f"{out_dir}: exists and is not a folder")
    folders = {}
    for domain in (1, 2):
        for split in SPLITS:
            if counts[split] == 0:
                continue
            folder = out_dir / f"domain{domain}_{split}"
            if folder.exists() and any(folder.iterdir()):
                raise TfmedganError(f"{folder}: already holds files; choose a new output folder")
            folders[(domain, split)] = folder

    templates = load_mni152(1 if voxel_size_mm < 2.0 else 2)
    grid = _output_grid(templates, voxel_size_mm, margin_mm)
    affine = _lps_affine(grid.affine, grid.shape)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    header["sform_code"] = 2
    for (domain, split), folder in folders.items():
        institution = INSTITUTIONS[domain - 1]
        for case_index in range(counts[split]):
            rng = np.random.default_rng([seed, domain, SPLITS.index(split), case_index])
            volumes, seg = _render_case(templates, grid, institution, rng, voxel_size_mm)
            name = f"SIM_{institution.name}_{split}_{case_index:03d}"
            case_folder = folder / name
            case_folder.mkdir(parents=True, exist_ok=True)
            for modality, data in volumes.items():
                write_volume(case_folder / f"{name}_{modality}.nii.gz", _lps(data), affine, header=header)
            if write_seg:
                write_volume(case_folder / f"{name}_seg.nii.gz", _lps(seg), affine, header=header, dtype=np.uint8)
    return out_dir
