"""Reading, writing and shaping NIfTI volumes (numpy + nibabel only, no TensorFlow).

Every problem caused by the user's files (wrong format, 2D/4D images, NaN voxels, unpaired
folders, ...) is raised as :class:`tfmedgan.errors.TfmedganError` with a one-line message that
names the offending file.

Example:
    >>> volume = read_volume("data/MR/trainA/sub-01_T1w.nii.gz")  # doctest: +SKIP
    >>> padded, padding = pad_or_crop_center(volume.data, (160, 192, 160))  # doctest: +SKIP
    >>> restored = undo_center_pad(padded, padding)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

from tfmedgan.errors import TfmedganError

PathLike = Union[str, "os.PathLike[str]"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
"""File name endings accepted as NIfTI (compared case-insensitively)."""


@dataclass
class Volume:
    """One NIfTI volume in memory.

    Attributes:
        data: Voxel values (scaling ``scl_slope``/``scl_inter`` already applied), float32 unless
            another dtype was asked for in :func:`read_volume`.
        affine: 4x4 voxel-to-world matrix (float64), the one nibabel reports as ``img.affine``.
        header: The nibabel header of the file (a copy, safe to modify).
        path: The file the volume was read from, or ``None`` for a volume built in memory.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(int(size) for size in self.data.shape)

    @property
    def name(self) -> str:
        """File name (without folder) or ``"<memory>"``."""
        return self.path.name if self.path is not None else "<memory>"


def _one_line(text: object) -> str:
    """Collapse an arbitrary message (e.g. a nibabel exception) to one line."""
    return " ".join(str(text).split())


def is_nifti_name(path: PathLike) -> bool:
    """Whether a file name ends with ``.nii`` or ``.nii.gz`` (case-insensitive).

    Args:
        path: File name or path.

    Returns:
        True for NIfTI file names.
    """
    lower = Path(path).name.lower()
    return any(lower.endswith(suffix) for suffix in NIFTI_SUFFIXES)


