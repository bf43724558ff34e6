"""tfmedgan.losses."""

import numpy as np
import pytest
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


def _numpy_boundary_weights(image, weight):
    """The reference: foreground voxels with a background voxel among their 3^d neighbours."""
    from scipy import ndimage

    background = np.all(image <= -1.0 + 1e-6, axis=-1)
    weights = np.ones(image.shape[:-1], np.float64)
    for index in range(image.shape[0]):
        near = ndimage.binary_dilation(background[index], structure=np.ones((3,) * (image.ndim - 2), bool))
        weights[index][near & ~background[index]] = weight
        weights[index] /= weights[index].mean()
    return weights[..., None]


def test_boundary_weights_stress_the_foreground_next_to_the_background_in_2d_and_3d():
    rng = np.random.default_rng(7)
    for shape in ((2, 9, 10, 8, 1), (2, 12, 11, 2)):
        image = rng.uniform(-0.9, 1.0, shape).astype(np.float32)
        image[0, :3] = -1.0  # a slab of background (every channel)
        image[1, 4:7, 4:7] = -1.0  # a hole inside the foreground
        weights = losses.boundary_weights(tf.constant(image), 4.0).numpy()
        assert weights.shape == shape[:-1] + (1,) and weights.dtype == np.float32
        np.testing.assert_allclose(weights, _numpy_boundary_weights(image, 4.0), rtol=1e-6)
        np.testing.assert_allclose(weights.reshape(2, -1).mean(axis=1), 1.0, rtol=1e-6)
        ratio = weights[0].max() / weights[0].min()
        assert ratio == pytest.approx(4.0, rel=1e-6)
        np.testing.assert_array_equal(losses.boundary_weights(tf.constant(image), 1.0).numpy(), 1.0)


def test_boundary_weights_need_every_channel_at_the_background():
    image = np.full((1, 6, 6, 2), 0.5, np.float32)
    image[0, :2, :, 0] = -1.0  # background in one channel only: still foreground
    np.testing.assert_array_equal(losses.boundary_weights(tf.constant(image), 3.0).numpy(), 1.0)
    image[0, :2, :, 1] = -1.0
    weights = losses.boundary_weights(tf.constant(image), 3.0).numpy()[0, :, 0, 0]
    np.testing.assert_allclose(weights / weights[0], [1, 1, 3, 1, 1, 1])


def test_weighted_l1_equals_l1_with_unit_weights_and_weighs_each_voxel():
    rng = np.random.default_rng(8)
    a, b = (tf.constant(rng.normal(size=(2, 4, 5, 3, 1)).astype(np.float32)) for _ in range(2))
    np.testing.assert_allclose(losses.weighted_l1(a, b, tf.ones((2, 4, 5, 3, 1))).numpy(), losses.l1(a, b).numpy(),
                               rtol=1e-6)
    weights = rng.uniform(0, 3, size=(2, 4, 5, 3, 1)).astype(np.float32)
    expected = (weights * np.abs(a.numpy() - b.numpy())).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(losses.weighted_l1(a, b, tf.constant(weights)).numpy(), expected, rtol=1e-5)


def test_squared_error_is_the_per_example_mean_square_and_weighs_each_voxel():
    rng = np.random.default_rng(3)
    a, b = (rng.normal(size=(2, 4, 4, 4, 1)).astype(np.float32) for _ in range(2))
    expected = ((a - b) ** 2).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(losses.squared_error(a, b).numpy(), expected, rtol=1e-6)
    weights = rng.uniform(0.5, 2.0, size=(2, 4, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(losses.squared_error(a, b, weights).numpy(),
                               (weights * (a - b) ** 2).reshape(2, -1).mean(axis=1), rtol=1e-6)
    # the minimiser over a constant prediction is the mean of the truth (L1's is the median)
    truth = tf.constant([[0.0], [0.0], [1.0]])[None]
    candidates = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    scores = [float(losses.squared_error(tf.fill((1, 3, 1), c), truth)[0]) for c in candidates]
    assert candidates[int(np.argmin(scores))] == pytest.approx(1.0 / 3.0, abs=0.01)
    absolute = [float(losses.l1(tf.fill((1, 3, 1), c), truth)[0]) for c in candidates]
    assert candidates[int(np.argmin(absolute))] == pytest.approx(0.0, abs=0.01)
