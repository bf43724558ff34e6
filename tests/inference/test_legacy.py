"""Tests for importing the original Keras 2.1.6 seed-000 models (JSON + HDF5 weights).

The weights are read from ../shared/seed-weights (never copied into the repository); the tests
that need them are skipped when the folder is absent.
"""

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.inference.legacy import (
    describe_legacy_architecture,
    load_legacy_model,
    read_legacy_architecture,
    read_legacy_weights,
)
from tfmedgan.layers import InstanceNormalization

WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared" / "seed-weights" / "dcan-cyclegan3d"
needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "G_A2B_model.hdf5").exists(), reason="original seed-000 weights not available"
)

# our layer name -> layer group of the original G_A2B file (names from G_A2B_model.json)
G_A2B_LAYERS = {
    "stem_conv": "conv3d_5",
    "stem_norm": "instance_normalization_1",
    "down1_conv": "conv3d_6",
    "down1_norm": "instance_normalization_2",
    "res1_conv1": "conv3d_7",
    "res1_norm1": "instance_normalization_3",
    "res1_conv2": "conv3d_8",
    "res1_norm2": "instance_normalization_4",
    "up1_conv": "conv3d_transpose_1",
    "up1_norm": "instance_normalization_5",
    "head_conv": "conv3d_9",
}


def _original_arrays(path, group_name):
    """The arrays of one layer group of a save_weights file, as (kernel, bias) / (gamma, beta)."""
    with h5py.File(path, "r") as handle:
        group = handle[group_name]
        names = [name.decode() for name in group.attrs["weight_names"]]
        return {name.split("/")[-1].split(":")[0]: np.asarray(group[name]) for name in names}


def _contrib_norm_axis3(values, gamma, beta, epsilon=1e-5):
    """keras-contrib InstanceNormalization(axis=3) on a 5-D array, in numpy."""
    mean = values.mean(axis=(1, 2, 4), keepdims=True)
    std = values.std(axis=(1, 2, 4), keepdims=True)
    return (values - mean) / (std + epsilon) * gamma.reshape(1, 1, 1, -1, 1) + beta.reshape(
        1, 1, 1, -1, 1
    )


def _numpy_conv3d_valid(values, kernel, bias):
    """Plain numpy 'valid' stride-1 3D convolution (cross-correlation, channels last)."""
    size = kernel.shape[:3]
    windows = np.lib.stride_tricks.sliding_window_view(values, size, axis=(1, 2, 3))
    # windows: (batch, x, y, z, channels_in, kx, ky, kz)
    return np.einsum("bxyzcijk,ijkco->bxyzo", windows, kernel) + bias


@needs_weights
def test_generator_weights_match_hdf5_exactly():
    model = load_legacy_model(WEIGHTS / "G_A2B_model.json", WEIGHTS / "G_A2B_model.hdf5")
    assert model.name == "G_A2B_model"
    assert model.input_shape == (None, 156, 188, 156, 1)
    assert model.count_params() == 355_077
    norms = [layer for layer in model.layers if isinstance(layer, InstanceNormalization)]
    assert {(layer.axis_mode, layer.epsilon, layer.epsilon_mode) for layer in norms} == {
        ("zslice", 1e-5, "std")
    }
    checked = 0
    for ours, theirs in G_A2B_LAYERS.items():
        original = _original_arrays(WEIGHTS / "G_A2B_model.hdf5", theirs)
        layer = model.get_layer(ours)
        names = (
            ("gamma", "beta") if isinstance(layer, InstanceNormalization) else ("kernel", "bias")
        )
        for name, variable in zip(names, layer.weights):
            np.testing.assert_array_equal(variable.numpy(), original[name])
            checked += 1
    assert checked == len(model.weights) == 22


@needs_weights
def test_all_four_original_models_load():
    for name in ("G_B2A_model", "D_B_model"):
        model = load_legacy_model(WEIGHTS / f"{name}.json", WEIGHTS / f"{name}.hdf5")
        saved = [
            array for _, arrays in read_legacy_weights(WEIGHTS / f"{name}.hdf5") for array in arrays
        ]
        assert model.name == name and len(saved) == len(model.weights)
        for array, variable in zip(saved, model.weights):
            np.testing.assert_array_equal(variable.numpy(), array)