def nifti_stem(path: PathLike) -> str:
    """File name without its ``.nii`` / ``.nii.gz`` ending.

    Unlike the original ``str.strip('.nii.gz')`` this removes exactly the suffix, so
    ``"sub-1_ing.nii.gz"`` gives ``"sub-1_ing"``.

    Args:
        path: File name or path.

    Returns:
        The stem.
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


MODALITY_TOKENS: tuple[str, ...] = (
    "t1w", "t2w", "t1", "t2", "t1ce", "t1c", "t1gd", "t2star", "t2s", "flair", "pd", "pdw", "ct", "mr", "mri",
)
"""Modality names removed from a file name before A/B pairs are compared (case-insensitive)."""

_TOKENS = "|".join(sorted(MODALITY_TOKENS, key=len, reverse=True))
_TRAILING_TOKEN = re.compile(rf"[_\-.](?:{_TOKENS})$", re.IGNORECASE)
_LEADING_TOKEN = re.compile(rf"^(?:{_TOKENS})[_\-.]", re.IGNORECASE)
_GLUED_TOKEN = re.compile(r"(?<=[a-z0-9])T[12]w?$")  # 'case7T1': upper-case T after a digit or lower-case letter
_BIDS_SUBJECT = re.compile(r"(?:^|_)sub-([A-Za-z0-9]+)")
_BIDS_SESSION = re.compile(r"(?:^|_)ses-([A-Za-z0-9]+)")


def subject_key(path: PathLike) -> str:
    """The part of a NIfTI file name that names the subject, for checking A/B pairs.

    The rule, applied to the name without ``.nii``/``.nii.gz``:

    1. A BIDS name (holding a ``sub-<label>`` entity) gives ``sub-<label>``, plus ``_ses-<label>``
       when it has a session; other entities (``acq-``, ``run-``, the suffix ``T1w``) are ignored.
    2. Otherwise one trailing modality token is removed when it follows ``_``, ``-`` or ``.``
       (``case7_t1``, ``case7-FLAIR``; tokens in :data:`MODALITY_TOKENS`), or an upper-case
       ``T1``/``T2``/``T1w``/``T2w`` glued to a digit or lower-case letter (``case7T1``), and one
       leading token followed by a separator (``T1_case7``).
    3. The result is compared case-insensitively (it is returned in lower case).

    Two identical names always give the same key. ``patient1``/``patient2`` stay different: a
    ``t1`` inside a word is not a token.

    Example:
        >>> subject_key("sub-03_ses-1_T1w.nii.gz"), subject_key("case7_t2.nii")
        ('sub-03_ses-1', 'case7')
    """
    stem = nifti_stem(path)
    subject = _BIDS_SUBJECT.search(stem)
    if subject:
        session = _BIDS_SESSION.search(stem)
        return (f"sub-{subject.group(1)}" + (f"_ses-{session.group(1)}" if session else "")).lower()
    key = _TRAILING_TOKEN.sub("", stem)
    if key == stem:
        key = _GLUED_TOKEN.sub("", stem)
    key = _LEADING_TOKEN.sub("", key) or key
    return (key or stem).lower()


def check_pair_names(pairs: Sequence[tuple[Path, Path]], shown: int = 3) -> None:
    """Refuse A/B pairs whose names, less their modality, differ (see :func:`subject_key`).

    Raises:
        TfmedganError: one line with the count and the first ``shown`` mismatched pairs.
    """
    wrong = [(a, b) for a, b in pairs if subject_key(a) != subject_key(b)]
    if not wrong:
        return
    listed = ", ".join(f"{a.name} ~ {b.name}" for a, b in wrong[:shown])
    more = ", ..." if len(wrong) > shown else ""
    folders = f"{wrong[0][0].parent} and {wrong[0][1].parent}"
    raise TfmedganError(
        f"{folders}: files are paired by sorted name, but {len(wrong)} of {len(pairs)} pairs name different "
        f"subjects: {listed}{more}; rename them, or use --pair-by-order to pair by sorted position anyway"
    )


def read_volume(
    path: PathLike, require_3d: bool = True, dtype: Any = np.float32
) -> Volume:
    """Read a NIfTI file into a :class:`Volume`.

    Trailing singleton dimensions beyond the third (e.g. ``(X, Y, Z, 1)``) are squeezed.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        require_3d: Raise unless the image is 3D after squeezing trailing singleton axes.
        dtype: Floating dtype of :attr:`Volume.data` (float64 keeps integer files exact).

    Returns:
        The volume; ``data`` has the scaling of the file applied.

    Raises:
        TfmedganError: Missing, non-NIfTI or unreadable file, not 3D (when required), or
            NaN / infinite voxels.
    """
    path = Path(path)
    if not is_nifti_name(path):
        raise TfmedganError(f"{path}: not a NIfTI file (expected a .nii or .nii.gz name)")
    if not path.is_file():
        raise TfmedganError(f"{path}: file does not exist")
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for broken files
        raise TfmedganError(f"{path}: cannot read NIfTI file ({_one_line(error)})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise TfmedganError(f"{path}: not a NIfTI-1/NIfTI-2 image ({type(image).__name__})")
    shape = tuple(int(size) for size in image.shape)
    spatial_shape = shape
    while len(spatial_shape) > 3 and spatial_shape[-1] == 1:
        spatial_shape = spatial_shape[:-1]
    if require_3d and len(spatial_shape) != 3:
        raise TfmedganError(
            f"{path}: expected a 3D volume, got a {len(shape)}D image of shape {shape}"
        )
    try:
        data = np.asarray(image.get_fdata(dtype=np.dtype(dtype)))
    except Exception as error:  # truncated / corrupt data block
        raise TfmedganError(f"{path}: cannot read voxel data ({_one_line(error)})") from None
    data = data.reshape(spatial_shape)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise TfmedganError(f"{path}: contains {bad} NaN or infinite voxel(s)")
    return Volume(
        data=data,
        affine=np.array(image.affine, dtype=np.float64),
        header=image.header.copy(),
        path=path,
    )


def _temporary_sibling(path: Path) -> Path:
    """A unique hidden file name next to ``path`` with the same NIfTI ending."""
    lower = path.name.lower()
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else ".nii"
    return path.with_name(f".{nifti_stem(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def write_volume(
    path: PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    header: Any = None,
    dtype: Any = np.float32,
) -> Path:
    """Write a volume atomically (temporary file in the same folder, then ``os.replace``).

    All header fields (``descrip``, ``xyzt_units``, intent, ...) are kept; the data shape and
    dtype are updated, no scale factors are written, and both qform and sform are set to
    ``affine`` (existing codes kept; code 2 "aligned" for both when the header had neither).

    Args:
        path: Output ``.nii`` or ``.nii.gz`` file; ``.gz`` means compressed.
        data: Voxel array.
        affine: 4x4 voxel-to-world matrix.
        header: Optional nibabel NIfTI header to start from (copied, not modified).
        dtype: On-disk dtype. ``None`` keeps the header's dtype (or the array's when there is no
            header). Integer dtypes require integral values within range (no silent rescaling).

    Returns:
        The written path.

    Raises:
        TfmedganError: Non-NIfTI output name, bad affine, or data that does not fit ``dtype``.
    """
    path = Path(path)
    if not is_nifti_name(path):
        raise TfmedganError(f"{path}: output name must end with .nii or .nii.gz")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise TfmedganError(f"{path}: affine must be a finite 4x4 matrix, got shape {affine.shape}")
    array = np.asarray(data)
    if header is not None:
        new_header = header.copy()
    else:
        new_header = nib.Nifti1Header()
    if dtype is None:
        out_dtype = np.dtype(header.get_data_dtype() if header is not None else array.dtype)
    else:
        out_dtype = np.dtype(dtype)
    if out_dtype.kind in "iu":
        info = np.iinfo(out_dtype)
        if array.size and (
            not np.array_equal(array, np.round(array))
            or array.min() < info.min
            or array.max() > info.max
        ):
            raise TfmedganError(
                f"{path}: data are not integers in the range of {out_dtype.name}; "
                "write them as float32 instead"
            )
    array = array.astype(out_dtype, copy=False)
    new_header.set_data_dtype(out_dtype)
    new_header.set_data_shape(array.shape)
    # The values are written as they are: no scale factors.
    new_header.set_slope_inter(None, None)
    image_class = nib.Nifti2Image if isinstance(new_header, nib.Nifti2Header) else nib.Nifti1Image
    qform_code = int(new_header["qform_code"])
    sform_code = int(new_header["sform_code"])
    if qform_code == 0 and sform_code == 0:
        qform_code = sform_code = 2
    try:
        with np.errstate(all="ignore"):
            image = image_class(array, affine, header=new_header)
            image.header.set_sform(affine, code=sform_code)
            image.header.set_qform(affine, code=qform_code)
    except (HeaderDataError, np.linalg.LinAlgError):
        raise TfmedganError(
            f"{path}: the affine cannot be decomposed into an orientation (a zero or degenerate "
            "voxel axis); nothing was written"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    try:
        nib.save(image, str(temporary))
        os.replace(temporary, path)
    except OSError as error:
        raise TfmedganError(f"{path}: cannot write file ({_one_line(error)})") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def list_nifti(folder: PathLike) -> list[Path]:
    """NIfTI files of a folder, sorted by name.

    Hidden entries (starting with ``.``) are ignored.

    Args:
        folder: Folder to list.

    Returns:
        Sorted list of ``.nii`` / ``.nii.gz`` paths.

    Raises:
        TfmedganError: The folder is missing, or holds a non-NIfTI file or a sub-folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TfmedganError(f"{folder}: folder does not exist")
    files: list[Path] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise TfmedganError(f"{entry}: unexpected folder (only .nii/.nii.gz files allowed)")
        if not is_nifti_name(entry):
            raise TfmedganError(f"{entry}: not a NIfTI file (expected a .nii or .nii.gz name)")
        files.append(entry)
    return files


