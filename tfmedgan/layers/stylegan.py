"""Weightless layers of the seed-004 simplified residual StyleGAN2.

The seed-004 project (OASIS brains, "StyleGAN2") defines three small custom layers that are kept
here as registered, serialisable Keras 3 layers:

* :class:`PixelNormalization` -- ``x * rsqrt(mean(x**2, axis) + eps)``.
* :class:`MinibatchStandardDeviation` -- appends the mean per-group standard deviation of the
  batch as one extra channel (the intent) or one extra image row (the original code).
* :class:`WeightedSum` -- ``(1 - alpha) * a + alpha * b`` with ``alpha`` given as a tensor input,
  so a compiled step does not retrace when the fade-in value changes.

All three compute their statistics in float32 and return the dtype of their first input, so they
work under a ``mixed_bfloat16`` or ``mixed_float16`` policy.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from tfmedgan.errors import TfmedganError

__all__ = ["PixelNormalization", "MinibatchStandardDeviation", "WeightedSum"]

MINIBATCH_STD_MODES = ("channel", "row")


@keras.saving.register_keras_serializable(package="tfmedgan")
class PixelNormalization(keras.layers.Layer):
    """Pixel-wise feature normalisation: ``x * rsqrt(mean(x**2, axis) + epsilon)``.

    The layer has no weights. With the default ``axis=-1`` each feature vector (the channels of a
    pixel for NHWC maps, the whole vector for a Dense output) is scaled to unit root mean square,
    which is what ProGAN/StyleGAN pixel normalisation intends.

    The seed-004 original used ``axis=1``: on a Dense output ``[N, D]`` that is the whole vector,
    but on an NHWC feature map it is the **height** axis, so each (sample, column, channel) column
    of pixels is normalised over the image rows. Pass ``axis=1`` to reproduce it.

    Args:
        axis: Axis (or tuple of axes) over which the mean square is taken. Default -1 (channels).
        epsilon: Small constant added to the mean square before the reciprocal square root.
        **kwargs: Standard Keras layer keyword arguments (``name``, ``dtype`` ...).

    Example:
        >>> import numpy as np
        >>> layer = PixelNormalization()
        >>> y = layer(np.ones((2, 4, 4, 8), "float32") * 3.0)
        >>> float(y[0, 0, 0, 0])
        1.0

    Reference:
        Karras et al., "Progressive Growing of GANs for Improved Quality, Stability, and
        Variation", ICLR 2018, section 4.2 (pixelwise feature vector normalisation).
    """

    def __init__(self, axis: int | Sequence[int] = -1, epsilon: float = 1e-8, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            axis = tuple(int(a) for a in axis)
        else:
            axis = int(axis)
        if float(epsilon) < 0:
            raise TfmedganError(f"PixelNormalization: epsilon must be >= 0, got {epsilon}")
        self.axis = axis
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        mean_square = ops.mean(ops.square(x), axis=self.axis, keepdims=True)
        outputs = x * ops.rsqrt(mean_square + self.epsilon)
        return ops.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        config.update({"axis": axis, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="tfmedgan")
class MinibatchStandardDeviation(keras.layers.Layer):
    """Append the minibatch standard deviation as one extra feature map (or row).

    For an NHWC input ``x`` of shape ``[N, H, W, C]``:

    1. ``G = min(group_size, N)``; ``x`` is reshaped to ``[G, N / G, H, W, C]`` so sample ``n``
       is group member ``n // (N / G)`` and belongs to the set ``n % (N / G)``.
    2. The population standard deviation over the ``G`` members, ``sqrt(var + 1e-8)``, is taken
       for every set, pixel and channel, then averaged over H, W and C to one scalar per set.
    3. Every sample gets the scalar of its set, appended as:

       * ``mode="channel"`` (default, the intent of the original docstring): one extra
         channel, output ``[N, H, W, C + 1]``;
       * ``mode="row"`` (what the original seed-004 code actually did, because it concatenated
         on axis 1 of an NHWC tensor): one extra image row, output ``[N, H + 1, W, C]``.

    The batch size must be divisible by ``min(group_size, N)``; a batch that is not raises
    :class:`~tfmedgan.errors.TfmedganError` when its size is known (eager calls and traced
    functions with a fixed batch). Use ``drop_remainder=True`` on the dataset or a batch size
    that is a multiple of ``group_size``.

    Under a ``tf.distribute`` strategy with several replicas each replica sees only its share of
    the batch, so the groups and their statistic would be formed per replica (different groups,
    and a different statistic, from one device with the same global batch). With
    ``synchronized=True`` the layer all-gathers the inputs of every replica in replica order,
    forms the groups of the GLOBAL batch exactly as one device does, and keeps its own share of
    the result (``N`` above is then the global batch; the gradient flows back through the
    gather). Outside a multi-replica context it computes locally. The cost is one all-gather of
    the layer's input per call.

    Args:
        group_size: Maximum number of samples per group (4 in the original).
        mode: ``"channel"`` or ``"row"``, see above.
        epsilon: Added to the variance before the square root (1e-8 in the original).
        synchronized: Form the groups over the global batch of all replicas (see above).
        **kwargs: Standard Keras layer keyword arguments.

    Example:
        >>> import numpy as np
        >>> x = np.random.normal(size=(8, 4, 4, 16)).astype("float32")
        >>> MinibatchStandardDeviation()(x).shape
        TensorShape([8, 4, 4, 17])
        >>> MinibatchStandardDeviation(mode="row")(x).shape
        TensorShape([8, 5, 4, 16])

    Reference:
        Karras et al., "Progressive Growing of GANs for Improved Quality, Stability, and
        Variation", ICLR 2018, section 3 (minibatch standard deviation).
    """

    def __init__(
        self,
        group_size: int = 4,
        mode: str = "channel",
        epsilon: float = 1e-8,
        synchronized: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if int(group_size) < 1:
            raise TfmedganError(
                f"MinibatchStandardDeviation: group_size must be >= 1, got {group_size}"
            )
        if mode not in MINIBATCH_STD_MODES:
            raise TfmedganError(
                f"MinibatchStandardDeviation: mode must be one of {MINIBATCH_STD_MODES}, "
                f"got {mode!r}"
            )
        self.group_size = int(group_size)
        self.mode = mode
        self.epsilon = float(epsilon)
        self.synchronized = bool(synchronized)

    def build(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) != 4:
            raise TfmedganError(
                "MinibatchStandardDeviation: expected an NHWC input of rank 4, "
                f"got shape {tuple(input_shape)}"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        context, replicas = None, 1
        if self.synchronized:
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            local_batch = ops.shape(inputs)[0]
            gathered = tf.ensure_shape(context.all_gather(inputs, axis=0), [None, *inputs.shape[1:]])
            per_sample = self._per_sample_statistic(gathered)
            start = ops.cast(context.replica_id_in_sync_group, "int32") * local_batch
            per_sample = ops.slice(per_sample, (start, 0, 0, 0), (local_batch, 1, 1, 1))
        else:
            per_sample = self._per_sample_statistic(inputs)
        per_sample = ops.cast(per_sample, inputs.dtype)
        dynamic_shape = ops.shape(inputs)
        batch, height, width = dynamic_shape[0], dynamic_shape[1], dynamic_shape[2]
        channels = inputs.shape[-1]
        if self.mode == "channel":
            extra = ops.broadcast_to(per_sample, (batch, height, width, 1))
            return ops.concatenate([inputs, extra], axis=-1)
        extra = ops.broadcast_to(per_sample, (batch, 1, width, channels))
        return ops.concatenate([inputs, extra], axis=1)

    def _per_sample_statistic(self, inputs: Any) -> Any:
        """The float32 statistic of every sample's set, shape [N, 1, 1, 1]."""
        static_batch = inputs.shape[0]
        if static_batch is not None:
            group = min(self.group_size, static_batch)
            if static_batch % group != 0:
                raise TfmedganError(
                    f"MinibatchStandardDeviation: batch size {static_batch} is not divisible "
                    f"by the group size min({self.group_size}, {static_batch}) = {group}"
                )
        else:
            group = ops.minimum(self.group_size, ops.shape(inputs)[0])
        dynamic_shape = ops.shape(inputs)
        height, width = dynamic_shape[1], dynamic_shape[2]
        channels = inputs.shape[-1]

        x = ops.cast(inputs, "float32")
        grouped = ops.reshape(x, (group, -1, height, width, channels))  # [G, M, H, W, C]
        centred = grouped - ops.mean(grouped, axis=0, keepdims=True)
        variance = ops.mean(ops.square(centred), axis=0)  # [M, H, W, C]
        std = ops.sqrt(variance + self.epsilon)
        per_set = ops.mean(std, axis=(1, 2, 3), keepdims=True)  # [M, 1, 1, 1]
        # Sample n = g * M + m takes the value of set m: tile the sets G times along the batch.
        return ops.tile(per_set, (group, 1, 1, 1))  # [N, 1, 1, 1]

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        batch, height, width, channels = tuple(input_shape)
        if self.mode == "channel":
            return (batch, height, width, None if channels is None else channels + 1)
        return (batch, None if height is None else height + 1, width, channels)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"group_size": self.group_size, "mode": self.mode, "epsilon": self.epsilon,
             "synchronized": self.synchronized}
        )
        return config


