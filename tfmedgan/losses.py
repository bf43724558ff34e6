"""GAN losses as per-example tensors; reduce them with
:func:`tfmedgan.engine.distribute.average_loss` so they sum correctly across replicas."""

from __future__ import annotations

import tensorflow as tf


def _per_example(values: tf.Tensor) -> tf.Tensor:
    values = tf.cast(values, tf.float32)
    return tf.reduce_mean(tf.reshape(values, (tf.shape(values)[0], -1)), axis=1)


def bce_with_logits(logits: tf.Tensor, target: float) -> tf.Tensor:
    """Binary cross-entropy of logits against a constant label, per example."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.fill(tf.shape(logits), tf.constant(target, tf.float32))
    return _per_example(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def least_squares(outputs: tf.Tensor, target: float) -> tf.Tensor:
    """LSGAN loss (output - target)^2, per example."""
    return _per_example(tf.square(tf.cast(outputs, tf.float32) - target))


def wasserstein(critic: tf.Tensor, sign: float) -> tf.Tensor:
    """sign * critic output per example (sign -1 for real in the critic loss, +1 for fake)."""
    return _per_example(sign * tf.cast(critic, tf.float32))


def l1(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference per example."""
    return _per_example(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


def weighted_l1(a: tf.Tensor, b: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Mean of ``weights * |a - b|`` per example (``weights`` broadcasts against ``a``)."""
    return _per_example(tf.cast(weights, tf.float32) * tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


def squared_error(a: tf.Tensor, b: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
    """Mean of ``(a - b)^2`` per example, each voxel times ``weights`` if given (broadcast against ``a``).

    Its minimiser is the conditional mean, where L1's is the median: where the truth is ambiguous
    (a partial volume that may be bright CSF or a dim mixture with the background) the mean has
    the lower squared error, which PSNR measures.

    Example:
        >>> squared_error(tf.zeros((2, 4, 1)), tf.ones((2, 4, 1))).numpy().tolist()
        [1.0, 1.0]
    """
    error = tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))
    if weights is not None:
        error = tf.cast(weights, tf.float32) * error
    return _per_example(error)


def boundary_weights(image: tf.Tensor, weight: float, background: float = -1.0, tolerance: float = 1e-6) -> tf.Tensor:
    """Per-voxel loss weights that stress the foreground's outermost voxels.

    A voxel is background when every channel of ``image`` is at most ``background + tolerance``
    (the exact zeros of a skull-stripped volume scaled to [-1, 1], as
    :class:`~tfmedgan.layers.InputBackgroundMask` reads them). Foreground voxels with a background
    voxel among their 3^d neighbours get ``weight``, all others 1; each example's weights are then
    divided by their mean, so the loss keeps its scale.

    Args:
        image: channels-last batch, 2D (rank 4) or 3D (rank 5); usually the generator's input.
        weight: weight of the boundary voxels relative to the rest (1 = uniform).
        background: the background value.
        tolerance: values up to ``background + tolerance`` count as background.

    Returns:
        float32 weights of shape ``image.shape[:-1] + (1,)``, mean 1 per example.

    Example:
        >>> image = tf.constant([[[-1.0], [0.2], [0.5], [0.4]]])[..., None, :]  # 4 x 1 image
        >>> boundary_weights(image, 5.0)[0, :, 0, 0].numpy().tolist()
        [0.5, 2.5, 0.5, 0.5]
    """
    image = tf.cast(image, tf.float32)
    is_background = tf.cast(tf.reduce_all(image <= background + tolerance, axis=-1, keepdims=True), tf.float32)
    touches_background = tf.nn.max_pool(is_background, ksize=3, strides=1, padding="SAME") * (1.0 - is_background)
    weights = 1.0 + (float(weight) - 1.0) * touches_background
    mean = tf.reduce_mean(weights, axis=tf.range(1, tf.rank(weights)), keepdims=True)
    return tf.stop_gradient(weights / mean)


@tf.custom_gradient
def _absolute_difference(a: tf.Tensor, b: tf.Tensor):
    difference = a - b
    sign = tf.cast(tf.sign(difference), tf.int8)

    def gradient(upstream):
        upstream = upstream * tf.cast(sign, upstream.dtype)
        return upstream, -upstream

    return tf.abs(difference), gradient


def l1_low_memory(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """:func:`l1` (mean absolute difference per example, in float32) with the
    same values and gradients, keeping only the sign of ``a - b`` (int8) for the backward pass
    instead of the float32 difference: a quarter of the memory for the discriminator features
    (64 channels at the full crop: 0.31 instead of 1.24 GiB for feature 0)."""
    return _per_example(_absolute_difference(tf.cast(a, tf.float32), tf.cast(b, tf.float32)))


def torch_bce_elementwise(probabilities: tf.Tensor, target: float) -> tf.Tensor:
    """Element-wise binary cross-entropy of probabilities exactly as PyTorch ``nn.BCELoss``.

    Forward: ``-(y log p + (1 - y) log(1 - p))`` with each log clamped at -100. Backward:
    ``(p - y) / max(p (1 - p), 1e-12)`` (PyTorch's ``binary_cross_entropy_backward``). Through
    a sigmoid this gives the non-saturating logit gradient ``p - y`` down to ``p ~ 1e-12`` (logit
    ~ -27.6). Clipping ``p`` to ``[1e-7, 1 - 1e-7]`` instead (``tf.clip_by_value``) has a zero
    gradient beyond logit +-16.1, so a generator whose fakes a confident discriminator rejects gets
    no adversarial gradient at all and its BCE sticks at 16.12.

    Args:
        probabilities: sigmoid outputs in [0, 1].
        target: 1.0 (real) or 0.0 (fake).

    Returns:
        The float32 loss per element (same shape as ``probabilities``).
    """
    y = float(target)

    @tf.custom_gradient
    def bce(p):
        log_p = tf.maximum(tf.math.log(p), -100.0)
        log_q = tf.maximum(tf.math.log(1.0 - p), -100.0)
        values = -(y * log_p + (1.0 - y) * log_q)

        def gradient(upstream):
            return upstream * (p - y) / tf.maximum(p * (1.0 - p), 1e-12)

        return values, gradient

    return bce(tf.cast(probabilities, tf.float32))


def _probability_bce(probabilities: tf.Tensor, target: float) -> tf.Tensor:
    """Per-example mean of :func:`torch_bce_elementwise` (PyTorch ``BCELoss``)."""
    values = torch_bce_elementwise(probabilities, target)
    return tf.reduce_mean(tf.reshape(values, (tf.shape(values)[0], -1)), axis=1)


def bce_probabilities(probabilities: tf.Tensor, target: float) -> tf.Tensor:
    """Per-example mean of :func:`torch_bce_elementwise` (PyTorch ``BCELoss`` on sigmoid outputs)."""
    return _per_example(torch_bce_elementwise(probabilities, target))