def pair_files(dir_a: PathLike, dir_b: PathLike, pair_by_order: bool = False) -> list[tuple[Path, Path]]:
    """Pair the NIfTI files of two folders by sorted file name.

    Unless ``pair_by_order``, every pair must name the same subject once the modality is
    removed (:func:`subject_key`, e.g. ``sub-03_T1w`` with ``sub-03_T2w``), so a missing or
    renamed file cannot shift every later pair by one.

    Args:
        dir_a: Domain A folder (e.g. ``trainA``).
        dir_b: Domain B folder (e.g. ``trainB``).
        pair_by_order: Pair by sorted position without comparing names (the original behaviour).

    Returns:
        ``[(a_0, b_0), (a_1, b_1), ...]``.

    Raises:
        TfmedganError: Unequal counts (the message names both folders and the first file
            without a partner in sorted order), an empty folder, or any error of
            :func:`list_nifti`, or (unless ``pair_by_order``) pairs naming different subjects.
    """
    files_a = list_nifti(dir_a)
    files_b = list_nifti(dir_b)
    if len(files_a) != len(files_b):
        (longer_dir, longer), (shorter_dir, shorter) = sorted(
            ((Path(dir_a), files_a), (Path(dir_b), files_b)), key=lambda item: -len(item[1])
        )
        raise TfmedganError(
            f"{longer_dir}: has {len(longer)} NIfTI files but {shorter_dir} has {len(shorter)}; "
            f"A/B files are paired by sorted name, so {longer[len(shorter)]} has no partner"
        )
    if not files_a:
        raise TfmedganError(f"{Path(dir_a)}: no .nii or .nii.gz files found")
    pairs = list(zip(files_a, files_b))
    if not pair_by_order:
        check_pair_names(pairs)
    return pairs


