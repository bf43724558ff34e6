"""Tests of the seed-004 StyleGAN2 layers: PixelNormalization, MinibatchStandardDeviation,
WeightedSum."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmedgan.errors import TfmedganError  # noqa: E402
from tfmedgan.layers.stylegan import (  # noqa: E402
    MinibatchStandardDeviation,
    PixelNormalization,
    WeightedSum,
)


def _numpy_minibatch_std(x: np.ndarray, group_size: int, mode: str) -> np.ndarray:
    """Reference written from the spec: group member = n // M, set = n % M."""
    batch, height, width, channels = x.shape
    group = min(group_size, batch)
    sets = batch // group
    output = []
    for sample in range(batch):
        set_index = sample % sets
        members = np.stack([x[g * sets + set_index] for g in range(group)]).astype(np.float64)
        variance = ((members - members.mean(axis=0)) ** 2).mean(axis=0)
        value = np.sqrt(variance + 1e-8).mean()
        if mode == "channel":
            extra = np.full((height, width, 1), value)
            output.append(np.concatenate([x[sample], extra], axis=-1))
        else:
            extra = np.full((1, width, channels), value)
            output.append(np.concatenate([x[sample], extra], axis=0))
    return np.stack(output)


# ----------------------------------------------------------------------------- PixelNormalization


@pytest.mark.parametrize("axis", [-1, 1])
def test_pixel_normalization_matches_numpy(axis: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5, 6)).astype("float32") * 3.0
    expected = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=axis, keepdims=True) + 1e-8)
    result = PixelNormalization(axis=axis)(x).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    # Unit root mean square along the normalised axis.
    np.testing.assert_allclose(np.sqrt(np.mean(result**2, axis=axis)), 1.0, rtol=1e-4)


def test_pixel_normalization_axes_differ_and_default_is_channels() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    default = PixelNormalization()(x).numpy()
    rows = PixelNormalization(axis=1)(x).numpy()
    np.testing.assert_allclose(np.mean(default**2, axis=-1), 1.0, rtol=1e-4)
    assert not np.allclose(default, rows)


def test_pixel_normalization_mixed_precision() -> None:
    x = tf.random.normal((2, 4, 4, 8))
    result = PixelNormalization(dtype="mixed_bfloat16")(x)
    assert result.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(result, tf.float32).numpy(), PixelNormalization()(x).numpy(), rtol=2e-2, atol=2e-2
    )


def test_pixel_normalization_config_round_trip() -> None:
    layer = PixelNormalization(axis=(1, 2), epsilon=1e-6, name="pn")
    clone = PixelNormalization.from_config(layer.get_config())
    assert clone.axis == (1, 2)
    assert clone.epsilon == 1e-6
    assert clone.name == "pn"
    x = np.random.default_rng(2).normal(size=(2, 3, 3, 2)).astype("float32")
    np.testing.assert_allclose(layer(x).numpy(), clone(x).numpy())


# --------------------------------------------------------------------- MinibatchStandardDeviation


@pytest.mark.parametrize("mode", ["channel", "row"])
@pytest.mark.parametrize("batch", [8, 2, 1])
def test_minibatch_std_matches_numpy(mode: str, batch: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(batch, 4, 3, 5)).astype("float32")
    result = MinibatchStandardDeviation(group_size=4, mode=mode)(x).numpy()
    expected = _numpy_minibatch_std(x, 4, mode)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_minibatch_std_row_vs_channel_shapes() -> None:
    x = tf.random.normal((8, 8, 8, 16))
    assert tuple(MinibatchStandardDeviation(mode="channel")(x).shape) == (8, 8, 8, 17)
    assert tuple(MinibatchStandardDeviation(mode="row")(x).shape) == (8, 9, 8, 16)
    symbolic = keras.Input(shape=(8, 8, 16))
    assert tuple(MinibatchStandardDeviation(mode="channel")(symbolic).shape) == (None, 8, 8, 17)
    assert tuple(MinibatchStandardDeviation(mode="row")(symbolic).shape) == (None, 9, 8, 16)
    assert MinibatchStandardDeviation(mode="row").compute_output_shape((None, 4, 4, 3)) == (
        None,
        5,
        4,
        3,
    )


def test_minibatch_std_groups_are_strided_sets() -> None:
    # Batch 8, group 4 -> 2 sets: {0, 2, 4, 6} and {1, 3, 5, 7}. Make set 0 constant (std 0).
    x = np.zeros((8, 2, 2, 1), "float32")
    x[1::2] = np.arange(4, dtype="float32").reshape(4, 1, 1, 1)
    extra = MinibatchStandardDeviation()(x).numpy()[..., -1]
    np.testing.assert_allclose(extra[0::2], 1e-4, rtol=1e-3)  # sqrt(0 + 1e-8)
    np.testing.assert_allclose(extra[1::2], np.sqrt(np.var(np.arange(4)) + 1e-8), rtol=1e-5)


