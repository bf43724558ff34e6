"""Tests for ReflectionPadding and InstanceNormalization (channel and zslice modes)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.layers import InstanceNormalization, ReflectionPadding


def _contrib_norm(values, axis, gamma, beta, epsilon):
    """keras-contrib InstanceNormalization: (x - mean) / (std + eps) over axes other than 0, axis."""
    axes = tuple(index for index in range(1, values.ndim) if index != axis)
    mean = values.mean(axis=axes, keepdims=True)
    std = values.std(axis=axes, keepdims=True)
    shape = [1] * values.ndim
    shape[axis] = -1
    return (values - mean) / (std + epsilon) * gamma.reshape(shape) + beta.reshape(shape)


# ------------------------------------------------------------------------------------------
# ReflectionPadding


def test_reflection_padding_3d_matches_numpy_reflect():
    values = np.random.default_rng(0).normal(size=(2, 5, 6, 7, 3)).astype("float32")
    layer = ReflectionPadding((1, 2, 3), spatial_dims=3)
    expected = np.pad(values, [(0, 0), (1, 1), (2, 2), (3, 3), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(layer(values).numpy(), expected)


def test_reflection_padding_2d_matches_numpy_reflect():
    values = np.random.default_rng(1).normal(size=(1, 9, 8, 2)).astype("float32")
    layer = ReflectionPadding(3, spatial_dims=2)
    expected = np.pad(values, [(0, 0), (3, 3), (3, 3), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(layer(values).numpy(), expected)


def test_reflection_padding_dynamic_shapes():
    layer = ReflectionPadding(3)
    assert layer.compute_output_shape((None, None, 10, None, 1)) == (None, None, 16, None, 1)
    inputs = keras.Input((None, None, None, 1))
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, None, None, 1)
    assert tuple(model(np.zeros((1, 4, 5, 6, 1), "float32")).shape) == (1, 10, 11, 12, 1)


def test_reflection_padding_config_and_errors():
    layer = ReflectionPadding((1, 2, 3), name="pad")
    clone = ReflectionPadding.from_config(layer.get_config())
    assert clone.padding == (1, 2, 3) and clone.spatial_dims == 3 and clone.name == "pad"
    with pytest.raises(TfmedganError):
        ReflectionPadding(3)(np.zeros((1, 3, 8, 8, 1), "float32"))  # axis not longer than pad
    with pytest.raises(TfmedganError):
        ReflectionPadding((1, 2), spatial_dims=3)
    with pytest.raises(TfmedganError):
        ReflectionPadding(1, spatial_dims=4)


# ------------------------------------------------------------------------------------------
# InstanceNormalization


def test_channel_mode_statistics_and_weights():
    values = np.random.default_rng(2).normal(3.0, 5.0, size=(2, 6, 7, 8, 4)).astype("float32")
    layer = InstanceNormalization(axis_mode="channel")
    outputs = layer(values).numpy()
    assert tuple(layer.gamma.shape) == (4,) and tuple(layer.beta.shape) == (4,)
    np.testing.assert_allclose(outputs.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(outputs.std(axis=(1, 2, 3)), 1.0, atol=1e-4)


def test_channel_mode_matches_keras_group_normalization():
    values = np.random.default_rng(3).normal(size=(2, 5, 6, 7, 3)).astype("float32")
    ours = InstanceNormalization(axis_mode="channel", epsilon=1e-5)
    reference = keras.layers.GroupNormalization(groups=-1, axis=-1, epsilon=1e-5)
    ours.build(values.shape)
    reference.build(values.shape)
    gamma = np.array([0.5, 2.0, -1.0], "float32")
    beta = np.array([0.1, -0.2, 0.3], "float32")
    ours.set_weights([gamma, beta])
    reference.set_weights([gamma, beta])
    np.testing.assert_allclose(ours(values).numpy(), reference(values).numpy(), atol=1e-5)


def test_zslice_mode_matches_keras_contrib_axis3():
    rng = np.random.default_rng(4)
    values = rng.normal(1.0, 2.0, size=(2, 5, 6, 7, 3)).astype("float32")
    layer = InstanceNormalization(axis_mode="zslice", epsilon=1e-5, epsilon_mode="std")
    layer.build(values.shape)
    assert tuple(layer.gamma.shape) == (7,)  # length of the third spatial axis, not channels
    gamma = rng.normal(size=7).astype("float32")
    beta = rng.normal(size=7).astype("float32")
    layer.set_weights([gamma, beta])
    expected = _contrib_norm(values.astype("float64"), 3, gamma, beta, 1e-5)
    np.testing.assert_allclose(layer(values).numpy(), expected, atol=1e-5)


def test_zslice_statistics_per_z_index():
    values = np.random.default_rng(5).normal(size=(1, 6, 5, 4, 2)).astype("float32")
    values *= np.arange(1, 5, dtype="float32").reshape(1, 1, 1, 4, 1)  # scale differs per Z
    outputs = InstanceNormalization(axis_mode="zslice")(values).numpy()
    np.testing.assert_allclose(outputs.mean(axis=(1, 2, 4)), 0.0, atol=1e-5)
    np.testing.assert_allclose(outputs.std(axis=(1, 2, 4)), 1.0, atol=1e-4)


def test_epsilon_modes_differ_on_small_variance():
    values = (np.random.default_rng(6).normal(size=(1, 4, 4, 4, 2)) * 1e-3).astype("float32")
    centred = values - values.mean(axis=(1, 2, 3), keepdims=True)
    variance = (centred**2).mean(axis=(1, 2, 3), keepdims=True)
    std_mode = InstanceNormalization(epsilon=1e-5, epsilon_mode="std")(values).numpy()
    variance_mode = InstanceNormalization(epsilon=1e-5, epsilon_mode="variance")(values).numpy()
    np.testing.assert_allclose(std_mode, centred / (np.sqrt(variance) + 1e-5), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        variance_mode, centred / np.sqrt(variance + 1e-5), rtol=1e-4, atol=1e-6
    )
    assert np.abs(std_mode).max() > 2 * np.abs(variance_mode).max()


def test_std_mode_gradient_finite_on_constant_input():
    layer = InstanceNormalization(axis_mode="zslice", epsilon_mode="std")
    values = tf.ones((1, 4, 4, 4, 2))
    with tf.GradientTape() as tape:
        tape.watch(values)
        loss = tf.reduce_sum(layer(values))
    assert np.isfinite(tape.gradient(loss, values).numpy()).all()


def test_instance_norm_2d_and_errors_and_config():
    values = np.random.default_rng(7).normal(size=(2, 8, 8, 3)).astype("float32")
    outputs = InstanceNormalization()(values).numpy()
    np.testing.assert_allclose(outputs.mean(axis=(1, 2)), 0.0, atol=1e-5)
    with pytest.raises(TfmedganError):
        InstanceNormalization(axis_mode="zslice")(keras.Input((None, None, None, 4)))
    with pytest.raises(TfmedganError):
        InstanceNormalization(axis_mode="depth")
    with pytest.raises(TfmedganError):
        InstanceNormalization(epsilon_mode="sqrt")
    layer = InstanceNormalization(axis_mode="zslice", epsilon=1e-3, epsilon_mode="std", name="n")
    clone = InstanceNormalization.from_config(layer.get_config())
    assert (clone.axis_mode, clone.epsilon, clone.epsilon_mode, clone.name) == (
        "zslice",
        1e-3,
        "std",
        "n",
    )


def test_instance_norm_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = InstanceNormalization()
    values = np.random.default_rng(8).normal(size=(1, 4, 4, 4, 2)).astype("float32")
    outputs = layer(values)
    assert outputs.dtype == tf.bfloat16 and layer.gamma.dtype == "float32"
    np.testing.assert_allclose(
        tf.cast(outputs, tf.float32).numpy().std(axis=(1, 2, 3)), 1.0, atol=0.05
    )


def _autodiff_norm(values, axes, epsilon, epsilon_mode):
    """The plain expression, differentiated by TensorFlow (reference for the closed-form gradient)."""
    mean = tf.reduce_mean(values, axis=axes, keepdims=True)
    centred = values - mean
    variance = tf.reduce_mean(tf.square(centred), axis=axes, keepdims=True)
    if epsilon_mode == "std":
        return centred / (tf.sqrt(tf.maximum(variance, 1e-12)) + epsilon)
    return centred * tf.math.rsqrt(variance + epsilon)


@pytest.mark.parametrize("axis_mode", ["channel", "zslice"])
@pytest.mark.parametrize("epsilon_mode", ["variance", "std"])
@pytest.mark.parametrize("affine", [False, True])
def test_closed_form_gradient_equals_automatic_differentiation(axis_mode, epsilon_mode, affine):
    rng = np.random.default_rng(11)
    values = tf.constant(rng.normal(2.0, 3.0, size=(2, 5, 6, 4, 3)).astype("float32"))
    weights = tf.constant(rng.normal(size=(2, 5, 6, 4, 3)).astype("float32"))  # a non-trivial upstream
    layer = InstanceNormalization(axis_mode=axis_mode, epsilon_mode=epsilon_mode, center=affine, scale=affine,
                                  epsilon=1e-2)
    layer.build(values.shape)
    axis = 4 if axis_mode == "channel" else 3
    axes = [index for index in range(1, 5) if index != axis]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(values)
        got = tf.reduce_sum(layer(values) * weights)
        reference = _autodiff_norm(values, axes, 1e-2, epsilon_mode)
        if affine:
            shape = [1] * 5
            shape[axis] = -1
            reference = reference * tf.reshape(layer.gamma, shape) + tf.reshape(layer.beta, shape)
        expected = tf.reduce_sum(reference * weights)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)
    gradient, expected_gradient = tape.gradient(got, values), tape.gradient(expected, values)
    assert float(tf.reduce_max(tf.abs(expected_gradient))) > 1e-2
    np.testing.assert_allclose(gradient.numpy(), expected_gradient.numpy(), rtol=1e-4, atol=1e-5)
    if affine:
        for variable in (layer.gamma, layer.beta):
            assert tape.gradient(got, variable) is not None


def test_closed_form_gradient_under_mixed_bfloat16_is_close():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    values = tf.constant(np.random.default_rng(12).normal(size=(1, 6, 6, 6, 4)).astype("float32"))
    weights = tf.constant(np.random.default_rng(13).normal(size=(1, 6, 6, 6, 4)).astype("float32"))
    layer = InstanceNormalization(center=False, scale=False)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(values)
        outputs = layer(values)
        got = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
        expected = tf.reduce_sum(_autodiff_norm(values, [1, 2, 3], 1e-5, "variance") * weights)
    assert outputs.dtype == tf.bfloat16
    gradient, expected_gradient = tape.gradient(got, values), tape.gradient(expected, values)
    assert gradient.dtype == tf.float32
    np.testing.assert_allclose(gradient.numpy(), expected_gradient.numpy(), atol=0.03)
