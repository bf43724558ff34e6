"""Tests of tfmedgan.io.crop (bounding boxes, pair crop, the prepare_train_data job)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine

from tests.io.test_nifti import SHAPE, blob, oblique_affine, save
from tfmedgan.errors import TfmedganError
from tfmedgan.io.crop import (
    bounding_box,
    choose_test_indices,
    crop_pair,
    prepare_dataset,
    round_up_shape,
)
from tfmedgan.io.nifti import Volume, read_volume

# Per-subject blobs: A and B deliberately differ so the union matters.
BOXES_A = [((5, 6, 4), (14, 17, 12)), ((2, 3, 5), (11, 20, 9)), ((7, 1, 1), (19, 9, 15))]
BOXES_B = [((6, 8, 2), (15, 15, 10)), ((4, 3, 3), (9, 22, 13)), ((8, 2, 0), (18, 10, 16))]


def union_box(index: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    (start_a, stop_a), (start_b, stop_b) = BOXES_A[index % 3], BOXES_B[index % 3]
    return tuple(np.minimum(start_a, start_b)), tuple(np.maximum(stop_a, stop_b))


def make_dataset(root: Path, count: int = 5, int16: bool = False) -> Path:
    """``root/MR/{trainA,trainB}`` with ``count`` pairs; returns ``root/MR``."""
    source = root / "MR"
    for index in range(count):
        start_a, stop_a = BOXES_A[index % 3]
        start_b, stop_b = BOXES_B[index % 3]
        data_a = blob(start=start_a, stop=stop_a, seed=index)
        data_b = blob(start=start_b, stop=stop_b, seed=100 + index)
        if int16:
            data_a, data_b = np.round(data_a).astype(np.int16), np.round(data_b).astype(np.int16)
        save(source / "trainA" / f"sub-{index:02d}_T1w.nii.gz", data_a)
        save(source / "trainB" / f"sub-{index:02d}_T2w.nii.gz", data_b, descrip=b"synthetic T2w")
    return source


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def quiet(line: str) -> None:
    """Log sink for tests that do not look at the output."""


# ------------------------------------------------------------------------------ bounding box


def test_bounding_box_margin_is_clipped():
    mask = np.zeros(SHAPE, bool)
    mask[1, 5:9, 16] = True
    assert bounding_box(mask) == (slice(1, 2), slice(5, 9), slice(16, 17))
    assert bounding_box(mask, margin=3) == (slice(0, 5), slice(2, 12), slice(13, 18))
    assert bounding_box(mask, margin=(0, 1, 2)) == (slice(1, 2), slice(4, 10), slice(14, 18))
    with pytest.raises(TfmedganError, match="no non-zero"):
        bounding_box(np.zeros((3, 3, 3)))
    with pytest.raises(TfmedganError, match="margin"):
        bounding_box(mask, margin=-1)


def test_bounding_box_matches_brute_force_for_negative_values():
    data = np.zeros(SHAPE)
    data[4, 10, 3] = -2.0  # values that cancel in a mean projection still count
    data[4, 12, 3] = 2.0
    data[9, 2, 15] = 1.0
    box = bounding_box(data != 0)
    indices = np.argwhere(data != 0)
    assert box == tuple(slice(low, high + 1) for low, high in zip(indices.min(0), indices.max(0)))


# --------------------------------------------------------------------------------- crop pair


def test_crop_pair_uses_union_keeps_world_coordinates_and_data(tmp_path):
    source = make_dataset(tmp_path, count=1)
    vol_a = read_volume(source / "trainA" / "sub-00_T1w.nii.gz")
    vol_b = read_volume(source / "trainB" / "sub-00_T2w.nii.gz")
    crop_a, crop_b, box = crop_pair(vol_a, vol_b)
    start, stop = union_box(0)
    assert box == tuple(slice(low, high) for low, high in zip(start, stop))
    assert crop_a.shape == crop_b.shape == tuple(np.subtract(stop, start))
    np.testing.assert_array_equal(crop_a.data, vol_a.data[box])
    np.testing.assert_array_equal(crop_b.data, vol_b.data[box])
    # Every cropped voxel keeps its world coordinate.
    indices = np.argwhere(np.ones(crop_a.shape, bool))
    np.testing.assert_allclose(
        apply_affine(crop_a.affine, indices), apply_affine(vol_a.affine, indices + start), atol=1e-6
    )
    np.testing.assert_array_equal(crop_a.affine, crop_b.affine)
    assert crop_a.header.get_data_shape() == crop_a.shape
    assert vol_a.header.get_data_shape() == SHAPE  # input untouched


def test_crop_pair_margin_and_errors(tmp_path):
    affine = oblique_affine()
    data = blob(start=(1, 2, 3), stop=(19, 20, 17))
    a = Volume(data, affine, nib.Nifti1Header(), tmp_path / "a.nii.gz")
    b = Volume(data, affine, nib.Nifti1Header(), tmp_path / "b.nii.gz")
    _, _, box = crop_pair(a, b, margin=2)
    assert box == (slice(0, 20), slice(0, 22), slice(1, 18))
    zero = Volume(np.zeros(SHAPE, np.float32), affine, nib.Nifti1Header(), tmp_path / "zero.nii.gz")
    with pytest.raises(TfmedganError, match="zero.nii.gz: all voxels are zero"):
        crop_pair(a, zero)
    with pytest.raises(TfmedganError, match="b.nii.gz: shape"):
        crop_pair(a, Volume(data[:-1], affine, b.header, b.path))


# ------------------------------------------------------------------------------- test split


def test_choose_test_indices_deterministic_and_bounded():
    first = choose_test_indices(20, 0.1, seed=0)
    assert first == choose_test_indices(20, 0.1, seed=0)
    assert len(first) == 2 and first == sorted(first)
    assert any(choose_test_indices(20, 0.1, seed=seed) != first for seed in range(1, 5))
    assert len(choose_test_indices(3, 0.1)) == 1  # at least one test pair
    assert choose_test_indices(1, 0.5) == []  # a single pair stays for training
    assert len(choose_test_indices(2, 0.9)) == 1  # at least one train pair
    assert choose_test_indices(10, 0.0) == []
    with pytest.raises(TfmedganError, match="test fraction"):
        choose_test_indices(10, 1.0)


def test_round_up_shape():
    assert round_up_shape((13, 16, 1), 4) == (16, 16, 4)
    assert round_up_shape((13, 16, 1), 1) == (13, 16, 1)


# ------------------------------------------------------------------------------- full job


def test_prepare_dataset_end_to_end(tmp_path):
    source = make_dataset(tmp_path, count=5)
    before = tree_hashes(source)
    lines: list[str] = []
    summary = prepare_dataset(source, test_fraction=0.4, seed=3, log=lines.append)
    destination = tmp_path / "MR_crop"
    assert summary["output"] == destination
    folders = sorted(entry.name for entry in destination.iterdir())
    assert folders == ["testA", "testB", "trainA", "trainB"]
    # Split: deterministic, disjoint, complete, A/B consistent.
    test_a = sorted(path.name for path in (destination / "testA").iterdir())
    train_a = sorted(path.name for path in (destination / "trainA").iterdir())
    assert len(test_a) == 2 and len(train_a) == 3
    assert set(test_a).isdisjoint(train_a)
    assert sorted(test_a + train_a) == sorted(path.name for path in (source / "trainA").iterdir())
    test_b = sorted(path.name for path in (destination / "testB").iterdir())
    assert test_b == [name.replace("T1w", "T2w") for name in test_a]
    expected_test = [f"sub-{index:02d}_T1w.nii.gz" for index in choose_test_indices(5, 0.4, 3)]
    assert test_a == expected_test
    again = prepare_dataset(source, tmp_path / "again", test_fraction=0.4, seed=3, log=quiet)
    assert again["test"] == summary["test"] and again["train"] == summary["train"]

    # Each written file: data identical inside the box, world coordinates and header kept.
    for index in range(5):
        split = "test" if f"sub-{index:02d}_T1w.nii.gz" in test_a else "train"
        start, stop = union_box(index)
        box = tuple(slice(low, high) for low, high in zip(start, stop))
        for domain, suffix in (("A", "T1w"), ("B", "T2w")):
            name = f"sub-{index:02d}_{suffix}.nii.gz"
            original = read_volume(source / f"train{domain}" / name)
            cropped = read_volume(destination / f"{split}{domain}" / name)
            np.testing.assert_array_equal(cropped.data, original.data[box])
            indices = np.argwhere(np.ones(cropped.shape, bool))
            np.testing.assert_allclose(
                apply_affine(cropped.affine, indices),
                apply_affine(original.affine, indices + np.array(start)),
                atol=1e-4,  # affines are stored as float32 in the header
            )
            assert cropped.header["descrip"].item() == f"synthetic {suffix}".encode()
            assert cropped.header.get_xyzt_units() == ("mm", "sec")
            assert cropped.header.get_data_dtype() == np.float32

    # Printed lines: each crop and the recommended shape (max over crops, rounded up to 4).
    shapes = [tuple(np.subtract(*reversed(union_box(index)))) for index in range(5)]
    largest = tuple(int(value) for value in np.max(shapes, axis=0))
    recommended = tuple(int(-(-value // 4) * 4) for value in largest)
    assert summary["max_shape"] == largest
    assert summary["recommended_shape"] == recommended
    x, y, z = recommended
    assert f"Smallest recommended input image shape: ({x}, {y}, {z})" in lines
    assert sum(line.startswith("Cropping ") for line in lines) == 5
    # The input folder is unchanged and nothing temporary is left behind.
    assert tree_hashes(source) == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["MR", "MR_crop", "again"]


def test_prepare_dataset_multiple_margin_and_no_test(tmp_path, capsys):
    source = make_dataset(tmp_path, count=2)
    summary = prepare_dataset(source, margin=1, test_fraction=0.0, multiple=2)
    output = capsys.readouterr().out
    shapes = []
    for index in range(2):
        start, stop = union_box(index)
        shapes.append(np.minimum(np.array(stop) + 1, SHAPE) - np.maximum(np.array(start) - 1, 0))
    largest = np.max(shapes, axis=0)
    recommended = tuple(int(-(-value // 2) * 2) for value in largest)
    assert summary["recommended_shape"] == recommended
    assert f"Smallest recommended input image shape: {recommended}\n" in output
    assert summary["test"] == [] and len(summary["train"]) == 2
    assert list((tmp_path / "MR_crop" / "testA").iterdir()) == []


def test_prepare_dataset_keeps_integer_dtype_and_existing_test_folders(tmp_path):
    source = make_dataset(tmp_path, count=3, int16=True)
    # Original layout: a hand-made test split next to the train folders.
    save(source / "testA" / "held_T1w.nii.gz", blob(seed=7))
    save(source / "testB" / "held_T2w.nii.gz", blob(seed=8))
    summary = prepare_dataset(source, test_fraction=0.0, log=quiet)
    destination = summary["output"]
    assert sorted(path.name for path in (destination / "testA").iterdir()) == ["held_T1w.nii.gz"]
    assert len(summary["train"]) == 3
    assert summary["test"] == [("held_T1w.nii.gz", "held_T2w.nii.gz")]
    image = nib.load(str(destination / "trainA" / "sub-00_T1w.nii.gz"))
    assert image.get_data_dtype() == np.int16
    start, stop = union_box(0)
    original = np.asarray(nib.load(str(source / "trainA" / "sub-00_T1w.nii.gz")).dataobj)
    np.testing.assert_array_equal(
        np.asarray(image.dataobj),
        original[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]],
    )


def test_prepare_dataset_scaled_integers_fall_back_to_float32(tmp_path):
    source = make_dataset(tmp_path, count=2)
    path = source / "trainA" / "sub-00_T1w.nii.gz"
    raw = np.round(blob(seed=0)).astype(np.int16)
    image = nib.Nifti1Image(raw, oblique_affine())
    image.header.set_data_dtype(np.int16)
    image.header.set_slope_inter(0.5, 0.0)
    nib.save(image, str(path))
    values = nib.load(str(path)).get_fdata()
    assert not np.array_equal(values, np.round(values))
    summary = prepare_dataset(source, test_fraction=0.0, log=quiet)
    written = nib.load(str(summary["output"] / "trainA" / "sub-00_T1w.nii.gz"))
    assert written.get_data_dtype() == np.float32
    start, stop = union_box(0)
    box = tuple(slice(low, high) for low, high in zip(start, stop))
    np.testing.assert_array_equal(written.get_fdata(), values[box].astype(np.float32))


# ---------------------------------------------------------------------------- bad input


def _break_nan(source: Path) -> Path:
    path = source / "trainB" / "sub-01_T2w.nii.gz"
    data = blob()
    data[0, 0, 0] = np.nan
    save(path, data)
    return path


def _break_zero(source: Path) -> Path:
    return save(source / "trainA" / "sub-02_T1w.nii.gz", np.zeros(SHAPE, np.float32))


def _break_4d(source: Path) -> Path:
    return save(source / "trainA" / "sub-01_T1w.nii.gz", np.ones(SHAPE[:3] + (2,), np.float32))


def _break_2d(source: Path) -> Path:
    return save(source / "trainB" / "sub-00_T2w.nii.gz", np.ones(SHAPE[:2], np.float32))


def _break_text(source: Path) -> Path:
    path = source / "trainA" / "notes.txt"
    path.write_text("subject list")
    return path


def _break_count(source: Path) -> Path:
    return save(source / "trainB" / "sub-09_T2w.nii.gz", blob())  # sorts last: named as extra


def _break_shape(source: Path) -> Path:
    return save(source / "trainB" / "sub-02_T2w.nii.gz", blob()[:, :, :16])


def _break_affine(source: Path) -> Path:
    affine = oblique_affine()
    affine[1, 3] += 2.0
    return save(source / "trainB" / "sub-03_T2w.nii.gz", blob(), affine=affine)


def _save_zero_affine(path: Path, data: np.ndarray) -> Path:
    """A file whose sform is all zeros (code 1), as some converters write: affine cannot be decomposed."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header["sform_code"], header["qform_code"] = 1, 0
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = 0
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


