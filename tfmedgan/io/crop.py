"""Bounding-box cropping of paired volumes and the ``prepare_train_data.py`` job (seed 000).

The original script (DCAN-Labs/MR-Image-Translation ``CycleGAN/prepare_train_data.py``) cropped
each co-registered T1w/T2w pair to the union bounding box of their non-zero voxels, kept the
affine unchanged and printed the element-wise largest crop as the smallest input shape. This
module does the same, with these fixes: the affine origin is shifted so voxels keep their world
coordinates, the X-range bug of the original is gone, all input is validated before anything
is written, the output appears atomically, a deterministic fraction of pairs becomes the
test split (unless the input already has testA/testB pairs, which are kept as the split), and
A/B names must agree less their modality (``--pair-by-order`` pairs by position as before).

Example:
    >>> summary = prepare_dataset("data/MR", margin=2)  # doctest: +SKIP
    >>> summary["recommended_shape"]  # doctest: +SKIP
    (96, 112, 96)
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import (
    Volume,
    check_pair,
    crop_affine,
    is_nifti_name,
    list_nifti,
    pair_files,
    read_volume,
    write_volume,
)

PathLike = Union[str, "os.PathLike[str]"]
Margin = Union[int, Sequence[int]]

SPLIT_FOLDERS: tuple[str, ...] = ("trainA", "trainB", "testA", "testB")
"""Sub-folders written by :func:`prepare_dataset`."""

_CACHE_BYTES = 1 << 30
"""Cropped arrays kept in memory between the validation and the writing pass (else re-read)."""


def _margins(margin: Margin, ndim: int) -> tuple[int, ...]:
    """Expand an int or per-axis margin and check it is non-negative."""
    if isinstance(margin, (int, np.integer)) and not isinstance(margin, bool):
        values = (int(margin),) * ndim
    else:
        try:
            values = tuple(int(value) for value in margin)  # type: ignore[union-attr]
        except TypeError:
            raise TfmedganError(f"margin must be an integer, got {margin!r}") from None
        if len(values) != ndim:
            raise TfmedganError(f"margin {tuple(values)} must have {ndim} values")
    if any(value < 0 for value in values):
        raise TfmedganError(f"margin must be >= 0, got {margin!r}")
    return values


def bounding_box(mask: np.ndarray, margin: Margin = 0) -> tuple[slice, ...]:
    """Smallest box holding every ``True`` voxel of ``mask``, grown by ``margin`` and clipped.

    Args:
        mask: Boolean (or truthy) array of any dimension.
        margin: Voxels added on each side, one int or one per axis; clipped to the array.

    Returns:
        One ``slice(start, stop)`` per axis (stop exclusive), usable as ``array[box]``.

    Raises:
        TfmedganError: ``mask`` has no ``True`` voxel, or the margin is negative.

    Example:
        >>> mask = np.zeros((5, 6), bool); mask[1:3, 2] = True
        >>> bounding_box(mask, margin=1)
        (slice(0, 4, None), slice(1, 4, None))
    """
    mask = np.asarray(mask, dtype=bool)
    margins = _margins(margin, mask.ndim)
    if not mask.any():
        raise TfmedganError("bounding_box: the mask has no non-zero voxel")
    box = []
    for axis, (size, extra) in enumerate(zip(mask.shape, margins)):
        other_axes = tuple(index for index in range(mask.ndim) if index != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        start = max(0, int(present[0]) - extra)
        stop = min(int(size), int(present[-1]) + 1 + extra)
        box.append(slice(start, stop))
    return tuple(box)


def box_shape(box: Sequence[slice]) -> tuple[int, ...]:
    """Shape of the region selected by a box of ``slice(start, stop)``."""
    return tuple(int(item.stop - item.start) for item in box)


def _crop_volume(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """Crop one volume and shift its affine so the world coordinates stay the same."""
    data = np.ascontiguousarray(volume.data[box])
    header = volume.header.copy()
    header.set_data_shape(data.shape)
    return Volume(
        data=data,
        affine=crop_affine(volume.affine, [item.start for item in box]),
        header=header,
        path=volume.path,
    )


def check_writable_affine(volume: Volume) -> None:
    """Refuse an affine that NIfTI cannot store as an orientation (e.g. all zeros).

    Writing sets the qform, which needs the affine decomposed into rotation, zooms and shear;
    nibabel cannot decompose a matrix with a zero or non-finite column. The same header calls
    are tried here, on a scratch header, so the error comes before anything is written.

    Raises:
        TfmedganError: one line naming the file.
    """
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    affine = np.asarray(volume.affine, dtype=np.float64)
    scratch = nib.Nifti1Header()
    try:
        if not np.isfinite(affine).all():
            raise ValueError("non-finite entries")
        with np.errstate(all="ignore"):
            scratch.set_qform(affine, code=1)
            scratch.set_sform(affine, code=1)
    except (HeaderDataError, ValueError, np.linalg.LinAlgError):
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        raise TfmedganError(
            f"{volume.path}: the affine cannot be decomposed into an orientation (voxel sizes "
            f"{format_zooms(zooms)}); fix the file's sform/qform before cropping"
        ) from None


def format_zooms(zooms: Sequence[float]) -> str:
    """``(1, 1, 0)`` style voxel sizes with at most 3 decimals."""
    return "(" + ", ".join(f"{float(value):.3g}" for value in zooms) + ")"


def _require_non_zero(volume: Volume) -> np.ndarray:
    """Non-zero mask of a volume; error naming the file if it is all zero."""
    mask = volume.data != 0
    if not mask.any():
        raise TfmedganError(f"{volume.path}: all voxels are zero, nothing to crop")
    return mask


def crop_pair(
    vol_a: Volume, vol_b: Volume, margin: Margin = 0
) -> tuple[Volume, Volume, tuple[slice, ...]]:
    """Crop a co-registered pair to the union bounding box of their non-zero voxels.

    Args:
        vol_a: Domain A volume.
        vol_b: Domain B volume on the same grid.
        margin: Extra voxels on each side (clipped to the volume).

    Returns:
        ``(cropped_a, cropped_b, box)``; the cropped affines have their origin moved to the
        first kept voxel, headers are copies with the new shape.

    Raises:
        TfmedganError: Shapes/affines disagree or a volume is all zero (names the file).
    """
    check_pair(vol_a, vol_b)
    union = _require_non_zero(vol_a) | _require_non_zero(vol_b)
    box = bounding_box(union, margin)
    return _crop_volume(vol_a, box), _crop_volume(vol_b, box), box


def storage_dtype(volume: Volume) -> np.dtype:
    """On-disk dtype for a cropped volume: the original one when it holds the values exactly.

    Float files keep their float dtype. Integer files keep it when the (scaled) values are
    integers within range, otherwise (non-trivial ``scl_slope``/``scl_inter``) float32 is used so
    no value is silently requantised.
    """
    original = np.dtype(volume.header.get_data_dtype())
    if original.kind == "f":
        return original
    if original.kind in "iu":
        data = volume.data
        info = np.iinfo(original)
        if data.size == 0 or (
            np.array_equal(data, np.round(data))
            and data.min() >= info.min
            and data.max() <= info.max
        ):
            return original
    return np.dtype(np.float32)


def round_up_shape(shape: Sequence[int], multiple: int) -> tuple[int, ...]:
    """Round every size up to a multiple of ``multiple``.

    Example:
        >>> round_up_shape((81, 96, 77), 4)
        (84, 96, 80)
    """
    return tuple(int(math.ceil(int(size) / multiple) * multiple) for size in shape)


def format_shape(shape: Sequence[int]) -> str:
    """``(x, y, z)`` with plain Python ints (no ``np.int64(...)``)."""
    return "(" + ", ".join(str(int(size)) for size in shape) + ")"


def _format_box(box: Sequence[slice]) -> str:
    return ", ".join(f"{axis} {item.start}:{item.stop}" for axis, item in zip("xyz", box))


def choose_test_indices(count: int, test_fraction: float, seed: int = 0) -> list[int]:
    """Deterministic choice of test pairs among ``count`` sorted pairs.

    ``round(test_fraction * count)`` pairs are drawn with ``numpy.random.default_rng(seed)``;
    at least one when ``test_fraction > 0`` and ``count >= 2``, and at least one pair always
    stays for training.

    Args:
        count: Number of pairs.
        test_fraction: Fraction in ``[0, 1)``.
        seed: Seed of the permutation.

    Returns:
        Sorted indices of the test pairs.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise TfmedganError(f"test fraction must be in [0, 1), got {test_fraction}")
    if test_fraction == 0.0 or count < 2:
        return []
    wanted = int(math.floor(test_fraction * count + 0.5))
    wanted = min(max(wanted, 1), count - 1)
    permutation = np.random.default_rng(seed).permutation(count)
    return sorted(int(index) for index in permutation[:wanted])


