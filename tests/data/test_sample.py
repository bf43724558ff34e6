"""Tests for tfmedgan.data.sample (offline sample data from the MNI152 templates)."""

from __future__ import annotations

import pathlib

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tfmedgan.data import sample
from tfmedgan.errors import TfmedganError

PNG_RESOLUTION = 64


def _read_png(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.array(picture)


def _read_bytes(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


# ----------------------------------------------------------------------------------------------
# templates and contrasts
# ----------------------------------------------------------------------------------------------


def test_load_mni152_two_mm_grid_and_read_only() -> None:
    templates = sample.load_mni152(2)
    assert templates.t1.shape == templates.gm.shape == templates.wm.shape == (99, 117, 95)
    assert templates.mask.shape == (99, 117, 95)
    np.testing.assert_allclose(np.diag(templates.affine)[:3], [2.0, 2.0, 2.0])
    assert set(np.unique(templates.mask)) == {0.0, 1.0}
    assert 0.0 <= templates.t1.min() and templates.t1.max() <= 1.0
    assert templates.t1.dtype == np.float32
    with pytest.raises(ValueError):
        templates.t1[0, 0, 0] = 1.0  # cached arrays must not be modifiable
    assert sample.load_mni152(2.0) is templates  # cached


def test_load_mni152_rejects_other_resolutions() -> None:
    with pytest.raises(TfmedganError, match="resolution_mm"):
        sample.load_mni152(3)


def test_synthetic_t1_t2_pure_tissues_give_brainweb_values() -> None:
    # voxel 0: pure GM, 1: pure WM, 2: mask only (CSF), 3: outside the mask, 4: half GM half WM
    gm = np.array([1.0, 0.0, 0.0, 0.7, 0.5], dtype=np.float32)
    wm = np.array([0.0, 1.0, 0.0, 0.2, 0.5], dtype=np.float32)
    mask = np.array([1.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)
    t1, t2 = sample.synthetic_t1_t2(gm, wm, mask)
    np.testing.assert_allclose(t1, [106.0, 154.0, 48.0, 0.0, 130.0], rtol=1e-6)
    np.testing.assert_allclose(t2, [100.0, 70.0, 250.0, 0.0, 85.0], rtol=1e-6)
    assert t1.dtype == t2.dtype == np.float32


def test_tissue_probabilities_sum_to_mask() -> None:
    templates = sample.load_mni152(2)
    gm, wm, csf = sample.tissue_probabilities(templates.gm, templates.wm, templates.mask)
    np.testing.assert_allclose(gm + wm + csf, templates.mask, atol=1e-5)
    assert (csf >= 0).all() and (gm[templates.mask == 0] == 0).all()
    csf_fraction = csf[templates.mask > 0].mean()
    assert 0.05 < csf_fraction < 0.25  # about 11 % of the brain


# ----------------------------------------------------------------------------------------------
# PNG slices
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("png") / "slices"
    returned = sample.make_png_slices(folder, n_images=6, resolution=PNG_RESOLUTION, seed=0)
    assert returned == folder
    return folder


def test_png_slices_files_shape_dtype_range(png_folder: pathlib.Path) -> None:
    names = sorted(path.name for path in png_folder.iterdir())
    assert names == [f"slice_{index:05d}.png" for index in range(6)]
    for name in names:
        with Image.open(png_folder / name) as picture:
            assert picture.mode == "L"
            assert picture.size == (PNG_RESOLUTION, PNG_RESOLUTION)
        pixels = _read_png(png_folder / name)
        assert pixels.dtype == np.uint8
        assert pixels.min() == 0 and pixels.max() > 150
        # black background: the border and the corners hold no brain
        assert pixels[0, :].max() == 0 and pixels[-1, :].max() == 0
        assert pixels[:, 0].max() == 0 and pixels[:, -1].max() == 0
        # brain roughly centred and of a sensible size
        brain = pixels > 0
        assert 0.1 < brain.mean() < 0.8
        centre_row, centre_column = ndimage.center_of_mass(brain)
        assert abs(centre_row - PNG_RESOLUTION / 2) < 0.15 * PNG_RESOLUTION
        assert abs(centre_column - PNG_RESOLUTION / 2) < 0.15 * PNG_RESOLUTION


def test_png_slices_differ_from_each_other(png_folder: pathlib.Path) -> None:
    images = [_read_png(path).astype(np.int16) for path in sorted(png_folder.glob("*.png"))]
    for first in range(len(images)):
        for second in range(first + 1, len(images)):
            assert np.abs(images[first] - images[second]).mean() > 1.0


def test_png_slices_deterministic_per_seed(
    png_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    again = sample.make_png_slices(tmp_path / "same", n_images=6, resolution=PNG_RESOLUTION, seed=0)
    assert _read_bytes(again) == _read_bytes(png_folder)
    # image i depends only on (seed, i): fewer images give the same first files
    fewer = sample.make_png_slices(
        tmp_path / "fewer", n_images=2, resolution=PNG_RESOLUTION, seed=0
    )
    original_bytes = _read_bytes(png_folder)
    first_two = ("slice_00000.png", "slice_00001.png")
    assert _read_bytes(fewer) == {name: original_bytes[name] for name in first_two}
    other = sample.make_png_slices(
        tmp_path / "other", n_images=6, resolution=PNG_RESOLUTION, seed=1
    )
    other_bytes = _read_bytes(other)
    assert all(other_bytes[name] != original_bytes[name] for name in original_bytes)


def test_png_slices_rgb(tmp_path: pathlib.Path) -> None:
    folder = sample.make_png_slices(tmp_path, n_images=1, resolution=32, seed=3, channels=3)
    with Image.open(folder / "slice_00000.png") as picture:
        assert picture.mode == "RGB" and picture.size == (32, 32)
        pixels = np.array(picture)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.max() > 150


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"channels": 2}, "channels"),
        ({"n_images": 0}, "n_images"),
        ({"resolution": 8}, "resolution"),
        ({"seed": -1}, "seed"),
    ],
)
def test_png_slices_bad_arguments(tmp_path: pathlib.Path, arguments: dict, message: str) -> None:
    with pytest.raises(TfmedganError, match=message):
        sample.make_png_slices(tmp_path, **{"n_images": 1, "resolution": 32, **arguments})


