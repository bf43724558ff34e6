"""Tests of tfmedgan.io.nifti (small synthetic NIfTIs written with nibabel)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine

from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import (
    CenterPadding,
    Volume,
    check_pair,
    crop_affine,
    list_nifti,
    nifti_stem,
    pad_or_crop_center,
    pair_files,
    read_volume,
    undo_center_pad,
    write_volume,
)

SHAPE = (20, 24, 18)


def oblique_affine() -> np.ndarray:
    """Rotation about two axes, anisotropic zooms and an offset; float32-representable."""
    angle_x, angle_z = 0.3, -0.5
    rotation_x = np.array(
        [[1, 0, 0], [0, np.cos(angle_x), -np.sin(angle_x)], [0, np.sin(angle_x), np.cos(angle_x)]]
    )
    rotation_z = np.array(
        [[np.cos(angle_z), -np.sin(angle_z), 0], [np.sin(angle_z), np.cos(angle_z), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation_z @ rotation_x @ np.diag([1.2, 0.9, 1.5])
    affine[:3, 3] = [-30.25, 12.5, 40.0]
    return affine.astype(np.float32).astype(np.float64)


def blob(shape=SHAPE, start=(5, 6, 4), stop=(14, 17, 12), seed=0) -> np.ndarray:
    """Zero volume with a random positive block."""
    data = np.zeros(shape, np.float32)
    region = tuple(slice(a, b) for a, b in zip(start, stop))
    data[region] = np.random.default_rng(seed).uniform(1, 100, size=data[region].shape)
    return data


def save(path: Path, data: np.ndarray, affine=None, descrip: bytes = b"synthetic T1w") -> Path:
    image = nib.Nifti1Image(data, oblique_affine() if affine is None else affine)
    image.header["descrip"] = descrip
    image.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


# --------------------------------------------------------------------------------------- read


def test_read_volume_basic(tmp_path):
    data = blob()
    path = save(tmp_path / "a.nii.gz", data)
    volume = read_volume(path)
    assert isinstance(volume, Volume)
    assert volume.data.dtype == np.float32
    assert volume.shape == SHAPE
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, oblique_affine(), atol=1e-6)
    assert volume.header["descrip"].item() == b"synthetic T1w"
    assert volume.path == path and volume.name == "a.nii.gz"


def test_read_volume_squeezes_trailing_singleton(tmp_path):
    path = save(tmp_path / "a.nii", blob()[..., None])
    assert read_volume(path).shape == SHAPE


def test_read_volume_2d_allowed_when_not_required(tmp_path):
    path = save(tmp_path / "slice.nii.gz", np.ones((8, 9), np.float32))
    assert read_volume(path, require_3d=False).shape == (8, 9)


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("slice.nii.gz", np.ones((8, 9), np.float32), "3D"),
        ("series.nii.gz", np.ones((6, 7, 5, 2), np.float32), "4D"),
    ],
)
def test_read_volume_rejects_wrong_dimensions(tmp_path, name, content, fragment):
    path = save(tmp_path / name, content)
    with pytest.raises(TfmedganError, match=fragment) as info:
        read_volume(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_read_volume_rejects_non_finite(tmp_path, bad_value):
    data = blob()
    data[3, 3, 3] = bad_value
    path = save(tmp_path / "nan.nii.gz", data)
    with pytest.raises(TfmedganError, match="1 NaN or infinite") as info:
        read_volume(path)
    assert str(path) in str(info.value)


def test_read_volume_rejects_non_nifti_missing_and_corrupt(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(TfmedganError, match="not a NIfTI") as info:
        read_volume(text)
    assert str(text) in str(info.value)

    with pytest.raises(TfmedganError, match="does not exist"):
        read_volume(tmp_path / "missing.nii.gz")

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not gzip at all")
    with pytest.raises(TfmedganError, match="cannot read") as info:
        read_volume(corrupt)
    assert str(corrupt) in str(info.value)
    assert "\n" not in str(info.value)

    # Valid header, truncated data block.
    good = save(tmp_path / "good.nii", blob())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes()[:1000]))
    with pytest.raises(TfmedganError) as info:
        read_volume(truncated)
    assert str(truncated) in str(info.value)


# -------------------------------------------------------------------------------------- write


def test_write_read_round_trip_exact(tmp_path):
    data = blob(seed=3)
    affine = oblique_affine()
    header = nib.Nifti1Header()
    header["descrip"] = b"keep me"
    header.set_xyzt_units("mm", "msec")
    header["intent_name"] = b"t1w"
    path = write_volume(tmp_path / "out" / "vol.nii.gz", data, affine, header=header)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_array_equal(volume.affine, affine)
    assert volume.header["descrip"].item() == b"keep me"
    assert volume.header.get_xyzt_units() == ("mm", "msec")
    assert volume.header["intent_name"].item() == b"t1w"
    assert volume.header.get_data_dtype() == np.float32
    # qform and sform both describe the affine.
    image = nib.load(str(path))
    np.testing.assert_allclose(image.header.get_qform(), affine, atol=1e-5)
    np.testing.assert_array_equal(image.header.get_sform(), affine)
    assert int(image.header["sform_code"]) > 0 and int(image.header["qform_code"]) > 0
    # Atomic write leaves no temporary file.
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["vol.nii.gz"]
    # The header passed in is not modified.
    assert header.get_data_shape() == (0,)


def test_write_volume_updates_shape_and_dtype_of_header(tmp_path):
    source = read_volume(save(tmp_path / "src.nii.gz", blob()))
    smaller = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    path = write_volume(
        tmp_path / "small.nii", smaller, source.affine, header=source.header, dtype=np.int16
    )
    image = nib.load(str(path))
    assert image.shape == (2, 3, 4)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(image.dataobj), smaller)
    assert image.header["descrip"].item() == b"synthetic T1w"
    assert image.header.get_xyzt_units() == ("mm", "sec")


def test_write_volume_dtype_none_keeps_header_dtype(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    path = write_volume(
        tmp_path / "mask.nii.gz", np.ones((3, 3, 3)), np.eye(4), header=header, dtype=None
    )
    assert nib.load(str(path)).get_data_dtype() == np.uint8


def test_write_volume_refuses_lossy_integer_and_bad_names(tmp_path):
    with pytest.raises(TfmedganError, match="int16"):
        write_volume(tmp_path / "x.nii.gz", np.full((2, 2, 2), 0.5), np.eye(4), dtype=np.int16)
    with pytest.raises(TfmedganError, match="int8"):
        write_volume(tmp_path / "x.nii.gz", np.full((2, 2, 2), 300.0), np.eye(4), dtype=np.int8)
    with pytest.raises(TfmedganError, match="out.png"):
        write_volume(tmp_path / "out.png", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(TfmedganError, match="4x4"):
        write_volume(tmp_path / "x.nii", np.zeros((2, 2, 2)), np.eye(3))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ list and pair


def test_list_nifti_sorted_ignores_hidden_and_names_bad_files(tmp_path):
    for name in ["b.nii.gz", "a.nii", "c.nii.gz", ".hidden.txt", ".DS_Store"]:
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in list_nifti(tmp_path)] == ["a.nii", "b.nii.gz", "c.nii.gz"]
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(TfmedganError, match="readme.txt"):
        list_nifti(tmp_path)
    with pytest.raises(TfmedganError, match="does not exist"):
        list_nifti(tmp_path / "nope")


def test_pair_files_by_sorted_name_and_count_check(tmp_path):
    for name in ["s2_T1w.nii.gz", "s1_T1w.nii.gz"]:
        (tmp_path / "A" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "A" / name).write_bytes(b"")
    for name in ["s1_T2w.nii.gz", "s2_T2w.nii.gz", "s3_T2w.nii.gz"]:
        (tmp_path / "B" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "B" / name).write_bytes(b"")
    expected = "B: has 3 NIfTI files but .*A has 2.*s3_T2w.nii.gz has no partner"
    with pytest.raises(TfmedganError, match=expected):
        pair_files(tmp_path / "A", tmp_path / "B")
    (tmp_path / "B" / "s3_T2w.nii.gz").unlink()
    pairs = pair_files(tmp_path / "A", tmp_path / "B")
    assert [(a.name, b.name) for a, b in pairs] == [
        ("s1_T1w.nii.gz", "s1_T2w.nii.gz"),
        ("s2_T1w.nii.gz", "s2_T2w.nii.gz"),
    ]
    (tmp_path / "EA").mkdir()
    (tmp_path / "EB").mkdir()
    with pytest.raises(TfmedganError, match="no .nii"):
        pair_files(tmp_path / "EA", tmp_path / "EB")


def test_check_pair(tmp_path):
    affine = oblique_affine()
    a = Volume(blob(), affine, nib.Nifti1Header(), tmp_path / "a.nii.gz")
    b = Volume(blob(seed=1), affine + 1e-6, nib.Nifti1Header(), tmp_path / "b.nii.gz")
    check_pair(a, b)  # float noise is tolerated
    shifted = affine.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(TfmedganError, match="b.nii.gz: affine differs.*a.nii.gz"):
        check_pair(a, Volume(b.data, shifted, b.header, b.path))
    with pytest.raises(TfmedganError, match=r"b.nii.gz: shape \(20, 24, 17\) differs"):
        check_pair(a, Volume(b.data[:, :, :17], affine, b.header, b.path))


def test_nifti_stem_removes_exact_suffix():
    assert nifti_stem("sub-1_ing.nii.gz") == "sub-1_ing"
    assert nifti_stem("/x/y/nig.nii") == "nig"


# ------------------------------------------------------------------------------ crop_affine


def test_crop_affine_preserves_world_coordinates():
    affine = oblique_affine()
    start = (3, 5, 2)
    new_affine = crop_affine(affine, start)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    np.testing.assert_allclose(
        apply_affine(new_affine, grid), apply_affine(affine, grid + np.array(start)), atol=1e-6
    )
    np.testing.assert_array_equal(new_affine[:3, :3], affine[:3, :3])
    assert not np.array_equal(new_affine, affine)


# ------------------------------------------------------------------------------ centre pad


def test_pad_center_floor_before_ceil_after_and_undo():
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    padded, padding = pad_or_crop_center(data, (8, 6, 10))
    assert padded.shape == (8, 6, 10)
    assert padding.pad == ((1, 2), (0, 0), (1, 2))
    assert padded[0].sum() == 0 and padded[-2:].sum() == 0
    np.testing.assert_array_equal(padded[1:6, :, 1:8], data)
    np.testing.assert_array_equal(undo_center_pad(padded, padding), data)
    np.testing.assert_array_equal(undo_center_pad(padded, padding.slices), data)


def test_pad_center_keeps_trailing_channel_axis():
    data = np.ones((3, 4, 5, 2))
    padded, padding = pad_or_crop_center(data, (4, 4, 8), value=-1.0)
    assert padded.shape == (4, 4, 8, 2)
    assert padded.min() == -1.0
    restored = undo_center_pad(padded, padding)
    np.testing.assert_array_equal(restored, data)


def test_pad_center_too_large_and_allowed_crop():
    data = np.arange(6 * 4 * 4, dtype=np.float32).reshape(6, 4, 4)
    with pytest.raises(TfmedganError, match="larger than the input shape"):
        pad_or_crop_center(data, (4, 4, 4))
    cropped, padding = pad_or_crop_center(data, (3, 6, 4), allow_crop=True)
    assert isinstance(padding, CenterPadding)
    assert padding.crop == ((1, 2), (0, 0), (0, 0))
    np.testing.assert_array_equal(cropped[:, 1:5], data[1:4])
    restored = undo_center_pad(cropped, padding)
    assert restored.shape == data.shape
    np.testing.assert_array_equal(restored[1:4], data[1:4])
    assert restored[0].sum() == 0 and restored[4:].sum() == 0


# -- pairs whose names do not match (issue 10, section 2) ----------------------------------------
@pytest.mark.parametrize(
    "name_a, name_b",
    [
        ("sub-03_T1w.nii.gz", "sub-03_T2w.nii.gz"),
        ("sub-03_ses-1_T1w.nii.gz", "sub-03_ses-1_T2w.nii"),
        ("sub-03_acq-mprage_T1w.nii.gz", "sub-03_acq-space_T2w.nii.gz"),  # BIDS: subject and session decide
        ("case7_t1.nii", "case7_t2.nii"),
        ("case7-T1.nii.gz", "case7-T2.nii.gz"),
        ("case7T1.nii.gz", "case7T2.nii.gz"),
        ("T1_case7.nii.gz", "T2_case7.nii.gz"),
        ("case7_flair.nii.gz", "case7_T1ce.nii.gz"),
        ("case7_CT.nii.gz", "case7_MR.nii.gz"),
        ("patient12.nii.gz", "patient12.nii.gz"),  # identical stems
    ],
)
def test_subject_key_matches_names_less_their_modality(name_a, name_b):
    from tfmedgan.io.nifti import subject_key

    assert subject_key(name_a) == subject_key(name_b)


@pytest.mark.parametrize(
    "name_a, name_b",
    [
        ("sub-03_T1w.nii.gz", "sub-04_T2w.nii.gz"),
        ("sub-03_ses-1_T1w.nii.gz", "sub-03_ses-2_T2w.nii.gz"),
        ("patient1.nii.gz", "patient2.nii.gz"),  # 't1'/'t2' inside a word are not modality tokens
        ("case7_t1.nii", "case8_t2.nii"),
    ],
)
def test_subject_key_tells_different_subjects_apart(name_a, name_b):
    from tfmedgan.io.nifti import subject_key

    assert subject_key(name_a) != subject_key(name_b)


def _touch_pairs(tmp_path, names_a, names_b):
    for folder, names in (("A", names_a), ("B", names_b)):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")


def test_pair_files_refuses_pairs_whose_names_differ_unless_by_order(tmp_path):
    names_a = [f"sub-{i:02d}_T1w.nii.gz" for i in (1, 2, 3, 5, 6, 7)]
    names_b = [f"sub-{i:02d}_T2w.nii.gz" for i in (1, 2, 4, 5, 6, 8)]  # 03~04 and 07~08 differ
    _touch_pairs(tmp_path, names_a, names_b)
    with pytest.raises(TfmedganError) as caught:
        pair_files(tmp_path / "A", tmp_path / "B")
    message = str(caught.value)
    assert "\n" not in message
    assert "sub-03_T1w.nii.gz ~ sub-04_T2w.nii.gz" in message and "sub-07_T1w.nii.gz ~ sub-08_T2w.nii.gz" in message
    assert "2 of 6 pairs" in message and "--pair-by-order" in message
    pairs = pair_files(tmp_path / "A", tmp_path / "B", pair_by_order=True)  # the original behaviour
    assert [(a.name, b.name) for a, b in pairs][2] == ("sub-03_T1w.nii.gz", "sub-04_T2w.nii.gz")


def test_pair_files_lists_only_the_first_mismatches(tmp_path):
    _touch_pairs(tmp_path, [f"a{i:02d}_T1w.nii" for i in range(10)], [f"b{i:02d}_T2w.nii" for i in range(10)])
    with pytest.raises(TfmedganError) as caught:
        pair_files(tmp_path / "A", tmp_path / "B")
    message = str(caught.value)
    assert "a02_T1w.nii ~ b02_T2w.nii" in message and "a03_T1w.nii" not in message
    assert "10 of 10 pairs" in message


def test_write_volume_refuses_an_affine_that_cannot_be_decomposed(tmp_path):
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    with pytest.raises(TfmedganError, match="cannot be decomposed") as caught:
        write_volume(tmp_path / "z.nii.gz", blob(), affine)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []
