"""Seed-002 tomogram enhancement of NIfTI input: the (z, y, x) training patch meets NIfTI (x, y, z) arrays."""

import h5py
import keras
import nibabel as nib
import numpy as np
import pytest

from tfmedgan.inference import tomogram

PATCH = (4, 8, 12)  # anisotropic, in the HDF5 (z, y, x) order of the training data
STRIDE = (2, 5, 7)


def _orientation_sensitive_model():
    """A window-shaped network that treats axis 0 differently from the others, then upsamples 2x."""
    inputs = keras.Input(PATCH + (1,))
    conv = keras.layers.Conv3D(1, (3, 1, 1), padding="same", use_bias=False)
    outputs = keras.layers.UpSampling3D(2)(conv(inputs))
    model = keras.Model(inputs, outputs, name="axis0_filter")
    conv.set_weights([np.array([1.0, 2.0, -1.5], np.float32).reshape(3, 1, 1, 1, 1)])
    return model


@pytest.fixture
def enhancer(monkeypatch):
    model = _orientation_sensitive_model()
    monkeypatch.setattr(tomogram, "load_enhancer", lambda run_dir: (model, {"patch": list(PATCH), "super_resolution": 2, "net_a": "test"}))
    return model


def test_nifti_input_is_enhanced_in_the_training_axis_order(tmp_path, enhancer):
    rng = np.random.default_rng(0)
    zyx = rng.standard_normal((7, 11, 15)).astype(np.float32)  # HDF5 order: axis 0 is z
    with h5py.File(tmp_path / "scan.h5", "w") as handle:
        handle.create_dataset("data", data=zyx)
    xyz = np.ascontiguousarray(zyx.transpose(2, 1, 0))  # the same scan as NIfTI stores it
    nib.save(nib.Nifti1Image(xyz, np.diag([0.8, 0.8, 1.6, 1.0])), tmp_path / "scan_nifti.nii.gz")

    tomogram.enhance_file("run", tmp_path / "scan.h5", tmp_path / "h5", stride=STRIDE, border=0, progress=False)
    tomogram.enhance_file("run", tmp_path / "scan_nifti.nii.gz", tmp_path / "nii", stride=STRIDE, border=0,
                          progress=False)

    with h5py.File(tmp_path / "h5" / "scan_enhanced.h5") as handle:
        reference = handle["data"][()].astype(np.float32)  # (z, y, x) * 2
    written = nib.load(tmp_path / "nii" / "scan_nifti_enhanced.nii.gz")
    assert written.shape == (30, 22, 14)  # NIfTI output keeps the input's (x, y, z) order
    np.testing.assert_allclose(np.asarray(written.dataobj), reference.transpose(2, 1, 0), atol=2e-2)
    with h5py.File(tmp_path / "nii" / "scan_nifti_enhanced.h5") as handle:
        np.testing.assert_array_equal(handle["data"][()], reference.astype(np.float16).transpose(2, 1, 0))
