"""Choice of ``tf.distribute`` strategy and replica-aware helpers used inside train steps."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfmedgan.errors import TfmedganError


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the strategy for ``name``.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several workers, MirroredStrategy
    when there are several GPUs, otherwise the default (single device) strategy. ``mirrored`` with no
    GPU mirrors over all logical CPU devices (useful only for testing).
    """
    if name == "auto":
        workers = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {}).get("worker", [])
        if len(workers) > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tuple(d.name for d in tf.config.list_logical_devices("GPU")) or tuple(
            d.name for d in tf.config.list_logical_devices("CPU")
        )
        key = ("mirrored", devices)
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy(list(devices))
        return _STRATEGIES[key]
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise TfmedganError("--strategy multiworker needs the TF_CONFIG environment variable")
        key = ("multiworker", os.environ["TF_CONFIG"])
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
        return _STRATEGIES[key]
    raise TfmedganError(f"unknown strategy {name!r}")


#: One strategy object per device set (or cluster) and process. A second MirroredStrategy over the
#: same devices starts its collective keys where the first one did, so on devices that use
#: collective all-reduces (CPUs, multi-worker) the second run's first all-reduce meets the first
#: run's ("Shape mismatch in the collective instance 100"); reusing the object keeps keys unique.
_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always on one machine; under multi-worker
    training the ``chief`` task, or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id) == 0


def replica_slice(global_tensor: tf.Tensor) -> tf.Tensor:
    """This replica's share of a tensor built for the global batch (first axis).

    Random inputs (latents, interpolation weights) are drawn for the global batch from a stateless
    seed and sliced, so a step gives the same numbers on one device and on N replicas.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    if replicas == 1:
        return global_tensor
    size = tf.shape(global_tensor)[0] // replicas
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * size
    return global_tensor[start : start + size]


def average_loss(per_example: tf.Tensor, global_batch: tf.Tensor | int) -> tf.Tensor:
    """Mean over the global batch of a per-example loss (sums correctly across replicas)."""
    per_example = tf.cast(per_example, tf.float32)
    return tf.reduce_sum(per_example) / tf.cast(global_batch, tf.float32)


def global_batch_size(local_batch: tf.Tensor) -> tf.Tensor:
    """Global batch from this replica's batch (replicas get equal shares: drop_remainder=True)."""
    return local_batch * tf.distribute.get_replica_context().num_replicas_in_sync


def cond_across_replicas(pred: tf.Tensor, true_fn, false_fn, args: tuple = ()):
    """``tf.cond(pred, lambda: true_fn(*args), lambda: false_fn(*args))`` whose branches may
    synchronise the replicas (apply gradients, all-reduce).

    Inside ``strategy.run`` a ``tf.cond`` in replica context cannot hold a synchronisation point:
    MirroredStrategy raises "merge_call called while defining a new graph or a tf.function". Here
    the condition is evaluated in cross-replica context and the chosen branch then runs on every
    replica (the pattern of Keras' LossScaleOptimizer). Without a strategy it is a plain
    ``tf.cond``.

    Args:
        pred: a scalar boolean, the SAME on every replica (e.g. a function of the step).
        true_fn, false_fn: called with this replica's ``args``; they may capture networks,
            optimizers and variables, but no other replica-local tensors (under a strategy they
            run in new replica calls, where another replica's captured tensor would be used).
            Both return a tensor or a tuple of tensors of the same structure.
        args: this replica's tensors for the branches.

    Returns:
        This replica's result of the chosen branch.

    Example:
        >>> cond_across_replicas(tf.constant(True), lambda x: x + 1.0, lambda x: x, (tf.constant(1.0),)).numpy()
        2.0
    """
    context = tf.distribute.get_replica_context()
    if context is None or not tf.distribute.has_strategy():
        return tf.cond(pred, lambda: true_fn(*args), lambda: false_fn(*args))
    replicas = context.num_replicas_in_sync

    def merge_fn(strategy, pred, *args):
        structure = []

        def branch(fn):
            def run():
                result = strategy.extended.call_for_each_replica(fn, args=args)
                structure[:] = [result]
                parts = []
                for value in tf.nest.flatten(result):
                    local = list(strategy.experimental_local_results(value))
                    parts.append(local * replicas if len(local) == 1 else local)
                return parts
            return run

        first = strategy.experimental_local_results(pred)[0]
        parts = tf.cond(first, branch(true_fn), branch(false_fn))

        def this_replica(replica_context):
            flat = [part[replica_context.replica_id_in_sync_group] for part in parts]
            return tf.nest.pack_sequence_as(structure[0], flat)

        return strategy.experimental_distribute_values_from_function(this_replica)

    return context.merge_call(merge_fn, args=(pred, *args))
