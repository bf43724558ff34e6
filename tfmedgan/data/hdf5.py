"""HDF5 volumes described by a JSON file, and lazy random-patch sampling (seed-002 data layer).

A dataset description is a JSON file listing HDF5 volumes for training and validation::

    {
      "train": [
        {"path": "data/scan_2.h5", "dset": "data"},
        {"path": "data/scan_3.h5", "ROI0": [0, 400], "ROI2": [100, -100]}
      ],
      "validate": [{"path": "data/scan_1.h5"}]
    }

* ``path`` is relative to the folder of the JSON file (absolute paths are kept).
* ``dset`` is the dataset name inside the file (default ``"data"``); it must be 3D.
* ``ROI0``/``ROI1``/``ROI2`` = ``[start, stop]`` restrict axis 0/1/2 to ``start <= i < stop``
  (Python slice rules: negative values count from the end, ``null`` means the axis start/end).
  A missing ROI means the whole axis.
* If one of ``"train"``/``"validate"`` is missing, the other list is used for it. Training on
  the ``"validate"`` list is announced with one ``note:`` line on stderr.

A bare ``.h5`` path is accepted as a description too: one volume (dataset ``"data"``, whole
volume) used for both splits. Volumes are expected to be standardised (``(x - mean) / std``,
float32 or float16), see :func:`standardize_to_hdf5`.

:class:`PatchSampler` reads random 3D patches lazily (only the patch is read from disk) and
:func:`tf_dataset` wraps it in a ``tf.data.Dataset`` for the training engine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from tfmedgan.errors import TfmedganError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

DEFAULT_DSET = "data"
SPLITS = ("train", "validate")
ENTRY_KEYS = ("path", "dset", "ROI0", "ROI1", "ROI2")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


@dataclass(frozen=True)
class VolumeRef:
    """One 3D HDF5 dataset and the region of interest patches may come from.

    Attributes:
        path: Absolute path of the HDF5 file.
        dset: Dataset name inside the file.
        roi: Resolved half-open ``(start, stop)`` per axis, ``0 <= start < stop <= shape[axis]``.
        shape: Full shape of the dataset.
    """

    path: Path
    dset: str = DEFAULT_DSET
    roi: tuple[tuple[int, int], ...] = ()
    shape: tuple[int, ...] = ()

    @property
    def roi_shape(self) -> tuple[int, ...]:
        """Size of the region of interest per axis."""
        return tuple(stop - start for start, stop in self.roi)

    def describe(self) -> str:
        """Short ``file:dataset`` label for messages."""
        return f"{self.path}:{self.dset}"


@dataclass(frozen=True)
class DatasetSpec:
    """Parsed dataset description: the volumes of each split.

    Attributes:
        train: Volumes for training.
        validate: Volumes for validation (the train list if the description has none).
        source: The JSON (or bare HDF5) file the description came from.
    """

    train: list[VolumeRef] = field(default_factory=list)
    validate: list[VolumeRef] = field(default_factory=list)
    source: Path | None = None

    def split(self, name: str) -> list[VolumeRef]:
        """Volumes of split ``"train"`` or ``"validate"``."""
        if name not in SPLITS:
            raise TfmedganError(f"unknown split {name!r}; use one of {SPLITS}")
        return list(getattr(self, name))


# --------------------------------------------------------------------------------- parsing


def _open_dataset(path: Path, dset: str, where: str) -> tuple[int, ...]:
    """Check that ``path`` holds a 3D dataset ``dset`` and return its shape."""
    if not path.is_file():
        raise TfmedganError(f"HDF5 file not found: {path} ({where})")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise TfmedganError(f"cannot open {path} as HDF5 ({where}): {error}") from None
    with handle:
        if dset not in handle:
            available = ", ".join(sorted(handle.keys())) or "none"
            raise TfmedganError(f"dataset {dset!r} not found in {path} (available: {available})")
        node = handle[dset]
        if not isinstance(node, h5py.Dataset):
            raise TfmedganError(f"{path}:{dset} is a group, not a dataset")
        if node.ndim != 3:
            raise TfmedganError(f"{path}:{dset} has shape {node.shape}; a 3D volume is required")
        return tuple(int(s) for s in node.shape)


def _resolve_roi(value: Any, length: int, axis: int, label: str) -> tuple[int, int]:
    """Turn a JSON ``[start, stop]`` into a validated half-open range on an axis of ``length``."""
    if value is None:
        return 0, length
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value)
    ):
        raise TfmedganError(f"ROI{axis} of {label} must be [start, stop] integers, got {value!r}")
    start = 0 if value[0] is None else value[0]
    stop = length if value[1] is None else value[1]
    start = start + length if start < 0 else start
    stop = stop + length if stop < 0 else stop
    if not 0 <= start < stop <= length:
        raise TfmedganError(
            f"ROI{axis} {list(value)} of {label} is outside axis {axis} of length {length} "
            f"(resolved to [{start}, {stop}])"
        )
    return start, stop


def _parse_entry(entry: Any, base: Path, where: str) -> VolumeRef:
    """Validate one ``{"path": ..., "dset": ..., "ROIk": ...}`` entry against its file."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise TfmedganError(f"{where} must be an object with a \"path\" string, got {entry!r}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise TfmedganError(f"unknown key(s) {unknown} in {where} (allowed: {', '.join(ENTRY_KEYS)})")
    dset = entry.get("dset", DEFAULT_DSET)
    if not isinstance(dset, str) or not dset:
        raise TfmedganError(f"\"dset\" in {where} must be a non-empty string, got {dset!r}")
    path = Path(os.path.expanduser(entry["path"]))
    if not path.is_absolute():
        path = base / path
    path = Path(os.path.abspath(path))
    shape = _open_dataset(path, dset, where)
    label = f"{path}:{dset}"
    roi = tuple(_resolve_roi(entry.get(f"ROI{axis}"), shape[axis], axis, label) for axis in range(3))
    return VolumeRef(path=path, dset=dset, roi=roi, shape=shape)


