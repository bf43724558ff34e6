"""Whole-volume translation: one forward pass when the fully convolutional network can take the
volume (no window seams), overlapping windows otherwise."""

import numpy as np

from tfmedgan.inference import volumes
from tfmedgan.inference.volumes import INPUT_MULTIPLE_ATTRIBUTE, translate_volume


class Recorder:
    """A stand-in network: records the input shapes and returns its input (scaled) unchanged."""

    def __init__(self, static=(None, None, None)):
        self.input_shape = (None, *static, 1)
        self.calls = []

    def __call__(self, batch, training=False):
        self.calls.append(tuple(batch.shape))
        return np.asarray(batch)


def brain(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 100, shape) * (rng.uniform(size=shape) > 0.2)).astype(np.float32)


def test_a_volume_larger_than_the_model_shape_is_translated_in_one_pass():
    network = Recorder()
    setattr(network, INPUT_MULTIPLE_ATTRIBUTE, 4)
    data = brain((21, 18, 26))
    output = translate_volume(network, data, (16, 16, 16))
    assert network.calls == [(1, 24, 20, 28, 1)]  # each side rounded up to the multiple, one call
    assert output.shape == data.shape
    # identity network: the output is the input min-max scaled to [-1, 1], no window blending
    np.testing.assert_allclose(output, 2 * (data - data.min()) / (data.max() - data.min()) - 1, atol=1e-6)


def test_fixed_sides_or_no_multiple_fall_back_to_windows(monkeypatch):
    data = brain((21, 18, 20))
    fixed_z = Recorder(static=(None, None, 16))
    setattr(fixed_z, INPUT_MULTIPLE_ATTRIBUTE, 4)  # Z is fixed at 16 (per-slice norm), the volume needs 20
    translate_volume(fixed_z, data, (16, 16, 16))
    assert len(fixed_z.calls) >= 1 and all(call[1:4] == (16, 16, 16) for call in fixed_z.calls)
    unknown = Recorder()  # legacy models carry no multiple
    translate_volume(unknown, data, (16, 16, 16))
    assert all(call[1:4] == (16, 16, 16) for call in unknown.calls)
    monkeypatch.setattr(volumes, "ONE_PASS_VOXELS", 10)  # too large for one pass
    large = Recorder()
    setattr(large, INPUT_MULTIPLE_ATTRIBUTE, 4)
    translate_volume(large, data, (16, 16, 16))
    assert all(call[1:4] == (16, 16, 16) for call in large.calls)


def test_a_network_trained_on_crops_runs_on_windows_of_the_crop_shape():
    """--patch runs: instance norm learnt crop statistics, so inference uses crop-shaped windows."""
    import types

    from tfmedgan.inference.volumes import TRAINING_PATCH_ATTRIBUTE, mark_translator

    config = types.SimpleNamespace(n_downsamplings=2, patch=[7, 9, 8], shape=[24, 24, 24])
    network = mark_translator(Recorder(), config)
    assert getattr(network, TRAINING_PATCH_ATTRIBUTE) == (8, 12, 8)  # rounded up to multiples of 4
    data = brain((21, 18, 26))
    output = translate_volume(network, data, (24, 24, 24))
    assert len(network.calls) > 8 and set(call[1:4] for call in network.calls) == {(8, 12, 8)}
    assert output.shape == data.shape
    # identity network: overlapping windows blend back to the scaled input exactly
    padded, padding = volumes.pad_or_crop_center(data, (24, 24, 26))
    expected = volumes.undo_center_pad(volumes.scale_to_unit_range(padded), padding)
    np.testing.assert_allclose(output, expected, atol=1e-5)
    whole = mark_translator(Recorder(), types.SimpleNamespace(n_downsamplings=2, patch=[], shape=[24, 24, 24]))
    translate_volume(whole, data, (24, 24, 24))
    assert whole.calls == [(1, 24, 24, 28, 1)]  # trained on whole volumes: one pass
