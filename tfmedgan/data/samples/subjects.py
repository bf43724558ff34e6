"""Paired, co-registered 3D T1w/T2w "subjects" made offline from the MNI152 templates.

:func:`make_paired_subjects` writes them as gzipped NIfTI (through :func:`tfmedgan.io.nifti.write_volume`)
in the ``trainA`` / ``trainB`` layout that the 3D CycleGAN expects. Every subject is the template
anatomy with its own random warp, bias fields and Rician noise (see
:mod:`tfmedgan.data.samples.template`): good for demos and tests, not for research results.

Example:
    >>> from tfmedgan.data.samples import make_paired_subjects
    >>> subjects = make_paired_subjects("/tmp/t1t2", n_subjects=4)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from tfmedgan.data.samples.template import (
    BRAINWEB_T1,
    BRAINWEB_T2,
    _check_positive_int,
    _check_resolution_mm,
    _check_seed,
    _random_sampling_coordinates,
    _rician,
    smooth_random_field,
    _warp,
    load_mni152,
    synthetic_t1_t2,
)
from tfmedgan.errors import TfmedganError

__all__ = ["make_paired_subjects"]

def _brain_centre(mask: np.ndarray) -> np.ndarray:
    voxels = np.argwhere(mask > 0.5)
    return (voxels.min(axis=0) + voxels.max(axis=0)) / 2.0


def _finish_contrast(
    rng: np.random.Generator, image: np.ndarray, brain: np.ndarray, reference: float
) -> np.ndarray:
    """Apply a bias field and Rician noise, zero the background, return float32."""
    bias = np.exp(rng.uniform(0.05, 0.15) * smooth_random_field(rng, image.shape, 4))
    sigma = rng.uniform(0.01, 0.03) * reference
    noisy = _rician(rng, np.clip(image, 0.0, None) * bias, sigma=sigma)
    return (noisy * brain).astype(np.float32)


def make_paired_subjects(
    out_dir: str | os.PathLike,
    n_subjects: int = 4,
    seed: int = 0,
    resolution_mm: float = 2.0,
    name_prefix: str = "sub",
    noise_free: bool = False,
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
        noise_free: Also write each T2w image before its bias field and noise, as
            ``out_dir/trainB_noise_free/<prefix>-000_T2w.nii.gz``: the best any T1w -> T2w model
            can predict (the quality bench scores it as the ceiling). The other files and the
            random draws are the same with or without it.

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

    from tfmedgan.io.nifti import write_volume

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
    # Millimetre units, sform code 2 ("aligned") and qform code 0: the header nibabel makes for
    # ``Nifti1Image(data, affine)``, so the files are what the earlier direct nibabel save wrote.
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    header["sform_code"] = 2

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

        t2_noise_free = (np.clip(t2, 0.0, None) * brain).astype(np.float32)
        t1 = _finish_contrast(rng, t1, brain, BRAINWEB_T1["wm"])
        t2 = _finish_contrast(rng, t2, brain, BRAINWEB_T2["gm"])

        name = f"{name_prefix}-{subject:03d}"
        outputs = [(t1, folder_a / f"{name}_T1w.nii.gz"), (t2, folder_b / f"{name}_T2w.nii.gz")]
        if noise_free:
            (out_dir / "trainB_noise_free").mkdir(exist_ok=True)
            outputs.append((t2_noise_free, out_dir / "trainB_noise_free" / f"{name}_T2w.nii.gz"))
        for data, path in outputs:
            write_volume(path, data, affine, header=header, dtype=np.float32)
    return out_dir
