"""Built-in sample data, made offline, so that examples, tests and smoke runs need no download.

The research code this library rebuilds was trained on data we cannot ship: OASIS brain slices for
the 2D GANs, paired skull-stripped T1w/T2w volumes for the 3D CycleGAN and microCT tomograms of a
fibre composite for the 3D super-resolution CycleGAN. This package makes small stand-ins:

* :mod:`~tfmedgan.data.samples.template`: the MNI ICBM152 templates shipped inside nilearn
  (:func:`load_mni152`), tissue contrasts, and the random warps, bias fields and noise shared by
  the slices and the subjects; :func:`cache_root`.
* :mod:`~tfmedgan.data.samples.slices`: :func:`make_png_slices` / :func:`sample_slices_dir` write
  2D axial brain slices as 8-bit PNGs that look like the OASIS ``keras_png_slices`` set.
* :mod:`~tfmedgan.data.samples.subjects`: :func:`make_paired_subjects` writes co-registered
  T1w/T2w "subjects" as gzipped NIfTI in the ``trainA`` / ``trainB`` layout.
* :mod:`~tfmedgan.data.samples.phantom`: :func:`write_phantom_dataset` writes a synthetic microCT
  fast/slow pair in the seed-002 HDF5 + JSON layout (``python -m tfmedgan.data.samples.phantom``).

Every brain image is one anatomy (the template) with a random deformation, bias field and Rician
noise, so the images differ but all come from 1-2 anatomies. They are good for demos and tests,
not for research results.

The phantom names are imported on first use (module ``__getattr__``), so that
``python -m tfmedgan.data.samples.phantom`` does not find its own module already imported.

Example:
    >>> from tfmedgan.data.samples import sample_slices_dir, make_paired_subjects
    >>> slices = sample_slices_dir(resolution=64, n_images=32)        # doctest: +SKIP
    >>> subjects = make_paired_subjects("/tmp/t1t2", n_subjects=4)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from tfmedgan.data.samples import slices, subjects, template
from tfmedgan.data.samples.slices import make_png_slices, sample_slices_dir
from tfmedgan.data.samples.subjects import make_paired_subjects
from tfmedgan.data.samples.template import (
    BRAINWEB_T1,
    BRAINWEB_T2,
    MNI152Templates,
    cache_root,
    load_mni152,
    smooth_random_field,
    synthetic_t1_t2,
    tissue_probabilities,
)

_PHANTOM_NAMES = ("fibre_composite", "block_downsample", "microct_pair", "write_phantom_dataset")

__all__ = [*template.__all__, *slices.__all__, *subjects.__all__, *_PHANTOM_NAMES]


def __getattr__(name: str) -> Any:
    """The phantom functions, imported from :mod:`tfmedgan.data.samples.phantom` on first use."""
    if name in _PHANTOM_NAMES:
        return getattr(importlib.import_module("tfmedgan.data.samples.phantom"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