# ----------------------------------------------------------------------------------------------
# cached slices folder
# ----------------------------------------------------------------------------------------------


def test_sample_slices_dir_generates_once_then_reuses(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMEDGAN_CACHE", str(tmp_path / "cache"))
    folder = sample.sample_slices_dir(resolution=32, n_images=4, seed=1)
    assert folder == tmp_path / "cache" / "slices_r32_n4_s1"
    expected = [f"slice_{index:05d}.png" for index in range(4)]
    assert sorted(path.name for path in folder.iterdir()) == expected
    # no temporary folder is left behind
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["slices_r32_n4_s1"]
    # same content as a direct call
    direct = sample.make_png_slices(tmp_path / "direct", n_images=4, resolution=32, seed=1)
    assert _read_bytes(folder) == _read_bytes(direct)

    modification_times = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached folder was regenerated")

    monkeypatch.setattr(sample, "make_png_slices", must_not_run)
    assert sample.sample_slices_dir(resolution=32, n_images=4, seed=1) == folder
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == modification_times


def test_sample_slices_dir_repairs_incomplete_cache(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMEDGAN_CACHE", str(tmp_path))
    folder = sample.sample_slices_dir(resolution=32, n_images=3, seed=0)
    (folder / "slice_00001.png").unlink()
    again = sample.sample_slices_dir(resolution=32, n_images=3, seed=0)
    assert again == folder
    assert len(list(folder.glob("*.png"))) == 3


def test_cache_root_default(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv("TFMEDGAN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sample.cache_root() == tmp_path / ".cache" / "tfmedgan"


# ----------------------------------------------------------------------------------------------
# paired T1w / T2w subjects
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subjects_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("subjects")
    returned = sample.make_paired_subjects(folder, n_subjects=2, seed=0, resolution_mm=2)
    assert returned == folder
    return folder


def _pair(folder: pathlib.Path, index: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    return (
        nib.load(folder / "trainA" / f"sub-{index:03d}_T1w.nii.gz"),
        nib.load(folder / "trainB" / f"sub-{index:03d}_T2w.nii.gz"),
    )


def test_paired_subjects_files_shapes_affines(subjects_folder: pathlib.Path) -> None:
    assert sorted(p.name for p in (subjects_folder / "trainA").iterdir()) == [
        "sub-000_T1w.nii.gz",
        "sub-001_T1w.nii.gz",
    ]
    assert sorted(p.name for p in (subjects_folder / "trainB").iterdir()) == [
        "sub-000_T2w.nii.gz",
        "sub-001_T2w.nii.gz",
    ]
    template_affine = sample.load_mni152(2).affine
    for index in range(2):
        t1_image, t2_image = _pair(subjects_folder, index)
        assert t1_image.shape == t2_image.shape == (99, 117, 95)
        assert t1_image.get_data_dtype() == np.float32 == t2_image.get_data_dtype()
        np.testing.assert_allclose(t1_image.affine, template_affine)
        np.testing.assert_allclose(t2_image.affine, template_affine)
        assert t1_image.header.get_zooms() == (2.0, 2.0, 2.0)


def test_paired_subjects_contrast_and_background(subjects_folder: pathlib.Path) -> None:
    templates = sample.load_mni152(2)
    _, _, csf = sample.tissue_probabilities(templates.gm, templates.wm, templates.mask)
    white_matter = templates.wm > 0.9
    grey_matter = templates.gm > 0.7
    # deep CSF (ventricles): far from the brain edge, so it stays CSF under the small deformations
    depth = ndimage.distance_transform_edt(templates.mask > 0)
    cerebrospinal_fluid = (csf > 0.7) & (depth > 8)
    assert cerebrospinal_fluid.sum() > 1000
    # more than 20 mm from the template brain: beyond any of the small random deformations
    far_background = ndimage.distance_transform_edt(templates.mask == 0) > 10
    for index in range(2):
        t1_image, t2_image = _pair(subjects_folder, index)
        t1, t2 = t1_image.get_fdata(), t2_image.get_fdata()
        t1_wm, t1_csf = np.median(t1[white_matter]), np.median(t1[cerebrospinal_fluid])
        t2_wm, t2_gm = np.median(t2[white_matter]), np.median(t2[grey_matter])
        t2_csf = np.median(t2[cerebrospinal_fluid])
        # T1: WM brighter than CSF; T2: CSF > GM > WM
        assert t1_wm > 1.2 * t1_csf
        assert t2_csf > 1.5 * t2_wm
        assert t2_csf > t2_gm > 1.1 * t2_wm
        # skull-stripped: exactly zero background, same brain mask in both contrasts
        assert (t1 >= 0).all() and (t2 >= 0).all()
        assert (t1[far_background] == 0).all() and (t2[far_background] == 0).all()
        np.testing.assert_array_equal(t1 > 0, t2 > 0)
        assert 0.1 < (t1 > 0).mean() < 0.5


def test_paired_subjects_differ_between_subjects(subjects_folder: pathlib.Path) -> None:
    first, second = (_pair(subjects_folder, index)[0].get_fdata() for index in range(2))
    assert ((first > 0) != (second > 0)).mean() > 0.005  # different deformations


def test_paired_subjects_deterministic(
    subjects_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    again = sample.make_paired_subjects(tmp_path / "again", n_subjects=1, seed=0, name_prefix="sub")
    files = (("trainA", "sub-000_T1w.nii.gz"), ("trainB", "sub-000_T2w.nii.gz"))
    for contrast_folder, name in files:
        assert (again / contrast_folder / name).read_bytes() == (
            subjects_folder / contrast_folder / name
        ).read_bytes()
    other = sample.make_paired_subjects(
        tmp_path / "other", n_subjects=1, seed=5, name_prefix="case"
    )
    other_t1 = nib.load(other / "trainA" / "case-000_T1w.nii.gz").get_fdata()
    assert not np.array_equal(other_t1, _pair(subjects_folder, 0)[0].get_fdata())


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"resolution_mm": 3}, "resolution_mm"),
        ({"n_subjects": 0}, "n_subjects"),
        ({"name_prefix": "a/b"}, "name_prefix"),
        ({"name_prefix": ""}, "name_prefix"),
    ],
)
def test_paired_subjects_bad_arguments(
    tmp_path: pathlib.Path, arguments: dict, message: str
) -> None:
    with pytest.raises(TfmedganError, match=message):
        sample.make_paired_subjects(tmp_path, **arguments)
