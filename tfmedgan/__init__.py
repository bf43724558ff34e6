"""tfmedgan: TensorFlow/Keras 3 generative models for medical images.

The Python API (the command line is a thin layer over it)::

    import tfmedgan

    tfmedgan.list_models()                                   # ['dcgan', 'stylegan2', 'cyclegan3d', ...]
    run = tfmedgan.train("dcgan", data_dirs=["slices"], output_dir="runs", epochs=5)
    run = tfmedgan.load_run("runs/dcgan-20261201-120000")
    images = run.generate(16)                           # 2D GANs
    run.translate("subject_T1w.nii.gz", "synthetic")    # 3D translators
"""

from __future__ import annotations

from typing import Any

from tfmedgan.engine.cpu_features import use_onednn_by_default
from tfmedgan.errors import TfmedganError

use_onednn_by_default()  # before anything imports TensorFlow: oneDNN's kernels on AVX2-only CPUs too

__version__ = "0.2.0"
__all__ = ["TfmedganError", "configure", "load_run", "list_models", "train"]


def list_models() -> list[str]:
    """Names of the registered models."""
    from tfmedgan.models import REGISTRY

    return list(REGISTRY)


def configure(model: str, preset: str | None = None, sample_data: bool = False, **options: Any):
    """A validated config of ``model`` (see :func:`tfmedgan.api.configure`)."""
    from tfmedgan import api

    return api.configure(model, preset=preset, sample_data=sample_data, **options)


def train(model: str | None = None, config=None, **options: Any):
    """Train a model and return its run (see :func:`tfmedgan.api.train`)."""
    from tfmedgan import api

    return api.train(model, config, **options)


def load_run(path):
    """Open a finished or stopped run directory (see :class:`tfmedgan.api.Run`)."""
    from tfmedgan import api

    return api.load_run(path)