def check_pair(
    vol_a: Volume, vol_b: Volume, atol: float = 1e-3, rtol: float = 1e-5
) -> None:
    """Check that two volumes are on the same voxel grid (shape and affine agree).

    Args:
        vol_a: First volume.
        vol_b: Second volume.
        atol: Absolute tolerance on affine entries (millimetres for translations).
        rtol: Relative tolerance on affine entries.

    Raises:
        TfmedganError: The shapes or affines disagree (names both files).
    """
    if vol_a.shape != vol_b.shape:
        raise TfmedganError(
            f"{vol_b.path}: shape {vol_b.shape} differs from {vol_a.shape} of its pair "
            f"{vol_a.path}; pairs must be co-registered on the same grid"
        )
    if not np.allclose(vol_a.affine, vol_b.affine, atol=atol, rtol=rtol):
        difference = float(np.max(np.abs(vol_a.affine - vol_b.affine)))
        raise TfmedganError(
            f"{vol_b.path}: affine differs from that of its pair {vol_a.path} "
            f"(max difference {difference:.3g}); pairs must be co-registered on the same grid"
        )


def crop_affine(affine: np.ndarray, start_index: Sequence[int]) -> np.ndarray:
    """Affine of a sub-volume that starts at voxel ``start_index`` of the original.

    The new origin is ``affine @ [i, j, k, 1]``, so every kept voxel keeps its world coordinate.

    Args:
        affine: 4x4 voxel-to-world matrix of the original volume.
        start_index: Voxel index (i, j, k) of the first kept voxel.

    Returns:
        A new 4x4 matrix (the input is not modified).

    Example:
        >>> crop_affine(np.diag([2.0, 2.0, 2.0, 1.0]), (1, 2, 3))[:3, 3].tolist()
        [2.0, 4.0, 6.0]
    """
    affine = np.asarray(affine, dtype=np.float64)
    start = np.zeros(4)
    start[: len(start_index)] = np.asarray(start_index, dtype=np.float64)
    start[3] = 1.0
    new_affine = affine.copy()
    new_affine[:3, 3] = (affine @ start)[:3]
    return new_affine