@keras.saving.register_keras_serializable(package="tfmedgan")
class WeightedSum(keras.layers.Layer):
    """Fade-in merge ``(1 - alpha) * a + alpha * b`` with ``alpha`` as a tensor input.

    Called on ``[a, b, alpha]``. ``a`` and ``b`` have the same shape; ``alpha`` is a scalar, a
    tensor of shape ``[1]`` or ``[1, 1]`` (one value for the whole batch) or of shape
    ``[N, 1]`` (one value per sample, the form of a ``keras.Input(shape=(1,))``). It is
    broadcast over the non-batch axes of ``a``. Because alpha is data rather than a Python
    attribute, changing it never rebuilds the layer or retraces a ``tf.function``.

    ``b`` and ``alpha`` are cast to the dtype of ``a`` and the result has the dtype of ``a``,
    so the layer is safe under mixed precision. alpha is not clamped: like the original, values
    above 1 give a negative weight to ``a``.

    Args:
        **kwargs: Standard Keras layer keyword arguments.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((2, 4, 4, 3), "float32"); b = np.ones((2, 4, 4, 3), "float32")
        >>> float(WeightedSum()([a, b, np.array([[0.25], [0.25]], "float32")])[0, 0, 0, 0])
        0.25

    Reference:
        Karras et al., "Progressive Growing of GANs", ICLR 2018 (fade-in of new layers); the
        seed-004 project uses it to blend the residual and skip paths of its discriminator.
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise TfmedganError("WeightedSum: expected a list [a, b, alpha] of three tensors")
        first, second, alpha = inputs
        dtype = first.dtype
        second = ops.cast(second, dtype)
        alpha = ops.cast(alpha, dtype)
        rank = len(first.shape)
        alpha = ops.reshape(alpha, (-1,) + (1,) * (rank - 1))
        return (1.0 - alpha) * first + alpha * second

    def compute_output_shape(
        self, input_shape: Sequence[Sequence[int | None]]
    ) -> tuple[int | None, ...]:
        return tuple(input_shape[0])
