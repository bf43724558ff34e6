"""Tests for the seed-002 3D PatchGAN discriminator (tfmedgan.networks.patchgan_bn)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedgan.errors import TfmedganError
from tfmedgan.networks.patchgan_bn import (
    KERAS_PARAMETER_COUNT,
    ORIGINAL_TRAINABLE_PARAMETERS,
    RunningStatisticsBatchNormalization,
    build_patchgan_bn_discriminator,
    patchgan_bn_output_shape,
)


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _torch_side(side: int, n_layers: int = 3) -> int:
    """Output side of the original: Conv3d(k4, p1) size formula floor((S + 2 - 4) / s) + 1."""
    for _ in range(n_layers):
        side = (side + 2 - 4) // 2 + 1
    for _ in range(2):
        side = (side + 2 - 4) // 1 + 1
    return side


def test_parameter_counts_match_original():
    model = build_patchgan_bn_discriminator()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == ORIGINAL_TRAINABLE_PARAMETERS == 11_048_769
    assert model.count_params() == KERAS_PARAMETER_COUNT == 11_050_561
    # only BatchNorm moving statistics are non-trainable: 2 * (128 + 256 + 512)
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 1_792
    # convolutions followed by BatchNorm have no bias, the first and last ones do
    assert [len(model.get_layer(f"conv{i}").weights) for i in range(5)] == [2, 1, 1, 1, 2]


def test_structure_and_initialisation():
    keras.utils.set_random_seed(0)
    model = build_patchgan_bn_discriminator()
    assert [model.get_layer(f"conv{i}").filters for i in range(5)] == [64, 128, 256, 512, 1]
    assert [model.get_layer(f"conv{i}").strides for i in range(5)] == [(2, 2, 2)] * 3 + [(1, 1, 1)] * 2
    kernel = model.get_layer("conv3").get_weights()[0]
    assert kernel.shape == (4, 4, 4, 256, 512)
    assert abs(kernel.std() - 0.02) < 0.0005 and abs(kernel.mean()) < 0.0005
    assert np.all(model.get_layer("conv0").get_weights()[1] == 0)
    norm = model.get_layer("norm2")
    gamma, beta, mean, variance = norm.get_weights()
    assert np.all(gamma == 1) and np.all(beta == 0) and np.all(mean == 0) and np.all(variance == 1)
    assert norm.epsilon == pytest.approx(1e-5) and norm.momentum == pytest.approx(0.9)
    assert model.get_layer("lrelu1").negative_slope == pytest.approx(0.2)


@pytest.mark.parametrize("shape", [(24, 24, 24), (24, 32, 40), (25, 33, 31)])
def test_output_shape_matches_pytorch_formula(shape):
    model = build_patchgan_bn_discriminator(base_filters=4)
    y = model(np.random.default_rng(1).normal(size=(2, *shape, 1)).astype("float32"))
    expected = tuple(_torch_side(side) for side in shape)
    assert tuple(y.shape) == (2, *expected, 1)
    assert patchgan_bn_output_shape(shape) == expected
    assert patchgan_bn_output_shape((64, 128, 256)) == (6, 14, 30)  # spec: S/8 - 2


def test_full_width_forward_tiny_patch():
    model = build_patchgan_bn_discriminator()
    y = _numpy(model(np.random.default_rng(2).normal(size=(1, 24, 24, 32, 1)).astype("float32")))
    assert y.shape == (1, 1, 1, 2, 1)
    assert y.dtype == np.float32
    assert np.all((y > 0) & (y < 1))  # sigmoid output


def test_batchnorm_uses_running_statistics_by_default():
    """Faithful eval-mode quirk: BatchNorm ignores batch statistics even with training=True."""
    keras.utils.set_random_seed(3)
    model = build_patchgan_bn_discriminator(base_filters=4)
    assert isinstance(model.get_layer("norm1"), RunningStatisticsBatchNormalization)
    x = np.random.default_rng(4).normal(loc=3.0, size=(2, 24, 24, 24, 1)).astype("float32")
    train = _numpy(model(x, training=True))
    infer = _numpy(model(x, training=False))
    np.testing.assert_allclose(train, infer, rtol=1e-6, atol=1e-7)
    _, _, mean, variance = model.get_layer("norm1").get_weights()
    assert np.all(mean == 0) and np.all(variance == 1)

    # and it acts as the affine gamma * x / sqrt(1 + eps) + beta
    norm = RunningStatisticsBatchNormalization(epsilon=1e-5, momentum=0.9)
    values = np.random.default_rng(5).normal(loc=2.0, size=(4, 3)).astype("float32")
    norm.build(values.shape)
    norm.gamma.assign(np.array([2.0, 0.5, 1.0], "float32"))
    norm.beta.assign(np.array([0.1, -0.2, 0.0], "float32"))
    expected = values / np.sqrt(1 + 1e-5) * np.array([2.0, 0.5, 1.0]) + np.array([0.1, -0.2, 0.0])
    np.testing.assert_allclose(_numpy(norm(values, training=True)), expected, rtol=1e-5)


def test_batch_statistics_option_uses_standard_batchnorm():
    keras.utils.set_random_seed(3)
    model = build_patchgan_bn_discriminator(base_filters=4, use_batch_statistics=True)
    assert type(model.get_layer("norm1")) is keras.layers.BatchNormalization
    x = np.random.default_rng(4).normal(loc=3.0, size=(2, 24, 24, 24, 1)).astype("float32")
    assert not np.allclose(_numpy(model(x, training=True)), _numpy(model(x, training=False)), atol=1e-4)
    assert model.count_params() == build_patchgan_bn_discriminator(base_filters=4).count_params()


def test_options_and_errors():
    model = build_patchgan_bn_discriminator(input_shape=(32, 32, 32, 2), base_filters=8, n_layers=2)
    # n_layers=2: filters 8, 16, then min(2**2, 8) * 8 = 32, then 1
    assert [model.get_layer(f"conv{i}").filters for i in range(4)] == [8, 16, 32, 1]
    assert tuple(model.output.shape) == (None, 6, 6, 6, 1)
    with pytest.raises(TfmedganError, match="at least 24"):
        build_patchgan_bn_discriminator(input_shape=(16, 32, 32, 1))
    with pytest.raises(TfmedganError, match="at least 24"):
        patchgan_bn_output_shape((23, 64, 64))
    with pytest.raises(TfmedganError, match="known channels"):
        build_patchgan_bn_discriminator(input_shape=(32, 32, 32))
    with pytest.raises(TfmedganError, match="base_filters"):
        build_patchgan_bn_discriminator(base_filters=0)


def test_mixed_bfloat16_keeps_float32_probabilities():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_patchgan_bn_discriminator(base_filters=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv4").compute_dtype == "float32"
    y = model(np.zeros((1, 24, 24, 24, 1), "float32"))
    assert y.dtype == "float32"


def test_keras_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(6)
    model = build_patchgan_bn_discriminator(base_filters=4)
    norm = model.get_layer("norm3")
    norm.gamma.assign(np.linspace(0.5, 1.5, norm.gamma.shape[0]).astype("float32"))
    x = np.random.default_rng(7).normal(size=(1, 24, 32, 24, 1)).astype("float32")
    path = tmp_path / "discriminator.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("norm3"), RunningStatisticsBatchNormalization)
    np.testing.assert_array_equal(_numpy(loaded(x, training=True)), _numpy(model(x, training=True)))