def _is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` equals ``folder`` or lies inside it (both resolved)."""
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _check_replaceable(dst: Path) -> None:
    """Refuse ``--overwrite`` on a folder that is not a previous crop output."""
    if not dst.is_dir():
        raise TfmedganError(f"{dst}: exists and is not a folder; refusing to overwrite it")
    for entry in dst.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.name not in SPLIT_FOLDERS or not entry.is_dir():
            raise TfmedganError(
                f"{entry}: {dst} holds more than a crop output (trainA/trainB/testA/testB); "
                "refusing to overwrite it"
            )
        for item in entry.iterdir():
            if not item.name.startswith(".") and (item.is_dir() or not is_nifti_name(item)):
                raise TfmedganError(
                    f"{item}: {dst} holds more than NIfTI crops; refusing to overwrite it"
                )


def _split_pairs(
    folder: Path, name_a: str, name_b: str, pair_by_order: bool = False
) -> list[tuple[Path, Path]]:
    """Pairs of an optional split; two missing or empty folders give no pairs."""
    dir_a, dir_b = folder / name_a, folder / name_b
    if not dir_a.exists() and not dir_b.exists():
        return []
    for directory in (dir_a, dir_b):
        if not directory.is_dir():
            raise TfmedganError(f"{directory}: folder missing ({name_a} and {name_b} go together)")
    if not list_nifti(dir_a) and not list_nifti(dir_b):
        return []
    return pair_files(dir_a, dir_b, pair_by_order=pair_by_order)


def prepare_dataset(
    src: PathLike,
    dst: PathLike | None = None,
    margin: Margin = 0,
    test_fraction: float = 0.1,
    seed: int = 0,
    multiple: int = 4,
    overwrite: bool = False,
    log: Callable[[str], Any] | None = print,
    pair_by_order: bool = False,
) -> dict[str, Any]:
    """Crop every pair of ``src/{trainA,trainB}`` and write ``dst/{trainA,trainB,testA,testB}``.

    Files of ``trainA`` and ``trainB`` are paired by sorted name, and (unless ``pair_by_order``)
    each pair must name the same subject less the modality (``sub-03_T1w`` with ``sub-03_T2w``,
    see :func:`tfmedgan.io.nifti.subject_key`). Each pair is cropped to the
    union bounding box of its non-zero voxels (plus ``margin``), the affine origin is shifted so
    every voxel keeps its world coordinate, and the header is otherwise kept. A deterministic
    ``test_fraction`` of the pairs goes to ``testA``/``testB``, unless ``src/testA`` and
    ``src/testB`` already hold pairs (the original layout): then that split is kept as it is (its
    pairs are cropped into the test folders) and no train pair is moved.

    Everything is read and validated first; the output is then written into a hidden temporary
    folder next to ``dst`` and renamed to ``dst`` at the end, so a failure leaves no partial
    output. ``src`` is never modified.

    Args:
        src: Dataset folder holding ``trainA`` and ``trainB`` (and optionally ``testA``/``testB``).
        dst: Output folder; default ``<src>_crop`` next to ``src``.
        margin: Voxels kept around the box on each side (int or one per axis), clipped.
        test_fraction: Fraction of train pairs moved to the test folders, in ``[0, 1)``; not
            applied when ``src`` already has a test split.
        seed: Seed of the test-pair choice.
        multiple: The recommended input shape is rounded up to a multiple of this (2 for the
            seed-000 generator with one down-sampling, 4 for the deeper preset).
        overwrite: Replace an existing ``dst`` (only if it holds nothing but a crop output).
        log: Called with each progress line; ``None`` for silence.
        pair_by_order: Pair by sorted position without comparing the names (the original).

    Returns:
        Dict with ``output`` (Path), ``train`` and ``test`` (lists of ``(name_a, name_b)``),
        ``crops`` (one dict per pair: ``a``, ``b``, ``split``, ``input_shape``, ``box``,
        ``shape``), ``max_shape`` and ``recommended_shape`` (tuples of int).

    Raises:
        TfmedganError: Any bad input (one line naming the file) or an existing output folder.
    """
    emit: Callable[[str], Any] = log if log is not None else (lambda line: None)
    margins = _margins(margin, 3)
    if isinstance(multiple, bool) or int(multiple) != multiple or int(multiple) < 1:
        raise TfmedganError(f"multiple must be an integer >= 1, got {multiple!r}")
    multiple = int(multiple)
    if not 0.0 <= float(test_fraction) < 1.0:
        raise TfmedganError(f"test fraction must be in [0, 1), got {test_fraction}")

    src = Path(src)
    if not src.is_dir():
        raise TfmedganError(f"{src}: dataset folder does not exist")
    dst = Path(dst) if dst is not None else src.parent / f"{src.resolve().name}_crop"
    src_resolved, dst_resolved = src.resolve(), dst.resolve()
    if _is_within(dst_resolved, src_resolved):
        raise TfmedganError(f"{dst}: output folder must not be inside the input folder {src}")
    if _is_within(src_resolved, dst_resolved):
        raise TfmedganError(f"{dst}: output folder must not contain the input folder {src}")
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise TfmedganError(
                f"{dst}: output folder already exists; use --overwrite to replace it"
            )
        _check_replaceable(dst)

    for name in ("trainA", "trainB"):
        if not (src / name).is_dir():
            raise TfmedganError(
                f"{src / name}: folder missing (expected {src}/trainA and {src}/trainB)"
            )
    train_pairs = pair_files(src / "trainA", src / "trainB", pair_by_order=pair_by_order)
    existing_test_pairs = _split_pairs(src, "testA", "testB", pair_by_order=pair_by_order)
    if existing_test_pairs:  # the user already made a test split: do not move train pairs too
        test_indices: set[int] = set()
    else:
        test_indices = set(choose_test_indices(len(train_pairs), float(test_fraction), int(seed)))

    jobs: list[tuple[Path, Path, str]] = []
    for index, (path_a, path_b) in enumerate(train_pairs):
        jobs.append((path_a, path_b, "test" if index in test_indices else "train"))
    jobs.extend((path_a, path_b, "test") for path_a, path_b in existing_test_pairs)
    destinations: dict[tuple[str, str], Path] = {}
    for path_a, path_b, split in jobs:
        for path, domain in ((path_a, "A"), (path_b, "B")):
            key = (f"{split}{domain}", path.name)
            if key in destinations:
                raise TfmedganError(
                    f"{path}: same file name as {destinations[key]}; both would be written to "
                    f"{dst / key[0] / key[1]}"
                )
            destinations[key] = path

    if existing_test_pairs:
        emit(
            f"Found {len(train_pairs)} train pair(s) in {src} and an existing split of "
            f"{len(existing_test_pairs)} test pair(s) in testA/testB: keeping it, --test-fraction "
            f"{test_fraction} not applied"
        )
    else:
        emit(
            f"Found {len(train_pairs)} train pair(s) in {src}; {len(test_indices)} moved to the test "
            f"split (--test-fraction {test_fraction}, --seed {seed})"
        )

    # Pass 1: read and validate everything, compute the boxes. Nothing is written.
    crops: list[dict[str, Any]] = []
    cache: dict[int, tuple[Volume, Volume]] = {}
    cached_bytes = 0
    for job_index, (path_a, path_b, split) in enumerate(jobs):
        vol_a = read_volume(path_a, dtype=np.float64)
        vol_b = read_volume(path_b, dtype=np.float64)
        crop_a, crop_b, box = crop_pair(vol_a, vol_b, margins)
        check_writable_affine(crop_a)
        check_writable_affine(crop_b)
        shape = box_shape(box)
        crops.append(
            {
                "a": path_a.name,
                "b": path_b.name,
                "split": split,
                "input_shape": vol_a.shape,
                "box": tuple((item.start, item.stop) for item in box),
                "shape": shape,
            }
        )
        emit(
            f"Cropping {path_a.name} and {path_b.name} [{split}]: {format_shape(vol_a.shape)} -> "
            f"{format_shape(shape)} (box {_format_box(box)})"
        )
        size = crop_a.data.nbytes + crop_b.data.nbytes
        if cached_bytes + size <= _CACHE_BYTES:
            cache[job_index] = (crop_a, crop_b)
            cached_bytes += size
        del vol_a, vol_b, crop_a, crop_b

    max_shape = tuple(int(value) for value in np.max([crop["shape"] for crop in crops], axis=0))
    recommended = round_up_shape(max_shape, multiple)

    # Pass 2: write into a hidden temporary folder, then move it into place.
    dst.parent.mkdir(parents=True, exist_ok=True)
    temporary = dst.parent / f".{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for folder in SPLIT_FOLDERS:
            (temporary / folder).mkdir(parents=True)
        for job_index, (path_a, path_b, split) in enumerate(jobs):
            if job_index in cache:
                crop_a, crop_b = cache.pop(job_index)
            else:
                crop_a, crop_b, _ = crop_pair(
                    read_volume(path_a, dtype=np.float64),
                    read_volume(path_b, dtype=np.float64),
                    margins,
                )
            for volume, domain in ((crop_a, "A"), (crop_b, "B")):
                assert volume.path is not None
                write_volume(
                    temporary / f"{split}{domain}" / volume.path.name,
                    volume.data,
                    volume.affine,
                    header=volume.header,
                    dtype=storage_dtype(volume),
                )
        if dst.exists() or dst.is_symlink():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(dst, old)
            os.replace(temporary, dst)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(temporary, dst)
    except OSError as error:
        reason = " ".join(str(error).split())
        raise TfmedganError(f"{dst}: cannot write output ({reason})") from None
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)

    train_names = [(crop["a"], crop["b"]) for crop in crops if crop["split"] == "train"]
    test_names = [(crop["a"], crop["b"]) for crop in crops if crop["split"] == "test"]
    emit(f"Wrote {dst}: {len(train_names)} train pair(s), {len(test_names)} test pair(s)")
    emit(
        f"Largest crop shape: {format_shape(max_shape)} "
        f"(rounded up to a multiple of {multiple} below)"
    )
    emit(f"Smallest recommended input image shape: {format_shape(recommended)}")
    return {
        "output": dst,
        "train": train_names,
        "test": test_names,
        "crops": crops,
        "max_shape": max_shape,
        "recommended_shape": recommended,
    }
