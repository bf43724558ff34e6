"""Tests for the seed-001 SIT generator."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.normalization import InstanceNormalization
from tfmedgan.layers.scale import ChannelScale
from tfmedgan.networks.sit import build_sit_generator


def test_original_parameter_count_and_parts():
    model = build_sit_generator((144, 192, 192, 2))
    assert model.count_params() == 2_113_953  # spec 2.3, PyTorch parameters() convention
    assert not model.non_trainable_weights
    parts = {"layers_in": 0, "layers_0": 0, "layers_1": 0, "layers_2": 0, "out": 0}
    for layer in model.layers:
        for prefix in parts:
            if layer.name.startswith(prefix + "_"):
                parts[prefix] += layer.count_params()
                break
    assert parts == {"layers_in": 532_672, "layers_0": 686_792, "layers_1": 451_264,
                     "layers_2": 443_008, "out": 217}
    assert model.output_shape == (None, 144, 192, 192, 1)
    norms = [layer for layer in model.layers if isinstance(layer, InstanceNormalization)]
    assert norms and all(not layer.center and not layer.scale for layer in norms)
    assert len([layer for layer in model.layers if isinstance(layer, ChannelScale)]) == 4 * 6


def test_kaiming_initialisation_statistics():
    keras.utils.set_random_seed(0)
    model = build_sit_generator((16, 16, 16, 2))
    kernel = np.asarray(model.get_layer("layers_1_ds0_conv2").kernel)  # fan_in 64 * 27
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / (64 * 27)), rel=0.02)
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # untruncated normal (Keras he_normal truncates at 2 sigma)
    up = np.asarray(model.get_layer("layers_0_up").kernel)  # (3,3,3,out=8,in=64): fan_in = 8 * 27
    assert up.std() == pytest.approx(np.sqrt(2.0 / (8 * 27)), rel=0.05)
    assert not np.any(np.asarray(model.get_layer("layers_0_up").bias))
    scale = np.concatenate([np.asarray(layer.scale) for layer in model.layers if isinstance(layer, ChannelScale)])
    assert scale.std() == pytest.approx(1.0, rel=0.15)  # N(0, 1), untouched by kaiming


# ---- NumPy reference of the PyTorch definition (2D, tiny) ------------------------------------
def _conv(x, kernel, bias, stride, pad):
    """PyTorch Conv2d (cross-correlation, zero padding) on [H, W, C] with a Keras kernel."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    size = kernel.shape[0]
    out_h = (x.shape[0] - size) // stride + 1
    out_w = (x.shape[1] - size) // stride + 1
    out = np.zeros((out_h, out_w, kernel.shape[-1])) + bias
    for i in range(size):
        for j in range(size):
            patch = x[i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
            out += patch @ kernel[i, j]
    return out


def _conv_transpose(x, kernel, bias):
    """PyTorch ConvTranspose2d(k3, s2, p1, output_padding 1) with a Keras (k,k,out,in) kernel."""
    h, w, _ = x.shape
    full = np.zeros((2 * h + 1, 2 * w + 1, kernel.shape[2]))
    for i in range(3):
        for j in range(3):
            full[i:i + 2 * h:2, j:j + 2 * w:2] += x @ kernel[i, j].T
    return full[1:2 * h + 1, 1:2 * w + 1] + bias  # padding 1 drops index 0; output_padding keeps 2h


def _in_relu(x):
    mean = x.mean(axis=(0, 1), keepdims=True)
    var = x.var(axis=(0, 1), keepdims=True)
    return np.maximum((x - mean) / np.sqrt(var + 1e-5), 0.0)


def _reference(model, x):
    def conv(name, value, stride=1):
        layer = model.get_layer(name)
        size = layer.kernel.shape[0]
        pad = 1 if size in (3, 4) else 0
        return _conv(value, np.asarray(layer.kernel, np.float64), np.asarray(layer.bias, np.float64), stride, pad)

    def w(name):
        return np.asarray(model.get_layer(name).scale, np.float64)

    def ds(prefix, value):
        x0 = _in_relu(value)
        x1 = _in_relu(conv(f"{prefix}_conv1", x0) + w(f"{prefix}_w1") * x0)
        x2 = _in_relu(conv(f"{prefix}_conv2", x1) + w(f"{prefix}_w21") * x0 + w(f"{prefix}_w22") * x1)
        return conv(f"{prefix}_conv3", x2) + w(f"{prefix}_w31") * x0 + w(f"{prefix}_w32") * x1 + w(f"{prefix}_w33") * x2

    def up(name, value):
        layer = model.get_layer(name)
        return _conv_transpose(value, np.asarray(layer.kernel, np.float64), np.asarray(layer.bias, np.float64))

    skips = []
    value = x
    for stage in range(3):
        value = _in_relu(conv(f"layers_in_{stage}_conv", value, stride=2))
        skips.append(value)
    d3 = _in_relu(up("layers_2_up", _in_relu(ds("layers_2_ds0", skips[2]))))
    d2 = conv("layers_1_combine", np.concatenate([skips[1], d3], axis=-1))
    d2 = _in_relu(up("layers_1_up", _in_relu(ds("layers_1_ds0", d2))))
    d1 = conv("layers_0_combine", np.concatenate([skips[0], d2], axis=-1))
    d1 = _in_relu(ds("layers_0_ds1", _in_relu(ds("layers_0_ds0", d1))))
    d1 = _in_relu(up("layers_0_up", d1))
    head = conv("out_conv", _in_relu(d1))
    return 1.0 / (1.0 + np.exp(-head))


def test_forward_matches_pytorch_definition_2d():
    keras.utils.set_random_seed(3)
    model = build_sit_generator((16, 24, 2), filters=4, final_filters=3, spatial_dims=2)
    x = np.random.default_rng(0).uniform(size=(1, 16, 24, 2)).astype("float32")
    got = np.asarray(model(x))[0]
    expected = _reference(model, x[0].astype(np.float64))
    assert got.shape == (16, 24, 1)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_tiny_3d_forward_dynamic_shape_and_gradient():
    keras.utils.set_random_seed(1)
    model = build_sit_generator(filters=4)
    assert model.input_shape == (None, None, None, None, 2)
    x = tf.random.uniform((1, 16, 8, 24, 2))
    with tf.GradientTape() as tape:
        y = model(x)
        loss = tf.reduce_mean(y)
    assert tuple(y.shape) == (1, 16, 8, 24, 1) and y.dtype == tf.float32
    assert float(tf.reduce_min(y)) > 0.0 and float(tf.reduce_max(y)) < 1.0
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)