def test_minibatch_std_unknown_batch_in_tf_function() -> None:
    layer = MinibatchStandardDeviation()
    function = tf.function(layer, input_signature=[tf.TensorSpec((None, 4, 4, 2), tf.float32)])
    x = np.random.default_rng(4).normal(size=(8, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(
        function(x).numpy(), _numpy_minibatch_std(x, 4, "channel"), rtol=1e-5, atol=1e-6
    )


def test_minibatch_std_bad_batch_and_bad_arguments() -> None:
    with pytest.raises(TfmedganError, match="not divisible"):
        MinibatchStandardDeviation()(tf.zeros((6, 4, 4, 2)))
    with pytest.raises(TfmedganError, match="mode"):
        MinibatchStandardDeviation(mode="column")
    with pytest.raises(TfmedganError, match="group_size"):
        MinibatchStandardDeviation(group_size=0)


def test_minibatch_std_mixed_precision() -> None:
    x = tf.random.normal((4, 4, 4, 2))
    result = MinibatchStandardDeviation(dtype="mixed_bfloat16")(x)
    assert result.dtype == tf.bfloat16
    reference = MinibatchStandardDeviation()(x).numpy()
    np.testing.assert_allclose(tf.cast(result, tf.float32).numpy(), reference, rtol=2e-2, atol=2e-2)


def test_minibatch_std_config_round_trip() -> None:
    layer = MinibatchStandardDeviation(group_size=2, mode="row", name="mbstd")
    config = layer.get_config()
    assert config["group_size"] == 2 and config["mode"] == "row"
    clone = MinibatchStandardDeviation.from_config(config)
    x = np.random.default_rng(5).normal(size=(4, 3, 3, 2)).astype("float32")
    np.testing.assert_allclose(layer(x).numpy(), clone(x).numpy())


# ------------------------------------------------------------------------------------ WeightedSum


@pytest.mark.parametrize(
    "alpha", [0.25, np.float32(0.25), np.array([0.25], "float32"), np.full((1, 1), 0.25)]
)
def test_weighted_sum_batch_alpha_forms(alpha: object) -> None:
    rng = np.random.default_rng(6)
    first = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    second = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    result = WeightedSum()([first, second, tf.constant(alpha, tf.float32)]).numpy()
    np.testing.assert_allclose(result, 0.75 * first + 0.25 * second, rtol=1e-6)


def test_weighted_sum_per_sample_alpha_and_unclamped() -> None:
    first = np.ones((2, 2, 2, 1), "float32")
    second = np.zeros((2, 2, 2, 1), "float32")
    alpha = tf.constant([[0.0], [1.5]])
    result = WeightedSum()([first, second, alpha]).numpy()
    np.testing.assert_allclose(result[0], 1.0)
    np.testing.assert_allclose(result[1], -0.5)  # alpha > 1 is not clamped (original behaviour)


def test_weighted_sum_no_retrace_and_dtype() -> None:
    layer = WeightedSum()
    function = tf.function(lambda a, b, alpha: layer([a, b, alpha]))
    first = tf.zeros((2, 2, 2, 1))
    second = tf.ones((2, 2, 2, 1))
    outputs = [float(function(first, second, tf.constant(v))[0, 0, 0, 0]) for v in (0.1, 0.6)]
    assert outputs == pytest.approx([0.1, 0.6])
    assert function.experimental_get_tracing_count() == 1
    # Under a mixed policy every input is cast to the compute dtype; without autocasting the
    # layer itself casts b and alpha to the dtype of a.
    mixed = WeightedSum(dtype="mixed_bfloat16")([first, second, tf.constant(0.5)])
    assert mixed.dtype == tf.bfloat16
    raw = WeightedSum(autocast=False)([tf.cast(first, tf.bfloat16), second, tf.constant(0.5)])
    assert raw.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(raw, tf.float32).numpy(), 0.5)


def test_weighted_sum_wrong_inputs_and_round_trip() -> None:
    with pytest.raises(TfmedganError, match="three"):
        WeightedSum()([tf.zeros((1, 2)), tf.zeros((1, 2))])
    layer = WeightedSum(name="fade")
    clone = WeightedSum.from_config(layer.get_config())
    assert clone.name == "fade"
