"""Tests for tfmedgan.data.samples.subjects (paired 3D T1w/T2w subjects as NIfTI)."""

from __future__ import annotations

import pathlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tfmedgan.data.samples import subjects, template
from tfmedgan.errors import TfmedganError


@pytest.fixture(scope="module")
def subjects_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("subjects")
    returned = subjects.make_paired_subjects(folder, n_subjects=2, seed=0, resolution_mm=2)
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
    template_affine = template.load_mni152(2).affine
    for index in range(2):
        t1_image, t2_image = _pair(subjects_folder, index)
        assert t1_image.shape == t2_image.shape == (99, 117, 95)
        assert t1_image.get_data_dtype() == np.float32 == t2_image.get_data_dtype()
        np.testing.assert_allclose(t1_image.affine, template_affine)
        np.testing.assert_allclose(t2_image.affine, template_affine)
        assert t1_image.header.get_zooms() == (2.0, 2.0, 2.0)


def test_paired_subjects_contrast_and_background(subjects_folder: pathlib.Path) -> None:
    templates = template.load_mni152(2)
    _, _, csf = template.tissue_probabilities(templates.gm, templates.wm, templates.mask)
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
    again = subjects.make_paired_subjects(tmp_path / "again", n_subjects=1, seed=0, name_prefix="sub")
    files = (("trainA", "sub-000_T1w.nii.gz"), ("trainB", "sub-000_T2w.nii.gz"))
    for contrast_folder, name in files:
        assert (again / contrast_folder / name).read_bytes() == (
            subjects_folder / contrast_folder / name
        ).read_bytes()
    other = subjects.make_paired_subjects(
        tmp_path / "other", n_subjects=1, seed=5, name_prefix="case"
    )
    other_t1 = nib.load(other / "trainA" / "case-000_T1w.nii.gz").get_fdata()
    assert not np.array_equal(other_t1, _pair(subjects_folder, 0)[0].get_fdata())


def test_paired_subjects_noise_free_t2(subjects_folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """noise_free adds the T2w before bias and noise; the other files stay byte-identical."""
    folder = subjects.make_paired_subjects(tmp_path, n_subjects=1, seed=0, noise_free=True)
    for contrast_folder, name in (("trainA", "sub-000_T1w.nii.gz"), ("trainB", "sub-000_T2w.nii.gz")):
        assert (folder / contrast_folder / name).read_bytes() == (subjects_folder / contrast_folder / name).read_bytes()
    noisy = _pair(subjects_folder, 0)[1].get_fdata()
    clean = nib.load(folder / "trainB_noise_free" / "sub-000_T2w.nii.gz").get_fdata()
    brain = noisy > 0
    np.testing.assert_array_equal(clean > 0, brain)
    ratio = noisy[brain] / clean[brain]
    assert 0.01 < np.std(ratio) < 0.3  # a bias field and noise lie between them
    assert np.corrcoef(noisy[brain], clean[brain])[0, 1] > 0.9
    # the noise-free image is smooth: its voxel-to-voxel differences are smaller than the noisy one's
    assert np.abs(np.diff(clean, axis=0)[brain[1:]]).mean() < np.abs(np.diff(noisy, axis=0)[brain[1:]]).mean()


def test_paired_subjects_written_through_io_nifti(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file goes through tfmedgan.io.nifti.write_volume, with the header a plain nibabel save gave."""
    from tfmedgan.io import nifti

    written = []
    original = nifti.write_volume

    def recording(path, *args, **kwargs):
        written.append(pathlib.Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(nifti, "write_volume", recording)
    folder = subjects.make_paired_subjects(tmp_path, n_subjects=1, seed=2)
    assert written == ["sub-000_T1w.nii.gz", "sub-000_T2w.nii.gz"]
    for path in (folder / "trainA" / written[0], folder / "trainB" / written[1]):
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        reference = nib.Nifti1Image(data, template.load_mni152(2).affine)
        reference.header.set_xyzt_units("mm")
        reference.header.set_data_dtype(np.float32)
        assert image.header.binaryblock == reference.header.binaryblock  # same header as nib.save gave
        assert int(image.header["qform_code"]) == 0 and int(image.header["sform_code"]) == 2
        assert image.header.get_xyzt_units() == ("mm", "unknown")
    assert not list(folder.rglob(".*"))  # no temporary files left


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
        subjects.make_paired_subjects(tmp_path, **arguments)
