"""Translate NIfTI volumes with a trained 3D CycleGAN generator, and score the results.

Sources of a generator (:func:`load_translator`):

- a tfmedgan ``cyclegan3d`` run directory: ``models/generator_a2b.keras`` (or ``generator_b2a``),
  or the newest checkpoint when the run was stopped early; the model shape is the run's ``shape``;
- a folder with the original repository's Keras 2 files ``G_A2B_model.json`` + ``.hdf5`` (or
  ``G_B2A_model.*``), or explicit ``.json``/``.hdf5`` paths: rebuilt as the faithful network
  (per-Z-slice norm, input 156x188x156) by :func:`tfmedgan.inference.legacy.load_legacy_model`.

Each input volume is centre zero-padded to the model shape, scaled per volume to [-1, 1] (as in
training), translated, and the padding is removed, so the output has the input's shape; it is
written with the input's affine and header as float32 values in [-1, 1] (the generator's tanh
range: the intensity scale of the target domain is not known). A volume larger than the model
shape is translated with overlapping windows of the model shape
(:func:`tfmedgan.inference.sliding_window.sliding_window_inference`, Gaussian blending).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from tfmedgan.engine.config import read_config
from tfmedgan.data.nifti import scale_to_unit_range
from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import is_nifti_name, list_nifti, nifti_stem, pad_or_crop_center, read_volume, undo_center_pad, write_volume

DIRECTIONS = ("A2B", "B2A")
OUTPUT_SUFFIX = "_synthetic"


def _legacy_files(folder: Path, direction: str) -> tuple[Path, Path] | None:
    stem = f"G_{direction}_model"
    json_path, hdf5_path = folder / f"{stem}.json", folder / f"{stem}.hdf5"
    if hdf5_path.is_file():
        return (json_path if json_path.is_file() else None), hdf5_path
    return None


def load_translator(
    source: str | Path | None,
    direction: str = "A2B",
    legacy_json: str | Path | None = None,
    legacy_hdf5: str | Path | None = None,
    input_shape: Sequence[int | None] | None = None,
) -> tuple[keras.Model, tuple[int, int, int]]:
    """Load the generator of one direction and the spatial shape it is fed.

    Args:
        source: A ``cyclegan3d`` run directory or a folder with the original ``G_<dir>_model`` files
            (ignored when ``legacy_hdf5`` is given).
        direction: ``"A2B"`` or ``"B2A"``.
        legacy_json: Explicit Keras 2 architecture file.
        legacy_hdf5: Explicit Keras 2 weights file.
        input_shape: Build a legacy model for this input shape (without batch axis) instead of the
            original 156x188x156; with per-Z-slice norm Z must stay 156. For tests and small crops.

    Returns:
        ``(model, model_shape)``.
    """
    if direction not in DIRECTIONS:
        raise TfmedganError(f"--direction must be A2B or B2A, got {direction!r}")
    if legacy_hdf5 is None and source is not None:
        folder = Path(source)
        if not folder.exists():
            raise TfmedganError(f"{folder}: no such run directory or model folder")
        if (folder / "config.json").is_file():
            from tfmedgan.api import load_run

            run = load_run(folder)
            if run.spec.generates != "volumes":
                raise TfmedganError(f"{folder} is a {run.spec.name} run, which does not translate NIfTI volumes")
            model = run.network(f"generator_{direction.lower()}")
            mark_translator(model, run.config)
            return model, tuple(int(s) for s in run.config.shape)
        if folder.is_file() and folder.suffix.lower() in (".hdf5", ".h5"):  # the original G_A2B_model.hdf5 itself
            json_path = folder.with_suffix(".json")
            found = (json_path if json_path.is_file() else None), folder
        else:
            found = _legacy_files(folder, direction) if folder.is_dir() else None
        if found is None:
            raise TfmedganError(f"{folder}: neither a cyclegan3d run (config.json) nor a folder with G_{direction}_model.hdf5")
        legacy_json, legacy_hdf5 = found
    if legacy_hdf5 is None:
        raise TfmedganError("give a run directory, a model folder or --legacy-hdf5")
    from tfmedgan.inference.legacy import load_legacy_model

    model = load_legacy_model(legacy_json, legacy_hdf5, input_shape=input_shape)
    static = model.input_shape[1:4]
    if any(size is None for size in static):
        raise TfmedganError(f"{legacy_hdf5}: give a complete input shape for a legacy model, got {static}")
    return model, tuple(int(s) for s in static)


def _predict(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    return np.asarray(model(batch, training=False), dtype=np.float32)


#: Attribute of a loaded translator holding the size multiple its input sides must have
#: (2 ** down-sampling stages); set by :func:`load_translator` for runs.
INPUT_MULTIPLE_ATTRIBUTE = "tfmedgan_input_multiple"

#: Attribute of a loaded translator trained on random crops (``--patch``): the crop shape. Such a
#: network is run on overlapping windows of that shape, because its instance norm learnt the
#: statistics of crops, not of a whole volume with its wide background. Not set for a network
#: without normalisation (``--norm none``): it sees no global statistics, so one pass is exact.
TRAINING_PATCH_ATTRIBUTE = "tfmedgan_training_patch"


def mark_translator(model: keras.Model, config) -> keras.Model:
    """Record on a cyclegan3d generator how it was trained: the size multiple of its input sides
    and, for a ``--patch`` run with instance norm, the crop shape that :func:`translate_volume`
    uses as its window."""
    from tfmedgan.networks.resnet_translator import valid_input_shape

    setattr(model, INPUT_MULTIPLE_ATTRIBUTE, 2 ** int(config.n_downsamplings))
    patch = getattr(config, "patch", None)
    if patch and getattr(config, "norm", "channel") != "none":
        shape = valid_input_shape([int(size) for size in patch], int(config.n_downsamplings))
        setattr(model, TRAINING_PATCH_ATTRIBUTE, tuple(min(int(p), int(s)) for p, s in zip(shape, config.shape)))
    return model


#: Largest padded volume (voxels) translated in one forward pass when it exceeds the model shape;
#: larger ones go through overlapping windows. 16.7 M voxels = 256^3 (about 10 GB of float32
#: activations for the 32-filter generator).
ONE_PASS_VOXELS = 256**3


def one_pass_shape(model: keras.Model, shape: Sequence[int], multiple: int | None) -> tuple[int, ...] | None:
    """The shape to translate ``shape`` in one forward pass (each side rounded up to ``multiple``),
    or None when the network's input has fixed sides that differ, or the volume is too large."""
    if not multiple:
        return None
    padded = tuple(-(-int(size) // multiple) * multiple for size in shape)
    static = tuple(model.input_shape[1:4])
    if any(fixed is not None and fixed != size for fixed, size in zip(static, padded)):
        return None
    return padded if int(np.prod(padded)) <= ONE_PASS_VOXELS else None


def left_right_axis(affine: np.ndarray) -> int:
    """The voxel axis of a volume that runs left-right in world space (from its affine).

    Example:
        >>> left_right_axis(np.diag([2.0, 2.0, 2.0, 1.0]))
        0
        >>> left_right_axis(np.array([[0, 0, 2, 0], [2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1.0]]))
        2
    """
    import nibabel

    codes = nibabel.aff2axcodes(np.asarray(affine, dtype=np.float64))
    axes = [axis for axis, code in enumerate(codes) if code in ("L", "R")]
    if len(axes) != 1:
        raise TfmedganError(f"no voxel axis runs left-right in this affine (orientation {''.join(map(str, codes))})")
    return axes[0]


def translate_volume(model: keras.Model, data: np.ndarray, model_shape: Sequence[int],
                     multiple: int | None = None, window: Sequence[int] | None = None,
                     flip_axes: Sequence[int] = ()) -> np.ndarray:
    """Translate one 3D array; returns float32 values in [-1, 1] of the same shape.

    With ``flip_axes`` (test-time flip averaging, not the original), the volume is also translated
    mirrored along each of these axes in turn, each result mirrored back, and all are averaged:
    ``len(flip_axes) + 1`` translations. The result is then exactly mirror-equivariant along each
    axis given alone. Left-right (:func:`left_right_axis`) is the natural one for brains: on the
    bench's held-out subjects it raised six generators' PSNR by 0.04-0.23 dB and SSIM by
    0.004-0.008 (docs/cyclegan3d.md, "Session 15"); mirroring the other axes shows the network
    orientations it never saw and lowers the score.

    The volume is centre zero-padded to (at least) ``model_shape`` and min-max scaled to [-1, 1]
    after padding, exactly as the training pipeline does. A network trained on random crops
    (``window``, by default the model's :data:`TRAINING_PATCH_ATTRIBUTE`) is run on overlapping
    windows of the crop shape (stride half a window, Gaussian blending), as it was trained.
    Otherwise a volume that fits the model shape is one forward pass. A larger one is also
    translated whole, in one pass, when the network accepts any size divisible by ``multiple``
    (the fully convolutional generators with instance norm, which were trained on whole volumes)
    and it has at most :data:`ONE_PASS_VOXELS` voxels; otherwise overlapping windows of the model
    shape are blended.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise TfmedganError(f"expected a 3D volume, got shape {data.shape}")
    bad = [axis for axis in flip_axes if int(axis) not in (0, 1, 2)]
    if bad:
        raise TfmedganError(f"flip axes must be 0, 1 or 2, got {list(flip_axes)}")
    output = _translate_once(model, data, model_shape, multiple, window)
    if not flip_axes:
        return output
    total = output.astype(np.float64)
    for axis in flip_axes:
        mirrored = _translate_once(model, np.flip(data, int(axis)), model_shape, multiple, window)
        total += np.flip(mirrored, int(axis))
    return (total / (len(flip_axes) + 1)).astype(np.float32)


def _translate_once(model: keras.Model, data: np.ndarray, model_shape: Sequence[int],
                    multiple: int | None, window: Sequence[int] | None) -> np.ndarray:
    """One translation of ``data`` (see :func:`translate_volume`)."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    if multiple is None:
        multiple = getattr(model, INPUT_MULTIPLE_ATTRIBUTE, None)
    if window is None:
        window = getattr(model, TRAINING_PATCH_ATTRIBUTE, None)
    model_shape = tuple(int(s) for s in model_shape)
    target = tuple(max(size, wanted) for size, wanted in zip(data.shape, model_shape))
    if window is not None and tuple(int(w) for w in window) != target:
        from tfmedgan.inference.sliding_window import sliding_window_inference

        window = tuple(min(int(w), size) for w, size in zip(window, target))
        padded, padding = pad_or_crop_center(data, target)
        output = sliding_window_inference(scale_to_unit_range(padded), lambda batch: _predict(model, batch), window,
                                          stride=tuple(max(1, w // 2) for w in window), blend="gaussian")
        return undo_center_pad(np.asarray(output, np.float32).reshape(target), padding).astype(np.float32)
    whole = one_pass_shape(model, target, multiple) if target != model_shape else model_shape
    if whole is not None:
        padded, padding = pad_or_crop_center(data, whole)
        output = _predict(model, scale_to_unit_range(padded)[None, ..., None])[0, ..., 0]
        return undo_center_pad(output, padding).astype(np.float32)
    padded, padding = pad_or_crop_center(data, target)
    scaled = scale_to_unit_range(padded)
    if target == model_shape:
        output = _predict(model, scaled[None, ..., None])[0, ..., 0]
    else:
        from tfmedgan.inference.sliding_window import sliding_window_inference

        output = sliding_window_inference(scaled, lambda batch: _predict(model, batch), model_shape, blend="gaussian")
        output = np.asarray(output, np.float32).reshape(target)
    return undo_center_pad(output, padding).astype(np.float32)


def list_inputs(path: str | Path) -> list[Path]:
    """A single NIfTI file, or the sorted NIfTI files of a folder."""
    path = Path(path)
    if path.is_file():
        if not is_nifti_name(path):
            raise TfmedganError(f"{path}: not a NIfTI file (expected a .nii or .nii.gz name)")
        return [path]
    files = list_nifti(path)
    if not files:
        raise TfmedganError(f"{path}: no .nii or .nii.gz files found")
    return files


def output_name(path: Path) -> str:
    """``<stem>_synthetic.nii.gz`` (the original's naming, without its ``strip`` bug)."""
    return f"{nifti_stem(path)}{OUTPUT_SUFFIX}.nii.gz"


def translate_files(
    model: keras.Model,
    model_shape: Sequence[int],
    inputs: Sequence[Path],
    out_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    flip_average: bool = False,
) -> list[Path]:
    """Translate NIfTI files into ``out_dir``, one ``<stem>_synthetic.nii.gz`` each.

    Every input is read (and checked) before the first prediction; outputs keep the input's
    affine and header (data type float32). ``flip_average`` also translates each volume mirrored
    left-right (the axis found from its affine) and averages the two (:func:`translate_volume`).

    Raises:
        TfmedganError: A bad input file, or a non-empty ``out_dir`` without ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise TfmedganError(f"output folder {out_dir} exists and is not empty (use --overwrite)")
    flip_axes = {}
    for path in inputs:  # header-level check of every input first
        checked = read_volume(path)
        try:
            flip_axes[path] = (left_right_axis(checked.affine),) if flip_average else ()
        except TfmedganError as error:
            raise TfmedganError(f"{path}: {error}; translate it without flip averaging") from None
    from tqdm.auto import tqdm

    written = []
    for path in tqdm(inputs, desc="translating", unit="volume", disable=not progress):
        volume = read_volume(path)
        synthetic = translate_volume(model, volume.data, model_shape, flip_axes=flip_axes[path])
        written.append(write_volume(out_dir / output_name(path), synthetic, volume.affine, volume.header))
    return written


# -- evaluation ------------------------------------------------------------------------------------
METRIC_COLUMNS = ("mae", "psnr", "ssim", "mutual_information")


def score_volume(synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE, PSNR, 3D SSIM and mutual information of two volumes on the [-1, 1] scale.

    Args:
        synthetic: Generated volume in [-1, 1].
        real: The real volume of the same subject, already scaled to [-1, 1].
        mask: Brain mask (voxels counted), e.g. ``real_original > 0``.

    Returns:
        ``{"mae", "psnr", "ssim", "mutual_information"}``; PSNR and SSIM use data range 2.
    """
    from tfmedgan import metrics

    return {
        "mae": metrics.mae(synthetic, real, mask=mask),
        "psnr": metrics.psnr(real, synthetic, data_range=2.0, mask=mask),
        "ssim": metrics.ssim(synthetic, real, data_range=2.0, mask=mask),
        "mutual_information": metrics.mutual_information(synthetic, real, bins=64, mask=mask),
    }


def score_pairs(models: dict[str, tuple[keras.Model, Sequence[int]]], pairs: Sequence[tuple[Path, Path]]) -> list[dict]:
    """Per-pair and mean scores of translators on (A, B) test pairs (see :func:`evaluate_run`).

    Args:
        models: direction (``A2B``/``B2A``) -> (generator, model shape); missing directions are skipped.
        pairs: (path A, path B) NIfTI pairs.

    Returns:
        Rows ``file, direction, mae, psnr, ssim, mutual_information`` plus one ``mean`` row per direction.
    """
    from tfmedgan.io.nifti import check_pair

    rows: list[dict] = []
    for path_a, path_b in pairs:
        volume_a, volume_b = read_volume(path_a), read_volume(path_b)
        check_pair(volume_a, volume_b)
        for direction, source, target in (("A2B", volume_a, volume_b), ("B2A", volume_b, volume_a)):
            if direction not in models:
                continue
            model, shape = models[direction]
            synthetic = translate_volume(model, source.data, shape)
            target_shape = tuple(max(s, m) for s, m in zip(target.shape, shape))
            padded, padding = pad_or_crop_center(target.data, target_shape)
            real = undo_center_pad(scale_to_unit_range(padded), padding)
            scores = score_volume(synthetic, real, target.data > 0)
            rows.append({"file": source.name, "direction": direction, **scores})
    for direction in models:
        selected = [row for row in rows if row["direction"] == direction]
        if selected:
            rows.append({"file": "mean", "direction": direction,
                         **{k: float(np.mean([row[k] for row in selected])) for k in METRIC_COLUMNS}})
    return rows


def evaluate_run(
    run_dir: str | Path, test_dir: str | Path | None = None, output: str | Path | None = None
) -> tuple[list[dict], Path]:
    """Score a trained ``cyclegan3d`` run on ``testA``/``testB`` and write a CSV.

    For every test pair (a, b): synthetic B = G_A2B(a) is compared with b and synthetic A =
    G_B2A(b) with a. Both real and synthetic volumes are on the training scale (per-volume
    min-max to [-1, 1] after centre padding to the model shape, padding removed), metrics are
    taken inside the brain mask ``real > 0`` (original intensities) with data range 2.
    Rows: file, direction, mae, psnr, ssim, mutual_information (nats, 64 bins), plus one ``mean``
    row per direction.

    Args:
        run_dir: The run directory.
        test_dir: Folder holding ``testA``/``testB`` (default: the run's data_dir).
        output: CSV path (default ``RUN_DIR/evaluation.csv``).

    Returns:
        ``(rows, csv_path)``.
    """
    from tfmedgan.data.nifti import paired_files

    run_dir = Path(run_dir)
    values = read_config(run_dir / "config.json")
    test_dir = Path(test_dir or values.get("data_dir", ""))
    pairs = paired_files(test_dir, "test", paired=True)
    models = {direction: load_translator(run_dir, direction) for direction in DIRECTIONS}
    rows = score_pairs(models, pairs)
    path = Path(output) if output else run_dir / "evaluation.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["file", "direction", *METRIC_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return rows, path
