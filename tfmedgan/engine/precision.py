"""Numerical precision policies (float32, mixed bfloat16, mixed float16 with loss scaling)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import tensorflow as tf

from tfmedgan.engine.cpu_features import cpu_has_native_bfloat16
from tfmedgan.errors import TfmedganError


def set_precision(precision: str, allow_float16_on_cpu: bool = False, cpuinfo: str | Path = "/proc/cpuinfo") -> None:
    """Set the global Keras dtype policy before any network is built.

    ``mixed_float16`` is refused on a machine without a GPU: CPUs have no fast float16 kernels
    (about 100x slower than float32); use ``mixed_bfloat16`` there. ``mixed_bfloat16`` on a
    machine without a GPU whose CPU has no native bfloat16 (:func:`cpu_has_native_bfloat16`)
    trains, with a one-line warning: it is several times slower than float32 there.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if precision == "mixed_float16" and not allow_float16_on_cpu and not gpus:
        raise TfmedganError(
            "--precision mixed_float16 needs a GPU (it is ~100x slower on CPU); use mixed_bfloat16 or float32"
        )
    if precision == "mixed_bfloat16" and not gpus and cpu_has_native_bfloat16(cpuinfo) is False:
        print("warning: --precision mixed_bfloat16: this CPU has no native bfloat16 (no AVX512-BF16 or AMX-BF16 "
              "flag), so it is emulated and about 10x slower than float32 (measured on an AVX2 CPU); use float32 here",
              file=sys.stderr)
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


def apply_gradients(
    optimizer, tape: tf.GradientTape, scaled_loss: tf.Tensor, variables: list, clip_norm: float | None = None
) -> None:
    """Differentiate a (possibly scaled) loss and apply it; LossScaleOptimizer unscales itself.

    Args:
        optimizer: the (possibly loss-scaling) optimizer of ``variables``.
        tape: the tape that recorded ``scaled_loss``.
        scaled_loss: this replica's loss, scaled by :func:`scale_loss`.
        variables: the variables to update.
        clip_norm: clip the global norm of the gradient SUMMED over replicas (the gradient of
            the global-batch loss) to this value, as ``global_clipnorm`` does on one device; see
            :func:`clip_joint_norm`. Do not also set ``global_clipnorm`` on the optimizer: Keras
            3 clips each replica's gradient before the all-reduce.
    """
    gradients = tape.gradient(scaled_loss, variables)
    if clip_norm:
        scale = optimizer.dynamic_scale if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None
        gradients = clip_joint_norm(gradients, clip_norm, loss_scale=scale)
    apply_gradient_list(optimizer, gradients, variables)


def apply_gradient_list(optimizer, gradients: list, variables: list) -> None:
    """Apply gradients (of a scaled loss) that were computed apart, e.g. summed over several tapes.

    With a LossScaleOptimizer on several replicas, a step is skipped on every replica when any
    replica's gradients overflow (:func:`skip_unless_finite_everywhere`), as in
    :func:`apply_gradients`.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        gradients = skip_unless_finite_everywhere(gradients)
    optimizer.apply_gradients(zip(gradients, variables))


def _replicas() -> tuple[tf.distribute.ReplicaContext | None, int]:
    context = tf.distribute.get_replica_context()
    return context, (context.num_replicas_in_sync if context is not None else 1)


def clip_joint_norm(gradients: list, clip_norm: float, loss_scale: tf.Tensor | None = None) -> list:
    """Scale this replica's gradients so that their sum over replicas has a global norm of at most
    ``clip_norm``.

    Keras 3 applies ``global_clipnorm`` inside ``apply_gradients`` BEFORE the cross-replica
    all-reduce, so with N replicas each share is clipped on its own and the summed gradient can
    reach N x ``clip_norm`` (and its direction changes). Here the gradients are all-reduced
    first, the norm of the sum is measured, and every replica multiplies its own share by the same
    factor ``min(1, clip_norm / norm)``; the optimizer's all-reduce then sums them to the clipped
    global gradient, exactly as ``global_clipnorm`` on one device. A non-finite norm gives NaN
    gradients (as Keras), which a LossScaleOptimizer skips. Costs one extra all-reduce of the
    gradients with several replicas; with one replica no communication.

    Args:
        gradients: this replica's gradients (``None`` entries are kept).
        clip_norm: the maximum global norm of the summed gradient.
        loss_scale: the loss scale the gradients carry (LossScaleOptimizer), or None.

    Returns:
        The scaled gradients, same structure.

    Example:
        >>> clip_joint_norm([tf.constant([3.0, 4.0])], 1.0)[0].numpy().round(3).tolist()
        [0.6, 0.8]
    """
    present = [g for g in gradients if g is not None]
    if not present:
        return list(gradients)
    context, replicas = _replicas()
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, present) if replicas > 1 else present
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in summed]))
    if loss_scale is not None:
        norm = norm / tf.cast(loss_scale, tf.float32)
    clip = tf.constant(float(clip_norm), tf.float32)
    factor = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # NaN when the norm is not finite
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients]


def skip_unless_finite_everywhere(gradients: list) -> list:
    """With several replicas, turn every replica's gradients into NaN when ANY replica's are not
    finite, so a LossScaleOptimizer skips the step (and lowers its scale) on all of them.

    Keras 3's LossScaleOptimizer checks the gradients of the FIRST replica only (it assumes they
    were all-reduced before, which Keras 3 no longer does), so an overflow on another replica
    would otherwise reach the weights. Costs one scalar all-reduce; no-op on one replica.
    """
    context, replicas = _replicas()
    present = [g for g in gradients if g is not None]
    if replicas == 1 or not present:
        return list(gradients)
    local_bad = tf.cast(tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])), tf.float32)
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, local_bad)
    poison = tf.where(bad > 0.0, tf.constant(float("nan")), tf.constant(1.0))
    return [None if g is None else g * tf.cast(poison, g.dtype) for g in gradients]
