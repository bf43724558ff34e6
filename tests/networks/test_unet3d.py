"""Tests for the seed-002 simplified 3D U-Nets (tfmedgan.networks.unet3d)."""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pytest

from tfmedgan.errors import TfmedganError
from tfmedgan.networks import unet3d
from tfmedgan.networks.unet3d import (
    UNET_NAMES,
    build_unet,
    check_pair,
    check_patch,
    output_patch_shape,
    required_multiple,
    spatial_scale,
    super_resolution_factor,
)

# parameter counts of the original PyTorch classes (spec B2)
ORIGINAL_PARAMETERS = {
    "UNetSim3d": 707_137,
    "UNetSim3dSRx2": 1_011_361,
    "UNetSim3dSRd2": 3_721_281,
    "UNetSim3dSRx4": 1_149_697,
    "UNetSim3dSRd4": 3_721_281,
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_PARAMETERS))
def test_parameter_count_matches_original(name):
    model = build_unet(name)
    assert model.count_params() == ORIGINAL_PARAMETERS[name]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == ORIGINAL_PARAMETERS[name]
    assert not model.non_trainable_weights  # no normalisation layers
    assert unet3d.unet_info(name).parameter_count == ORIGINAL_PARAMETERS[name]


def test_registry_facts():
    assert UNET_NAMES == tuple(ORIGINAL_PARAMETERS)
    assert [super_resolution_factor(n) for n in UNET_NAMES] == [1, 2, 2, 4, 4]
    assert [spatial_scale(n) for n in UNET_NAMES] == [1.0, 2.0, 0.5, 4.0, 0.25]
    assert [required_multiple(n) for n in UNET_NAMES] == [4, 4, 8, 2, 16]
    assert output_patch_shape("UNetSim3dSRx2", (64, 128, 128)) == (128, 256, 256)
    assert output_patch_shape("UNetSim3dSRd4", (256, 256, 256)) == (64, 64, 64)
    assert output_patch_shape("UNetSim3d", (8, 12, 16)) == (8, 12, 16)


# smallest accepted patches, anisotropic to catch axis mix-ups
@pytest.mark.parametrize(
    "name, patch, expected",
    [
        ("UNetSim3d", (4, 8, 4), (4, 8, 4)),
        ("UNetSim3dSRx2", (4, 8, 4), (8, 16, 8)),
        ("UNetSim3dSRd2", (8, 16, 8), (4, 8, 4)),
        ("UNetSim3dSRx4", (2, 4, 2), (8, 16, 8)),
        ("UNetSim3dSRd4", (16, 32, 16), (4, 8, 4)),
    ],
)
def test_output_shape_and_dtype_full_width(name, patch, expected):
    model = build_unet(name)
    x = np.random.default_rng(0).normal(size=(2, *patch, 1)).astype("float32")
    y = model(x)
    assert tuple(y.shape) == (2, *expected, 1)
    assert y.dtype == "float32"
    assert output_patch_shape(name, patch) == expected


def test_fixed_input_shape_and_channels():
    model = build_unet("UNetSim3dSRx2", input_shape=(4, 4, 8, 2), output_channels=3, num_filters=4)
    assert tuple(model.output.shape) == (None, 8, 8, 16, 3)
    with pytest.raises(TfmedganError, match="multiple of 4"):
        build_unet("UNetSim3dSRx2", input_shape=(6, 8, 8, 1))
    with pytest.raises(TfmedganError, match="unknown U-Net"):
        build_unet("UNet113d")
    with pytest.raises(TfmedganError, match="initializer"):
        build_unet("UNetSim3d", initializer="xavier")


def test_linear_output_no_clipping():
    model = build_unet("UNetSim3d", num_filters=4)
    final = model.get_layer("final")
    kernel, bias = final.get_weights()
    final.set_weights([kernel, bias - 100.0])  # a tanh/sigmoid/ReLU output would saturate
    y = keras.ops.convert_to_numpy(model(np.zeros((1, 4, 4, 4, 1), "float32")))
    assert np.all(y < -50.0)


