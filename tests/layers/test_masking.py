"""Tests for InputBackgroundMask."""

import keras
import numpy as np
import pytest

from tfmedgan.errors import TfmedganError
from tfmedgan.layers import InputBackgroundMask


def test_background_is_where_every_input_channel_is_background_2d():
    image = np.full((1, 4, 4, 2), -1.0, np.float32)
    image[0, 0, 0, 0] = 0.2   # one channel in the foreground: foreground
    image[0, 1, 1, 1] = -0.5
    translation = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 4, 4, 3)).astype(np.float32)
    out = InputBackgroundMask()([image, translation]).numpy()
    foreground = np.zeros((4, 4), bool)
    foreground[0, 0] = foreground[1, 1] = True
    np.testing.assert_array_equal(out[0][foreground], translation[0][foreground])
    assert np.all(out[0][~foreground] == -1.0)
    assert out.shape == translation.shape


def test_tolerance_background_value_config_and_bad_tolerance():
    layer = InputBackgroundMask(background=0.0, tolerance=0.1, name="keep")
    image = np.array([[[0.05], [0.5]]], np.float32)
    out = layer([image, np.ones_like(image) * 7.0]).numpy().ravel().tolist()
    assert out == [0.0, 7.0]
    clone = InputBackgroundMask.from_config(layer.get_config())
    assert (clone.background, clone.tolerance, clone.name) == (0.0, 0.1, "keep")
    with pytest.raises(TfmedganError, match="tolerance"):
        InputBackgroundMask(tolerance=-1.0)
    with pytest.raises(TfmedganError, match="tolerance"):
        InputBackgroundMask(tolerance=float("nan"))


def test_output_keeps_the_translation_dtype_under_bfloat16_inputs():
    image = keras.ops.cast(keras.ops.convert_to_tensor([[[-1.0], [0.3]]]), "bfloat16")
    translation = keras.ops.convert_to_tensor([[[0.25], [0.5]]], dtype="float32")
    out = InputBackgroundMask()([image, translation])
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.ops.convert_to_numpy(out).ravel().tolist() == [-1.0, 0.5]