@needs_weights
def test_discriminator_forward_matches_tf_nn_reference():
    model = load_legacy_model(WEIGHTS / "D_A_model.json", WEIGHTS / "D_A_model.hdf5")
    assert model.name == "D_A_model" and model.count_params() == 8_257
    with h5py.File(WEIGHTS / "D_A_model.hdf5", "r") as handle:
        kernel1 = np.asarray(handle["model_1/conv3d_1/kernel:0"])
        bias1 = np.asarray(handle["model_1/conv3d_1/bias:0"])
        kernel2 = np.asarray(handle["model_1/conv3d_2/kernel:0"])
        bias2 = np.asarray(handle["model_1/conv3d_2/bias:0"])
    volume = np.random.default_rng(0).uniform(-1, 1, (1, 156, 188, 156, 1)).astype("float32")
    hidden = tf.nn.conv3d(volume, kernel1, [1, 2, 2, 2, 1], "SAME") + bias1
    hidden = tf.where(hidden > 0, hidden, 0.2 * hidden)
    expected = (tf.nn.conv3d(hidden, kernel2, [1, 1, 1, 1, 1], "SAME") + bias2).numpy()
    outputs = model(volume).numpy()
    assert outputs.shape == (1, 78, 94, 78, 1)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


@needs_weights
def test_generator_forward_matches_independent_reference():
    """Loaded G_A2B on a (16, 16, 156) slab (Z must stay 156) vs tf.nn/numpy on the raw arrays."""
    model = load_legacy_model(
        WEIGHTS / "G_A2B_model.json", WEIGHTS / "G_A2B_model.hdf5", input_shape=(16, 16, 156, 1)
    )
    weights = {
        ours: _original_arrays(WEIGHTS / "G_A2B_model.hdf5", theirs)
        for ours, theirs in G_A2B_LAYERS.items()
    }

    def conv(values, name, stride=1, padding="SAME"):
        return (
            tf.nn.conv3d(
                values, weights[name]["kernel"], [1, stride, stride, stride, 1], padding
            ).numpy()
            + weights[name]["bias"]
        )

    def norm(values, name):
        return _contrib_norm_axis3(
            values.astype("float64"), weights[name]["gamma"], weights[name]["beta"]
        ).astype("float32")

    def reflect(values):
        return np.pad(values, [(0, 0), (3, 3), (3, 3), (3, 3), (0, 0)], mode="reflect")

    volume = np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 156, 1)).astype("float32")
    x = np.maximum(norm(conv(reflect(volume), "stem_conv", padding="VALID"), "stem_norm"), 0)
    x = np.maximum(norm(conv(x, "down1_conv", stride=2), "down1_norm"), 0)
    shortcut = x
    x = np.maximum(norm(conv(x, "res1_conv1"), "res1_norm1"), 0)
    x = norm(conv(x, "res1_conv2"), "res1_norm2") + shortcut
    x = tf.nn.conv3d_transpose(
        x, weights["up1_conv"]["kernel"], (1, 16, 16, 156, 32), [1, 2, 2, 2, 1], "SAME"
    )
    x = np.maximum(norm(x.numpy() + weights["up1_conv"]["bias"], "up1_norm"), 0)
    expected = np.tanh(conv(reflect(x), "head_conv", padding="VALID"))

    outputs = model(volume).numpy()
    assert outputs.shape == (1, 16, 16, 156, 1)
    np.testing.assert_allclose(outputs, expected, atol=2e-5)
    assert outputs.std() > 1e-3  # the trained weights do something


