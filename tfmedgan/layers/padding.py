"""Reflection padding for 2D and 3D channels-last tensors."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfmedgan.errors import TfmedganError


def _normalise_padding(padding: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """Turn an int or a per-axis sequence into one symmetric amount per spatial axis."""
    if isinstance(padding, int):
        amounts = (padding,) * spatial_dims
    else:
        amounts = tuple(int(amount) for amount in padding)
    if len(amounts) != spatial_dims:
        raise TfmedganError(
            f"padding {padding!r} must be one int or {spatial_dims} ints (one per spatial axis)"
        )
    if any(amount < 0 for amount in amounts):
        raise TfmedganError(f"padding {padding!r} must not be negative")
    return amounts


@keras.saving.register_keras_serializable(package="tfmedgan")
class ReflectionPadding(keras.layers.Layer):
    """Symmetric reflection padding over the spatial axes of a channels-last tensor.

    Pads every spatial axis by the same amount before and after, mirroring the values without
    repeating the border voxel (``numpy.pad(mode="reflect")``, ``tf.pad(mode="REFLECT")``). The
    same layer serves 2D images ``(batch, height, width, channels)`` and 3D volumes
    ``(batch, x, y, z, channels)``. Each padded axis must be longer than its padding amount.

    Args:
        padding: Voxels added on each side; one int for all spatial axes or one int per axis.
        spatial_dims: Number of spatial axes, 2 or 3.
        **kwargs: Standard Keras layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> layer = ReflectionPadding(3, spatial_dims=3)
        >>> tuple(layer(keras.ops.zeros((1, 16, 16, 16, 1))).shape)
        (1, 22, 22, 22, 1)

    Reference:
        Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
        Networks", ICCV 2017 (ResNet generator with reflection padding); the seed-000 code
        (DCAN-Labs/MR-Image-Translation, ``ReflectionPadding3D``) pads by 3 on axes 1-3.
    """

    def __init__(self, padding: int | Sequence[int] = 1, spatial_dims: int = 3, **kwargs):
        super().__init__(**kwargs)
        if spatial_dims not in (2, 3):
            raise TfmedganError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = int(spatial_dims)
        self.padding = _normalise_padding(padding, self.spatial_dims)
        self.input_spec = keras.layers.InputSpec(ndim=self.spatial_dims + 2)

    def build(self, input_shape):
        for axis, amount in enumerate(self.padding, start=1):
            size = input_shape[axis]
            if size is not None and size <= amount:
                raise TfmedganError(
                    f"reflection padding {amount} needs spatial axis {axis} longer than "
                    f"{amount}, got size {size}"
                )
        super().build(input_shape)

    def call(self, inputs):
        paddings = [[0, 0]] + [[amount, amount] for amount in self.padding] + [[0, 0]]
        return tf.pad(inputs, paddings, mode="REFLECT")

    def compute_output_shape(self, input_shape):
        output_shape = list(input_shape)
        for axis, amount in enumerate(self.padding, start=1):
            if output_shape[axis] is not None:
                output_shape[axis] = output_shape[axis] + 2 * amount
        return tuple(output_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"padding": list(self.padding), "spatial_dims": self.spatial_dims})
        return config
