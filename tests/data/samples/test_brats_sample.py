"""Tests for tfmedgan.data.samples.brats (two-institution BraTS-layout sample cases)."""

from __future__ import annotations

import dataclasses
import pathlib

import nibabel as nib
import numpy as np
import pytest

from tfmedgan.data import brats as brats_data
from tfmedgan.data.samples import brats as sample
from tfmedgan.data.samples.template import load_mni152
from tfmedgan.errors import TfmedganError


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("brats") / "BraTS"
    returned = sample.make_brats_cases(folder, n_per_split={"train": 2, "test": 1}, voxel_size_mm=4.0, seed=3)
    assert returned == folder
    return folder


def test_layout_names_orientation_and_pipeline_checks(root: pathlib.Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == [
        "domain1_test", "domain1_train", "domain2_test", "domain2_train"
    ]
    cases = brats_data.list_split(root, "domain1", "train")
    assert [case.name for case in cases] == ["SIM_SITEA_train_000", "SIM_SITEA_train_001"]
    files = sorted(p.name for p in cases[0].folder.iterdir())
    assert files == [f"SIM_SITEA_train_000_{m}.nii.gz" for m in ("flair", "seg", "t1", "t2")]
    image = nib.load(cases[0].path("t1"))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # as BraTS files
    assert np.allclose(image.header.get_zooms(), 4.0)
    geometry = brats_data.case_geometry(image.shape, image.affine, (32, 48, 40), None)
    assert geometry.reoriented_shape == (image.shape[2], image.shape[1], image.shape[0])
    for domain in ("domain1", "domain2"):
        for phase in ("train", "test"):
            brats_data.validate_cases(
                brats_data.list_split(root, domain, phase), crop_shape=(32, 48, 40), crop_start=None, progress=False
            )
    data = np.asarray(image.dataobj)
    assert data.dtype == np.float32 and data.min() == 0.0 and (data > 0).mean() > 0.3  # skull-stripped
    seg = np.asarray(nib.load(cases[0].folder / "SIM_SITEA_train_000_seg.nii.gz").dataobj)
    assert set(np.unique(seg)) <= {0, 1, 2} and (seg == 1).any() and (seg == 2).any()


def test_world_geometry_matches_the_template(root: pathlib.Path) -> None:
    image = nib.load(brats_data.list_split(root, "domain2", "test")[0].path("flair"))
    brain_world = image.affine @ np.r_[np.argwhere(np.asarray(image.dataobj) > 0).mean(axis=0), 1.0]
    templates = load_mni152(2)
    template_world = templates.affine @ np.r_[np.argwhere(templates.mask > 0.5).mean(axis=0), 1.0]
    assert np.linalg.norm(brain_world[:3] - template_world[:3]) < 8.0  # mm, small random warp + lesion


def _brain_values(root, domain, modality):
    case = brats_data.list_split(root, domain, "train")[0]
    data = np.asarray(nib.load(case.path(modality)).dataobj, np.float64)
    return data[data > 0]


def test_domains_differ_in_flair_csf_suppression_units_and_noise(root: pathlib.Path) -> None:
    # CSF (darkest brain tissue on FLAIR) is suppressed at site A only
    ratios = [np.percentile(v, 3) / np.median(v) for v in (_brain_values(root, d, "flair") for d in ("domain1", "domain2"))]
    assert ratios[0] < 0.45 < ratios[1]
    medians = [np.median(_brain_values(root, d, "t1")) for d in ("domain1", "domain2")]
    assert medians[1] > 1.8 * medians[0]  # different intensity units


def test_contrast_curve_table():
    fractions = {"csf": np.array([1.0, 0.0]), "wm": np.array([0.0, 1.0])}
    site_a, site_b = sample.INSTITUTIONS
    flat = sample.synthesize_contrast(fractions, site_a.intensities["flair"], site_a.gamma["flair"])
    np.testing.assert_allclose(flat, [12.0, 85.0])
    curved = sample.synthesize_contrast(fractions, site_b.intensities["flair"], site_b.gamma["flair"])
    reference = max(site_b.intensities["flair"].values())
    np.testing.assert_allclose(curved, reference * (np.array([55.0, 95.0]) / reference) ** 1.25, rtol=1e-6)
    with pytest.raises(TfmedganError, match="unknown tissue"):
        sample.synthesize_contrast({"bone": np.ones(2)}, {"wm": 1.0})


def test_site_b_is_blurred_noisier_and_more_biased():
    templates = load_mni152(2)
    grid = sample._output_grid(templates, 4.0, 8.0)
    site_a, site_b = sample.INSTITUTIONS

    def render(institution):
        return sample._render_case(templates, grid, institution, np.random.default_rng(0), 4.0)[0]["t1"]

    quiet = dict(noise=(0.0, 0.0), bias_strength=(0.0, 0.0), scale=1.0)
    sharp = render(dataclasses.replace(site_a, **quiet))
    blurred = render(dataclasses.replace(site_a, blur_mm=site_b.blur_mm, **quiet))

    def roughness(volume):
        inside = volume > 0
        return np.abs(np.diff(volume, axis=2))[inside[:, :, 1:] & inside[:, :, :-1]].mean()

    assert roughness(blurred) < 0.9 * roughness(sharp)  # sigma 2.5 mm is only 0.6 voxel at 4 mm
    noisy_a = render(dataclasses.replace(site_a, bias_strength=(0.0, 0.0)))
    noisy_b = render(dataclasses.replace(site_a, noise=site_b.noise, bias_strength=(0.0, 0.0)))
    assert np.std(noisy_b - sharp) > 1.8 * np.std(noisy_a - sharp)
    inside = sharp > 0
    bias_a = render(dataclasses.replace(site_a, noise=(0.0, 0.0), scale=1.0))
    bias_b = render(dataclasses.replace(site_a, noise=(0.0, 0.0), bias_strength=site_b.bias_strength))
    spread = [np.std(np.log(b[inside] / sharp[inside])) for b in (bias_a, bias_b)]
    assert spread[1] > 1.8 * spread[0]


def test_deterministic_and_never_overwrites(tmp_path: pathlib.Path, root: pathlib.Path) -> None:
    again = sample.make_brats_cases(tmp_path / "again", n_per_split={"train": 1}, voxel_size_mm=4.0, seed=3)
    first = brats_data.list_split(root, "domain2", "train")[0]
    second = brats_data.list_split(again, "domain2", "train")[0]
    assert first.name == second.name
    np.testing.assert_array_equal(np.asarray(nib.load(first.path("t2")).dataobj),
                                  np.asarray(nib.load(second.path("t2")).dataobj))
    with pytest.raises(TfmedganError, match="already holds files"):
        sample.make_brats_cases(tmp_path / "again", n_per_split={"train": 1}, voxel_size_mm=4.0)
    with pytest.raises(TfmedganError, match="voxel_size_mm"):
        sample.make_brats_cases(tmp_path / "x", voxel_size_mm=0.5)
    with pytest.raises(TfmedganError, match="n_per_split"):
        sample.make_brats_cases(tmp_path / "x", n_per_split={"training": 2})
    with pytest.raises(TfmedganError, match="no case"):
        sample.make_brats_cases(tmp_path / "x", n_per_split=0)
