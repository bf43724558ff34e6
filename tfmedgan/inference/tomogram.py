"""Enhance whole tomograms with a trained seed-002 CycleGAN (denoising + super-resolution).

The A->B generator of a ``cyclegan-sr`` run is applied by sliding-window inference
(:func:`tfmedgan.inference.sliding_window.sliding_window_inference`, the same code the seed-000
generator uses for volumes larger than its input): windows of the training A patch, stride
``patch - 24``, a border of ``10 x SR`` output voxels masked at interior patch faces, and overlaps
either averaged (``blend="mean"``, the original ``valfullfile.py``) or Gaussian-weighted
(``blend="gaussian"``, the default here: fewer seams). Axes shorter than the patch are
reflect-padded and cropped back, so any input size works. The output is ``SR`` times the input
shape.

Inputs: an HDF5 file (dataset ``data`` or ``dset``) or a NIfTI file. Intensities are standardised
(``(x - mean) / std`` of the whole input, as the training data must be; a no-op for files written
by :func:`tfmedgan.data.hdf5.standardize_to_hdf5`) unless ``standardize=False``. Outputs:
``<stem>_enhanced.h5`` with the float16 dataset ``data`` (the original's format) and, for a NIfTI
input, also ``<stem>_enhanced.nii.gz`` whose voxel size is the input's divided by SR and whose
affine places each output voxel at the centre of its sub-voxel of the input grid.

Axis order: the training patch ``[d, h, w]`` (and ``stride``) are in the order of the HDF5
training volumes, ``(z, y, x)`` (axis 0 = slice). nibabel returns NIfTI arrays as ``(x, y, z)``,
so a NIfTI input is transposed to ``(z, y, x)`` for the network (an anisotropic patch and the
orientation the network learned then meet the axes they were trained on) and the result is
transposed back: both outputs of a NIfTI input are in the input's ``(x, y, z)`` order.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import keras
import numpy as np

from tfmedgan.engine.config import read_config
from tfmedgan.errors import TfmedganError

MODEL = "cyclegan-sr"
OUTPUT_SUFFIX = "_enhanced"


def is_tomogram_run(path: str | Path) -> bool:
    """True if ``path`` is a ``cyclegan-sr`` run directory."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model") == MODEL
    except (OSError, json.JSONDecodeError):
        return False


def load_enhancer(run_dir: str | Path) -> tuple[keras.Model, dict]:
    """The A->B generator of a ``cyclegan-sr`` run and its geometry.

    Returns:
        ``(model, info)`` with ``info = {"patch": [d, h, w], "super_resolution": k, "net_a": name}``.
        The exported ``models/generator_a2b.keras`` is used, or the newest checkpoint of a run that
        was stopped early.
    """
    run_dir = Path(run_dir)
    values = read_config(run_dir / "config.json")
    if values.get("model") != MODEL:
        raise TfmedganError(f"{run_dir} is a {values.get('model')!r} run, not a {MODEL} run")
    from tfmedgan.inference.generate import load_network

    model = load_network(run_dir, "generator_a2b")
    info = {"patch": [int(p) for p in values["patch"]], "super_resolution": int(values["super_resolution"]),
            "net_a": values["net_a"]}
    return model, info


def read_tomogram(path: str | Path, dset: str = "data") -> tuple[np.ndarray, np.ndarray | None, object]:
    """Read a 3D tomogram from HDF5 (dataset ``dset``) or NIfTI.

    Returns:
        ``(volume float32, affine or None, NIfTI header or None)``.

    Raises:
        TfmedganError: missing file or dataset, not 3D, non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise TfmedganError(f"tomogram not found: {path}")
    from tfmedgan.io.nifti import is_nifti_name, read_volume

    if is_nifti_name(path):
        volume = read_volume(path)
        return np.asarray(volume.data, np.float32), volume.affine, volume.header
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise TfmedganError(f"cannot open {path} as HDF5 or NIfTI: {error}") from None
    with handle:
        if dset not in handle or not isinstance(handle[dset], h5py.Dataset):
            available = ", ".join(sorted(handle.keys())) or "none"
            raise TfmedganError(f"dataset {dset!r} not found in {path} (available: {available})")
        data = handle[dset]
        if data.ndim != 3:
            raise TfmedganError(f"{path}:{dset} has shape {data.shape}; a 3D volume is required")
        volume = np.asarray(data, np.float32)
    if not np.isfinite(volume).all():
        raise TfmedganError(f"{path}:{dset} contains NaN or infinite values")
    return volume, None, None


def scaled_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of a grid ``factor`` times finer covering the same field of view.

    Columns are divided by ``factor`` and the origin moves to the centre of the first sub-voxel:
    output voxel ``j`` is at input voxel coordinate ``(j + 0.5) / factor - 0.5``.
    """
    affine = np.asarray(affine, np.float64)
    result = affine.copy()
    result[:3, :3] = affine[:3, :3] / factor
    result[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (1.0 / factor - 1.0) / 2.0)
    return result