# ------------------------------------------------------------------------------------------
# numerical agreement with a NumPy implementation of the PyTorch layer definitions
# ------------------------------------------------------------------------------------------
def _torch_conv3d(x, kernel, bias):
    """PyTorch Conv3d(k, stride 1, padding k//2) cross-correlation; kernel (k,k,k,in,out)."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (pad, pad), (0, 0)))
    _, depth, height, width, _ = x.shape
    out = np.zeros(x.shape[:4] + (kernel.shape[-1],))
    for a, b, c in itertools.product(range(size), repeat=3):
        out += padded[:, a : a + depth, b : b + height, c : c + width, :] @ kernel[a, b, c]
    return out + bias


def _torch_conv_transpose3d(x, kernel, bias):
    """PyTorch ConvTranspose3d(k=3, stride=2, padding=1, output_padding=1).

    Definition: out[o] += x[i] * w[k] for o = 2 i - padding + k, output length 2 S.
    ``kernel`` is the Keras Conv3DTranspose kernel (k, k, k, out, in).
    """
    batch, depth, height, width, _ = x.shape
    full = np.zeros((batch, 2 * depth + 1, 2 * height + 1, 2 * width + 1, kernel.shape[3]))
    for a, b, c in itertools.product(range(3), repeat=3):
        full[:, a : a + 2 * depth : 2, b : b + 2 * height : 2, c : c + 2 * width : 2, :] += x @ kernel[a, b, c].T
    padding = 1
    out = full[:, padding : padding + 2 * depth, padding : padding + 2 * height, padding : padding + 2 * width]
    return out + bias


def _pool(x):
    b, d, h, w, c = x.shape
    return x[:, : d // 2 * 2, : h // 2 * 2, : w // 2 * 2].reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c).max(axis=(2, 4, 6))


def _relu(x):
    return np.maximum(x, 0.0)


def _reference(model, name, x):
    def w(layer):
        return [np.asarray(v, dtype=np.float64) for v in model.get_layer(layer).get_weights()]

    def cr(t, layer):
        return _relu(_torch_conv3d(t, *w(layer)))

    def dec(t, block):
        return _relu(_torch_conv_transpose3d(cr(t, f"{block}_conv"), *w(f"{block}_upconv")))

    cat = lambda *ts: np.concatenate(ts, axis=-1)  # noqa: E731
    if name in ("UNetSim3d", "UNetSim3dSRx2"):
        c1 = cr(x, "conv1")
        c2 = cr(_pool(c1), "conv2")
        center = dec(_pool(c2), "center")
        d2 = dec(cat(center, c2), "dec2")
        d1 = cr(cat(d2, c1), "dec1_conv") if name == "UNetSim3d" else dec(cat(d2, c1), "dec1")
    elif name == "UNetSim3dSRx4":
        c1 = cr(x, "conv1")
        c2 = cr(c1, "conv2")
        center = dec(_pool(c2), "center")
        d2 = dec(cat(center, c2), "dec2")
        d2s = dec(cat(center, c1), "dec2s")
        d1 = dec(cat(d2, d2s), "dec1")
    else:
        t = _pool(x) if name == "UNetSim3dSRd4" else x
        c1 = cr(t, "conv1")
        c2 = cr(_pool(c1), "conv2")
        c3 = cr(cr(_pool(c2), "conv3s"), "conv3")
        center = dec(_pool(c3), "center")
        d2 = dec(cat(center, c3), "dec2")
        d1 = cr(cat(d2, c2), "dec1_conv")
    return _torch_conv3d(d1, *w("final"))


@pytest.mark.parametrize(
    "name, patch",
    [
        ("UNetSim3d", (4, 8, 4)),
        ("UNetSim3dSRx2", (4, 4, 8)),
        ("UNetSim3dSRd2", (8, 8, 16)),
        ("UNetSim3dSRx4", (2, 4, 2)),
        ("UNetSim3dSRd4", (16, 16, 32)),
    ],
)
def test_matches_pytorch_semantics(name, patch):
    keras.utils.set_random_seed(1)
    # torch_default init gives non-trivial biases, so bias handling is checked too
    model = build_unet(name, num_filters=4, initializer="torch_default")
    x = np.random.default_rng(2).normal(size=(2, *patch, 1))
    expected = _reference(model, name, x)
    got = keras.ops.convert_to_numpy(model(x.astype("float32")))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(expected).max() > 1e-3  # not a trivially zero comparison


def test_keras_same_transposed_conv_would_be_shifted():
    """Guards the reason for 'valid' + crop: Keras 'same' does not match PyTorch's alignment."""
    keras.utils.set_random_seed(3)
    layer = keras.layers.Conv3DTranspose(2, 3, strides=2, padding="same", use_bias=False)
    x = np.random.default_rng(4).normal(size=(1, 3, 3, 3, 2)).astype("float32")
    same = keras.ops.convert_to_numpy(layer(x))
    torch_like = _torch_conv_transpose3d(x.astype(np.float64), keras.ops.convert_to_numpy(layer.kernel).astype(np.float64), 0.0)
    assert same.shape == torch_like.shape
    assert not np.allclose(same, torch_like, atol=1e-3)