def _break_zero_affine(source: Path) -> Path:
    # both files of the pair agree (all zero), so the pair check passes and only writing would fail
    _save_zero_affine(source / "trainB" / "sub-01_T2w.nii.gz", blob(seed=5))
    return _save_zero_affine(source / "trainA" / "sub-01_T1w.nii.gz", blob(seed=4))


def _break_corrupt(source: Path) -> Path:
    path = source / "trainA" / "sub-03_T1w.nii.gz"
    path.write_bytes(b"\x1f\x8b garbage")
    return path


@pytest.mark.parametrize(
    "breaker, fragment",
    [
        (_break_nan, "NaN"),
        (_break_zero, "all voxels are zero"),
        (_break_4d, "4D"),
        (_break_2d, "2D"),
        (_break_text, "not a NIfTI"),
        (_break_count, "has 5 NIfTI files but"),
        (_break_shape, "shape"),
        (_break_affine, "affine differs"),
        (_break_corrupt, "cannot read"),
        (_break_zero_affine, "affine cannot be decomposed"),
    ],
)
def test_prepare_dataset_bad_input_names_file_and_writes_nothing(tmp_path, breaker, fragment):
    source = make_dataset(tmp_path, count=4)
    bad_path = breaker(source)
    before = tree_hashes(source)
    lines: list[str] = []
    with pytest.raises(TfmedganError) as info:
        prepare_dataset(source, log=lines.append)
    message = str(info.value)
    assert fragment in message
    assert str(bad_path) in message
    assert "\n" not in message
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["MR"]  # no output, no temp
    assert tree_hashes(source) == before


