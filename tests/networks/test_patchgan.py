"""Tests for the seed-000 PatchGAN discriminator builder."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.layers import InstanceNormalization
from tfmedgan.networks.patchgan import build_patchgan_discriminator


def test_original_discriminator_params_and_patch_map():
    model = build_patchgan_discriminator((156, 188, 156, 1))
    assert model.count_params() == 8_257  # spec A2
    assert model.output_shape == (None, 78, 94, 78, 1)
    assert not any(isinstance(layer, InstanceNormalization) for layer in model.layers)
    assert model.get_layer("patch_logits").activation is keras.activations.linear  # no sigmoid
    assert model.get_layer("block1_lrelu").negative_slope == pytest.approx(0.2)


def test_deeper_discriminator_gan_3d():
    model = build_patchgan_discriminator((92, 108, 84, 1), n_layers=3)
    expected = (
        (64 * 64 + 64)
        + (64 * 64 * 128 + 128)
        + (64 * 128 * 256 + 256)
        + (64 * 256 + 1)
        + 2 * (128 + 256)
    )
    assert model.count_params() == expected
    assert model.output_shape == (None, 12, 14, 11, 1)
    norms = [layer for layer in model.layers if isinstance(layer, InstanceNormalization)]
    assert [layer.axis_mode for layer in norms] == ["channel", "channel"]
    zslice = build_patchgan_discriminator((92, 108, 84, 1), n_layers=3, norm="zslice")
    lengths = [
        int(layer.gamma.shape[0])
        for layer in zslice.layers
        if isinstance(layer, InstanceNormalization)
    ]
    assert lengths == [21, 11]
    plain = build_patchgan_discriminator((92, 108, 84, 1), n_layers=3, norm=None)
    assert plain.count_params() == expected - 2 * (128 + 256)


def test_filters_capped_at_eight_times_base():
    model = build_patchgan_discriminator((64, 64, 64, 1), base_filters=4, n_layers=5)
    assert [model.get_layer(f"block{i}_conv").filters for i in range(1, 6)] == [4, 8, 16, 32, 32]


def test_tiny_forward_3d_and_2d():
    volume = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    model = build_patchgan_discriminator(base_filters=8)
    outputs = model(volume)
    assert tuple(outputs.shape) == (2, 8, 8, 8, 1) and outputs.dtype == tf.float32
    deeper = build_patchgan_discriminator((16, 16, 16, 1), base_filters=8, n_layers=3)
    assert tuple(deeper(volume).shape) == (2, 2, 2, 2, 1)
    flat = build_patchgan_discriminator((32, 32, 3), base_filters=8, n_layers=2)
    assert tuple(flat(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 8, 8, 1)
    default_2d = build_patchgan_discriminator(spatial_dims=2)
    assert default_2d.input_shape == (None, None, None, 1)


def test_mixed_bfloat16_logits_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_patchgan_discriminator((16, 16, 16, 1), base_filters=4, n_layers=2)
    assert model(np.zeros((1, 16, 16, 16, 1), "float32")).dtype == tf.float32


def test_errors():
    with pytest.raises(TfmedganError):
        build_patchgan_discriminator((16, 16, 1), spatial_dims=3)
    with pytest.raises(TfmedganError):
        build_patchgan_discriminator((16, 16, 16, 1), n_layers=0)
    with pytest.raises(TfmedganError):
        build_patchgan_discriminator((16, 16, 16, 1), n_layers=2, norm="batch")
    with pytest.raises(TfmedganError):
        build_patchgan_discriminator((16, 16, None, 1), n_layers=2, norm="zslice")
