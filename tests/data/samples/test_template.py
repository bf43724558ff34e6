"""Tests for tfmedgan.data.samples.template (MNI152 templates, tissue contrasts, cache folder)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tfmedgan.data.samples import template
from tfmedgan.errors import TfmedganError


def test_load_mni152_two_mm_grid_and_read_only() -> None:
    templates = template.load_mni152(2)
    assert templates.t1.shape == templates.gm.shape == templates.wm.shape == (99, 117, 95)
    assert templates.mask.shape == (99, 117, 95)
    np.testing.assert_allclose(np.diag(templates.affine)[:3], [2.0, 2.0, 2.0])
    assert set(np.unique(templates.mask)) == {0.0, 1.0}
    assert 0.0 <= templates.t1.min() and templates.t1.max() <= 1.0
    assert templates.t1.dtype == np.float32
    with pytest.raises(ValueError):
        templates.t1[0, 0, 0] = 1.0  # cached arrays must not be modifiable
    assert template.load_mni152(2.0) is templates  # cached


def test_load_mni152_rejects_other_resolutions() -> None:
    with pytest.raises(TfmedganError, match="resolution_mm"):
        template.load_mni152(3)


def test_synthetic_t1_t2_pure_tissues_give_brainweb_values() -> None:
    # voxel 0: pure GM, 1: pure WM, 2: mask only (CSF), 3: outside the mask, 4: half GM half WM
    gm = np.array([1.0, 0.0, 0.0, 0.7, 0.5], dtype=np.float32)
    wm = np.array([0.0, 1.0, 0.0, 0.2, 0.5], dtype=np.float32)
    mask = np.array([1.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)
    t1, t2 = template.synthetic_t1_t2(gm, wm, mask)
    np.testing.assert_allclose(t1, [106.0, 154.0, 48.0, 0.0, 130.0], rtol=1e-6)
    np.testing.assert_allclose(t2, [100.0, 70.0, 250.0, 0.0, 85.0], rtol=1e-6)
    assert t1.dtype == t2.dtype == np.float32


def test_tissue_probabilities_sum_to_mask() -> None:
    templates = template.load_mni152(2)
    gm, wm, csf = template.tissue_probabilities(templates.gm, templates.wm, templates.mask)
    np.testing.assert_allclose(gm + wm + csf, templates.mask, atol=1e-5)
    assert (csf >= 0).all() and (gm[templates.mask == 0] == 0).all()
    csf_fraction = csf[templates.mask > 0].mean()
    assert 0.05 < csf_fraction < 0.25  # about 11 % of the brain


def test_cache_root_default(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv("TFMEDGAN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert template.cache_root() == tmp_path / ".cache" / "tfmedgan"