def enhance_volume(
    model: keras.Model,
    volume: np.ndarray,
    patch: Sequence[int],
    super_resolution: int,
    blend: str = "gaussian",
    batch_size: int = 2,
    stride: Sequence[int] | int | None = None,
    border: int | None = None,
    standardize: bool = True,
    progress: bool = False,
    nifti_axes: bool = False,
) -> np.ndarray:
    """Enhance one volume; returns float32 of shape ``super_resolution * volume.shape``.

    Args:
        model: A->B generator.
        volume: 3D array.
        patch: Window size (the training A patch).
        super_resolution: Output / input size ratio.
        blend: ``"gaussian"`` (default) or ``"mean"`` (the original).
        batch_size: Windows per network call.
        stride: Window stride; default ``patch - 24`` (the original).
        border: Masked output voxels at interior faces; default ``10 * SR`` (the original).
        standardize: Standardise the input by its own mean and std first.
        progress: Progress bar over windows.
        nifti_axes: ``volume`` is in NIfTI ``(x, y, z)`` order while ``patch``/``stride`` are in
            the ``(z, y, x)`` order of the HDF5 training data: the volume is transposed for the
            network and the result transposed back to ``(x, y, z)``.
    """
    from tfmedgan.inference.sliding_window import sliding_window_inference
    from tfmedgan.networks.unet3d import check_patch

    array = np.asarray(volume, np.float32)
    if array.ndim != 3:
        raise TfmedganError(f"expected a 3D volume, got shape {array.shape}")
    if nifti_axes:  # (x, y, z) -> (z, y, x), the axis order of the training patches
        array = np.ascontiguousarray(array.transpose(2, 1, 0))
    if standardize:
        std = float(array.std(dtype=np.float64))
        array = (array - float(array.mean(dtype=np.float64))) / (std if std > 0 else 1.0)
        array = array.astype(np.float32, copy=False)
    patch = tuple(int(p) for p in patch)
    name = model.name if model.name.startswith("UNet") else None
    if name:
        check_patch(name, patch)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch, training=False), np.float32)

    enhanced = sliding_window_inference(
        array, predict, patch, scale=int(super_resolution), stride=stride, border=border, blend=blend,
        batch_size=batch_size, progress=progress,
    )
    return np.ascontiguousarray(enhanced.transpose(2, 1, 0)) if nifti_axes else enhanced


def write_hdf5_float16(path: str | Path, volume: np.ndarray, dset: str = "data") -> Path:
    """Write ``volume`` as a float16 dataset atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as stream:
            stream.create_dataset(dset, data=np.asarray(volume).astype(np.float16), chunks=True)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _stem(path: Path) -> str:
    from tfmedgan.io.nifti import is_nifti_name, nifti_stem

    return nifti_stem(path) if is_nifti_name(path) else path.stem


def enhance_file(
    run_dir: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    blend: str = "gaussian",
    batch_size: int = 2,
    dset: str = "data",
    stride: Sequence[int] | int | None = None,
    border: int | None = None,
    standardize: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Enhance one tomogram file into ``out_dir``; returns the written files.

    Writes ``<stem>_enhanced.h5`` (float16 dataset ``data``) and, for a NIfTI input,
    ``<stem>_enhanced.nii.gz`` with zooms / affine scaled by ``1 / SR``. A NIfTI input is enhanced
    in the training axis order (see the module docstring); ``stride`` is in that order too.

    Example:
        >>> enhance_file("runs/cyclegan-sr-1", "data/scan_1.h5", "enhanced")  # doctest: +SKIP
    """
    input_path = Path(input_path)
    out_dir = Path(out_dir)
    stem = _stem(input_path)
    targets = [out_dir / f"{stem}{OUTPUT_SUFFIX}.h5"]
    volume, affine, header = read_tomogram(input_path, dset)
    if affine is not None:
        targets.append(out_dir / f"{stem}{OUTPUT_SUFFIX}.nii.gz")
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise TfmedganError(f"{existing[0]} exists (use --overwrite)")
    model, info = load_enhancer(run_dir)
    factor = info["super_resolution"]
    enhanced = enhance_volume(model, volume, info["patch"], factor, blend=blend, batch_size=batch_size,
                              stride=stride, border=border, standardize=standardize, progress=progress,
                              nifti_axes=affine is not None)
    written = [write_hdf5_float16(targets[0], enhanced)]
    if affine is not None:
        from tfmedgan.io.nifti import write_volume

        new_header = header.copy()
        zooms = tuple(float(z) / factor for z in header.get_zooms()[:3])
        new_header.set_zooms(zooms + tuple(header.get_zooms()[3:]))
        written.append(write_volume(targets[1], enhanced, scaled_affine(affine, factor), new_header))
    return written
