"""Keep an image's background in a translated image."""

from __future__ import annotations

import keras

from tfmedgan.errors import TfmedganError


@keras.saving.register_keras_serializable(package="tfmedgan")
class InputBackgroundMask(keras.layers.Layer):
    """Set a translation's output to the background value wherever its input is background.

    Called on ``[image, translation]``. A voxel where every channel of ``image`` is at or below
    ``background + tolerance`` is background; there every channel of the result is
    ``background``, elsewhere the result is ``translation``. Skull-stripped MRI scaled to [-1, 1]
    has its background at exactly -1, so a generator wrapped in this layer no longer has to draw
    the sharp step from the brain's edge to the background: it only predicts the foreground, and
    no gradient reaches it from the background. The layer has no weights; a generator with it loads the weights of one
    without. Works on 2D and 3D channels-last tensors alike. The result has ``translation``'s
    dtype.

    Args:
        background: The background value of the scaled input (and of the output).
        tolerance: Input values up to ``background + tolerance`` count as background.
        **kwargs: Standard Keras layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> image = keras.ops.convert_to_tensor([[[-1.0], [0.5]]])
        >>> translation = keras.ops.convert_to_tensor([[[0.3], [0.2]]])
        >>> keras.ops.convert_to_numpy(InputBackgroundMask()([image, translation])).ravel().tolist()
        [-1.0, 0.2]

    Reference:
        Not in the seed-000 code; masking a synthesis network's output with the input's
        foreground is common practice in MR contrast synthesis.
    """

    def __init__(self, background: float = -1.0, tolerance: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if not tolerance >= 0.0:
            raise TfmedganError(f"tolerance must be >= 0, got {tolerance!r}")
        self.background = float(background)
        self.tolerance = float(tolerance)

    def call(self, inputs):
        image, translation = inputs
        foreground = keras.ops.any(
            keras.ops.greater(keras.ops.cast(image, "float32"), self.background + self.tolerance), axis=-1, keepdims=True
        )
        fill = keras.ops.cast(self.background, translation.dtype)
        return keras.ops.where(foreground, translation, fill)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"background": self.background, "tolerance": self.tolerance})
        return config
