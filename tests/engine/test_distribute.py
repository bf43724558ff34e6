import types

import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.engine.distribute import is_chief, make_strategy
from tfmedgan.errors import TfmedganError


def _strategy(cluster, task_type, task_id):
    resolver = types.SimpleNamespace(
        task_type=task_type, task_id=task_id, cluster_spec=lambda: tf.train.ClusterSpec(cluster)
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_only_the_chief_writes():
    workers = {"worker": ["localhost:1", "localhost:2"]}
    assert is_chief(_strategy(workers, "worker", 0))
    assert not is_chief(_strategy(workers, "worker", 1))
    with_chief = {"chief": ["localhost:0"], **workers}
    assert is_chief(_strategy(with_chief, "chief", 0))
    assert not is_chief(_strategy(with_chief, "worker", 0))
    assert is_chief(tf.distribute.get_strategy())


def test_strategy_choice(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("auto").num_replicas_in_sync == 1
    assert make_strategy("mirrored").num_replicas_in_sync == 2  # conftest splits the CPU in two
    with pytest.raises(TfmedganError, match="TF_CONFIG"):
        make_strategy("multiworker")


def test_one_mirrored_strategy_per_process_so_collectives_do_not_collide():
    """A second MirroredStrategy over the same CPUs restarted the collective keys: its first
    all-reduce met the first strategy's ("Shape mismatch in the collective instance 100")."""
    assert make_strategy("mirrored") is make_strategy("mirrored")
    for shape in ([1], [2], [3]):  # three "runs" in one process, each with its own shapes
        strategy = make_strategy("mirrored")

        def replica_sum(shape=shape):
            return tf.distribute.get_replica_context().all_reduce("sum", tf.ones(shape))

        result = tf.function(lambda: strategy.run(replica_sum))()
        assert strategy.experimental_local_results(result)[0].numpy().tolist() == [2.0] * shape[0]


def test_cond_across_replicas_applies_a_gradient_update_inside_the_condition():
    """A gradient update inside a per-replica tf.cond crashed under MirroredStrategy ("merge_call
    called while defining a new graph"); the seed-000 identity update has one."""
    import keras

    from tfmedgan.engine.distribute import cond_across_replicas

    batch = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    results = {}
    for name in ("default", "mirrored"):
        strategy = make_strategy(name)
        with strategy.scope():
            weights = tf.Variable([1.0, 2.0])
            optimizer = keras.optimizers.SGD(0.1)
            optimizer.build([weights])

        def update(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(weights * x)
            optimizer.apply_gradients(zip(tape.gradient(loss, [weights]), [weights]))
            return loss

        def replica_step(x, step):
            return cond_across_replicas(tf.equal(step % 2, 0), update, lambda x: tf.constant(0.0), args=(x,))

        step_fn = tf.function(lambda x, step: strategy.run(replica_step, args=(x, step)))
        batches = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))
        losses = []
        for step in range(3):
            out = step_fn(next(batches), tf.constant(step))
            losses.append(sum(float(t.numpy()) for t in strategy.experimental_local_results(out)))
        results[name] = (losses, weights.numpy())
    assert results["default"][0] == pytest.approx([16.0, 0.0, 10.8])  # step 1 skips the update
    assert results["mirrored"][0] == pytest.approx(results["default"][0])
    np.testing.assert_allclose(results["mirrored"][1], results["default"][1], atol=1e-6)
