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


class Ramp:
    """A stand-in network that is not mirror-symmetric: its input times a ramp along axis 0."""

    input_shape = (None, None, None, None, 1)

    def __call__(self, batch, training=False):
        batch = np.asarray(batch)
        ramp = np.linspace(0.2, 1.0, batch.shape[1], dtype=np.float32)[None, :, None, None, None]
        return batch * ramp


def test_flip_averaging_is_the_mean_of_the_two_translations_and_mirror_equivariant():
    network = Ramp()
    setattr(network, INPUT_MULTIPLE_ATTRIBUTE, 4)
    data = brain((20, 16, 12), seed=3)
    plain = translate_volume(network, data, (16, 16, 16))
    mirrored = np.flip(translate_volume(network, np.flip(data, 0), (16, 16, 16)), 0)
    assert np.abs(plain - mirrored).max() > 0.1  # the network itself is not symmetric
    averaged = translate_volume(network, data, (16, 16, 16), flip_axes=(0,))
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, atol=1e-6)
    # mirroring the input mirrors the averaged output, exactly
    np.testing.assert_array_equal(translate_volume(network, np.flip(data, 0), (16, 16, 16), flip_axes=(0,)),
                                  np.flip(averaged, 0))


def test_the_left_right_axis_comes_from_the_affine_and_bad_flip_axes_are_refused():
    import pytest

    from tfmedgan.errors import TfmedganError
    from tfmedgan.inference.volumes import left_right_axis

    assert left_right_axis(np.diag([-2.0, 2.0, 2.0, 1.0])) == 0  # LAS
    permuted = np.array([[0, 0, 1.5, 5], [0, 1.5, 0, 2], [-1.5, 0, 0, 1], [0, 0, 0, 1.0]])  # axis 2 runs along x
    assert left_right_axis(permuted) == 2
    with pytest.raises(TfmedganError, match="left-right"):
        left_right_axis(np.diag([0.0, 2.0, 2.0, 1.0]))  # a degenerate affine: no axis runs along x
    with pytest.raises(TfmedganError, match="flip axes"):
        translate_volume(Ramp(), brain((8, 8, 8)), (8, 8, 8), flip_axes=(3,))


def test_translate_files_flip_averages_along_each_files_own_left_right_axis(tmp_path):
    import nibabel

    from tfmedgan.inference.volumes import translate_files

    network = Ramp()
    setattr(network, INPUT_MULTIPLE_ATTRIBUTE, 4)
    data = brain((12, 16, 20), seed=4)
    affine = np.array([[0, 0, 2.0, -10], [2.0, 0, 0, 3], [0, 2.0, 0, 7], [0, 0, 0, 1]])  # left-right = axis 2
    source = tmp_path / "sub_T1w.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, affine), str(source))
    [written] = translate_files(network, (16, 16, 16), [source], tmp_path / "out", progress=False, flip_average=True)
    image = nibabel.load(str(written))
    np.testing.assert_array_equal(image.affine, affine)
    expected = translate_volume(network, data, (16, 16, 16), flip_axes=(2,))
    np.testing.assert_allclose(np.asarray(image.dataobj), expected, atol=1e-6)
    assert np.abs(expected - translate_volume(network, data, (16, 16, 16), flip_axes=(0,))).max() > 0.01
