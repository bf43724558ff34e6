"""Test setup: quiet TF, two logical CPU devices (for MirroredStrategy tests), Neptune offline."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NEPTUNE_MODE", "debug")

import tfmedgan  # noqa: E402,F401  (before TensorFlow, as for a user: oneDNN on, AVX2-only CPUs included)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:  # must happen before any TF op runs
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
    pass


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts in float32 (some tests switch the global policy)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def png_folder(tmp_path):
    """A folder of 24 random-ish 32x32 grayscale PNGs in two subfolders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "slices"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:32, :32]
    for index in range(24):
        centre = rng.uniform(10, 22, size=2)
        radius = rng.uniform(5, 12)
        image = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2) * 180 + rng.integers(0, 40, (32, 32))
        Image.fromarray(image.astype(np.uint8)).save(root / ("a" if index % 2 else "b") / f"img_{index:03d}.png")
    return root