@dataclass(frozen=True)
class CenterPadding:
    """How :func:`pad_or_crop_center` changed the leading axes of an array.

    Attributes:
        input_shape: Shape of those axes before.
        target_shape: Shape of those axes after.
        pad: ``(before, after)`` zeros added per axis.
        crop: ``(before, after)`` voxels removed per axis (only with ``allow_crop``).
    """

    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    crop: tuple[tuple[int, int], ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        """Slices of the padded array that hold the (possibly cropped) input."""
        return tuple(
            slice(before, size - after)
            for (before, after), size in zip(self.pad, self.target_shape)
        )


def pad_or_crop_center(
    data: np.ndarray,
    target_shape: Sequence[int],
    allow_crop: bool = False,
    value: float = 0.0,
) -> tuple[np.ndarray, CenterPadding]:
    """Centre-pad (and optionally centre-crop) the leading axes of ``data`` to ``target_shape``.

    As in the original loader the odd extra voxel goes after: ``before = floor(diff / 2)``,
    ``after = ceil(diff / 2)``. Trailing axes beyond ``len(target_shape)`` (e.g. channels) are
    left as they are.

    Args:
        data: Array with at least ``len(target_shape)`` axes.
        target_shape: Wanted size of the leading axes.
        allow_crop: Centre-crop axes that are larger than the target instead of raising.
        value: Constant used for padding.

    Returns:
        ``(array, padding)``; pass ``padding`` to :func:`undo_center_pad`.

    Raises:
        TfmedganError: An axis is larger than the target and ``allow_crop`` is False.

    Example:
        >>> padded, padding = pad_or_crop_center(np.ones((3, 4)), (6, 4))
        >>> padded.shape, padding.pad
        ((6, 4), ((1, 2), (0, 0)))
    """
    data = np.asarray(data)
    target = tuple(int(size) for size in target_shape)
    if len(target) > data.ndim:
        raise TfmedganError(f"target shape {target} has more axes than the data shape {data.shape}")
    input_shape = tuple(int(size) for size in data.shape[: len(target)])
    pad: list[tuple[int, int]] = []
    crop: list[tuple[int, int]] = []
    for axis, (size, wanted) in enumerate(zip(input_shape, target)):
        difference = wanted - size
        if difference >= 0:
            pad.append((difference // 2, difference - difference // 2))
            crop.append((0, 0))
        elif allow_crop:
            excess = -difference
            pad.append((0, 0))
            crop.append((excess // 2, excess - excess // 2))
        else:
            raise TfmedganError(
                f"volume shape {data.shape} is larger than the input shape {target} along axis "
                f"{axis}; use a larger input shape"
            )
    cropped = data[
        tuple(slice(before, size - after) for (before, after), size in zip(crop, input_shape))
    ]
    widths = list(pad) + [(0, 0)] * (data.ndim - len(target))
    padded = np.pad(cropped, widths, mode="constant", constant_values=value)
    return padded, CenterPadding(input_shape, target, tuple(pad), tuple(crop))


def undo_center_pad(
    array: np.ndarray, padding: CenterPadding | Sequence[slice], value: float = 0.0
) -> np.ndarray:
    """Invert :func:`pad_or_crop_center` on the leading axes of ``array``.

    Padding is removed; axes that were centre-cropped are padded back with ``value`` so the
    result has the original shape (the cropped voxels themselves are lost).

    Args:
        array: Array shaped like the output of :func:`pad_or_crop_center` (e.g. a network
            output with the same leading axes).
        padding: The :class:`CenterPadding` returned by :func:`pad_or_crop_center`, or a plain
            tuple of slices (e.g. ``padding.slices``).
        value: Fill value for axes that had been cropped.

    Returns:
        The un-padded array.
    """
    array = np.asarray(array)
    if not isinstance(padding, CenterPadding):
        return array[tuple(padding)]
    if tuple(array.shape[: len(padding.target_shape)]) != padding.target_shape:
        raise TfmedganError(
            f"array shape {array.shape} does not start with the padded shape {padding.target_shape}"
        )
    inner = array[padding.slices]
    if any(before or after for before, after in padding.crop):
        widths = list(padding.crop) + [(0, 0)] * (array.ndim - len(padding.crop))
        inner = np.pad(inner, widths, mode="constant", constant_values=value)
    return inner
