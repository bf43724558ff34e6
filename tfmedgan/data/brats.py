"""BraTS-layout data of seed 001: case lists, checks, geometry, augmentation and tf.data streams.

Layout (as the original ``brain_3D`` / ``brain_3D_transfer`` datasets expect)::

    ROOT/domain1_train/<case>/<case>_t1.nii.gz, <case>_t2.nii.gz, <case>_flair.nii.gz
    ROOT/{domain1_val, domain1_test, domain2_train, domain2_val, domain2_test}/...

``seg`` and ``t1ce`` files are ignored; a modality file is matched by its name ending with
``_<modality>.nii[.gz]`` (the modality must be a whole token, so ``_t1`` never matches
``_t1ce``). Cases are natural-sorted (``case_2`` before ``case_10``), as the original did.

The 3D pix2pix view of a case (:func:`load_case`), as in the original transform chain:

1. reorientation with nibabel to the axis codes ``"IPL"`` (axis 0 -> Inferior, 1 -> Posterior,
   2 -> Left; a standard 240 x 240 x 155 BraTS volume becomes 155 x 240 x 240);
2. the fixed crop ``[8:152, 24:216, 24:216]`` -> 144 x 192 x 192 (``crop_start`` /
   ``crop_shape`` are parameters: smaller shapes for tests and CPU budgets, ``None`` start =
   centred);
3. per-volume min-max scaling of the cropped volume to [0, 1];
4. zero padding at the end of each axis to a multiple of 8 (no-op for the default crop).

The model grid is ``[D, H, W, C]`` channels-last; the inputs are ``[T2, FLAIR]`` and the target
``T1``. Every step is recorded in a :class:`CaseGeometry`, and :func:`from_model_grid` inverts
steps 4, 2 and 1 exactly, so a synthetic T1 can be written on the ORIGINAL input grid with the
original affine and shape (:func:`write_on_original_grid`); the original code lost the crop
offset. Voxels outside the crop get a fill value.

Training augmentation (:func:`draw_augmentation`): one draw per sample, a pure function of
``(seed, epoch, case index)``, shared by the sample's modalities: rot90 with ``k`` drawn from
``{0 x12, 1, 2, 3}`` in each plane (0,1), (0,2), (1,2) in that order, then a flip of a random
subset of 0, 1 or 2 of the spatial axes (size drawn uniformly); then brightness ``b`` and
contrast ``c`` factors, each U(0.3, 1.5), on the inputs only (T2 and FLAIR share them):
``x = clip(b x, 0, 1)``, then ``x = clip(c x + (1 - c) mean(x), 0, 1)``. Rotations in a plane
of two axes of different length change the volume's shape (144 x 192 x 192 may become
192 x 144 x 192); such datasets have a dynamic spatial shape and need batch 1.

The VAE slice stream (:func:`volume_to_slices`, :func:`vae_slice_dataset`) follows the
original ``process_our_data.py`` without the JPEG step: the volume in its native orientation,
centre cropped/zero-padded to ``size^3`` (256), scaled by its 1st/99th percentiles (NumPy linear
interpolation, over the padded volume) and clipped to [0, 1], then cut into the ``size`` slices
along axis 1 (coronal for BraTS files), each ``[size, size, 1]``.

Every user-fixable problem is a one-line :class:`~tfmedgan.errors.TfmedganError`: missing
folder, empty domain folder, missing modality file, modalities differing in shape or affine,
NaN voxels, a volume smaller than the crop, a constant volume.

Example:
    >>> cases = list_split("BraTS", "domain1", "train")                          # doctest: +SKIP
    >>> validate_cases(cases, crop_shape=(144, 192, 192))                          # doctest: +SKIP
    >>> dataset = pix2pix_dataset(cases, seed=0, epoch=0)                          # doctest: +SKIP
    >>> loaded = load_case(cases[0], modalities=("t2", "flair"))                   # doctest: +SKIP
    >>> write_on_original_grid("t1_syn.nii.gz", prediction, loaded.geometry)      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tensorflow as tf

from tfmedgan.data.nifti import epoch_order
from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import Volume, check_pair, pad_or_crop_center, read_volume, write_volume

MODALITIES: tuple[str, ...] = ("t1", "t2", "flair")
"""Modalities read by seed 001 (``seg`` and ``t1ce`` are ignored)."""

INPUT_MODALITIES: tuple[str, ...] = ("t2", "flair")
"""Generator inputs, in channel order."""

TARGET_MODALITY = "t1"
"""Generator target."""

PHASES: tuple[str, ...] = ("train", "val", "test")
"""Split suffixes of the domain folders (``domain1_train`` ...)."""

AXIS_CODES = "IPL"
"""Orientation of the model grid (nibabel axis codes)."""

ORIGINAL_CROP_SHAPE: tuple[int, int, int] = (144, 192, 192)
"""Crop of the original (on the IPL grid)."""

ORIGINAL_CROP_START: tuple[int, int, int] = (8, 24, 24)
"""First voxel of the original crop ``[8:152, 24:216, 24:216]``."""

SIZE_MULTIPLE = 8
"""The SIT generator needs every size to be a multiple of 8 (the original ``PadIfNecessary(3)``)."""

ROTATION_PLANES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
"""Planes of the rot90 augmentation (spatial axes of ``[D, H, W]``), applied in this order."""

ROTATION_CHOICES: tuple[int, ...] = (0,) * 12 + (1, 2, 3)
"""``k`` is drawn uniformly from this list per plane (P(k=0) = 0.8)."""

FLIP_AXES: tuple[int, ...] = (0, 1, 2)
"""Spatial axes the flip augmentation chooses from."""

BRIGHTNESS_RANGE: tuple[float, float] = (0.3, 1.5)
CONTRAST_RANGE: tuple[float, float] = (0.3, 1.5)

VAE_SLICE_SIZE = 256
"""Cube edge of the VAE slice preparation (256^3, 256 slices of 256 x 256)."""


# ------------------------------------------------------------------------------------------------
# Case folders
# ------------------------------------------------------------------------------------------------
def natural_key(text: str) -> list[Any]:
    """Sort key that orders digit runs by value (``case_2`` < ``case_10``), case-insensitive."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


