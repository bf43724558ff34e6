"""Streaming ``tf.data`` pipeline for 2D slices stored as PNG or JPEG files.

Files are listed once (recursively, several folders concatenated as the seed-003 driver did with
the OASIS train/test/validate folders), checked before training (readable, one common size), and
then decoded in parallel batch by batch: the set is never held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfmedgan.errors import TfmedganError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_run_directory(folder: Path) -> bool:
    """Whether ``folder`` is a tfmedgan run directory (a config.json beside a checkpoints/ folder)."""
    return (folder / "config.json").is_file() and (folder / "checkpoints").is_dir()


def _images_below(folder: Path) -> list[Path]:
    # os.walk so whole run directories are pruned, not only filtered out file by file; like
    # Path.rglob on Python 3.11 it does not descend into symlinked folders
    found = []
    for root, directories, names in os.walk(folder):
        here = Path(root)
        directories[:] = [d for d in directories if not is_run_directory(here / d)]
        found.extend(
            here / name
            for name in names
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and (here / name).is_file()
        )
    return sorted(found)


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    """All PNG/JPEG files below ``folders`` (recursive), in a stable sorted order per folder.

    Run directories below a data folder (see :func:`is_run_directory`) and everything inside them
    are skipped, so the samples and figures of a run written into the data are never trained on.
    """
    if not folders:
        raise TfmedganError("no data folder given")
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise TfmedganError(f"data folder {folder} does not exist")
        found = _images_below(folder)
        if not found:
            raise TfmedganError(f"data folder {folder} holds no .png/.jpg images")
        files.extend(found)
    return files


def check_output_outside(data_dirs: Sequence[str | Path], output_dir: str | Path) -> None:
    """Refuse an output folder equal to or inside one of the data folders.

    Runs written there would be searched with the data, so the next training would see its own
    samples (or stop on mixed image sizes). Paths are compared after resolving symlinks and ``..``.

    Raises:
        TfmedganError: one line naming both folders.
    """
    output = Path(output_dir).resolve()
    for data in data_dirs:
        resolved = Path(data).resolve()
        if output == resolved or resolved in output.parents:
            raise TfmedganError(
                f"output folder {output_dir} is inside the data folder {data}: runs written there would be "
                "read as training images; choose an OUTPUT_DIR outside the data"
            )


DECODABLE_FORMATS = {"PNG", "JPEG"}
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I"}


def check_images(files: Sequence[Path]) -> tuple[int, int, int]:
    """Check every file is a readable PNG/JPEG of one common size and bit depth.

    Reads headers and verifies each file's integrity with Pillow, which is fast (no full decode of
    pixel data into arrays) and catches truncated or corrupt files, and files whose content is not
    what their name says, before training starts.

    Returns:
        (height, width, bits): bits is 8, or 16 for 16-bit grayscale PNGs.
    """
    from PIL import Image, UnidentifiedImageError

    size = bits = None
    for path in files:
        try:
            with Image.open(path) as image:
                kind, mode, current = image.format, image.mode, image.size
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise TfmedganError(f"cannot read image {path}: {error}") from None
        if kind not in DECODABLE_FORMATS:
            raise TfmedganError(f"{path} is a {kind} file, not PNG or JPEG")
        depth = 16 if mode in SIXTEEN_BIT_MODES else 8
        if size is None:
            size, bits, first = current, depth, path
        elif current != size:
            raise TfmedganError(
                f"mixed image sizes: {path} is {current[0]}x{current[1]}, {first} is {size[0]}x{size[1]}"
            )
        elif depth != bits:
            raise TfmedganError(f"mixed bit depths: {path} is {depth}-bit, {first} is {bits}-bit")
    assert size is not None and bits is not None
    return size[1], size[0], bits


def decode_image(path: tf.Tensor, resolution: int, channels: int, bits: int = 8) -> tf.Tensor:
    """Read, decode, resize (bilinear) and scale one image to [-1, 1], shape [res, res, channels].

    ``bits=16`` decodes 16-bit PNGs at full depth (0..65535) instead of squeezing them to 8 bits.
    """
    contents = tf.io.read_file(path)
    if bits == 16:
        image = tf.io.decode_png(contents, channels=channels, dtype=tf.uint16)
    else:
        image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    image = tf.cond(
        tf.logical_and(tf.equal(shape[0], resolution), tf.equal(shape[1], resolution)),
        lambda: image,
        lambda: tf.image.resize(image, (resolution, resolution), method="bilinear"),
    )
    image = tf.ensure_shape(image, (resolution, resolution, channels))
    half = 127.5 if bits == 8 else 32767.5
    return image / half - 1.0


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled file order of one epoch, a pure function of (seed, epoch) so resumes repeat it."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def image_dataset(
    files: Sequence[Path],
    resolution: int,
    channels: int,
    batch: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = False,
    bits: int = 8,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """One epoch of batches [B, res, res, channels] in [-1, 1], decoded in parallel, prefetched.

    ``skip_batches`` drops the first batches before decoding (a run resumed mid-epoch)."""
    paths = np.array([str(p) for p in files])
    if shuffle:
        paths = paths[epoch_order(len(paths), seed, epoch)]
    dataset = tf.data.Dataset.from_tensor_slices(paths[skip_batches * batch :])
    dataset = dataset.map(
        lambda p: decode_image(p, resolution, channels, bits), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.batch(batch, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def load_images(files: Sequence[Path], resolution: int, channels: int, bits: int = 8) -> np.ndarray:
    """Decode a (small) list of files to one array [N, res, res, channels] in [-1, 1]."""
    dataset = image_dataset(files, resolution, channels, batch=256, shuffle=False, bits=bits)
    return np.concatenate([b.numpy() for b in dataset], axis=0)
