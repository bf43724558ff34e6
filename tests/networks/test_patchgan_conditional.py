"""Tests for the seed-001 conditional PatchGAN with blur-pool down-sampling."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.networks.patchgan_conditional import (
    PERCEPTUAL_LAYERS,
    build_conditional_patchgan,
    pytorch_layer_names,
)


def test_original_parameter_count_shapes_and_features():
    model = build_conditional_patchgan((144, 192, 192, 2), feature_layers=PERCEPTUAL_LAYERS)
    assert model.count_params() == 540_737  # spec 2.4
    assert not model.non_trainable_weights
    shapes = [tuple(shape) for shape in model.output_shape]
    assert shapes == [
        (None, 69, 93, 93, 1),
        (None, 143, 191, 191, 64),
        (None, 72, 96, 96, 64),
        (None, 71, 95, 95, 64),
        (None, 70, 94, 94, 64),
    ]
    assert model.get_layer("model_0_conv").use_bias and model.get_layer("model_10_conv").use_bias
    assert not model.get_layer("model_4_conv").use_bias and not model.get_layer("model_7_conv").use_bias
    plain = build_conditional_patchgan((144, 192, 192, 2))
    assert plain.count_params() == 540_737 and plain.output_shape == (None, 69, 93, 93, 1)


def test_layer_index_table():
    names = pytorch_layer_names()
    assert len(names) == 11
    assert [names[i] for i in PERCEPTUAL_LAYERS] == ["model_0_conv", "model_3_blurpool", "model_6_lrelu", "model_9_lrelu"]
    model = build_conditional_patchgan((16, 16, 16, 2), base_filters=4)
    for name in names:
        model.get_layer(name)  # every index has its Keras layer
    deeper = pytorch_layer_names(n_layers=3)
    assert len(deeper) == 4 + 2 * 4 + 2 * 3 + 1
    assert pytorch_layer_names(antialias=False)[:3] == ["model_0_conv", "model_1_norm", "model_2_lrelu"]


def test_deeper_and_no_antialias_counts():
    deeper = build_conditional_patchgan((32, 32, 32, 2), n_layers=3)
    expected = (3 * 64 * 64 + 64) + 64 * 64 * 128 + 128 * 64 * 256 + 2 * 256 * 64 * 256 + (256 * 64 + 1)
    assert deeper.count_params() == expected
    strided = build_conditional_patchgan((16, 16, 16, 2), base_filters=4, antialias=False)
    assert strided.output_shape == (None, 5, 5, 5, 1)  # 16 -> 8 (k4 s2 p1) -> 7 -> 6 -> 5
    assert not any("blurpool" in layer.name for layer in strided.layers)


# ---- NumPy reference of the PyTorch definition (2D, tiny) ------------------------------------
def _conv(x, kernel, bias, stride=1):
    x = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out_h = (x.shape[0] - 4) // stride + 1
    out_w = (x.shape[1] - 4) // stride + 1
    out = np.zeros((out_h, out_w, kernel.shape[-1])) + (0.0 if bias is None else bias)
    for i in range(4):
        for j in range(4):
            out += x[i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride] @ kernel[i, j]
    return out


def _blur(x):
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    x = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    out_h, out_w = (x.shape[0] - 3) // 2 + 1, (x.shape[1] - 3) // 2 + 1
    out = np.zeros((out_h, out_w, x.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += kernel[i, j] * x[i:i + 2 * (out_h - 1) + 1:2, j:j + 2 * (out_w - 1) + 1:2]
    return out


def _in(x):
    return (x - x.mean(axis=(0, 1))) / np.sqrt(x.var(axis=(0, 1)) + 1e-5)


def _lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def test_forward_and_features_match_pytorch_definition_2d():
    keras.utils.set_random_seed(5)
    model = build_conditional_patchgan((18, 14, 2), base_filters=4, spatial_dims=2, feature_layers=PERCEPTUAL_LAYERS)
    rng = np.random.default_rng(0)
    condition = rng.uniform(size=(1, 18, 14, 2)).astype("float32")
    target = rng.uniform(size=(1, 18, 14, 1)).astype("float32")
    logits, *features = [np.asarray(t)[0] for t in model([condition, target])]

    def weights(index):
        layer = model.get_layer(f"model_{index}_conv")
        return np.asarray(layer.kernel, np.float64), (np.asarray(layer.bias, np.float64) if layer.use_bias else None)

    x = np.concatenate([condition[0], target[0]], axis=-1).astype(np.float64)
    f0 = _conv(x, *weights(0))
    f3 = _blur(_lrelu(_in(f0)))
    f6 = _lrelu(_in(_conv(f3, *weights(4))))
    f9 = _lrelu(_in(_conv(f6, *weights(7))))
    out = _conv(f9, *weights(10))
    for got, expected in zip([logits, *features], [out, f0, f3, f6, f9]):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_tiny_3d_forward_dynamic_shapes_and_gradients():
    keras.utils.set_random_seed(2)
    model = build_conditional_patchgan(base_filters=4, feature_layers=(0, 9))
    condition = tf.random.uniform((2, 16, 24, 16, 2))
    target = tf.random.uniform((2, 16, 24, 16, 1))
    with tf.GradientTape() as tape:
        tape.watch(target)
        logits, first, last = model([condition, target])
        loss = tf.reduce_mean(logits) + tf.reduce_mean(last)
    assert tuple(logits.shape) == (2, 5, 9, 5, 1) and logits.dtype == tf.float32
    assert tuple(first.shape) == (2, 15, 23, 15, 4)
    assert tape.gradient(loss, target) is not None


def test_save_load_roundtrip(tmp_path):
    model = build_conditional_patchgan((16, 16, 16, 2), base_filters=4, feature_layers=PERCEPTUAL_LAYERS)
    path = tmp_path / "d.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    inputs = [np.random.default_rng(1).uniform(size=(1, 16, 16, 16, c)).astype("float32") for c in (2, 1)]
    for a, b in zip(loaded(inputs), model(inputs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(TfmedganError, match="feature_layers"):
        build_conditional_patchgan(feature_layers=(10,))
    with pytest.raises(TfmedganError, match="norm"):
        build_conditional_patchgan(norm="batch")
    with pytest.raises(TfmedganError, match="spatial_dims"):
        build_conditional_patchgan(spatial_dims=4)
    no_norm = build_conditional_patchgan((16, 16, 16, 2), base_filters=4, norm=None, feature_layers=(1,))
    assert len(no_norm.outputs) == 2  # index 1 (identity norm) is the conv output