def test_mixed_precision_output_is_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_sit_generator((8, 8, 8, 2), filters=4)
        assert model(np.zeros((1, 8, 8, 8, 2), "float32")).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_save_load_roundtrip(tmp_path):
    model = build_sit_generator((8, 8, 8, 2), filters=4)
    path = tmp_path / "sit.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(size=(1, 8, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(TfmedganError, match="multiples of 8"):
        build_sit_generator((20, 16, 16, 2))
    with pytest.raises(TfmedganError, match="spatial_dims"):
        build_sit_generator(spatial_dims=1)
    with pytest.raises(TfmedganError, match="static channel"):
        build_sit_generator((16, 16, 16, None))
    assert build_sit_generator((32, 32, 32, 2), factor=5, filters=2).output_shape == (None, 32, 32, 32, 1)
    with pytest.raises(TfmedganError, match="multiples of 16"):
        build_sit_generator((24, 32, 32, 2), factor=5, filters=2)
    with pytest.raises(TfmedganError, match="upsample"):
        build_sit_generator((16, 16, 16, 2), upsample="bilinear")


def test_resize_upsampling_same_weight_count_swapped_kernels_no_checkerboard():
    transposed = build_sit_generator((144, 192, 192, 2))
    resize = build_sit_generator((144, 192, 192, 2), upsample="resize")
    assert resize.count_params() == transposed.count_params() == 2_113_953
    assert resize.output_shape == transposed.output_shape
    assert transposed.get_layer("layers_0_up").kernel.shape == (3, 3, 3, 8, 64)  # (out, in): transposed
    assert resize.get_layer("layers_0_up").kernel.shape == (3, 3, 3, 64, 8)
    assert isinstance(resize.get_layer("layers_0_up_resize"), keras.layers.UpSampling3D)
    # a constant map through nearest x2 + convolution stays flat inside; the stride-2 transposed
    # 3-wide convolution gives alternating voxel values (the checkerboard of the early fakes)
    features = keras.ops.ones((1, 4, 4, 4, 2))
    for upsample, periodic in (("resize", False), ("transposed", True)):
        model = build_sit_generator((16, 16, 16, 2), filters=2, final_filters=2, upsample=upsample)
        layer = model.get_layer("layers_1_up")
        layer.set_weights([np.ones_like(w) if w.ndim > 1 else np.zeros_like(w) for w in layer.get_weights()])
        grown = model.get_layer("layers_1_up_resize")(features) if upsample == "resize" else features
        grown = layer(grown)
        if upsample == "transposed":
            grown = model.get_layer("layers_1_up_crop")(grown)
        interior = np.asarray(grown)[0, 2:-2, 2:-2, 2:-2, 0]
        assert (interior.std() > 1e-3) == periodic


def test_input_skip_carries_the_input_to_the_head_at_full_resolution():
    plain = build_sit_generator((144, 192, 192, 2))
    skipped = build_sit_generator((144, 192, 192, 2), input_skip=True)
    assert skipped.count_params() - plain.count_params() == 27 * 2 * 1  # out_conv takes 8 + 2 channels
    assert skipped.get_layer("out_conv").kernel.shape == (3, 3, 3, 10, 1)
    assert "out_input_skip" not in {layer.name for layer in plain.layers}
    # The head alone reads the input: with out_conv's feature weights zeroed and a centred delta on
    # input channel 0, the output is sigmoid(T2) voxel by voxel, a checkerboard of single voxels included.
    model = build_sit_generator((16, 16, 16, 2), filters=2, final_filters=2, input_skip=True)
    kernel = np.zeros((3, 3, 3, 4, 1), np.float32)
    kernel[1, 1, 1, 2, 0] = 1.0  # channels 0-1: the decoder's features, 2-3: the input (T2, FLAIR)
    model.get_layer("out_conv").set_weights([kernel, np.zeros(1, np.float32)])
    inputs = np.zeros((1, 16, 16, 16, 2), np.float32)
    inputs[0, ::2, ::2, ::2, 0] = 3.0
    inputs[0, ..., 1] = np.random.default_rng(0).normal(size=(16, 16, 16))
    expected = 1.0 / (1.0 + np.exp(-inputs[0, ..., 0]))
    np.testing.assert_allclose(np.asarray(model(inputs))[0, ..., 0], expected, atol=1e-6)