def _looks_like_hdf5(path: Path) -> bool:
    if path.suffix.lower() in H5_SUFFIXES:
        return True
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def load_dataset_spec(path: str | os.PathLike) -> DatasetSpec:
    """Read and validate a dataset description (JSON file or bare HDF5 volume).

    Every referenced file is opened once to check that the dataset exists, is 3D and that the
    ROIs lie inside it; no voxel data is read.

    Args:
        path: JSON description, or an ``.h5`` file (dataset ``"data"``, whole volume, used for
            both splits).

    Returns:
        The parsed :class:`DatasetSpec`.

    Raises:
        TfmedganError: Missing files, invalid JSON, unknown keys, missing dataset, non-3D dataset,
            ROI outside the volume.

    Example:
        >>> spec = load_dataset_spec("dataset/T700_GF_0p8um_1ms.json")
        >>> check_patch(spec, (64, 128, 128))
    """
    source = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not source.is_file():
        raise TfmedganError(f"dataset description not found: {source}")
    if _looks_like_hdf5(source):
        ref = _parse_entry({"path": str(source)}, source.parent, f"bare volume {source}")
        return DatasetSpec(train=[ref], validate=[ref], source=source)
    try:
        with open(source, encoding="utf-8") as handle:
            content = json.load(handle)
    except json.JSONDecodeError as error:
        raise TfmedganError(f"invalid JSON in {source}: {error}") from None
    except UnicodeDecodeError:
        raise TfmedganError(f"{source} is neither JSON nor HDF5") from None
    if not isinstance(content, dict):
        raise TfmedganError(f"{source} must contain a JSON object with \"train\"/\"validate\" lists")
    unknown = sorted(set(content) - set(SPLITS))
    if unknown:
        raise TfmedganError(f"unknown key(s) {unknown} in {source} (allowed: train, validate)")
    if not any(name in content for name in SPLITS):
        raise TfmedganError(f"{source} has neither a \"train\" nor a \"validate\" list")
    splits: dict[str, list[VolumeRef]] = {}
    for name in SPLITS:
        if name not in content:
            continue
        entries = content[name]
        if not isinstance(entries, list) or not entries:
            raise TfmedganError(f"\"{name}\" in {source} must be a non-empty list of volumes")
        splits[name] = [
            _parse_entry(entry, source.parent, f"{name}[{index}] of {source}") for index, entry in enumerate(entries)
        ]
    if "train" not in splits:
        print(f"note: {source} has no \"train\" list: training on its \"validate\" list", file=sys.stderr)
    train = splits.get("train", splits.get("validate"))
    validate = splits.get("validate", splits.get("train"))
    return DatasetSpec(train=list(train), validate=list(validate), source=source)