def test_prepare_dataset_bad_options_and_folders(tmp_path):
    source = make_dataset(tmp_path, count=2)
    with pytest.raises(TfmedganError, match="margin"):
        prepare_dataset(source, margin=-2, log=quiet)
    with pytest.raises(TfmedganError, match="multiple"):
        prepare_dataset(source, multiple=0, log=quiet)
    with pytest.raises(TfmedganError, match="test fraction"):
        prepare_dataset(source, test_fraction=1.5, log=quiet)
    with pytest.raises(TfmedganError, match="inside the input"):
        prepare_dataset(source, source / "out", log=quiet)
    with pytest.raises(TfmedganError, match="contain the input"):
        prepare_dataset(source, tmp_path, overwrite=True, log=quiet)
    with pytest.raises(TfmedganError, match="does not exist"):
        prepare_dataset(tmp_path / "nothing", log=quiet)
    (source / "testA").mkdir()
    with pytest.raises(TfmedganError, match="testB"):
        prepare_dataset(source, log=quiet)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["MR"]


def test_prepare_dataset_existing_output_refused_unless_overwrite(tmp_path):
    source = make_dataset(tmp_path, count=3)
    destination = tmp_path / "MR_crop"
    destination.mkdir()
    (destination / "trainA").mkdir()
    (destination / "trainA" / "stale.nii.gz").write_bytes(b"old")
    with pytest.raises(TfmedganError, match="already exists; use --overwrite"):
        prepare_dataset(source, log=quiet)
    assert (destination / "trainA" / "stale.nii.gz").read_bytes() == b"old"
    prepare_dataset(source, overwrite=True, log=quiet)
    assert not (destination / "trainA" / "stale.nii.gz").exists()
    written = list((destination / "trainA").iterdir()) + list((destination / "testA").iterdir())
    assert len(written) == 3
    # A folder holding anything else is never replaced.
    (destination / "notes.txt").write_text("mine")
    with pytest.raises(TfmedganError, match="notes.txt.*refusing to overwrite"):
        prepare_dataset(source, overwrite=True, log=quiet)
    assert (destination / "notes.txt").read_text() == "mine"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["MR", "MR_crop"]