@dataclasses.dataclass(frozen=True)
class BratsCase:
    """One case folder and its modality files.

    Attributes:
        name: Case folder name (e.g. ``BraTS19_CBICA_AAB_1``).
        folder: The case folder.
        files: Modality (``"t1"``, ``"t2"``, ``"flair"``) -> NIfTI file, for the modalities asked for.
    """

    name: str
    folder: Path
    files: Mapping[str, Path]

    def path(self, modality: str) -> Path:
        """The file of ``modality``; a one-line error when the case was listed without it."""
        if modality not in self.files:
            raise TfmedganError(f"{self.folder}: case was listed without its {modality} file")
        return self.files[modality]


def _modality_pattern(modality: str) -> re.Pattern:
    return re.compile(rf"(^|[^a-z0-9]){re.escape(modality.lower())}\.nii(\.gz)?$")


def find_modality_file(case_folder: str | Path, modality: str) -> Path | None:
    """The NIfTI file of ``modality`` in a case folder, or None.

    The name must end with ``<sep><modality>.nii[.gz]`` (``sep`` any non-alphanumeric
    character, or the name is just ``<modality>.nii[.gz]``); case-insensitive. ``_t1`` does not
    match ``_t1ce``. Hidden files are ignored.

    Raises:
        TfmedganError: More than one file matches.
    """
    folder = Path(case_folder)
    pattern = _modality_pattern(modality)
    matches = sorted(
        entry for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and pattern.search(entry.name.lower())
    )
    if len(matches) > 1:
        names = ", ".join(match.name for match in matches)
        raise TfmedganError(f"{folder}: more than one {modality} file ({names})")
    return matches[0] if matches else None


