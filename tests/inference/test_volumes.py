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
