"""Streaming ``tf.data`` pipeline of paired (or unpaired) 3D NIfTI volumes for the 3D CycleGANs.

Layout of a data folder (seed 000)::

    DATA_DIR/trainA/*.nii[.gz]   domain A (e.g. T1w)
    DATA_DIR/trainB/*.nii[.gz]   domain B (e.g. T2w), paired with trainA by sorted file name
                                 (names less the modality must agree: sub-03_T1w ~ sub-03_T2w)
    DATA_DIR/testA, DATA_DIR/testB   (optional) held-out pairs for samples and evaluation

Every file is checked once before training (:func:`validate_pairs`): NIfTI name, readable, 3D,
no NaN/inf voxel, not all zero, pairs on the same grid (shape and affine) when the data are
paired, and not larger than the model input. During training the volumes are read from disk one
batch at a time (``tf.numpy_function`` + nibabel, in parallel, prefetched), centre zero-padded to
the model input shape and min-max scaled per volume to [-1, 1] after padding, as the original
``load_crop_data.py`` did. Nothing holds the whole set in memory.

Example:
    >>> pairs = paired_files("data/MR_crop", "train")                      # doctest: +SKIP
    >>> largest = validate_pairs(pairs)                                     # doctest: +SKIP
    >>> dataset = volume_pair_dataset(pairs, (160, 192, 160), batch=1, seed=0, epoch=0)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import check_pair, list_nifti, pad_or_crop_center, pair_files, read_volume

Pair = tuple[Path, Path]


def paired_files(
    data_dir: str | Path, split: str = "train", paired: bool = True, pair_by_order: bool = False
) -> list[Pair]:
    """The (A, B) file pairs of ``DATA_DIR/<split>A`` and ``DATA_DIR/<split>B``.

    Args:
        data_dir: Dataset folder.
        split: ``"train"`` or ``"test"``.
        paired: Require equal counts and pair by sorted name. When False (unpaired data) the
            shorter domain is repeated cyclically so that every file of the longer one is used.
        pair_by_order: With ``paired``, pair by sorted position without checking that both
            files name the same subject (:func:`tfmedgan.io.nifti.subject_key`).

    Returns:
        ``[(a, b), ...]`` of length ``max(nA, nB)``.

    Raises:
        TfmedganError: Missing folders, non-NIfTI entries, empty folders or (paired) unequal counts
            or pairs naming different subjects.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TfmedganError(f"{data_dir}: data folder does not exist")
    dir_a, dir_b = data_dir / f"{split}A", data_dir / f"{split}B"
    if paired:
        return pair_files(dir_a, dir_b, pair_by_order=pair_by_order)
    files_a, files_b = list_nifti(dir_a), list_nifti(dir_b)
    for folder, files in ((dir_a, files_a), (dir_b, files_b)):
        if not files:
            raise TfmedganError(f"{folder}: no .nii or .nii.gz files found")
    count = max(len(files_a), len(files_b))
    return [(files_a[i % len(files_a)], files_b[i % len(files_b)]) for i in range(count)]


def _load_header(path: str | Path):
    """The nibabel image of ``path`` (header read, data not), or a one-line TfmedganError."""
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises many types for broken files
        raise TfmedganError(f"{path}: cannot read NIfTI header ({' '.join(str(error).split())})") from None


