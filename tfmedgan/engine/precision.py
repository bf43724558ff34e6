"""Numerical precision policies (float32, mixed bfloat16, mixed float16 with loss scaling)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmedgan.errors import TfmedganError


def set_precision(precision: str, allow_float16_on_cpu: bool = False) -> None:
    """Set the global Keras dtype policy before any network is built.

    ``mixed_float16`` is refused on a machine without a GPU: CPUs have no fast float16 kernels
    (about 100x slower than float32); use ``mixed_bfloat16`` there.
    """
    if precision == "mixed_float16" and not allow_float16_on_cpu and not tf.config.list_physical_devices("GPU"):
        raise TfmedganError(
            "--precision mixed_float16 needs a GPU (it is ~100x slower on CPU); use mixed_bfloat16 or float32"
        )
    keras.mixed_precision.set_global_policy(precision)


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, precision: str) -> keras.optimizers.Optimizer:
    """Add dynamic loss scaling for float16; other precisions need none."""
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def scale_loss(optimizer: keras.optimizers.Optimizer, loss: tf.Tensor) -> tf.Tensor:
    """Scale a loss for the optimizer's loss scaling (identity without it). Call inside the tape."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(loss)
    return loss


def apply_gradients(optimizer, tape: tf.GradientTape, scaled_loss: tf.Tensor, variables: list) -> None:
    """Differentiate a (possibly scaled) loss and apply it; LossScaleOptimizer unscales itself."""
    gradients = tape.gradient(scaled_loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))
