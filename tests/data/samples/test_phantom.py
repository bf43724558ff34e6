"""The synthetic fibre-composite microCT pair (seed-002 sample data)."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tfmedgan.data.hdf5 import load_dataset_spec
from tfmedgan.data.samples.phantom import block_downsample, fibre_composite, microct_pair, write_phantom_dataset
from tfmedgan.errors import TfmedganError


def test_fibre_composite_structure_and_determinism():
    volume = fibre_composite((32, 48, 48), seed=3)
    again = fibre_composite((32, 48, 48), seed=3)
    assert volume.dtype == np.float32 and volume.shape == (32, 48, 48)
    np.testing.assert_array_equal(volume, again)
    assert not np.array_equal(volume, fibre_composite((32, 48, 48), seed=4))
    assert 0.0 <= volume.min() and volume.max() <= 1.0
    fibre = np.mean(volume > 0.9)
    assert 0.25 < fibre < 0.65, fibre  # packed fibres in a matrix
    assert np.mean(np.abs(volume - 0.35) < 0.01) > 0.2  # matrix
    # most in-plane positions are constant along the fibre axis (parallel fibres), some are not (tilted)
    varies = np.ptp(volume, axis=0) > 0.3
    assert 0.005 < varies.mean() < 0.5


def test_pair_geometry_noise_and_alignment():
    fast, slow, clean = microct_pair((32, 48, 64), super_resolution=2, seed=1)
    assert fast.shape == (16, 24, 32) and slow.shape == clean.shape == (32, 48, 64)
    assert 0.02 < np.std(slow - clean) < 0.04  # slow: light noise
    # fast: blurred + block-averaged clean plus strong noise, aligned with block averages of slow
    residual = fast - block_downsample(clean, 2)
    assert 0.1 < np.std(residual) < 0.2
    assert np.corrcoef(fast.ravel(), block_downsample(slow, 2).ravel())[0, 1] > 0.6
    with pytest.raises(TfmedganError, match="divisible"):
        microct_pair((30, 48, 64), super_resolution=4)


def test_write_phantom_dataset_layout(tmp_path):
    paths = write_phantom_dataset(tmp_path / "ph", shape=(32, 32, 32), super_resolution=2, seed=0)
    fast_spec, slow_spec = load_dataset_spec(paths["fast_json"]), load_dataset_spec(paths["slow_json"])
    assert fast_spec.train[0].shape == (16, 16, 16) and slow_spec.train[0].shape == (32, 32, 32)
    assert fast_spec.train[0].roi[0] == (0, 12) and fast_spec.validate[0].roi[0] == (12, 16)
    assert slow_spec.train[0].roi[0] == (0, 24) and slow_spec.validate[0].roi[0] == (24, 32)
    with h5py.File(paths["slow"]) as handle:
        data = handle["data"][()]
        assert data.dtype == np.float32 and abs(data.mean()) < 1e-4 and abs(data.std() - 1) < 1e-3
    assert json.loads((tmp_path / "ph" / "phantom.json").read_text())["super_resolution"] == 2
    stamp = paths["fast"].stat().st_mtime_ns
    write_phantom_dataset(tmp_path / "ph", shape=(32, 32, 32), super_resolution=2, seed=0)
    assert paths["fast"].stat().st_mtime_ns == stamp  # cached


def test_module_entry_point_writes_the_dataset(tmp_path):
    """``python -m tfmedgan.data.samples.phantom`` runs cleanly (no double-import warning) and writes the files."""
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "tfmedgan.data.samples.phantom",
         str(tmp_path / "ph"), "--shape", "8", "8", "8", "--super-resolution", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "fast_json: " in result.stdout
    fast_spec = load_dataset_spec(tmp_path / "ph" / "fast.json")
    assert fast_spec.train[0].shape == (4, 4, 4)
    failed = subprocess.run(
        [sys.executable, "-m", "tfmedgan.data.samples.phantom", str(tmp_path / "bad"), "--shape", "9", "8", "8"],
        capture_output=True, text=True, timeout=120,
    )
    assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "Traceback" not in failed.stderr
