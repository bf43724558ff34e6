"""Instance normalisation: per channel (standard) or per slice of the last spatial axis."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmedgan.errors import TfmedganError

AXIS_MODES = ("channel", "zslice")
EPSILON_MODES = ("variance", "std")


def standardise(
    inputs: tf.Tensor,
    axes: list[int],
    epsilon: float,
    epsilon_mode: str = "variance",
    output_dtype: tf.DType | str = tf.float32,
) -> tf.Tensor:
    """``(x - mean) * k`` over ``axes`` (statistics in float32), whose gradient keeps only its output.

    ``k`` is ``1 / sqrt(variance + epsilon)`` (``epsilon_mode="variance"``) or
    ``1 / (std + epsilon)`` (``"std"``). Automatic differentiation of the plain expression would
    keep the float32 centred values for the backward pass and hold several full-size float32
    temporaries at once; the closed-form gradient used here,
    ``dx = k (dy - mean(dy)) - c y mean(dy y)`` with ``c = k`` (variance mode) or ``1 / std``
    (std mode; 0 where the variance is under its 1e-12 floor), needs only the output ``y``,
    which the next layer (an activation) keeps anyway. Under mixed precision ``y`` is kept in
    ``output_dtype``, so the gradient is computed from the bfloat16/float16 output.

    Args:
        inputs: Tensor of any float dtype.
        axes: Axes of the statistics (the spatial axes, per sample and channel).
        epsilon: Stabiliser, see ``epsilon_mode``.
        epsilon_mode: ``"variance"`` or ``"std"``.
        output_dtype: dtype of the result.

    Returns:
        The standardised tensor in ``output_dtype``.
    """
    output_dtype = tf.as_dtype(output_dtype)

    @tf.custom_gradient
    def forward(values):
        values32 = tf.cast(values, tf.float32)
        mean = tf.reduce_mean(values32, axis=axes, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(values32, mean), axis=axes, keepdims=True)
        if epsilon_mode == "std":
            # keras-contrib: (x - mean) / (std + epsilon); the floor keeps sqrt's gradient finite
            # on constant inputs and does not change values above 1e-12
            std = tf.sqrt(tf.maximum(variance, 1e-12))
            scale = 1.0 / (std + epsilon)
            curvature = tf.where(variance > 1e-12, 1.0 / std, 0.0)
        else:
            scale = tf.math.rsqrt(variance + epsilon)
            curvature = scale
        outputs = tf.cast((values32 - mean) * scale, output_dtype)

        def gradient(upstream):
            upstream = tf.cast(upstream, tf.float32)
            kept = tf.cast(outputs, tf.float32)
            mean_upstream = tf.reduce_mean(upstream, axis=axes, keepdims=True)
            projection = tf.reduce_mean(upstream * kept, axis=axes, keepdims=True)
            return tf.cast(scale * (upstream - mean_upstream) - curvature * projection * kept, values.dtype)

        return outputs, gradient

    return forward(inputs)


@keras.saving.register_keras_serializable(package="tfmedgan")
class InstanceNormalization(keras.layers.Layer):
    """Instance normalisation of channels-last 2D or 3D tensors, with two choices of axis.

    ``axis_mode="channel"`` is the usual instance normalisation: for each sample and each channel,
    the values are normalised over all spatial axes, then scaled and shifted by a learned
    ``gamma``/``beta`` of shape ``(channels,)``.

    ``axis_mode="zslice"`` reproduces the seed-000 network (DCAN-Labs/MR-Image-Translation,
    ``CycleGAN_3D.py``), which called keras-contrib's ``InstanceNormalization(axis=3)`` on 5-D
    tensors. Axis 3 of ``(batch, x, y, z, channels)`` is the third spatial axis, so for each sample
    and each Z index the values are normalised over ``(x, y, channels)`` and ``gamma``/``beta`` have
    the length of Z at that layer (156 and 78 in the shipped weights). In general the kept axis is
    the last spatial axis (axis ``rank - 2``); its size must be known when the layer is built.

    ``epsilon_mode`` selects where ``epsilon`` enters: ``"variance"`` divides by
    ``sqrt(variance + epsilon)`` (tf.nn / tensorflow-addons / Keras GroupNormalization);
    ``"std"`` divides by ``std + epsilon``, which is what keras-contrib did and therefore what the
    seed-000 weights were trained with. Statistics are population statistics computed in float32
    (also under mixed precision); the result is cast back to the compute dtype. The gradient is
    the closed form of :func:`standardise`, which keeps only the layer's output for the backward
    pass instead of the float32 centred values and temporaries.

    Args:
        axis_mode: ``"channel"`` or ``"zslice"`` (see above).
        epsilon: Small constant for numerical stability (seed 000: 1e-5).
        epsilon_mode: ``"variance"`` or ``"std"`` (see above).
        center: Add the learned offset ``beta``.
        scale: Multiply by the learned scale ``gamma``.
        beta_initializer: Initializer for ``beta``.
        gamma_initializer: Initializer for ``gamma``.
        beta_regularizer: Optional regularizer for ``beta``.
        gamma_regularizer: Optional regularizer for ``gamma``.
        **kwargs: Standard Keras layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> norm = InstanceNormalization(axis_mode="zslice", epsilon_mode="std")
        >>> outputs = norm(keras.ops.ones((1, 8, 8, 6, 4)))
        >>> tuple(norm.gamma.shape)
        (6,)

    Reference:
        Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
        Stylization", arXiv:1607.08022 (2016); keras-contrib ``InstanceNormalization`` (2017).
    """

    def __init__(
        self,
        axis_mode: str = "channel",
        epsilon: float = 1e-5,
        epsilon_mode: str = "variance",
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if axis_mode not in AXIS_MODES:
            raise TfmedganError(f"axis_mode must be one of {AXIS_MODES}, got {axis_mode!r}")
        if epsilon_mode not in EPSILON_MODES:
            raise TfmedganError(
                f"epsilon_mode must be one of {EPSILON_MODES}, got {epsilon_mode!r}"
            )
        self.axis_mode = axis_mode
        self.epsilon = float(epsilon)
        self.epsilon_mode = epsilon_mode
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.gamma = None
        self.beta = None

    def _parameter_axis(self, rank: int) -> int:
        return rank - 1 if self.axis_mode == "channel" else rank - 2

    def build(self, input_shape):
        rank = len(input_shape)
        if rank < 3:
            raise TfmedganError(
                f"InstanceNormalization needs a (batch, spatial..., channels) tensor, got shape "
                f"{tuple(input_shape)}"
            )
        if self.axis_mode == "zslice" and rank < 4:
            raise TfmedganError(
                f"axis_mode='zslice' needs at least 2 spatial axes, got shape {tuple(input_shape)}"
            )
        axis = self._parameter_axis(rank)
        size = input_shape[axis]
        if size is None:
            what = "channel axis" if self.axis_mode == "channel" else "last spatial (Z) axis"
            raise TfmedganError(
                f"InstanceNormalization(axis_mode={self.axis_mode!r}) needs a static {what} "
                f"(axis {axis}), got shape {tuple(input_shape)}"
            )
        self._rank = rank
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=(size,),
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(size,),
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
            )
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={axis: size})
        super().build(input_shape)

    def call(self, inputs):
        rank = len(inputs.shape)
        axis = self._parameter_axis(rank)
        reduction_axes = [index for index in range(1, rank) if index != axis]
        affine = self.scale or self.center
        normalised = standardise(inputs, reduction_axes, self.epsilon, self.epsilon_mode,
                                 tf.float32 if affine else self.compute_dtype)
        if not affine:
            return normalised
        broadcast_shape = [1] * rank
        broadcast_shape[axis] = -1
        if self.scale:
            normalised = normalised * tf.reshape(tf.cast(self.gamma, tf.float32), broadcast_shape)
        if self.center:
            normalised = normalised + tf.reshape(tf.cast(self.beta, tf.float32), broadcast_shape)
        return tf.cast(normalised, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "axis_mode": self.axis_mode,
                "epsilon": self.epsilon,
                "epsilon_mode": self.epsilon_mode,
                "center": self.center,
                "scale": self.scale,
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
                "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfmedgan")
class RunningStatisticsBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that always normalises with its moving statistics.

    Reproduces a PyTorch ``BatchNorm`` module kept in ``.eval()`` mode during training: whatever
    ``training`` flag is passed, the layer uses ``moving_mean`` / ``moving_variance`` (which
    therefore never change) while ``gamma`` and ``beta`` stay trainable.

    Args:
        **kwargs: as ``keras.layers.BatchNormalization``.

    Example:
        >>> layer = RunningStatisticsBatchNormalization(epsilon=1e-5, momentum=0.9)

    Reference:
        The microCT CycleGAN's discriminators (pvilla/3DCycleGaN), whose BatchNorm layers stayed
        in eval mode while training.
    """

    def call(self, inputs, training=None, mask=None):  # noqa: D102 - see class docstring
        return super().call(inputs, training=False, mask=mask)

    def get_config(self) -> dict:
        """Return the layer configuration (same arguments as ``BatchNormalization``)."""
        return super().get_config()
