"""Streaming ``tf.data`` pipeline for 2D slices stored as PNG or JPEG files.

Files are listed once (recursively, several folders concatenated as the seed-003 driver did with
the OASIS train/test/validate folders), checked before training (readable, one common size), and
then decoded in parallel batch by batch: the set is never held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfmedgan.errors import TfmedganError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    """All PNG/JPEG files below ``folders`` (recursive), in a stable sorted order per folder."""
    if not folders:
        raise TfmedganError("no data folder given")
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise TfmedganError(f"data folder {folder} does not exist")
        found = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not found:
            raise TfmedganError(f"data folder {folder} holds no .png/.jpg images")
        files.extend(found)
    return files


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
