"""Learned per-channel scaling of channels-last tensors."""

from __future__ import annotations

import keras

from tfmedgan.errors import TfmedganError


@keras.saving.register_keras_serializable(package="tfmedgan")
class ChannelScale(keras.layers.Layer):
    """Multiply every channel by its own learned factor: ``y[..., c] = x[..., c] * w[c]``.

    The weight has shape ``(channels,)`` and broadcasts over the batch and all spatial axes, so
    the same layer serves 2D and 3D tensors. It is the PyTorch pattern
    ``x * nn.Parameter(torch.randn(1, C, 1, 1[, 1]))`` of the SIT generator's dense shortcut
    blocks, whose factors are drawn from N(0, 1) and left untouched by the network-wide
    initialisation; ``initializer="random_normal_unit"`` (the default) reproduces that.

    Args:
        initializer: Initializer of the factors; ``"random_normal_unit"`` means N(0, 1),
            anything else is passed to ``keras.initializers.get``.
        regularizer: Optional regularizer of the factors.
        **kwargs: Standard Keras layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> scale = ChannelScale(initializer="ones")
        >>> tuple(scale(keras.ops.ones((1, 4, 4, 4, 8))).shape)
        (1, 4, 4, 4, 8)
        >>> tuple(scale.scale.shape)
        (8,)

    Reference:
        Wang et al., "Scout-Identify-Transform" modality-translation network as implemented in
        Linus4world/3D-MRI-style-transfer (``DenseShortut`` weighted sums), used by seed 001.
    """

    def __init__(self, initializer="random_normal_unit", regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer_name = initializer if isinstance(initializer, str) else None
        if initializer == "random_normal_unit":
            self.initializer = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
        else:
            self.initializer = keras.initializers.get(initializer)
        self.regularizer = keras.regularizers.get(regularizer)
        self.scale = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise TfmedganError(f"ChannelScale needs a static channel axis, got shape {tuple(input_shape)}")
        self.scale = self.add_weight(
            name="scale", shape=(int(channels),), initializer=self.initializer, regularizer=self.regularizer
        )
        super().build(input_shape)

    def call(self, inputs):
        return inputs * keras.ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "initializer": self.initializer_name
                if self.initializer_name == "random_normal_unit"
                else keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
            }
        )
        return config
