"""tfmedgan.losses."""

import numpy as np
import tensorflow as tf

from tfmedgan import losses


def test_l1_low_memory_equals_losses_l1_in_values_and_gradients():
    """l1_low_memory keeps only the sign of the difference: same values and gradients as l1, float32 and bfloat16 features, including ties (sign 0)."""
    rng = np.random.default_rng(4)
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.constant(rng.normal(size=(2, 5, 6, 3, 4)).astype(np.float32), dtype)
        b = tf.constant(np.where(rng.uniform(size=(2, 5, 6, 3, 4)) < 0.2, a.numpy().astype(np.float32),
                                 rng.normal(size=(2, 5, 6, 3, 4))).astype(np.float32), dtype)
        weights = tf.constant([0.7, -1.3])
        results = []
        for function in (losses.l1, losses.l1_low_memory):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                value = function(a, b)
                loss = tf.reduce_sum(value * weights)
            results.append([value.numpy(), *[g.numpy().astype(np.float32) for g in tape.gradient(loss, [a, b])]])
        for expected, actual in zip(*results):
            np.testing.assert_array_equal(actual, expected)
        assert results[1][0].shape == (2,)