def header_shape(path: str | Path) -> tuple[int, ...]:
    """Spatial shape of a NIfTI file from its header only (trailing singleton axes dropped).

    Raises:
        TfmedganError: The file cannot be read as NIfTI.
    """
    shape = tuple(int(size) for size in _load_header(path).shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def header_axis_codes(path: str | Path) -> tuple[str, ...]:
    """Anatomical direction of each voxel axis from the header's affine, e.g. ``("R", "A", "S")``
    (nibabel's ``aff2axcodes``: the direction each axis increases towards).

    Raises:
        TfmedganError: The file cannot be read as NIfTI.
    """
    return tuple(str(code) for code in nib.aff2axcodes(_load_header(path).affine))


def largest_shape(pairs: Sequence[Pair]) -> tuple[int, int, int]:
    """Element-wise maximum spatial shape over all files of ``pairs`` (header-level, fast).

    Raises:
        TfmedganError: A file is not a 3D NIfTI.
    """
    largest = np.zeros(3, np.int64)
    for pair in pairs:
        for path in pair:
            shape = header_shape(path)
            if len(shape) != 3:
                raise TfmedganError(f"{path}: expected a 3D volume, got a {len(shape)}D image of shape {shape}")
            largest = np.maximum(largest, shape)
    return tuple(int(size) for size in largest)


def validate_pairs(
    pairs: Sequence[Pair],
    paired: bool = True,
    max_shape: Sequence[int] | None = None,
    progress: bool = True,
) -> tuple[int, int, int]:
    """Read every volume once and raise a one-line error naming the first bad file.

    Checks: NIfTI name and readability, 3D (after dropping trailing singleton axes), no NaN or
    infinite voxel, not all zero, not larger than ``max_shape``, and for paired data the same
    shape and affine within a pair.

    Args:
        pairs: File pairs from :func:`paired_files`.
        paired: Check that the two files of a pair share shape and affine.
        max_shape: Model input shape the volumes must fit in (None: no limit).
        progress: Show a tqdm bar when there are many files.

    Returns:
        The element-wise maximum volume shape.
    """
    from tqdm.auto import tqdm

    largest = np.zeros(3, np.int64)
    seen: set[Path] = set()
    bar = tqdm(pairs, desc="checking volumes", unit="pair", disable=not progress or len(pairs) < 20, leave=False)
    for path_a, path_b in bar:
        volumes = []
        for path in (path_a, path_b):
            if path in seen and not paired:
                volumes.append(None)
                continue
            seen.add(path)
            volume = read_volume(path)
            check_volume_values(volume.data, path)
            if max_shape is not None and any(s > m for s, m in zip(volume.shape, max_shape)):
                raise TfmedganError(
                    f"{path}: shape {volume.shape} is larger than the model input shape {tuple(max_shape)}; "
                    "crop the data (python prepare_train_data.py) or give a larger --shape"
                )
            largest = np.maximum(largest, volume.shape)
            volumes.append(volume)
        if paired and volumes[0] is not None and volumes[1] is not None:
            check_pair(volumes[0], volumes[1])
    return tuple(int(size) for size in largest)


def check_volume_values(data: np.ndarray, path: str | Path) -> None:
    """Refuse volumes that cannot be scaled to [-1, 1] (all zero or constant).

    Raises:
        TfmedganError: names ``path``.
    """
    if not np.any(data):
        raise TfmedganError(f"{path}: all voxels are zero (empty volume)")
    if float(data.max()) == float(data.min()):
        raise TfmedganError(f"{path}: all voxels have the same value {float(data.max()):g}")


def scale_to_unit_range(data: np.ndarray) -> np.ndarray:
    """Per-volume min-max scaling ``2 (x - min) / (max - min) - 1`` to [-1, 1] (float32).

    A constant volume maps to zeros.
    """
    data = np.asarray(data, dtype=np.float32)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros_like(data)
    return (2.0 * (data - low) / (high - low) - 1.0).astype(np.float32)


def load_model_input(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    """One volume as the networks see it: centre zero-padded to ``shape``, then scaled to [-1, 1].

    Returns:
        float32 array ``[x, y, z, 1]``.
    """
    volume = read_volume(path)
    padded, _ = pad_or_crop_center(volume.data, tuple(int(s) for s in shape))
    return scale_to_unit_range(padded)[..., None]


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """Shuffled pair order of one epoch, a pure function of (seed, epoch) so a resume repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def volume_pair_dataset(
    pairs: Sequence[Pair],
    shape: Sequence[int],
    batch: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """One epoch of batches ``(A, B)``, each ``[batch, x, y, z, 1]`` float32 in [-1, 1].

    Volumes are read lazily (``tf.numpy_function``), several in parallel, in a deterministic
    order; the next batches are prefetched while the current one trains.

    Args:
        pairs: File pairs (validated before with :func:`validate_pairs`).
        shape: Model input spatial shape.
        batch: Batch size.
        seed: Seed of the per-epoch shuffle.
        epoch: Epoch index (the order is ``epoch_order(len(pairs), seed, epoch)``).
        shuffle: Shuffle the pairs (False: sorted order).
        drop_remainder: Drop a last incomplete batch (needed with several replicas).

    Returns:
        The dataset.
    """
    shape = tuple(int(s) for s in shape)
    paths_a = np.array([str(a) for a, _ in pairs])
    paths_b = np.array([str(b) for _, b in pairs])
    if shuffle:
        order = epoch_order(len(pairs), seed, epoch)
        paths_a, paths_b = paths_a[order], paths_b[order]

    def load(path_a: bytes, path_b: bytes) -> tuple[np.ndarray, np.ndarray]:
        return load_model_input(path_a.decode(), shape), load_model_input(path_b.decode(), shape)

    def load_tensors(path_a: tf.Tensor, path_b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        volume_a, volume_b = tf.numpy_function(load, [path_a, path_b], [tf.float32, tf.float32], stateful=False)
        volume_a.set_shape(shape + (1,))
        volume_b.set_shape(shape + (1,))
        return volume_a, volume_b

    dataset = tf.data.Dataset.from_tensor_slices((paths_a, paths_b))
    dataset = dataset.map(load_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch, drop_remainder=drop_remainder).prefetch(2)
