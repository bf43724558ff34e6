"""Tests for the seed-001 slice VAE (ResBlock encoder / decoder)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.networks.vae2d import (
    build_vae_decoder,
    build_vae_encoder,
    kl_to_standard_normal,
    latent_shape,
    pytorch_parameter_count,
    reparameterize,
)


def test_original_parameter_counts_both_conventions():
    encoder = build_vae_encoder((256, 256, 1))
    decoder = build_vae_decoder((2, 2, 256))
    assert pytorch_parameter_count(encoder) == 1_726_296  # spec 3.2 (PyTorch parameters())
    assert pytorch_parameter_count(decoder) == 1_576_165
    assert encoder.count_params() == 1_726_296 + 2 * 1_916  # + BN moving mean/variance
    assert decoder.count_params() == 1_576_165 + 2 * 1_024
    assert [tuple(s) for s in encoder.output_shape] == [(None, 2, 2, 256)] * 2
    assert decoder.output_shape == (None, 256, 256, 1)
    assert latent_shape((256, 256)) == (2, 2, 256)
    assert latent_shape((64, 64), depth=5) == (2, 2, 64)


# ---- NumPy reference of the PyTorch definition in training mode (batch statistics) ------------
def _conv(x, layer, stride):
    kernel = np.asarray(layer.kernel, np.float64)
    bias = np.asarray(layer.bias, np.float64)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out_h = (x.shape[1] - 3) // stride + 1
    out_w = (x.shape[2] - 3) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1])) + bias
    for i in range(3):
        for j in range(3):
            out += x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride] @ kernel[i, j]
    return out


def _bn(x, layer):
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + 1e-5) * np.asarray(layer.gamma) + np.asarray(layer.beta)


def _lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def _up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def _reference_encoder(model, x, depth):
    get = model.get_layer

    def down(value, name, act):
        a = _lrelu(_bn(_conv(value, get(f"{name}_conv1"), 2), get(f"{name}_bn1")))
        a = _bn(_conv(a, get(f"{name}_conv2"), 1), get(f"{name}_bn2"))
        b = _bn(_conv(value, get(f"{name}_conv3"), 2), get(f"{name}_bn3"))
        return (_lrelu(a) + _lrelu(b)) if act else (a + b)

    value = _lrelu(_bn(_conv(x, get("conv1_conv"), 1), get("conv1_bn")))
    for block in range(1, depth):
        value = down(value, f"res{block}", True)
    return down(value, f"res{depth}", False), down(value, "res2_stdev", False)


def _reference_decoder(model, z, depth):
    get = model.get_layer

    def up(value, name):
        a = _lrelu(_bn(_up(_conv(value, get(f"{name}_conv1"), 1)), get(f"{name}_bn1")))
        a = _bn(_conv(a, get(f"{name}_conv2"), 1), get(f"{name}_bn2"))
        b = _lrelu(_bn(_up(_conv(value, get(f"{name}_conv3"), 1)), get(f"{name}_bn3")))
        return _lrelu(a) + _lrelu(b)  # act=True: the b branch gets a second LeakyReLU

    value = z
    for block in range(depth):
        value = up(value, f"res{block}")
    value = _lrelu(_bn(_conv(value, get("conv_1_conv"), 1), get("conv_1_bn")))
    return _conv(value, get("conv2"), 1)


def test_training_mode_forward_matches_pytorch_definition():
    keras.utils.set_random_seed(4)
    depth = 3
    encoder = build_vae_encoder((16, 16, 1), base_filters=2, depth=depth)
    decoder = build_vae_decoder((2, 2, 8), base_filters=2, depth=depth)
    for model in (encoder, decoder):  # non-trivial BN affine parameters
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.gamma.assign(np.random.default_rng(len(layer.name)).uniform(0.5, 1.5, layer.gamma.shape))
                layer.beta.assign(np.random.default_rng(len(layer.name) + 1).normal(0, 0.1, layer.beta.shape))
    x = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype("float32")
    mu, log_sigma = encoder(x, training=True)
    expected_mu, expected_log_sigma = _reference_encoder(encoder, x.astype(np.float64), depth)
    np.testing.assert_allclose(np.asarray(mu), expected_mu, atol=3e-4)
    np.testing.assert_allclose(np.asarray(log_sigma), expected_log_sigma, atol=3e-4)
    z = np.asarray(mu)
    reconstruction = decoder(z, training=True)
    np.testing.assert_allclose(np.asarray(reconstruction), _reference_decoder(decoder, z.astype(np.float64), depth), atol=3e-4)


def test_batchnorm_momentum_matches_pytorch_update():
    keras.utils.set_random_seed(0)
    encoder = build_vae_encoder((16, 16, 1), base_filters=2, depth=3)
    x = np.random.default_rng(1).uniform(size=(4, 16, 16, 1)).astype("float32")
    encoder(x, training=True)
    conv = encoder.get_layer("conv1_conv")(x)
    bn = encoder.get_layer("conv1_bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.1 * np.asarray(conv).mean(axis=(0, 1, 2)), atol=1e-6)
    assert bn.epsilon == pytest.approx(1e-5)


def test_default_initialisation_bounds():
    keras.utils.set_random_seed(0)
    encoder = build_vae_encoder((32, 32, 1), base_filters=4, depth=4)
    layer = encoder.get_layer("res2_conv2")  # 8 -> 8 channels... fan_in = in * 9
    fan_in = layer.kernel.shape[2] * 9
    for weight in (layer.kernel, layer.bias):
        values = np.asarray(weight)
        assert np.abs(values).max() <= 1.0 / np.sqrt(fan_in) + 1e-7
        assert np.abs(values).max() > 0.7 / np.sqrt(fan_in)


def test_sampling_kl_and_tiny_3d_variant():
    mu = tf.zeros((2, 2, 2, 4))
    log_sigma = tf.fill((2, 2, 2, 4), -20.0)
    np.testing.assert_allclose(np.asarray(reparameterize(mu, log_sigma, seed=1)), 0.0, atol=1e-7)
    assert float(kl_to_standard_normal(tf.zeros((3, 2)), tf.zeros((3, 2)))) == pytest.approx(0.0)
    assert float(kl_to_standard_normal(tf.ones((1, 2)), tf.zeros((1, 2)))) == pytest.approx(1.0)
    encoder = build_vae_encoder((16, 16, 16, 1), base_filters=2, depth=3, spatial_dims=3)
    decoder = build_vae_decoder((2, 2, 2, 8), base_filters=2, depth=3, spatial_dims=3)
    mu, _ = encoder(np.zeros((1, 16, 16, 16, 1), "float32"))
    assert tuple(decoder(mu).shape) == (1, 16, 16, 16, 1)


def test_save_load_and_bad_arguments(tmp_path):
    encoder = build_vae_encoder((32, 32, 1), base_filters=2, depth=4)
    path = tmp_path / "enc.keras"
    encoder.save(path)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype("float32")
    for a, b in zip(keras.models.load_model(path)(x), encoder(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    with pytest.raises(TfmedganError, match="multiple of 2\\*\\*depth"):
        build_vae_encoder((100, 100, 1))
    with pytest.raises(TfmedganError, match="channels"):
        build_vae_decoder((2, 2, 128))
    with pytest.raises(TfmedganError, match="spatial_dims"):
        build_vae_encoder((16, 1), spatial_dims=1, depth=2)
