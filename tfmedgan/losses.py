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