def test_numpy_conv_plus_zslice_norm_stage_matches_keras():
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(2, 7, 8, 9, 2)).astype("float32")
    kernel = rng.normal(0, 0.3, (3, 3, 3, 2, 4)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    gamma = rng.normal(1, 0.2, 7).astype("float32")  # Z after a 3-wide valid conv: 9 - 2 = 7
    beta = rng.normal(0, 0.2, 7).astype("float32")

    inputs = keras.Input((7, 8, 9, 2))
    conv = keras.layers.Conv3D(4, 3, padding="valid")
    norm = InstanceNormalization(axis_mode="zslice", epsilon=1e-5, epsilon_mode="std")
    model = keras.Model(inputs, norm(conv(inputs)))
    conv.set_weights([kernel, bias])
    norm.set_weights([gamma, beta])

    expected = _contrib_norm_axis3(
        _numpy_conv3d_valid(volume.astype("float64"), kernel, bias), gamma, beta
    )
    np.testing.assert_allclose(model(volume).numpy(), expected, atol=1e-4)


@needs_weights
def test_architecture_description():
    spec = describe_legacy_architecture(read_legacy_architecture(WEIGHTS / "G_A2B_model.json"))
    assert spec.kind == "generator" and spec.input_shape == (156, 188, 156, 1)
    assert spec.build_arguments["base_filters"] == 32
    assert spec.build_arguments["n_downsamplings"] == 1
    assert spec.build_arguments["n_residual_blocks"] == 1
    assert spec.build_arguments["norm"] == "zslice"
    spec = describe_legacy_architecture(read_legacy_architecture(WEIGHTS / "D_A_model.json"))
    assert spec.kind == "discriminator"
    assert (spec.build_arguments["base_filters"], spec.build_arguments["n_layers"]) == (64, 1)


@needs_weights
def test_full_model_hdf5_layout_without_json(tmp_path):
    """A Keras 2 ``model.save`` file: weights under model_weights/, architecture in model_config."""
    architecture = read_legacy_architecture(WEIGHTS / "D_A_model.json")
    path = tmp_path / "full_model.h5"
    with h5py.File(WEIGHTS / "D_A_model.hdf5", "r") as source, h5py.File(path, "w") as target:
        target.attrs["model_config"] = json.dumps(architecture).encode()
        group = target.create_group("model_weights")
        for key, value in source.attrs.items():
            group.attrs[key] = value
        for name in source:
            source.copy(name, group)
    model = load_legacy_model(None, path)
    original = load_legacy_model(WEIGHTS / "D_A_model.json", WEIGHTS / "D_A_model.hdf5")
    for ours, theirs in zip(model.weights, original.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@needs_weights
def test_clear_errors(tmp_path):
    not_hdf5 = tmp_path / "weights.hdf5"
    not_hdf5.write_text("not hdf5")
    with pytest.raises(TfmedganError, match="HDF5"):
        load_legacy_model(WEIGHTS / "D_A_model.json", not_hdf5)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as handle:
        handle.create_group("something")
    with pytest.raises(TfmedganError, match="layer_names"):
        load_legacy_model(WEIGHTS / "D_A_model.json", empty)
    with pytest.raises(TfmedganError, match="weights only"):
        load_legacy_model(None, WEIGHTS / "D_A_model.hdf5")
    bad_json = tmp_path / "model.json"
    bad_json.write_text(json.dumps({"class_name": "Dense"}))
    with pytest.raises(TfmedganError, match="not a Keras 2 model"):
        load_legacy_model(bad_json, WEIGHTS / "D_A_model.hdf5")
    with pytest.raises(TfmedganError, match="weight arrays"):
        load_legacy_model(WEIGHTS / "D_A_model.json", WEIGHTS / "G_A2B_model.hdf5")
    with pytest.raises(TfmedganError, match="last spatial size"):
        load_legacy_model(
            WEIGHTS / "G_A2B_model.json", WEIGHTS / "G_A2B_model.hdf5", input_shape=(16, 16, 16, 1)
        )
    dense = read_legacy_architecture(WEIGHTS / "D_A_model.json")
    dense["config"]["layers"][1]["config"]["layers"].append({"class_name": "Dense", "config": {}})
    with pytest.raises(TfmedganError, match="variant"):
        describe_legacy_architecture(dense)