def _patch_tuple(patch_shape: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(patch_shape, (int, np.integer)):
        patch = (int(patch_shape),) * 3
    else:
        patch = tuple(int(p) for p in patch_shape)
    if len(patch) != 3 or min(patch) < 1:
        raise TfmedganError(f"patch shape {tuple(np.atleast_1d(patch_shape))} must be 3 positive integers")
    return patch  # type: ignore[return-value]


def _check_refs(refs: Sequence[VolumeRef], patch: tuple[int, int, int], where: str = "") -> None:
    for ref in refs:
        if any(p > r for p, r in zip(patch, ref.roi_shape)):
            roi = [list(r) for r in ref.roi]
            raise TfmedganError(
                f"patch {patch} is larger than the ROI {ref.roi_shape} (= {roi}) of {ref.describe()}{where}"
            )


def check_patch(spec: DatasetSpec, patch_shape: int | Sequence[int]) -> None:
    """Raise if a patch of ``patch_shape`` does not fit in the ROI of every volume of ``spec``.

    For super-resolution check domain B with ``scale * patch_shape``.
    """
    patch = _patch_tuple(patch_shape)
    for name in SPLITS:
        _check_refs(spec.split(name), patch, f" ({name} split of {spec.source})")


# --------------------------------------------------------------------------------- sampling


class PatchSampler:
    """Random 3D patches read lazily from HDF5 volumes.

    Each patch: a volume chosen uniformly from ``refs``, an origin uniform over all positions
    where the patch lies inside the ROI, the patch read from disk (only those voxels), and with
    ``flips`` each of the three axes flipped with probability 0.5. Files are opened once and kept
    open until :meth:`close`.

    Args:
        refs: Volumes to sample from (e.g. ``spec.train``).
        patch_shape: Patch size (3 ints, or one int for a cube).
        seed: Seed of the sampler's own ``numpy.random.Generator`` (``None``: random).
        flips: Random flips on all three axes. The random draws are made either way, so the same
            seed gives the same positions with and without flips.

    Example:
        >>> with PatchSampler(spec.train, (64, 128, 128), seed=0) as sampler:
        ...     batch = sampler.sample(4)   # (4, 64, 128, 128, 1) float32
    """

    def __init__(
        self,
        refs: Sequence[VolumeRef],
        patch_shape: int | Sequence[int],
        seed: int | None = None,
        flips: bool = True,
    ) -> None:
        self.refs = list(refs)
        if not self.refs:
            raise TfmedganError("PatchSampler needs at least one volume")
        self.patch_shape = _patch_tuple(patch_shape)
        _check_refs(self.refs, self.patch_shape)
        self.flips = bool(flips)
        self.rng = np.random.default_rng(seed)
        self._files: dict[Path, h5py.File] = {}
        self._datasets: list[h5py.Dataset] = []
        try:
            for ref in self.refs:
                if ref.path not in self._files:
                    self._files[ref.path] = h5py.File(ref.path, "r")
                self._datasets.append(self._files[ref.path][ref.dset])
        except (OSError, KeyError) as error:
            self.close()
            raise TfmedganError(f"cannot read {ref.describe()}: {error}") from None

    def sample(self, n: int) -> np.ndarray:
        """Draw ``n`` patches.

        Returns:
            float32 array ``[n, *patch_shape, 1]``.

        Raises:
            TfmedganError: A patch contains NaN or infinite values (names the file and origin).
        """
        if not self._datasets:
            raise TfmedganError("PatchSampler is closed")
        batch = np.empty((int(n), *self.patch_shape, 1), np.float32)
        for row in range(int(n)):
            index = int(self.rng.integers(len(self.refs)))
            ref = self.refs[index]
            origin = [
                int(self.rng.integers(start, stop - size + 1)) for (start, stop), size in zip(ref.roi, self.patch_shape)
            ]
            flip_axes = [axis for axis in range(3) if self.rng.random() < 0.5]
            slices = tuple(slice(o, o + s) for o, s in zip(origin, self.patch_shape))
            patch = np.asarray(self._datasets[index][slices], dtype=np.float32)
            if not np.isfinite(patch).all():
                raise TfmedganError(
                    f"non-finite values (NaN/inf) in {ref.describe()} in the patch at origin {origin} "
                    f"size {self.patch_shape}; clean or crop the volume"
                )
            if self.flips and flip_axes:
                patch = np.flip(patch, axis=flip_axes)
            batch[row, ..., 0] = patch
        return batch

    def close(self) -> None:
        """Close the HDF5 files (idempotent)."""
        for handle in self._files.values():
            try:
                handle.close()
            except Exception:  # pragma: no cover - closing twice / interpreter shutdown
                pass
        self._files = {}
        self._datasets = []

    def __enter__(self) -> PatchSampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def tf_dataset(
    sampler: PatchSampler, batch_size: int, num_batches: int | None = None, prefetch: int = 2
) -> tf.data.Dataset:
    """Wrap a sampler in a ``tf.data.Dataset`` of ``[batch_size, *patch, 1]`` float32 batches.

    Args:
        sampler: Source of patches (its random stream continues across iterations).
        batch_size: Patches per batch.
        num_batches: Stop after this many batches; ``None`` = infinite (the original dataset
            length of 1e6 samples is effectively infinite; the engine counts steps).
        prefetch: Batches prepared ahead in a background thread (0 disables).

    Returns:
        A dataset with a fully known ``element_spec``.
    """
    import tensorflow as tf

    if int(batch_size) < 1:
        raise TfmedganError(f"batch_size ({batch_size}) must be >= 1")
    batch_size = int(batch_size)

    def generate() -> Iterator[np.ndarray]:
        produced = 0
        while num_batches is None or produced < num_batches:
            yield sampler.sample(batch_size)
            produced += 1

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=tf.TensorSpec(shape=(batch_size, *sampler.patch_shape, 1), dtype=tf.float32),
    )
    if prefetch > 0:
        dataset = dataset.prefetch(prefetch)
    return dataset


