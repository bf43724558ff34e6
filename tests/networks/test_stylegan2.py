"""Tests of the seed-004 simplified residual StyleGAN2 builders."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmedgan.errors import TfmedganError  # noqa: E402
from tfmedgan.layers.stylegan import MinibatchStandardDeviation  # noqa: E402
from tfmedgan.networks.stylegan2 import (  # noqa: E402
    build_discriminator,
    build_generator,
    validate_config,
)

# Tiny configs: 32 px, G from 4x4x32, D from 8 filters down to 4x4.
TINY_G = dict(resolution=32, latent_dim=8, input_resolution=4, initial_filters=32)
TINY_D = dict(resolution=32, final_resolution=4, input_filters=8)


@pytest.fixture
def float32_policy() -> Iterator[None]:
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------------------ parameter counts (spec)


@pytest.mark.parametrize(
    "resolution, input_resolution, expected",
    [(256, 8, 4_844_294), (128, 8, 4_826_117), (64, 4, 2_368_517)],
)
@pytest.mark.parametrize("pixel_norm_axis", [-1, 1])
def test_generator_parameter_counts_match_original(
    resolution: int, input_resolution: int, expected: int, pixel_norm_axis: int
) -> None:
    generator = build_generator(
        resolution=resolution,
        latent_dim=100,
        input_resolution=input_resolution,
        initial_filters=512,
        pixel_norm_axis=pixel_norm_axis,
    )
    assert generator.count_params() == expected
    assert generator.output_shape == (None, resolution, resolution, 1)


@pytest.mark.parametrize(
    "resolution, final_resolution, input_filters, expected",
    [(256, 8, 32, 6_493_185), (128, 8, 32, 1_631_745), (64, 4, 64, 6_489_089)],
)
def test_discriminator_row_mode_parameter_counts_match_original(
    resolution: int, final_resolution: int, input_filters: int, expected: int
) -> None:
    discriminator = build_discriminator(
        resolution=resolution,
        final_resolution=final_resolution,
        input_filters=input_filters,
        minibatch_std_mode="row",
    )
    assert discriminator.count_params() == expected
    assert discriminator.get_layer("minibatch_stddev").output.shape[1:] == (
        final_resolution + 1,
        final_resolution,
        input_filters * 2 ** int(np.log2(resolution // final_resolution) - 1),
    )


# Channel mode (derived, not from the original). With F = filters of the last block and
# K = 2F the output-conv filters, the extra channel adds 3*3*1*K weights to the output conv, and
# the output conv now sees (r, r) instead of (r+1, r), so Flatten has (r/2)^2*K values instead of
# ceil((r+1)/2)*(r/2)*K:
# * 256 (r 8, F 512, K 1024): 6,493,185 + 9*1024 - (5*4 - 4*4)*1024 = 6,493,185 + 9,216 - 4,096
#   = 6,498,305
# * 128 (r 8, F 256, K 512): 1,631,745 + 9*512 - (5*4 - 4*4)*512 = 1,631,745 + 4,608 - 2,048
#   = 1,634,305
# * 64 (r 4, F 512, K 1024): 6,489,089 + 9*1024 - (3*2 - 2*2)*1024 = 6,489,089 + 9,216 - 2,048
#   = 6,496,257
@pytest.mark.parametrize(
    "resolution, final_resolution, input_filters, expected",
    [
        (256, 8, 32, 6_493_185 + 9 * 1024 - (5 * 4 - 4 * 4) * 1024),
        (128, 8, 32, 1_631_745 + 9 * 512 - (5 * 4 - 4 * 4) * 512),
        (64, 4, 64, 6_489_089 + 9 * 1024 - (3 * 2 - 2 * 2) * 1024),
    ],
)
def test_discriminator_channel_mode_parameter_counts(
    resolution: int, final_resolution: int, input_filters: int, expected: int
) -> None:
    discriminator = build_discriminator(
        resolution=resolution, final_resolution=final_resolution, input_filters=input_filters
    )
    assert discriminator.count_params() == expected
    assert expected in (6_498_305, 1_634_305, 6_496_257)


# -------------------------------------------------------------------------- shapes and behaviour


@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_generator_and_discriminator_shapes(channels: int, float32_policy: None) -> None:
    generator = build_generator(channels=channels, **TINY_G)
    discriminator = build_discriminator(channels=channels, **TINY_D)
    images = generator(tf.random.normal((4, 8)), training=False)
    assert images.shape == (4, 32, 32, channels)
    assert images.dtype == tf.float32
    logits = discriminator([images, tf.fill((4, 1), 0.5)], training=False)
    assert logits.shape == (4, 1)
    assert logits.dtype == tf.float32
    assert [tuple(shape) for shape in discriminator.input_shape] == [
        (None, 32, 32, channels),
        (None, 1),
    ]


def test_generator_structure(float32_policy: None) -> None:
    generator = build_generator(**TINY_G)
    # n = log2(32 / 4) - 1 = 2 hidden up-blocks (8 and 16 px) plus the tanh output layer (32 px),
    # each with its own ToRGB; none at the 4 px input resolution.
    to_rgb = [layer for layer in generator.layers if layer.name.startswith("to_rgb_")]
    assert [layer.name for layer in to_rgb] == ["to_rgb_8", "to_rgb_16", "to_rgb_32"]
    assert to_rgb[-1].kernel_constraint is None
    assert isinstance(to_rgb[0].kernel_constraint, keras.constraints.MaxNorm)
    assert generator.get_layer("up_conv_8").filters == 16
    assert generator.get_layer("up_conv_16").filters == 8
    assert generator.get_layer("output_conv_32").activation is keras.activations.tanh
    assert generator.get_layer("input_dense").use_bias is False


def test_generator_output_is_sum_of_rgb_branches(float32_policy: None) -> None:
    generator = build_generator(**TINY_G)
    latent = tf.random.normal((2, 8))
    branches = keras.Model(
        generator.input,
        [generator.get_layer(name).output for name in ("to_rgb_8", "to_rgb_16", "to_rgb_32")],
    )(latent)
    expected = branches[2].numpy()
    expected += np.repeat(np.repeat(branches[1].numpy(), 2, axis=1), 2, axis=2)
    expected += np.repeat(np.repeat(branches[0].numpy(), 4, axis=1), 4, axis=2)
    np.testing.assert_allclose(generator(latent).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_alpha_changes_discriminator_without_retrace(float32_policy: None) -> None:
    discriminator = build_discriminator(**TINY_D)
    images = tf.random.normal((4, 32, 32, 1))

    @tf.function
    def score(alpha: tf.Tensor) -> tf.Tensor:
        return discriminator([images, alpha], training=False)

    at_zero = score(tf.constant([[0.0]])).numpy()
    at_one = score(tf.constant([[1.0]])).numpy()
    assert score.experimental_get_tracing_count() == 1
    assert np.max(np.abs(at_zero - at_one)) > 1e-3 * np.max(np.abs(at_zero))
    # [1, 1] (whole batch) and [N, 1] (per sample) alpha give the same result.
    per_sample = discriminator([images, tf.fill((4, 1), 1.0)], training=False).numpy()
    np.testing.assert_allclose(per_sample, at_one, rtol=1e-5, atol=1e-8)


def test_discriminator_row_mode_tiny_shape(float32_policy: None) -> None:
    discriminator = build_discriminator(minibatch_std_mode="row", **TINY_D)
    assert discriminator.get_layer("minibatch_stddev").output.shape == (None, 5, 4, 32)
    assert discriminator.get_layer("output_conv").output.shape == (None, 3, 2, 64)
    logits = discriminator([tf.random.normal((4, 32, 32, 1)), tf.zeros((4, 1))])
    assert logits.shape == (4, 1)
    channel = build_discriminator(**TINY_D)
    assert channel.get_layer("minibatch_stddev").output.shape == (None, 4, 4, 33)
    assert isinstance(channel.get_layer("minibatch_stddev"), MinibatchStandardDeviation)


def test_mixed_precision_outputs_are_float32() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        generator = build_generator(**TINY_G)
        discriminator = build_discriminator(**TINY_D)
        images = generator(tf.random.normal((4, 8)))
        logits = discriminator([images, tf.constant([[0.5]])])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert generator.get_layer("up_conv_8").compute_dtype == "bfloat16"
    assert images.dtype == tf.float32
    assert logits.dtype == tf.float32


# ----------------------------------------------------------------------------- serialisation


def test_config_round_trip(float32_policy: None) -> None:
    generator = build_generator(pixel_norm_axis=1, **TINY_G)
    discriminator = build_discriminator(minibatch_std_mode="row", **TINY_D)
    latent = tf.random.normal((4, 8))
    images = generator(latent)
    alpha = tf.constant([[0.3]])

    generator_clone = keras.Model.from_config(generator.get_config())
    generator_clone.set_weights(generator.get_weights())
    np.testing.assert_array_equal(generator_clone(latent).numpy(), images.numpy())
    assert generator_clone.get_layer("input_pixel_norm").axis == 1

    discriminator_clone = keras.Model.from_config(discriminator.get_config())
    discriminator_clone.set_weights(discriminator.get_weights())
    np.testing.assert_array_equal(
        discriminator_clone([images, alpha]).numpy(), discriminator([images, alpha]).numpy()
    )
    assert discriminator_clone.get_layer("minibatch_stddev").mode == "row"


def test_keras_file_round_trip(tmp_path: Path, float32_policy: None) -> None:
    generator = build_generator(channels=3, **TINY_G)
    discriminator = build_discriminator(channels=3, **TINY_D)
    latent = tf.random.normal((4, 8))
    images = generator(latent)
    alpha = tf.fill((4, 1), 0.7)
    generator.save(tmp_path / "g.keras")
    discriminator.save(tmp_path / "d.keras")
    loaded_generator = keras.models.load_model(tmp_path / "g.keras")
    loaded_discriminator = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_array_equal(loaded_generator(latent).numpy(), images.numpy())
    np.testing.assert_array_equal(
        loaded_discriminator([images, alpha]).numpy(), discriminator([images, alpha]).numpy()
    )


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(resolution=100, input_resolution=4, final_resolution=4, batch_size=8), "resolution"),
        (dict(resolution=64, input_resolution=6, final_resolution=4, batch_size=8), "input_res"),
        (dict(resolution=64, input_resolution=4, final_resolution=12, batch_size=8), "final_res"),
        (dict(resolution=64, input_resolution=64, final_resolution=4, batch_size=8), "smaller"),
        (dict(resolution=64, input_resolution=4, final_resolution=128, batch_size=8), "smaller"),
        (dict(resolution=64, input_resolution=4, final_resolution=4, batch_size=6), "divisible"),
        (
            dict(resolution=64, input_resolution=4, final_resolution=4, batch_size=9, group_size=2),
            "divisible",
        ),
        (
            dict(resolution=64, input_resolution=4, final_resolution=4, batch_size=8, channels=2),
            "channels",
        ),
        (dict(resolution=64, input_resolution=4, final_resolution=4, batch_size=0), "batch_size"),
    ],
)
def test_validate_config_errors(arguments: dict, message: str) -> None:
    with pytest.raises(TfmedganError, match=message) as error:
        validate_config(**arguments)
    assert "\n" not in str(error.value)


def test_validate_config_accepts_good_configs() -> None:
    validate_config(256, 8, 8, 64)
    validate_config(64, 4, 4, 128, channels=3)
    validate_config(64, 4, 4, 2)  # group min(4, 2) = 2
    validate_config(64, None, None, None)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(resolution=48), "power of two"),
        (dict(resolution=32, input_resolution=32), "smaller"),
        (dict(resolution=32, input_resolution=3), "power of two"),
        (dict(resolution=32, channels=2), "channels"),
        (dict(resolution=32, input_resolution=4, initial_filters=6), "initial_filters"),
        (dict(resolution=32, latent_dim=0), "latent_dim"),
    ],
)
def test_generator_bad_config(arguments: dict, message: str) -> None:
    with pytest.raises(TfmedganError, match=message):
        build_generator(**arguments)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(resolution=30), "power of two"),
        (dict(resolution=32, final_resolution=64), "smaller"),
        (dict(resolution=32, final_resolution=5), "power of two"),
        (dict(resolution=32, channels=4), "channels"),
        (dict(resolution=32, minibatch_std_mode="column"), "minibatch_std_mode"),
        (dict(resolution=32, dropout_rate=1.0), "dropout_rate"),
        (dict(resolution=32, input_filters=0), "input_filters"),
    ],
)
def test_discriminator_bad_config(arguments: dict, message: str) -> None:
    with pytest.raises(TfmedganError, match=message):
        build_discriminator(**arguments)


def test_discriminator_bad_batch_raises(float32_policy: None) -> None:
    discriminator = build_discriminator(**TINY_D)
    with pytest.raises(TfmedganError, match="not divisible"):
        discriminator([tf.zeros((6, 32, 32, 1)), tf.zeros((6, 1))])


def test_tanh_output_bounds_the_summed_skips_and_keeps_the_weights(float32_policy: None) -> None:
    linear = build_generator(**TINY_G)
    tanh = build_generator(output_activation="tanh", **TINY_G)
    assert tanh.count_params() == linear.count_params()
    tanh.set_weights(linear.get_weights())  # original (linear) weights load unchanged
    latents = tf.random.normal((3, 8), seed=1) * 30
    raw = linear(latents, training=False).numpy()
    np.testing.assert_allclose(tanh(latents, training=False).numpy(), np.tanh(raw), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output_activation"):
        build_generator(output_activation="relu", **TINY_G)


def test_resize_upsampling_has_the_same_weights_and_no_checkerboard(float32_policy: None) -> None:
    """On a constant feature map, the stride-2 transposed convolution makes a 2-periodic pattern
    (output pixels get 1, 2 or 4 kernel taps); nearest x2 + a 3x3 conv keeps the interior flat."""
    interiors = {}
    for upsample in ("transposed", "resize"):
        generator = build_generator(resolution=32, latent_dim=4, input_resolution=4, initial_filters=8,
                                    output_activation="tanh", upsample=upsample)
        layer_types = {type(layer).__name__ for layer in generator.layers}
        assert ("Conv2DTranspose" in layer_types) == (upsample == "transposed")
        for weight in generator.weights:  # every kernel positive and constant, biases 0
            weight.assign(np.full(weight.shape, 0.0 if "bias" in weight.path else 0.05, np.float32))
        image = generator(np.ones((1, 4), np.float32), training=False).numpy()[0, 4:-4, 4:-4, 0]
        interiors[upsample] = float(image.max() - image.min())
        interiors[upsample + " weights"] = generator.count_params()
    assert interiors["transposed weights"] == interiors["resize weights"]
    assert interiors["transposed"] > 1e-3
    assert interiors["resize"] < 1e-6
    with pytest.raises(TfmedganError, match="upsample"):
        build_generator(resolution=32, upsample="bilinear")