def split_folder(root: str | Path, dataset_name: str, phase: str) -> Path:
    """``ROOT/<dataset_name>_<phase>`` (e.g. ``ROOT/domain1_train``), checked to exist.

    Raises:
        TfmedganError: ROOT or the split folder does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise TfmedganError(f"{root}: data folder does not exist")
    folder = root / f"{dataset_name}_{phase}"
    if not folder.is_dir():
        present = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        raise TfmedganError(
            f"{folder}: folder does not exist (folders in {root}: {', '.join(present) or 'none'})"
        )
    return folder


def list_cases(folder: str | Path, modalities: Sequence[str] = MODALITIES) -> list[BratsCase]:
    """The case folders of one split folder with their modality files, natural-sorted.

    Args:
        folder: A split folder such as ``ROOT/domain1_train``.
        modalities: Modalities every case must have. A target-domain folder used for adaptation
            needs only :data:`INPUT_MODALITIES`; the VAE needs only ``("t1",)``.

    Returns:
        The cases.

    Raises:
        TfmedganError: Missing folder, no case folder in it (empty domain folder), or a case
            without one of the ``modalities``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TfmedganError(f"{folder}: folder does not exist")
    modalities = tuple(modalities)
    if not modalities:
        raise TfmedganError("at least one modality must be asked for")
    case_folders = sorted(
        (entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: natural_key(entry.name),
    )
    if not case_folders:
        raise TfmedganError(
            f"{folder}: no case folders found (expected {folder.name}/<case>/<case>_"
            f"{{{','.join(modalities)}}}.nii.gz)"
        )
    cases = []
    for case_folder in case_folders:
        files = {}
        for modality in modalities:
            found = find_modality_file(case_folder, modality)
            if found is None:
                raise TfmedganError(
                    f"{case_folder}: no {case_folder.name}_{modality}.nii.gz file "
                    f"(every case needs {', '.join(modalities)})"
                )
            files[modality] = found
        cases.append(BratsCase(case_folder.name, case_folder, files))
    return cases


def list_split(
    root: str | Path, dataset_name: str, phase: str, modalities: Sequence[str] = MODALITIES
) -> list[BratsCase]:
    """:func:`list_cases` of ``ROOT/<dataset_name>_<phase>``."""
    return list_cases(split_folder(root, dataset_name, phase), modalities)


# ------------------------------------------------------------------------------------------------
# Geometry: reorientation, crop, padding and their inverse
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CaseGeometry:
    """How a file's voxel grid maps to the model grid, and back.

    Attributes:
        original_shape: Shape of the file's 3D data.
        original_affine: The file's 4x4 affine.
        transform: nibabel orientation transform (``ornt_transform``) from the file's axes to
            :attr:`axis_codes`.
        axis_codes: Target orientation (``"IPL"``).
        reoriented_shape: Shape after reorientation.
        crop_start: First kept voxel on the reoriented grid.
        crop_shape: Size of the crop.
        padded_shape: ``crop_shape`` rounded up to a multiple of :attr:`multiple` (zeros at the end).
        multiple: Size multiple of the model grid.
    """

    original_shape: tuple[int, int, int]
    original_affine: np.ndarray
    transform: np.ndarray
    axis_codes: str
    reoriented_shape: tuple[int, int, int]
    crop_start: tuple[int, int, int]
    crop_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    multiple: int

    @property
    def reoriented_affine(self) -> np.ndarray:
        """Affine of the reoriented grid (same world coordinates)."""
        return self.original_affine @ nib.orientations.inv_ornt_aff(self.transform, self.original_shape)

    @property
    def model_affine(self) -> np.ndarray:
        """Affine of the model grid (the crop keeps each voxel's world coordinate)."""
        start = np.array([*self.crop_start, 1.0])
        affine = self.reoriented_affine.copy()
        affine[:3, 3] = (self.reoriented_affine @ start)[:3]
        return affine

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        """Slices of the reoriented grid kept by the crop."""
        return tuple(slice(start, start + size) for start, size in zip(self.crop_start, self.crop_shape))


def _triple(values: Sequence[int], what: str) -> tuple[int, int, int]:
    try:
        result = tuple(int(value) for value in values)
    except (TypeError, ValueError):
        raise TfmedganError(f"{what} must be three integers, got {values!r}") from None
    if len(result) != 3:
        raise TfmedganError(f"{what} must be three integers, got {values!r}")
    return result  # type: ignore[return-value]


def orientation_transform(affine: np.ndarray, axis_codes: str = AXIS_CODES) -> np.ndarray:
    """nibabel orientation transform from the axes of ``affine`` to ``axis_codes``."""
    if len(axis_codes) != 3:
        raise TfmedganError(f"axis codes must be three letters such as 'IPL', got {axis_codes!r}")
    try:
        target = nib.orientations.axcodes2ornt(tuple(axis_codes.upper()))
    except Exception as error:  # nibabel raises ValueError for bad codes
        raise TfmedganError(f"bad axis codes {axis_codes!r} ({' '.join(str(error).split())})") from None
    if np.isnan(target).any():
        raise TfmedganError(f"bad axis codes {axis_codes!r}")
    start = nib.orientations.io_orientation(np.asarray(affine, np.float64))
    return nib.orientations.ornt_transform(start, target)


def case_geometry(
    shape: Sequence[int],
    affine: np.ndarray,
    crop_shape: Sequence[int] = ORIGINAL_CROP_SHAPE,
    crop_start: Sequence[int] | None = ORIGINAL_CROP_START,
    axis_codes: str = AXIS_CODES,
    multiple: int = SIZE_MULTIPLE,
    name: str | Path = "volume",
) -> CaseGeometry:
    """Geometry of one volume: reorientation, crop (fixed start, or centred if None), padding.

    Args:
        shape: 3D shape of the file's data.
        affine: The file's affine.
        crop_shape: Crop size on the reoriented grid.
        crop_start: First kept voxel on the reoriented grid; None centres the crop
            (``(reoriented - crop) // 2``).
        axis_codes: Target orientation.
        multiple: Pad the crop at its end to a multiple of this (1: no padding).
        name: Shown in error messages (the file).

    Raises:
        TfmedganError: The reoriented volume is smaller than the crop (or the start places the
            crop outside it), or bad arguments.
    """
    shape = _triple(shape, "volume shape")
    crop_shape = _triple(crop_shape, "crop shape")
    if min(crop_shape) < 1 or int(multiple) < 1:
        raise TfmedganError(f"crop shape {crop_shape} and multiple {multiple} must be positive")
    affine = np.asarray(affine, np.float64)
    transform = orientation_transform(affine, axis_codes)
    reoriented_shape = tuple(int(shape[int(axis)]) for axis in transform[:, 0])
    if any(size < crop for size, crop in zip(reoriented_shape, crop_shape)):
        raise TfmedganError(
            f"{name}: volume of shape {reoriented_shape} ({axis_codes.upper()} orientation) is smaller than "
            f"the crop {crop_shape}; use a smaller crop shape"
        )
    if crop_start is None:
        start = tuple((size - crop) // 2 for size, crop in zip(reoriented_shape, crop_shape))
    else:
        start = _triple(crop_start, "crop start")
        if any(value < 0 or value + crop > size for value, crop, size in zip(start, crop_shape, reoriented_shape)):
            raise TfmedganError(
                f"{name}: volume of shape {reoriented_shape} ({axis_codes.upper()} orientation) is smaller than "
                f"the crop {crop_shape} starting at {start}; use a smaller crop or a centred crop"
            )
    padded = tuple(int(math.ceil(size / multiple) * multiple) for size in crop_shape)
    return CaseGeometry(
        original_shape=shape,
        original_affine=affine,
        transform=transform,
        axis_codes=axis_codes.upper(),
        reoriented_shape=reoriented_shape,  # type: ignore[arg-type]
        crop_start=start,  # type: ignore[arg-type]
        crop_shape=crop_shape,
        padded_shape=padded,  # type: ignore[arg-type]
        multiple=int(multiple),
    )


def reorient(data: np.ndarray, geometry: CaseGeometry) -> np.ndarray:
    """The file's data on the reoriented grid (leading 3 axes; trailing axes kept)."""
    return np.ascontiguousarray(nib.orientations.apply_orientation(np.asarray(data), geometry.transform))


def to_model_grid(data: np.ndarray, geometry: CaseGeometry, pad_value: float = 0.0) -> np.ndarray:
    """Reorient, crop and pad a volume on the file's grid (no intensity scaling).

    Args:
        data: ``[X, Y, Z]`` (or with trailing axes) on the file's grid.
        geometry: From :func:`case_geometry`.
        pad_value: Value of the padding to a multiple.

    Returns:
        ``geometry.padded_shape`` (plus trailing axes).
    """
    data = np.asarray(data)
    if tuple(data.shape[:3]) != geometry.original_shape:
        raise TfmedganError(f"volume shape {data.shape} does not match the case shape {geometry.original_shape}")
    cropped = reorient(data, geometry)[geometry.crop_slices]
    return _pad_end(cropped, geometry.padded_shape, pad_value)


def _pad_end(array: np.ndarray, shape: Sequence[int], value: float = 0.0) -> np.ndarray:
    widths = [(0, int(target) - int(size)) for size, target in zip(array.shape[:3], shape)]
    if not any(after for _, after in widths):
        return array
    widths += [(0, 0)] * (array.ndim - 3)
    return np.pad(array, widths, mode="constant", constant_values=value)


def from_model_grid(array: np.ndarray, geometry: CaseGeometry, fill: float = 0.0) -> np.ndarray:
    """Inverse of :func:`to_model_grid`: a model-grid volume back on the file's grid.

    The padding is removed, the crop is placed at its offset on the reoriented grid (voxels
    outside the crop get ``fill``) and the reorientation is undone, so the result has
    ``geometry.original_shape`` and lines up with the file's affine.

    Args:
        array: ``[D, H, W]`` or ``[D, H, W, C]`` with ``geometry.padded_shape`` (or
            ``crop_shape``) as leading axes.
        geometry: From :func:`case_geometry` (of the input case).
        fill: Value outside the crop.

    Returns:
        ``geometry.original_shape`` (plus trailing axes), same dtype as ``array``.
    """
    array = np.asarray(array)
    leading = tuple(array.shape[:3])
    if leading not in (geometry.padded_shape, geometry.crop_shape):
        raise TfmedganError(
            f"array shape {array.shape} does not start with the model grid {geometry.padded_shape}"
        )
    crop = array[tuple(slice(0, size) for size in geometry.crop_shape)]
    canvas = np.full(geometry.reoriented_shape + array.shape[3:], fill, dtype=array.dtype)
    canvas[geometry.crop_slices] = crop
    back = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(tuple(geometry.axis_codes)),
        nib.orientations.io_orientation(geometry.original_affine),
    )
    return np.ascontiguousarray(nib.orientations.apply_orientation(canvas, back))


def write_on_original_grid(
    path: str | Path,
    array: np.ndarray,
    geometry: CaseGeometry,
    header: Any = None,
    fill: float = 0.0,
    dtype: Any = np.float32,
) -> Path:
    """Write a model-grid volume (e.g. a synthetic T1) as NIfTI on the input file's grid.

    The written file has the original shape and affine (qform and sform), so it overlays the
    input T2/FLAIR in any viewer. Trailing singleton channel axes are dropped.

    Args:
        path: Output ``.nii`` / ``.nii.gz``; written atomically.
        array: ``[D, H, W]`` or ``[D, H, W, 1]`` on the model grid.
        geometry: Geometry of the input case (:attr:`LoadedCase.geometry`).
        header: Optional NIfTI header to start from (e.g. the input's), copied.
        fill: Value outside the crop.
        dtype: On-disk dtype.

    Returns:
        The written path.
    """
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    data = from_model_grid(array, geometry, fill=fill)
    return write_volume(path, data, geometry.original_affine, header=header, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Loading cases
# ------------------------------------------------------------------------------------------------
def min_max_scale(data: np.ndarray) -> np.ndarray:
    """Per-volume ``(x - min) / (max - min)`` to [0, 1] (float32); a constant volume gives zeros."""
    data = np.asarray(data, dtype=np.float32)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros_like(data)
    return ((data - low) / (high - low)).astype(np.float32)


@dataclasses.dataclass
class LoadedCase:
    """One case on the model grid.

    Attributes:
        case: The case.
        volumes: Modality -> ``[D, H, W]`` float32 in [0, 1] (reoriented, cropped, min-max
            scaled, padded).
        geometry: The geometry (shared by all modalities of the case).
        header: NIfTI header of the first modality read (for writing outputs).
    """

    case: BratsCase
    volumes: dict[str, np.ndarray]
    geometry: CaseGeometry
    header: Any

    @property
    def inputs(self) -> np.ndarray:
        """``[D, H, W, 2]``: T2, FLAIR."""
        return np.stack([self.volumes[modality] for modality in INPUT_MODALITIES], axis=-1)

    @property
    def target(self) -> np.ndarray:
        """``[D, H, W, 1]``: T1."""
        return self.volumes[TARGET_MODALITY][..., None]


def _read_case(case: BratsCase, modalities: Sequence[str]) -> dict[str, Volume]:
    volumes: dict[str, Volume] = {}
    for modality in modalities:
        volume = read_volume(case.path(modality))
        if volumes:
            check_pair(next(iter(volumes.values())), volume)
        volumes[modality] = volume
    return volumes


def load_case(
    case: BratsCase,
    modalities: Sequence[str] = MODALITIES,
    crop_shape: Sequence[int] = ORIGINAL_CROP_SHAPE,
    crop_start: Sequence[int] | None = ORIGINAL_CROP_START,
    axis_codes: str = AXIS_CODES,
    multiple: int = SIZE_MULTIPLE,
) -> LoadedCase:
    """Read the ``modalities`` of a case and map them to the model grid (steps 1-4 above).

    Raises:
        TfmedganError: Unreadable file, NaNs, modalities differing in shape or affine, or a
            volume smaller than the crop.
    """
    volumes = _read_case(case, modalities)
    first = next(iter(volumes.values()))
    geometry = case_geometry(first.shape, first.affine, crop_shape, crop_start, axis_codes, multiple, first.path)
    model = {}
    for modality, volume in volumes.items():
        cropped = reorient(volume.data, geometry)[geometry.crop_slices]
        model[modality] = _pad_end(min_max_scale(cropped), geometry.padded_shape)
    return LoadedCase(case=case, volumes=model, geometry=geometry, header=first.header)


def validate_cases(
    cases: Sequence[BratsCase],
    modalities: Sequence[str] = MODALITIES,
    crop_shape: Sequence[int] | None = ORIGINAL_CROP_SHAPE,
    crop_start: Sequence[int] | None = ORIGINAL_CROP_START,
    axis_codes: str = AXIS_CODES,
    progress: bool = True,
) -> None:
    """Read every volume once and raise a one-line error naming the first bad file.

    Checks: readable 3D NIfTI, no NaN or infinite voxel, the modalities of a case share shape
    and affine, the reoriented volume holds the crop (skipped when ``crop_shape`` is None), and
    the voxels inside the crop (or the whole volume) are not all equal.

    Raises:
        TfmedganError: As above; also for an empty case list.
    """
    from tqdm.auto import tqdm

    if not cases:
        raise TfmedganError("no cases to check")
    bar = tqdm(cases, desc="checking cases", unit="case", disable=not progress or len(cases) < 10, leave=False)
    for case in bar:
        volumes = _read_case(case, modalities)
        first = next(iter(volumes.values()))
        geometry = None
        if crop_shape is not None:
            geometry = case_geometry(first.shape, first.affine, crop_shape, crop_start, axis_codes, 1, first.path)
        for volume in volumes.values():
            values = volume.data if geometry is None else reorient(volume.data, geometry)[geometry.crop_slices]
            if float(values.max()) == float(values.min()):
                where = "" if geometry is None else " inside the crop"
                raise TfmedganError(f"{volume.path}: all voxels{where} have the same value {float(values.max()):g}")


# ------------------------------------------------------------------------------------------------
# Augmentation
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One sample's augmentation: rot90 per plane, a flip, and intensity jitter factors.

    Attributes:
        rotations: ``k`` (quarter turns) per plane of :attr:`planes`, applied in order.
        planes: Planes of spatial axes, e.g. :data:`ROTATION_PLANES`.
        flip_axes: Spatial axes flipped after the rotations.
        brightness: Brightness factor (None: no brightness jitter).
        contrast: Contrast factor (None: no contrast jitter).
    """

    rotations: tuple[int, ...] = ()
    planes: tuple[tuple[int, int], ...] = ()
    flip_axes: tuple[int, ...] = ()
    brightness: float | None = None
    contrast: float | None = None

    def spatial(self, volume: np.ndarray) -> np.ndarray:
        """Rotate then flip the leading three axes of ``volume`` (``[D, H, W, ...]``)."""
        out = np.asarray(volume)
        for k, plane in zip(self.rotations, self.planes):
            if k % 4:
                out = np.rot90(out, k, axes=plane)
        if self.flip_axes:
            out = np.flip(out, axis=self.flip_axes)
        return np.ascontiguousarray(out)

    def spatial_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the leading three axes after :meth:`spatial`."""
        out = list(shape)
        for k, (first, second) in zip(self.rotations, self.planes):
            if k % 2:
                out[first], out[second] = out[second], out[first]
        return tuple(out)

    def jitter(self, volume: np.ndarray) -> np.ndarray:
        """Brightness then contrast jitter of one modality volume in [0, 1] (clipped to [0, 1])."""
        out = np.asarray(volume, np.float32)
        if self.brightness is not None:
            out = np.clip(self.brightness * out, 0.0, 1.0)
        if self.contrast is not None:
            mean = float(out.mean(dtype=np.float64))
            out = np.clip(self.contrast * out + (1.0 - self.contrast) * mean, 0.0, 1.0)
        return out.astype(np.float32)

    def jitter_channels(self, volume: np.ndarray) -> np.ndarray:
        """:meth:`jitter` of each channel of ``[D, H, W, C]`` with the same factors (own mean)."""
        return np.stack([self.jitter(volume[..., channel]) for channel in range(volume.shape[-1])], axis=-1)


def draw_augmentation(
    seed: int,
    epoch: int,
    index: int,
    stream: int = 0,
    planes: Sequence[tuple[int, int]] = ROTATION_PLANES,
    rotation_choices: Sequence[int] = ROTATION_CHOICES,
    flip_axes: Sequence[int] = FLIP_AXES,
    brightness: tuple[float, float] | None = BRIGHTNESS_RANGE,
    contrast: tuple[float, float] | None = CONTRAST_RANGE,
) -> Augmentation:
    """The augmentation of sample ``index`` of ``epoch``: a pure function of its arguments.

    Args:
        seed: Run seed.
        epoch: Epoch index.
        index: Case index in the dataset (not the position in the shuffled order).
        stream: Independent draw for another item of the same sample (e.g. 1 for the target
            domain of an adaptation sample).
        planes: Rotation planes (empty: no rotation).
        rotation_choices: ``k`` is drawn uniformly from this list per plane.
        flip_axes: Axes the flip subset is drawn from (size 0 .. len - 1, uniformly).
        brightness: ``(low, high)`` of the uniform brightness factor, or None.
        contrast: ``(low, high)`` of the uniform contrast factor, or None.
    """
    rng = np.random.default_rng([int(seed), int(epoch), int(index), int(stream)])
    rotations = tuple(int(rng.choice(list(rotation_choices))) for _ in planes) if planes else ()
    flips: tuple[int, ...] = ()
    if flip_axes:
        count = int(rng.integers(0, len(flip_axes)))
        flips = tuple(sorted(int(axis) for axis in rng.choice(list(flip_axes), size=count, replace=False)))
    bright = float(rng.uniform(*brightness)) if brightness is not None else None
    contr = float(rng.uniform(*contrast)) if contrast is not None else None
    return Augmentation(rotations, tuple(tuple(plane) for plane in planes), flips, bright, contr)


def _shape_can_change(shape: Sequence[int], planes: Sequence[tuple[int, int]], choices: Sequence[int]) -> bool:
    odd = any(k % 2 for k in choices)
    return odd and any(shape[first] != shape[second] for first, second in planes)


# ------------------------------------------------------------------------------------------------
# tf.data streams
# ------------------------------------------------------------------------------------------------
class _Options:
    """Shared settings of the pix2pix / transfer streams."""

    def __init__(self, crop_shape, crop_start, axis_codes, multiple, augment, planes, choices, seed, epoch):
        self.crop_shape = _triple(crop_shape, "crop shape")
        self.crop_start = crop_start
        self.axis_codes = axis_codes
        self.multiple = multiple
        self.augment = augment
        self.planes = tuple(tuple(plane) for plane in planes)
        self.choices = tuple(choices)
        self.seed, self.epoch = int(seed), int(epoch)
        self.padded = tuple(int(math.ceil(size / multiple) * multiple) for size in self.crop_shape)
        self.dynamic = augment and _shape_can_change(self.padded, self.planes, self.choices)

    def load(self, case: BratsCase, modalities: Sequence[str]) -> LoadedCase:
        return load_case(case, modalities, self.crop_shape, self.crop_start, self.axis_codes, self.multiple)

    def draw(self, index: int, stream: int = 0) -> Augmentation:
        return draw_augmentation(self.seed, self.epoch, index, stream, self.planes, self.choices)

    def spec_shape(self, channels: int) -> tuple:
        return ((None, None, None) if self.dynamic else self.padded) + (channels,)


def _check_batch(batch: int, options: _Options) -> None:
    if int(batch) < 1:
        raise TfmedganError(f"batch must be >= 1, got {batch}")
    if options.dynamic and batch > 1:
        raise TfmedganError(
            f"rot90 augmentation changes the shape of a {options.padded} crop, so the batch must be 1 "
            f"(got {batch}); use a cubic crop or batch 1"
        )


def pix2pix_dataset(
    cases: Sequence[BratsCase],
    crop_shape: Sequence[int] = ORIGINAL_CROP_SHAPE,
    crop_start: Sequence[int] | None = ORIGINAL_CROP_START,
    batch: int = 1,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    augment: bool = True,
    skip: int = 0,
    axis_codes: str = AXIS_CODES,
    multiple: int = SIZE_MULTIPLE,
    rotation_planes: Sequence[tuple[int, int]] = ROTATION_PLANES,
    rotation_choices: Sequence[int] = ROTATION_CHOICES,
    drop_remainder: bool = False,
    parallel_reads: int | None = None,
) -> tf.data.Dataset:
    """One epoch of paired batches ``(inputs [B, D, H, W, 2], target [B, D, H, W, 1])``, float32 in [0, 1].

    Cases are read lazily (``tf.numpy_function`` + nibabel), several in parallel, in an order
    that depends only on ``(seed, epoch)`` (:func:`tfmedgan.data.nifti.epoch_order`); each
    sample's augmentation depends only on ``(seed, epoch, case index)``.

    Args:
        cases: Cases with t1, t2 and flair (checked with :func:`validate_cases` before).
        crop_shape: Crop on the IPL grid.
        crop_start: Crop start, or None for a centred crop.
        batch: Batch size (1 when rotations can change the shape).
        seed: Run seed.
        epoch: Epoch index.
        shuffle: Shuffle the cases (False: natural-sorted order).
        augment: Training augmentation (rot90/flip of all modalities, jitter of the inputs).
        skip: Samples of this epoch to skip without reading them (exact mid-epoch resume).
        axis_codes: Model-grid orientation.
        multiple: Pad sizes to a multiple of this.
        rotation_planes: Planes of the rot90 augmentation (empty tuple: flips and jitter only).
        rotation_choices: Values ``k`` is drawn from.
        drop_remainder: Drop a last incomplete batch.
        parallel_reads: Cases read in parallel (None: AUTOTUNE).

    Returns:
        The dataset; its spatial shape is static unless rotations can change it.
    """
    cases = list(cases)
    if not cases:
        raise TfmedganError("no cases for the dataset")
    options = _Options(crop_shape, crop_start, axis_codes, multiple, augment, rotation_planes,
                       rotation_choices, seed, epoch)
    _check_batch(batch, options)
    order = epoch_order(len(cases), seed, epoch) if shuffle else np.arange(len(cases))

    def load(index) -> tuple[np.ndarray, np.ndarray]:
        index = int(index)
        loaded = options.load(cases[index], (TARGET_MODALITY,) + INPUT_MODALITIES)
        inputs, target = loaded.inputs, loaded.target
        if options.augment:
            augmentation = options.draw(index)
            inputs = augmentation.jitter_channels(augmentation.spatial(inputs))
            target = augmentation.spatial(target)
        return inputs.astype(np.float32), target.astype(np.float32)

    def load_tensors(index):
        inputs, target = tf.numpy_function(load, [index], [tf.float32, tf.float32], stateful=False)
        inputs.set_shape(options.spec_shape(len(INPUT_MODALITIES)))
        target.set_shape(options.spec_shape(1))
        return inputs, target

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64)).skip(int(skip))
    dataset = dataset.map(load_tensors, num_parallel_calls=parallel_reads or tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(int(batch), drop_remainder=drop_remainder).prefetch(2)


def transfer_length(source_cases: Sequence[BratsCase], target_cases: Sequence[BratsCase]) -> int:
    """Samples per adaptation epoch: ``max(#source, #target)`` (the original's length)."""
    return max(len(source_cases), len(target_cases))


def transfer_dataset(
    source_cases: Sequence[BratsCase],
    target_cases: Sequence[BratsCase],
    crop_shape: Sequence[int] = ORIGINAL_CROP_SHAPE,
    crop_start: Sequence[int] | None = ORIGINAL_CROP_START,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    augment: bool = True,
    skip: int = 0,
    axis_codes: str = AXIS_CODES,
    multiple: int = SIZE_MULTIPLE,
    rotation_planes: Sequence[tuple[int, int]] = ROTATION_PLANES,
    rotation_choices: Sequence[int] = ROTATION_CHOICES,
    parallel_reads: int | None = None,
) -> tf.data.Dataset:
    """One adaptation epoch of ``(source_inputs, source_target, target_inputs)``, batch 1.

    Sample ``i`` (of :func:`transfer_length`) pairs source case ``i mod #source`` (T2, FLAIR and
    its T1) with target case ``i mod #target`` (T2, FLAIR only; the target domain's T1 is never
    read), as the original ``brain_3D_transfer`` dataset. Both items share the rot90/flip draw;
    the target inputs get their own brightness/contrast draw (``stream=1``). The source T1 is the
    "real" volume of the KL term.

    Args:
        source_cases: Source-domain cases with t1, t2, flair.
        target_cases: Target-domain cases with t2, flair.
        Other arguments: as :func:`pix2pix_dataset`.

    Returns:
        A dataset of batches of one: three tensors ``[1, D, H, W, 2]``, ``[1, D, H, W, 1]``,
        ``[1, D, H, W, 2]``.
    """
    source_cases, target_cases = list(source_cases), list(target_cases)
    if not source_cases or not target_cases:
        raise TfmedganError("adaptation needs at least one source and one target case")
    options = _Options(crop_shape, crop_start, axis_codes, multiple, augment, rotation_planes,
                       rotation_choices, seed, epoch)
    length = transfer_length(source_cases, target_cases)
    order = epoch_order(length, seed, epoch) if shuffle else np.arange(length)

    def load(index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = int(index)
        source = options.load(source_cases[index % len(source_cases)], (TARGET_MODALITY,) + INPUT_MODALITIES)
        target = options.load(target_cases[index % len(target_cases)], INPUT_MODALITIES)
        source_inputs, source_target, target_inputs = source.inputs, source.target, target.inputs
        if options.augment:
            augmentation = options.draw(index)
            target_jitter = options.draw(index, stream=1)
            source_inputs = augmentation.jitter_channels(augmentation.spatial(source_inputs))
            source_target = augmentation.spatial(source_target)
            target_inputs = target_jitter.jitter_channels(augmentation.spatial(target_inputs))
        return (source_inputs.astype(np.float32), source_target.astype(np.float32),
                target_inputs.astype(np.float32))

    def load_tensors(index):
        tensors = tf.numpy_function(load, [index], [tf.float32] * 3, stateful=False)
        for tensor, channels in zip(tensors, (2, 1, 2)):
            tensor.set_shape(options.spec_shape(channels))
        return tuple(tensors)

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64)).skip(int(skip))
    dataset = dataset.map(load_tensors, num_parallel_calls=parallel_reads or tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(1).prefetch(2)


def iterate_cases(
    cases: Sequence[BratsCase],
    modalities: Sequence[str] = MODALITIES,
    crop_shape: Sequence[int] = ORIGINAL_CROP_SHAPE,
    crop_start: Sequence[int] | None = ORIGINAL_CROP_START,
    axis_codes: str = AXIS_CODES,
    multiple: int = SIZE_MULTIPLE,
) -> Iterator[LoadedCase]:
    """Cases one by one on the model grid, in order, without augmentation (test / inference)."""
    for case in cases:
        yield load_case(case, modalities, crop_shape, crop_start, axis_codes, multiple)


# ------------------------------------------------------------------------------------------------
# VAE slices
# ------------------------------------------------------------------------------------------------
def percentile_scale(volume: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """``clip((x - p_low) / (p_high - p_low), 0, 1)`` with NumPy (linear) percentiles, float32.

    A volume whose two percentiles are equal gives zeros.
    """
    volume = np.asarray(volume, np.float32)
    p_low, p_high = np.percentile(volume, [low, high])
    if p_high <= p_low:
        return np.zeros_like(volume)
    return np.clip((volume - p_low) / (p_high - p_low), 0.0, 1.0).astype(np.float32)


def volume_to_slices(
    data: np.ndarray, size: int = VAE_SLICE_SIZE, slice_axis: int = 1, quantize: bool = False
) -> np.ndarray:
    """A volume as the VAE sees it: ``size`` slices ``[size, size, size, 1]`` float32 in [0, 1].

    Centre crop / zero pad every axis to ``size`` (the odd voxel after, as the original),
    1st/99th-percentile scaling over the padded cube, then slices along ``slice_axis`` (slice
    ``i`` = ``cube.take(i, slice_axis)``; for axis 1 the rows are axis 0 and the columns axis 2).

    Args:
        data: ``[X, Y, Z]`` volume (native orientation in the original).
        size: Cube edge (256).
        slice_axis: Axis the slices are cut along (1: coronal for BraTS files).
        quantize: Round down to multiples of 1/255 as the original's uint8 JPEG slices (the JPEG
            compression itself is not imitated).
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise TfmedganError(f"expected a 3D volume, got shape {data.shape}")
    if slice_axis not in (0, 1, 2):
        raise TfmedganError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    cube, _ = pad_or_crop_center(data, (int(size),) * 3, allow_crop=True)
    scaled = percentile_scale(cube)
    if quantize:
        scaled = np.floor(scaled * 255.0) / 255.0
    return np.ascontiguousarray(np.moveaxis(scaled, slice_axis, 0)[..., None].astype(np.float32))


def vae_slice_dataset(
    files: Sequence[str | Path],
    size: int = VAE_SLICE_SIZE,
    batch: int = VAE_SLICE_SIZE,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = False,
    slice_axis: int = 1,
    axis_codes: str | None = None,
    quantize: bool = False,
    skip: int = 0,
    parallel_reads: int | None = None,
) -> tf.data.Dataset:
    """One epoch of VAE slice batches ``[b, size, size, 1]``, made on the fly (no files written).

    Each volume gives ``size`` ordered slices, cut into ``ceil(size / batch)`` batches that never
    mix two volumes (the last one of a volume is smaller when ``batch`` does not divide
    ``size``). With ``batch == size`` (the original: 256) each batch is exactly one volume, so
    BatchNorm statistics are per volume.

    Args:
        files: T1 volumes (e.g. ``[case.path("t1") for case in source_cases]``).
        size: Cube edge and slice size.
        batch: Slices per batch.
        seed: Seed of the volume order when ``shuffle``.
        epoch: Epoch index.
        shuffle: Shuffle the volume order per epoch from ``(seed, epoch)`` (the original: False).
        slice_axis: See :func:`volume_to_slices`.
        axis_codes: Reorient to these axis codes before slicing (None: native orientation, as
            the original).
        quantize: See :func:`volume_to_slices`.
        skip: Batches of this epoch to skip (whole volumes are skipped without reading).
        parallel_reads: Volumes read in parallel (None: 2).
    """
    files = [str(path) for path in files]
    if not files:
        raise TfmedganError("no volumes for the VAE slice dataset")
    if int(batch) < 1 or int(size) < 1:
        raise TfmedganError(f"batch ({batch}) and size ({size}) must be >= 1")
    size, batch = int(size), int(batch)
    per_volume = math.ceil(size / batch)
    order = epoch_order(len(files), seed, epoch) if shuffle else np.arange(len(files))
    paths = np.array(files)[order]
    skip_volumes, skip_batches = divmod(int(skip), per_volume)

    def load(path: bytes) -> np.ndarray:
        volume = read_volume(path.decode())
        data = volume.data
        if axis_codes is not None:
            data = nib.orientations.apply_orientation(data, orientation_transform(volume.affine, axis_codes))
        return volume_to_slices(data, size, slice_axis, quantize)

    def load_tensor(path):
        slices = tf.numpy_function(load, [path], tf.float32, stateful=False)
        slices.set_shape((size, size, size, 1))
        return slices

    dataset = tf.data.Dataset.from_tensor_slices(paths).skip(skip_volumes)
    dataset = dataset.map(load_tensor, num_parallel_calls=parallel_reads or 2, deterministic=True)
    dataset = dataset.flat_map(lambda slices: tf.data.Dataset.from_tensor_slices(slices).batch(batch))
    return dataset.skip(skip_batches).prefetch(1)
