"""PatchGAN discriminator (seed 000 and deeper variants), 2D or 3D.

Layout::

    conv 4 stride 2 (base_filters) -> LeakyReLU 0.2            (no normalisation)
    (n_layers - 1) x [conv 4 stride 2 (filters x2, at most x8) -> IN -> LeakyReLU 0.2]
    conv 4 stride 1 (1 filter), linear, float32               (no sigmoid: LSGAN)

All convolutions use 'same' padding and a bias. ``n_layers=1`` is the seed-000 discriminator
(DCAN-Labs/MR-Image-Translation ``CycleGAN_3D.py``: 8,257 parameters, a (78, 94, 78, 1) patch map
for a (156, 188, 156, 1) input); ``n_layers=3`` is the deeper one of ``GAN_3D.py``.
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.normalization import InstanceNormalization

NORM_CHOICES = ("channel", "zslice", None)


def build_patchgan_discriminator(
    input_shape: Sequence[int | None] | None = None,
    base_filters: int = 64,
    n_layers: int = 1,
    spatial_dims: int | None = None,
    norm: str | None = "channel",
    norm_epsilon: float = 1e-5,
    norm_epsilon_mode: str | None = None,
    name: str = "patchgan_discriminator",
) -> keras.Model:
    """Build a PatchGAN discriminator returning a map of unbounded real/fake scores.

    Args:
        input_shape: ``(x, y, channels)`` or ``(x, y, z, channels)``; spatial sizes may be None.
            Default: ``(None,) * spatial_dims + (1,)``.
        base_filters: Filters of the first convolution; doubled per further layer (capped at
            8 x base_filters).
        n_layers: Number of stride-2 convolution blocks (>= 1). 1 = the seed-000 discriminator.
        spatial_dims: 2 or 3; inferred from ``input_shape`` when given (default 3).
        norm: Normalisation of blocks 2..n_layers: ``"channel"`` (instance norm), ``"zslice"``
            (the original's per-Z-slice norm, needs a static last spatial size) or None. The
            first block is never normalised, as in the original.
        norm_epsilon: Instance-norm epsilon (original: 1e-5).
        norm_epsilon_mode: ``"std"`` or ``"variance"``; default ``"std"`` for zslice and
            ``"variance"`` for channel (see :class:`tfmedgan.layers.InstanceNormalization`).
        name: Model name.

    Returns:
        A functional ``keras.Model`` whose float32 output has spatial size
        ``ceil(size / 2**n_layers)`` per axis and one channel.

    Example:
        >>> discriminator = build_patchgan_discriminator((16, 16, 16, 1), base_filters=8)
        >>> tuple(discriminator.output_shape)
        (None, 8, 8, 8, 1)
    """
    if input_shape is None:
        dims = 3 if spatial_dims is None else int(spatial_dims)
        input_shape = (None,) * dims + (1,)
    input_shape = tuple(None if size is None else int(size) for size in input_shape)
    inferred = len(input_shape) - 1
    if spatial_dims is not None and int(spatial_dims) != inferred:
        raise TfmedganError(f"spatial_dims={spatial_dims} does not match input_shape {input_shape}")
    if inferred not in (2, 3):
        raise TfmedganError(
            f"input_shape {input_shape} must be (x, y, channels) or (x, y, z, channels)"
        )
    if input_shape[-1] is None:
        raise TfmedganError(f"input_shape {input_shape} needs a static channel count")
    if n_layers < 1 or base_filters < 1:
        raise TfmedganError(f"n_layers ({n_layers}) and base_filters ({base_filters}) must be >= 1")
    if norm not in NORM_CHOICES:
        raise TfmedganError(f"norm must be one of {NORM_CHOICES}, got {norm!r}")
    if norm == "zslice" and n_layers > 1 and input_shape[-2] is None:
        raise TfmedganError(
            f"norm='zslice' needs a static last spatial axis, got input_shape {input_shape}"
        )
    if norm_epsilon_mode is None:
        norm_epsilon_mode = "std" if norm == "zslice" else "variance"
    convolution = keras.layers.Conv3D if inferred == 3 else keras.layers.Conv2D

    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    for layer in range(1, n_layers + 1):
        filters = base_filters * min(2 ** (layer - 1), 8)
        x = convolution(filters, 4, strides=2, padding="same", name=f"block{layer}_conv")(x)
        if layer > 1 and norm is not None:
            x = InstanceNormalization(
                axis_mode=norm,
                epsilon=norm_epsilon,
                epsilon_mode=norm_epsilon_mode,
                name=f"block{layer}_norm",
            )(x)
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"block{layer}_lrelu")(x)
    outputs = convolution(1, 4, strides=1, padding="same", dtype="float32", name="patch_logits")(x)
    return keras.Model(inputs, outputs, name=name)
