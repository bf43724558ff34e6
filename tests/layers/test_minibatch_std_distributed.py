"""MinibatchStandardDeviation(synchronized=True) under MirroredStrategy (2 logical CPUs): the groups
are formed over the global batch, so outputs and input gradients equal one device's; without it
they are formed per replica and differ."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.engine.distribute import make_strategy
from tfmedgan.layers.stylegan import MinibatchStandardDeviation


def outputs_and_gradients(layer, strategy, batch):
    """Per-sample outputs and the input gradient of a loss that weights the stddev feature."""

    def replica_fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            extra = y[..., -1:] if layer.mode == "channel" else y[:, -1:]
            loss = tf.reduce_sum(tf.square(y)) + 3.0 * tf.reduce_sum(extra)
        return y, tape.gradient(loss, x)

    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
    result = tf.function(lambda x: strategy.run(replica_fn, args=(x,)))(next(iter(dataset)))
    return [np.concatenate([t.numpy() for t in strategy.experimental_local_results(part)]) for part in result]


@pytest.mark.parametrize("mode", ["channel", "row"])
def test_synchronized_groups_equal_one_device(mode):
    batch = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32)
    one = outputs_and_gradients(MinibatchStandardDeviation(mode=mode), tf.distribute.get_strategy(), batch)
    mirrored = make_strategy("mirrored")
    synced = outputs_and_gradients(MinibatchStandardDeviation(mode=mode, synchronized=True), mirrored, batch)
    for a, b in zip(one, synced):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    local = outputs_and_gradients(MinibatchStandardDeviation(mode=mode), mirrored, batch)
    assert np.abs(local[0] - one[0]).max() > 1e-3  # per-replica groups: another statistic


def test_synchronized_is_serialised_and_local_outside_a_strategy():
    layer = MinibatchStandardDeviation(group_size=2, synchronized=True)
    clone = MinibatchStandardDeviation.from_config(layer.get_config())
    assert clone.synchronized and clone.group_size == 2
    x = np.random.default_rng(2).normal(size=(4, 2, 2, 1)).astype(np.float32)
    np.testing.assert_allclose(clone(x).numpy(), MinibatchStandardDeviation(group_size=2)(x).numpy())
    assert keras.ops.shape(clone(x))[-1] == 2