# --------------------------------------------------------------------------------- writing


def _atomic_target(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def standardize_to_hdf5(
    volume: np.ndarray,
    out_h5: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    dset: str = DEFAULT_DSET,
    validate_fraction: float = 0.0,
) -> tuple[float, float]:
    """Write ``(volume - mean) / std`` as a float32 HDF5 dataset plus an optional JSON description.

    Both files are written to a temporary name and renamed, so a crash never leaves a partial
    file. The original mean and std are stored as attributes ``mean``/``std`` of the dataset.

    Args:
        volume: 3D array (any real dtype).
        out_h5: Output HDF5 file.
        json_path: If given, write a dataset description referencing ``out_h5`` (path relative
            to the JSON folder).
        dset: Dataset name.
        validate_fraction: Fraction of axis-0 slices (taken from the end) reserved for the
            ``validate`` split via ``ROI0``; 0 means both splits use the whole volume.

    Returns:
        ``(mean, std)`` of the input, to undo the standardisation.

    Example:
        >>> standardize_to_hdf5(vol, "data/scan.h5", "dataset/scan.json", validate_fraction=0.2)
    """
    array = np.asarray(volume)
    if array.ndim != 3:
        raise TfmedganError(f"standardize_to_hdf5 needs a 3D volume, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TfmedganError(f"volume dtype {array.dtype} is not a real number type")
    if not 0.0 <= float(validate_fraction) < 1.0:
        raise TfmedganError(f"validate_fraction ({validate_fraction}) must be in [0, 1)")
    if not np.isfinite(array).all():
        raise TfmedganError(f"volume for {out_h5} contains NaN or infinite values")
    mean = float(np.mean(array, dtype=np.float64))
    std = float(np.std(array, dtype=np.float64))
    if not std > 0.0:
        raise TfmedganError(f"volume for {out_h5} is constant (std 0); cannot standardise")
    length = array.shape[0]
    n_validate = int(round(length * float(validate_fraction)))
    if validate_fraction > 0 and n_validate == 0:
        n_validate = 1
    n_train = length - n_validate
    if n_train < 1:
        raise TfmedganError(f"validate_fraction {validate_fraction} leaves no training slices of {length}")

    out_path = Path(os.path.abspath(os.fspath(out_h5)))
    if not out_path.parent.is_dir():
        raise TfmedganError(f"output folder does not exist: {out_path.parent}")
    temporary = _atomic_target(out_path)
    try:
        with h5py.File(temporary, "w") as handle:
            target = handle.create_dataset(dset, shape=array.shape, dtype=np.float32, chunks=True)
            step = max(1, (1 << 24) // max(1, array[0].size))  # ~16M voxels per slab
            for first in range(0, length, step):
                slab = array[first : first + step].astype(np.float64)
                target[first : first + step] = ((slab - mean) / std).astype(np.float32)
            target.attrs["mean"] = mean
            target.attrs["std"] = std
        os.replace(temporary, out_path)
    finally:
        if temporary.exists():
            temporary.unlink()

    if json_path is not None:
        json_file = Path(os.path.abspath(os.fspath(json_path)))
        if not json_file.parent.is_dir():
            raise TfmedganError(f"output folder does not exist: {json_file.parent}")
        relative = Path(os.path.relpath(out_path, json_file.parent)).as_posix()
        train_entry: dict[str, Any] = {"path": relative, "dset": dset}
        validate_entry: dict[str, Any] = {"path": relative, "dset": dset}
        if n_validate:
            train_entry["ROI0"] = [0, n_train]
            validate_entry["ROI0"] = [n_train, length]
        description = {"train": [train_entry], "validate": [validate_entry]}
        temporary = _atomic_target(json_file)
        try:
            temporary.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
            os.replace(temporary, json_file)
        finally:
            if temporary.exists():
                temporary.unlink()
    return mean, std


def check_finite_volume(ref, slab_voxels: int = 1 << 24) -> None:
    """Raise if the ROI of ``ref`` holds NaN or infinite values (read slab by slab, never whole)."""
    (z0, z1), (y0, y1), (x0, x1) = ref.roi
    with h5py.File(ref.path, "r") as handle:
        data = handle[ref.dset]
        step = max(1, slab_voxels // max(1, (y1 - y0) * (x1 - x0)))
        for first in range(z0, z1, step):
            slab = np.asarray(data[first : min(first + step, z1), y0:y1, x0:x1])
            if not np.isfinite(slab).all():
                bad = np.argwhere(~np.isfinite(slab))[0] + [first, y0, x0]
                raise TfmedganError(
                    f"non-finite values (NaN/inf) in {ref.describe()}, first at voxel {bad.tolist()}; clean the volume "
                    "or exclude it with ROI0..2"
                )
