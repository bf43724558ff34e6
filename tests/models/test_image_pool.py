"""The CycleGAN image pool: the vectorised batch rule equals the fake-by-fake rule, and under
MirroredStrategy (2 logical CPUs) one pool serves the global batch exactly as on one device."""

import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.engine.distribute import make_strategy
from tfmedgan.models.cyclegan import ImagePool

SHAPE = (2, 2, 2, 1)


def sequential_reference(size, steps, batches, draws):
    """The pool rule fake by fake in plain Python (the original loop form)."""
    images, filled, returned = [None] * size, 0, []
    for batch, (coins, slots) in zip(batches, draws):
        out = []
        for index, fake in enumerate(batch):
            if filled < size:
                images[filled] = fake
                filled += 1
                out.append(fake)
            elif coins[index] > 0.5:
                out.append(images[slots[index]])
                images[slots[index]] = fake
            else:
                out.append(fake)
        returned.append(out)
    return returned, images


def draws_of(seed, count, size):
    seed = tf.constant(seed, tf.int64)
    coins = tf.random.stateless_uniform([count], seed=seed).numpy()
    slots = tf.random.stateless_uniform([count], seed=seed + tf.constant([0, 1 << 40], tf.int64), minval=0,
                                        maxval=size, dtype=tf.int32).numpy()
    return coins, slots


def fake_batch(step, count):
    """Fakes whose value names them: step * 10 + index."""
    return np.stack([np.full(SHAPE, step * 10.0 + index, np.float32) for index in range(count)])


@pytest.mark.parametrize("size, count", [(3, 4), (2, 4), (5, 2)])
def test_batch_rule_equals_the_fake_by_fake_rule(size, count):
    """Batches larger than the pool and repeated slots within a batch included."""
    pool = ImagePool(size, SHAPE)
    query = tf.function(lambda fakes, seed: pool.query(fakes, seed))
    batches, draws, got = [], [], []
    for step in range(12):
        seed = [7, step]
        batch = fake_batch(step, count)
        batches.append([float(f.reshape(-1)[0]) for f in batch])
        draws.append(draws_of(seed, count, size))
        got.append(query(batch, tf.constant(seed, tf.int64)).numpy()[:, 0, 0, 0, 0].tolist())
    expected, stored = sequential_reference(size, 12, batches, draws)
    assert got == expected
    assert pool.images.numpy()[:, 0, 0, 0, 0].tolist() == stored
    assert int(pool.count.numpy()) == size
    assert any(a != b for g, batch in zip(got, batches) for a, b in zip(g, batch))  # older fakes came back


def test_mirrored_pool_equals_the_single_device_pool():
    """Seed 000 crashed here (NotImplementedError in replica context): now each replica gets its
    share of what one pool returns for the global batch, and both replicas' buffers agree."""
    assert len(tf.config.list_logical_devices("CPU")) == 2
    strategy = make_strategy("mirrored")
    with strategy.scope():
        mirrored = ImagePool(3, SHAPE)
    single = ImagePool(3, SHAPE)

    @tf.function
    def mirrored_query(fakes, seed):
        return strategy.run(lambda f: mirrored.query(f, seed), args=(fakes,))

    single_query = tf.function(lambda fakes, seed: single.query(fakes, seed))
    for step in range(10):
        batch = fake_batch(step, 4)
        seed = tf.constant([3, step], tf.int64)
        dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
        per_replica = mirrored_query(next(iter(dataset)), seed)
        joined = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
        np.testing.assert_array_equal(joined, single_query(batch, seed).numpy())
    copies = [v.numpy() for v in mirrored.images.values]
    np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_array_equal(copies[0], single.images.numpy())
    assert [int(v.numpy()) for v in mirrored.count.values] == [3, 3]
