"""engine.precision under MirroredStrategy (2 logical CPUs): the joint gradient-norm clip acts on the
gradient summed over replicas, and a LossScaleOptimizer skips a step when any replica overflows."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.engine.distribute import make_strategy
from tfmedgan.engine.precision import apply_gradient_list, apply_gradients, clip_joint_norm, scale_loss

SHARES = (np.array([3.0, 0.0], np.float32), np.array([0.0, 4.0], np.float32))  # summed: [3, 4], norm 5


def mirrored():
    assert len(tf.config.list_logical_devices("CPU")) == 2
    return make_strategy("mirrored")  # one object per process: fresh ones collide on collective keys


def run_step(strategy, make_optimizer, shares, **apply_options):
    """One step of loss_r = <w, share_r> on each replica; returns (weights, optimizer)."""
    with strategy.scope():
        weights = tf.Variable([0.0, 0.0])
        optimizer = make_optimizer()
        optimizer.build([weights])

    def replica_step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        share = tf.gather(tf.constant(np.stack(shares)), replica)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(weights * share)
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, [weights], **apply_options)

    tf.function(lambda: strategy.run(replica_step))()
    return weights, optimizer


def test_clip_after_the_all_reduce_equals_one_device():
    one_device, _ = run_step(tf.distribute.get_strategy(), lambda: keras.optimizers.SGD(1.0),
                             (SHARES[0] + SHARES[1],), clip_norm=1.0)
    np.testing.assert_allclose(one_device.numpy(), [-0.6, -0.8], atol=1e-6)
    two, _ = run_step(mirrored(), lambda: keras.optimizers.SGD(1.0), SHARES, clip_norm=1.0)
    np.testing.assert_allclose(two.numpy(), [-0.6, -0.8], atol=1e-6)
    # Keras' own global_clipnorm clips each replica's share before the all-reduce: joint norm sqrt(2)
    keras_clip, _ = run_step(mirrored(), lambda: keras.optimizers.SGD(1.0, global_clipnorm=1.0), SHARES)
    np.testing.assert_allclose(keras_clip.numpy(), [-1.0, -1.0], atol=1e-6)


def test_clip_under_loss_scaling_uses_the_unscaled_norm():
    make = lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0), initial_scale=1024.0)
    two, _ = run_step(mirrored(), make, SHARES, clip_norm=1.0)
    np.testing.assert_allclose(two.numpy(), [-0.6, -0.8], atol=1e-6)
    small, _ = run_step(mirrored(), make, SHARES, clip_norm=100.0)  # inactive clip
    np.testing.assert_allclose(small.numpy(), [-3.0, -4.0], atol=1e-5)


def test_loss_scaling_skips_the_step_when_any_replica_overflows():
    """Keras 3's LossScaleOptimizer looks at the first replica's gradients only."""
    make = lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0), initial_scale=1024.0)
    overflow = (SHARES[0], np.array([np.inf, 0.0], np.float32))
    weights, optimizer = run_step(mirrored(), make, overflow)
    np.testing.assert_array_equal(weights.numpy(), [0.0, 0.0])
    assert float(optimizer.dynamic_scale.numpy()) == pytest.approx(512.0)
    weights, optimizer = run_step(mirrored(), make, SHARES)  # finite everywhere: applied
    np.testing.assert_allclose(weights.numpy(), [-3.0, -4.0], atol=1e-5)
    assert float(optimizer.dynamic_scale.numpy()) == pytest.approx(1024.0)


def test_gradients_summed_apart_also_skip_when_any_replica_overflows():
    """apply_gradient_list: gradients taken from several tapes (pix2pix3d's discriminator)."""
    strategy = mirrored()
    with strategy.scope():
        weights = tf.Variable([0.0, 0.0])
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0), initial_scale=1024.0)
        optimizer.build([weights])
    overflow = (SHARES[0], np.array([np.inf, 0.0], np.float32))

    def replica_step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        share = tf.gather(tf.constant(np.stack(overflow)), replica)
        gradients = []
        for half in (0.5, 0.5):
            with tf.GradientTape() as tape:
                scaled = scale_loss(optimizer, half * tf.reduce_sum(weights * share))
            gradients.append(tape.gradient(scaled, [weights])[0])
        apply_gradient_list(optimizer, [gradients[0] + gradients[1]], [weights])

    tf.function(lambda: strategy.run(replica_step))()
    np.testing.assert_array_equal(weights.numpy(), [0.0, 0.0])
    assert float(optimizer.dynamic_scale.numpy()) == pytest.approx(512.0)


def test_every_model_applies_gradients_through_engine_precision():
    """A bare optimizer.apply_gradients in a recipe would bypass the any-replica overflow skip."""
    import re
    from pathlib import Path

    import tfmedgan.models

    root = Path(tfmedgan.models.__file__).parent
    bare = [f"{path.relative_to(root)}:{number}" for path in sorted(root.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\.apply_gradients\(zip\(", line)]
    assert bare == []


def test_clip_joint_norm_keeps_none_and_small_gradients():
    out = clip_joint_norm([None, tf.constant([0.3, 0.4])], 1.0)
    assert out[0] is None
    np.testing.assert_allclose(out[1].numpy(), [0.3, 0.4], rtol=1e-6)
    assert np.isnan(clip_joint_norm([tf.constant([np.inf, 1.0])], 1.0)[0].numpy()).all()
