import types

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