def test_initializers():
    keras.utils.set_random_seed(5)
    normal = build_unet("UNetSim3dSRd2")
    kernel, bias = normal.get_layer("conv3").get_weights()
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    assert np.all(bias == 0)

    torch_default = build_unet("UNetSim3dSRd2", initializer="torch_default")
    kernel, bias = torch_default.get_layer("conv3").get_weights()  # Conv3d(256, 256, 3): fan_in 256*27
    bound = 1 / math.sqrt(256 * 27)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.8 * bound
    # transposed conv: PyTorch fan_in = out_channels * 27 (center: ConvTranspose3d(64, 32))
    kernel, _ = torch_default.get_layer("center_upconv").get_weights()
    assert kernel.shape == (3, 3, 3, 32, 64)
    bound = 1 / math.sqrt(32 * 27)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound


# ------------------------------------------------------------------------------------------
# patch / pair checks
# ------------------------------------------------------------------------------------------
def test_check_patch_accepts_valid_sizes():
    check_patch("UNetSim3d", (128, 128, 128))
    check_patch("UNetSim3dSRx2", (64, 128, 128))
    check_patch("UNetSim3dSRd2", (128, 256, 256))
    check_patch("UNetSim3dSRx4", (2, 6, 10))
    check_patch("UNetSim3dSRd4", (np.int64(256), 256, 256))


@pytest.mark.parametrize(
    "name, patch, message",
    [
        ("UNetSim3d", (6, 8, 8), "multiple of 4"),
        ("UNetSim3dSRd2", (64, 124, 128), "multiple of 8"),
        ("UNetSim3dSRd4", (8, 16, 16), "multiple of 16"),
        ("UNetSim3dSRx4", (3, 4, 4), "multiple of 2"),
        ("UNetSim3dSRx2", (0, 4, 4), "multiple of 4"),
        ("UNetSim3dSRx2", (4, 4), "three integers"),
        ("UNetSim3dSRx2", (4.0, 4, 4), "three integers"),
        ("UNetSim3dSRx8", (4, 4, 4), "unknown U-Net"),
    ],
)
def test_check_patch_errors(name, patch, message):
    with pytest.raises(TfmedganError, match=message) as error:
        check_patch(name, patch)
    assert "\n" not in str(error.value)


def test_check_pair_accepts_original_presets():
    check_pair("UNetSim3d", "UNetSim3d", 1, (128, 128, 128))
    check_pair("UNetSim3dSRx2", "UNetSim3dSRd2", 2, (64, 128, 128))
    check_pair("UNetSim3dSRx4", "UNetSim3dSRd4", 4, (64, 64, 64))


@pytest.mark.parametrize(
    "net_a, net_b, factor, patch, message",
    [
        ("UNetSim3dSRx2", "UNetSim3dSRd2", 1, None, "net_a UNetSim3dSRx2 scales A->B by 2"),
        ("UNetSim3dSRx2", "UNetSim3dSRd2", 4, None, "use UNetSim3dSRx4"),
        ("UNetSim3dSRd2", "UNetSim3dSRx2", 2, None, "net_a UNetSim3dSRd2"),
        ("UNetSim3dSRx2", "UNetSim3dSRd4", 2, None, "net_b UNetSim3dSRd4 .* use UNetSim3dSRd2"),
        ("UNetSim3dSRx2", "UNetSim3d", 2, None, "net_b UNetSim3d "),
        ("UNetSim3d", "UNetSim3d", 0, None, "positive integer"),
        ("UNetSim3d", "UNetSim3d", 3, None, "no registered U-Net"),
        ("UNetSim3dSRx4", "UNetSim3dSRd4", 4, (2, 4, 4), r"\(8, 16, 16\) does not fit UNetSim3dSRd4"),
        ("UNetSim3dSRx2", "UNetSim3dSRd2", 2, (6, 8, 8), "does not fit UNetSim3dSRx2"),
    ],
)
def test_check_pair_errors(net_a, net_b, factor, patch, message):
    with pytest.raises(TfmedganError, match=message) as error:
        check_pair(net_a, net_b, factor, patch)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------
# serialization / mixed precision
# ------------------------------------------------------------------------------------------
def test_keras_save_load_round_trip(tmp_path):
    model = build_unet("UNetSim3d")
    x = np.random.default_rng(6).normal(size=(1, 4, 4, 8, 1)).astype("float32")
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "UNetSim3d"
    assert loaded.count_params() == 707_137
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)))


def test_mixed_bfloat16_keeps_float32_output():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_unet("UNetSim3dSRx2", num_filters=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("final").compute_dtype == "float32"
    y = model(np.ones((1, 4, 4, 4, 1), "float32"))
    assert y.dtype == "float32"
    assert tuple(y.shape) == (1, 8, 8, 8, 1)