# ------------------------------------------------------------------ pairs that do not match


def test_prepare_dataset_refuses_mismatched_names_unless_pair_by_order(tmp_path):
    source = make_dataset(tmp_path, count=3)
    moved = source / "trainB" / "sub-01_T2w.nii.gz"
    moved.rename(source / "trainB" / "sub-01b_T2w.nii.gz")  # still second in sorted order
    before = tree_hashes(source)
    with pytest.raises(TfmedganError, match="sub-01_T1w.nii.gz ~ sub-01b_T2w.nii.gz") as info:
        prepare_dataset(source, log=quiet)
    assert "\n" not in str(info.value)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["MR"]  # nothing written
    summary = prepare_dataset(source, test_fraction=0, pair_by_order=True, log=quiet)
    assert ("sub-01_T1w.nii.gz", "sub-01b_T2w.nii.gz") in summary["train"]
    assert tree_hashes(source) == before


def test_prepare_dataset_checks_the_names_of_an_existing_test_split(tmp_path):
    source = make_dataset(tmp_path, count=2)
    for domain, name in (("A", "sub-20_T1w.nii.gz"), ("B", "sub-21_T2w.nii.gz")):
        save(source / f"test{domain}" / name, blob())
    with pytest.raises(TfmedganError, match="sub-20_T1w.nii.gz ~ sub-21_T2w.nii.gz"):
        prepare_dataset(source, test_fraction=0, log=quiet)
    summary = prepare_dataset(source, test_fraction=0, pair_by_order=True, log=quiet)
    assert summary["test"] == [("sub-20_T1w.nii.gz", "sub-21_T2w.nii.gz")]


# ------------------------------------------------------------------ an existing test split


def test_prepare_dataset_keeps_an_existing_test_split(tmp_path):
    source = make_dataset(tmp_path, count=4)
    save(source / "testA" / "sub-20_T1w.nii.gz", blob(seed=20))
    save(source / "testB" / "sub-20_T2w.nii.gz", blob(seed=21))
    lines: list[str] = []
    summary = prepare_dataset(source, test_fraction=0.5, log=lines.append)
    assert len(summary["train"]) == 4  # no train pair moved
    assert summary["test"] == [("sub-20_T1w.nii.gz", "sub-20_T2w.nii.gz")]
    kept = [line for line in lines if "existing" in line and "--test-fraction" in line]
    assert len(kept) == 1, lines
    assert sorted(p.name for p in (summary["output"] / "testA").iterdir()) == ["sub-20_T1w.nii.gz"]


def test_prepare_dataset_splits_when_the_test_folders_are_empty(tmp_path):
    source = make_dataset(tmp_path, count=4)
    (source / "testA").mkdir()
    (source / "testB").mkdir()
    summary = prepare_dataset(source, test_fraction=0.5, log=quiet)
    assert len(summary["train"]) == 2 and len(summary["test"]) == 2
