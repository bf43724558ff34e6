"""Tests for the anti-aliased BlurPool layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.blurpool import BlurPool, binomial_taps


def _reference(volume: np.ndarray, spatial_dims: int, filter_size: int = 3, strides: int = 2,
               mode: str = "reflect") -> np.ndarray:
    """Direct depthwise convolution with the full outer-product kernel (no separability)."""
    taps = binomial_taps(filter_size)
    kernel = taps
    for _ in range(spatial_dims - 1):
        kernel = np.multiply.outer(kernel, taps)
    before = (filter_size - 1) // 2
    after = filter_size - 1 - before
    widths = [(0, 0)] + [(before, after)] * spatial_dims + [(0, 0)]
    padded = np.pad(volume, widths, mode="reflect" if mode == "reflect" else "constant")
    out_sizes = [(padded.shape[axis] - filter_size) // strides + 1 for axis in range(1, spatial_dims + 1)]
    output = np.zeros((volume.shape[0], *out_sizes, volume.shape[-1]))
    for index in np.ndindex(*out_sizes):
        window = tuple(slice(i * strides, i * strides + filter_size) for i in index)
        block = padded[(slice(None),) + window + (slice(None),)]
        weights = kernel.reshape((1,) + kernel.shape + (1,))
        output[(slice(None),) + index + (slice(None),)] = (block * weights).sum(axis=tuple(range(1, spatial_dims + 1)))
    return output


@pytest.mark.parametrize("shape", [(2, 7, 6, 5, 3), (1, 9, 8, 2)])
def test_matches_depthwise_convolution(shape):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype("float32")
    spatial_dims = len(shape) - 2
    layer = BlurPool(spatial_dims=spatial_dims)
    got = np.asarray(layer(volume))
    expected = _reference(volume.astype(np.float64), spatial_dims)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_other_filter_sizes_stride_and_zero_padding():
    volume = np.random.default_rng(1).normal(size=(1, 11, 10, 2)).astype("float32")
    for filter_size, strides, mode in [(4, 2, "reflect"), (5, 3, "zero"), (1, 2, "reflect"), (3, 1, "zero")]:
        layer = BlurPool(spatial_dims=2, filter_size=filter_size, strides=strides, pad_mode=mode)
        got = np.asarray(layer(volume))
        expected = _reference(volume.astype(np.float64), 2, filter_size, strides, mode)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # filter size 1 is plain sub-sampling
    np.testing.assert_array_equal(np.asarray(BlurPool(2, filter_size=1)(volume)), volume[:, ::2, ::2])


def test_bfloat16_volumes_stay_bfloat16_and_match():
    volume = np.random.default_rng(2).uniform(size=(1, 9, 8, 7, 3)).astype("float32")
    layer = BlurPool(spatial_dims=3, dtype="mixed_bfloat16")
    got = layer(volume)
    assert got.dtype == tf.bfloat16
    np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)), _reference(volume.astype(np.float64), 3),
                               atol=2e-2)


def test_original_discriminator_shape_and_no_weights():
    layer = BlurPool(spatial_dims=3)
    model = keras.Sequential([keras.Input((143, 17, 10, 4)), layer])
    assert model.output_shape == (None, 72, 9, 5, 4)
    assert model.count_params() == 0 and not layer.weights
    # constant in, constant out (the kernel sums to one, reflection keeps the constant)
    assert np.allclose(np.asarray(layer(np.full((1, 6, 6, 6, 2), 3.0, "float32"))), 3.0)


def test_dynamic_shapes_in_functional_model():
    inputs = keras.Input((None, None, None, 2))
    model = keras.Model(inputs, BlurPool(spatial_dims=3)(inputs))
    out = model(np.zeros((1, 9, 8, 7, 2), "float32"))
    assert tuple(out.shape) == (1, 5, 4, 4, 2)
    traced = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((1, None, None, None, 2))])
    assert tuple(traced(np.zeros((1, 13, 6, 4, 2), "float32")).shape) == (1, 7, 3, 2, 2)


def test_gradient_and_serialisation(tmp_path):
    inputs = keras.Input((8, 8, 8, 1))
    model = keras.Model(inputs, BlurPool(spatial_dims=3, name="blur")(inputs))
    volume = tf.constant(np.random.default_rng(2).normal(size=(1, 8, 8, 8, 1)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(volume)
        total = tf.reduce_sum(model(volume))
    gradient = tape.gradient(total, volume)
    assert gradient is not None and float(tf.reduce_sum(gradient)) == pytest.approx(64.0, rel=1e-5)
    path = tmp_path / "blur.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("blur").get_config()["pad_mode"] == "reflect"
    np.testing.assert_array_equal(np.asarray(loaded(volume)), np.asarray(model(volume)))


def test_bad_arguments():
    with pytest.raises(TfmedganError, match="spatial_dims"):
        BlurPool(spatial_dims=1)
    with pytest.raises(TfmedganError, match="filter_size"):
        BlurPool(filter_size=9)
    with pytest.raises(TfmedganError, match="pad_mode"):
        BlurPool(pad_mode="wrap")
    with pytest.raises(TfmedganError, match="longer than"):
        BlurPool(spatial_dims=2)(np.zeros((1, 1, 4, 1), "float32"))
