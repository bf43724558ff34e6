"""Tests for tfmedgan.data.hdf5 (seed-002 HDF5 + JSON dataset layer)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tfmedgan.data.hdf5 import (
    DatasetSpec,
    PatchSampler,
    VolumeRef,
    check_patch,
    load_dataset_spec,
    standardize_to_hdf5,
    tf_dataset,
)
from tfmedgan.errors import TfmedganError

SHAPE = (12, 14, 16)


def coordinate_volume(shape=SHAPE, offset: float = 0.0) -> np.ndarray:
    """Each voxel stores offset + 10000*i + 100*j + k (exact in float32 for these sizes)."""
    i, j, k = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    return (offset + 10000 * i + 100 * j + k).astype(np.float32)


def write_h5(path: Path, array: np.ndarray, dset: str = "data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(dset, data=array)
    return path


def write_json(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return path


def decode(patch: np.ndarray, offset: float = 0.0):
    """Return (origin, flipped axes) of a patch of a coordinate volume; assert it is a block."""
    values = np.rint(patch[..., 0] - offset).astype(np.int64)
    coords = [values // 10000, (values // 100) % 100, values % 100]
    origin, flipped = [], []
    for axis, grid in enumerate(coords):
        # the axis-th coordinate must be constant across the other two axes
        moved = np.moveaxis(grid, axis, 0)
        assert (moved == moved[:, :1, :1]).all(), "coordinate varies along another axis"
        line = moved[:, 0, 0]
        steps = np.diff(line)
        if len(line) > 1:
            assert (steps == 1).all() or (steps == -1).all(), f"axis {axis} is not contiguous: {line}"
            if steps[0] == -1:
                flipped.append(axis)
        origin.append(int(line.min()))
    return tuple(origin), tuple(flipped)


@pytest.fixture()
def two_volume_json(tmp_path: Path) -> Path:
    write_h5(tmp_path / "data" / "a.h5", coordinate_volume())
    write_h5(tmp_path / "data" / "b.h5", coordinate_volume(offset=500000.0), dset="vol")
    return write_json(
        tmp_path / "dataset" / "spec.json",
        {
            "train": [
                {"path": "../data/a.h5", "ROI0": [2, 10], "ROI1": [0, -2], "ROI2": [-12, None]},
                {"path": "../data/b.h5", "dset": "vol"},
            ],
            "validate": [{"path": str(tmp_path / "data" / "a.h5"), "dset": "data"}],
        },
    )


# ------------------------------------------------------------------------------- parsing


def test_parse_json_with_relative_paths_and_rois(two_volume_json: Path, tmp_path: Path):
    spec = load_dataset_spec(two_volume_json)
    assert isinstance(spec, DatasetSpec)
    assert spec.source == two_volume_json
    first, second = spec.train
    assert first.path == tmp_path / "data" / "a.h5"
    assert first.dset == "data"
    assert first.shape == SHAPE
    assert first.roi == ((2, 10), (0, 12), (4, 16))
    assert first.roi_shape == (8, 12, 12)
    assert second.path == tmp_path / "data" / "b.h5"
    assert second.dset == "vol"
    assert second.roi == ((0, 12), (0, 14), (0, 16))
    assert len(spec.validate) == 1 and spec.validate[0].path == first.path
    assert spec.split("validate") == spec.validate
    with pytest.raises(TfmedganError):
        spec.split("test")


def test_missing_split_falls_back_to_the_other(tmp_path: Path):
    write_h5(tmp_path / "v.h5", coordinate_volume())
    spec = load_dataset_spec(write_json(tmp_path / "only_train.json", {"train": [{"path": "v.h5"}]}))
    assert spec.validate == spec.train and len(spec.train) == 1
    spec = load_dataset_spec(write_json(tmp_path / "only_val.json", {"validate": [{"path": "v.h5"}]}))
    assert spec.train == spec.validate and len(spec.train) == 1


def test_bare_h5_path(tmp_path: Path):
    path = write_h5(tmp_path / "vol.h5", coordinate_volume())
    spec = load_dataset_spec(path)
    assert spec.train == [VolumeRef(path=path, dset="data", roi=((0, 12), (0, 14), (0, 16)), shape=SHAPE)]
    assert spec.validate == spec.train


def one_line_error(call, match: str) -> str:
    with pytest.raises(TfmedganError, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_cases(tmp_path: Path):
    write_h5(tmp_path / "v.h5", coordinate_volume())
    write_h5(tmp_path / "flat.h5", np.zeros((4, 5), np.float32))
    write_h5(tmp_path / "four.h5", np.zeros((1, 4, 5, 6), np.float32))
    (tmp_path / "fake.h5").write_text("not hdf5")

    def spec_with(entry):
        return lambda: load_dataset_spec(write_json(tmp_path / "s.json", {"train": [entry]}))

    message = one_line_error(lambda: load_dataset_spec(tmp_path / "missing.json"), "not found")
    assert "missing.json" in message
    message = one_line_error(spec_with({"path": "nope.h5"}), "HDF5 file not found")
    assert "nope.h5" in message
    message = one_line_error(spec_with({"path": "v.h5", "dset": "volume"}), "'volume' not found")
    assert "v.h5" in message and "available: data" in message
    message = one_line_error(spec_with({"path": "v.h5", "ROI1": [0, 20]}), "ROI1 .* outside")
    assert "v.h5" in message
    one_line_error(spec_with({"path": "v.h5", "ROI2": [10, 5]}), "ROI2 .* outside")
    one_line_error(spec_with({"path": "v.h5", "ROI0": [-20, 5]}), "ROI0 .* outside")
    one_line_error(spec_with({"path": "v.h5", "ROI0": [1, 2, 3]}), "ROI0 .* must be")
    one_line_error(spec_with({"path": "flat.h5"}), "3D volume is required")
    one_line_error(spec_with({"path": "four.h5"}), "3D volume is required")
    one_line_error(spec_with({"path": "fake.h5"}), "cannot open")
    one_line_error(spec_with({"path": "v.h5", "roi0": [0, 4]}), "unknown key")
    one_line_error(spec_with({"file": "v.h5"}), "path")
    one_line_error(lambda: load_dataset_spec(write_json(tmp_path / "bad.json", "{\"train\": [")), "invalid JSON")
    one_line_error(lambda: load_dataset_spec(write_json(tmp_path / "e.json", {"train": []})), "non-empty")
    one_line_error(lambda: load_dataset_spec(write_json(tmp_path / "n.json", {"other": []})), "unknown key")
    one_line_error(lambda: load_dataset_spec(write_json(tmp_path / "z.json", {})), "neither")
    one_line_error(lambda: load_dataset_spec(tmp_path / "fake.h5"), "cannot open")


def test_check_patch(two_volume_json: Path):
    spec = load_dataset_spec(two_volume_json)
    check_patch(spec, (8, 12, 12))  # exactly the smallest ROI
    check_patch(spec, 8)
    message = one_line_error(lambda: check_patch(spec, (9, 4, 4)), "larger than the ROI")
    assert "a.h5" in message and "(8, 12, 12)" in message
    one_line_error(lambda: check_patch(spec, (4, 4)), "3 positive")
    one_line_error(lambda: PatchSampler(spec.train, (4, 13, 4), seed=0), "larger than the ROI")


# ------------------------------------------------------------------------------- sampling


def test_patches_come_from_inside_the_roi(two_volume_json: Path):
    spec = load_dataset_spec(two_volume_json)
    patch_shape = (6, 10, 9)
    ref_a, ref_b = spec.train
    seen = {0: [set(), set(), set()], 1: [set(), set(), set()]}
    with PatchSampler(spec.train, patch_shape, seed=1) as sampler:
        batch = sampler.sample(300)
    assert batch.shape == (300, *patch_shape, 1) and batch.dtype == np.float32
    for patch in batch:
        file_index = 1 if patch.min() >= 500000 else 0
        ref = (ref_a, ref_b)[file_index]
        origin, _ = decode(patch, offset=500000.0 * file_index)
        for axis, ((start, stop), size) in enumerate(zip(ref.roi, patch_shape)):
            assert start <= origin[axis] and origin[axis] + size <= stop
            seen[file_index][axis].add(origin[axis])
    # both files (with different dataset names) are used, and every valid origin is reached
    for file_index, ref in enumerate((ref_a, ref_b)):
        for axis, ((start, stop), size) in enumerate(zip(ref.roi, patch_shape)):
            assert seen[file_index][axis] == set(range(start, stop - size + 1))


def test_flips_on_every_axis_and_can_be_disabled(tmp_path: Path):
    path = write_h5(tmp_path / "v.h5", coordinate_volume())
    refs = load_dataset_spec(path).train
    with PatchSampler(refs, (5, 5, 5), seed=3) as sampler:
        flipped = [decode(p) for p in sampler.sample(200)]
    with PatchSampler(refs, (5, 5, 5), seed=3, flips=False) as sampler:
        plain = [decode(p) for p in sampler.sample(200)]
    for axis in range(3):
        count = sum(axis in axes for _, axes in flipped)
        assert 60 < count < 140, (axis, count)  # ~Binomial(200, 0.5)
    assert all(axes == () for _, axes in plain)
    # same seed -> same positions with and without flips
    assert [origin for origin, _ in flipped] == [origin for origin, _ in plain]


def test_flipped_patch_equals_flipped_read(tmp_path: Path):
    volume = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    path = write_h5(tmp_path / "noise.h5", volume)
    coords = write_h5(tmp_path / "coords.h5", coordinate_volume())
    refs_noise = load_dataset_spec(path).train
    refs_coords = load_dataset_spec(coords).train
    with PatchSampler(refs_noise, (4, 6, 8), seed=9) as a, PatchSampler(refs_coords, (4, 6, 8), seed=9) as b:
        noise_patches, coord_patches = a.sample(20), b.sample(20)
    for noise_patch, coord_patch in zip(noise_patches, coord_patches):
        origin, axes = decode(coord_patch)
        block = volume[tuple(slice(o, o + s) for o, s in zip(origin, (4, 6, 8)))]
        expected = np.flip(block, axis=axes) if axes else block
        np.testing.assert_array_equal(noise_patch[..., 0], expected)


def test_sampling_is_deterministic_with_a_seed(two_volume_json: Path):
    refs = load_dataset_spec(two_volume_json).train
    with PatchSampler(refs, (4, 4, 4), seed=5) as a, PatchSampler(refs, (4, 4, 4), seed=5) as b:
        np.testing.assert_array_equal(a.sample(10), b.sample(10))
        np.testing.assert_array_equal(a.sample(3), b.sample(3))
    with PatchSampler(refs, (4, 4, 4), seed=5) as a, PatchSampler(refs, (4, 4, 4), seed=6) as b:
        assert not np.array_equal(a.sample(10), b.sample(10))


def test_non_finite_values_raise_naming_the_file(tmp_path: Path):
    volume = coordinate_volume()
    volume[:, :, :] = np.nan
    path = write_h5(tmp_path / "broken.h5", volume)
    with PatchSampler(load_dataset_spec(path).train, (4, 4, 4), seed=0) as sampler:
        message = one_line_error(lambda: sampler.sample(1), "non-finite")
    assert "broken.h5" in message


def test_sampler_reads_lazily_and_closes(tmp_path: Path, monkeypatch):
    path = write_h5(tmp_path / "v.h5", coordinate_volume())
    sampler = PatchSampler(load_dataset_spec(path).train, (3, 4, 5), seed=0)
    reads = []
    dataset_class = h5py.Dataset
    original_getitem = dataset_class.__getitem__

    def spy(self, key, *args, **kwargs):
        result = original_getitem(self, key, *args, **kwargs)
        reads.append(np.shape(result))
        return result

    monkeypatch.setattr(dataset_class, "__getitem__", spy)
    sampler.sample(4)
    assert reads == [(3, 4, 5)] * 4  # only the patch is read, never the whole volume
    sampler.close()
    sampler.close()
    with pytest.raises(TfmedganError, match="closed"):
        sampler.sample(1)


def test_tf_dataset_batches(two_volume_json: Path):
    import tensorflow as tf

    refs = load_dataset_spec(two_volume_json).train
    with PatchSampler(refs, (4, 6, 8), seed=0) as sampler:
        dataset = tf_dataset(sampler, batch_size=3, num_batches=4)
        assert dataset.element_spec.shape == (3, 4, 6, 8, 1)
        assert dataset.element_spec.dtype == tf.float32
        batches = list(dataset)
        assert len(batches) == 4
        for batch in batches:
            assert batch.shape == (3, 4, 6, 8, 1) and batch.dtype == tf.float32
            for patch in batch.numpy():
                offset = 500000.0 if patch.min() >= 500000 else 0.0
                decode(patch, offset)  # a valid block of a volume
        infinite = tf_dataset(sampler, batch_size=2, prefetch=0)
        assert len(list(infinite.take(3))) == 3
    with pytest.raises(TfmedganError):
        tf_dataset(sampler, batch_size=0)


# ------------------------------------------------------------------------------- writing


def test_standardize_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    volume = (rng.normal(size=(10, 12, 14)) * 37.0 + 1200.0).astype(np.int16)
    out = tmp_path / "data" / "vol.h5"
    out.parent.mkdir()
    (tmp_path / "dataset").mkdir()
    mean, std = standardize_to_hdf5(volume, out, tmp_path / "dataset" / "vol.json")
    assert mean == pytest.approx(volume.mean()) and std == pytest.approx(volume.std())
    with h5py.File(out, "r") as handle:
        data = handle["data"][...]
        assert handle["data"].dtype == np.float32
        assert handle["data"].attrs["mean"] == pytest.approx(mean)
    assert abs(data.mean()) < 1e-5 and data.std() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(data * std + mean, volume, atol=1e-2)
    content = json.loads((tmp_path / "dataset" / "vol.json").read_text())
    assert content["train"][0]["path"] == "../data/vol.h5"
    spec = load_dataset_spec(tmp_path / "dataset" / "vol.json")
    assert spec.train[0].path == out and spec.train[0].roi == ((0, 10), (0, 12), (0, 14))
    assert spec.validate == spec.train
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "dataset", "vol.h5", "vol.json"]


def test_standardize_validate_split_and_errors(tmp_path: Path):
    volume = np.random.default_rng(1).normal(size=(10, 8, 8)).astype(np.float32)
    standardize_to_hdf5(volume, tmp_path / "v.h5", tmp_path / "v.json", dset="img", validate_fraction=0.2)
    spec = load_dataset_spec(tmp_path / "v.json")
    assert spec.train[0].roi[0] == (0, 8) and spec.validate[0].roi[0] == (8, 10)
    assert spec.train[0].dset == "img"
    one_line_error(lambda: standardize_to_hdf5(np.ones((4, 4, 4)), tmp_path / "c.h5"), "constant")
    one_line_error(lambda: standardize_to_hdf5(np.ones((4, 4)), tmp_path / "c.h5"), "3D")
    nan_volume = volume.copy()
    nan_volume[0, 0, 0] = np.nan
    one_line_error(lambda: standardize_to_hdf5(nan_volume, tmp_path / "c.h5"), "NaN")
    one_line_error(lambda: standardize_to_hdf5(volume, tmp_path / "c.h5", validate_fraction=1.0), "validate")
    one_line_error(lambda: standardize_to_hdf5(volume, tmp_path / "no" / "c.h5"), "does not exist")
    assert not (tmp_path / "c.h5").exists()


def test_a_description_without_train_says_the_validate_list_is_trained_on(tmp_path: Path, capsys):
    write_h5(tmp_path / "v.h5", coordinate_volume())
    source = write_json(tmp_path / "only_val.json", {"validate": [{"path": "v.h5"}]})
    spec = load_dataset_spec(source)
    assert spec.train == spec.validate
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and "no \"train\" list" in lines[0] and "validate" in lines[0] and str(source) in lines[0]
    load_dataset_spec(write_json(tmp_path / "only_train.json", {"train": [{"path": "v.h5"}]}))
    load_dataset_spec(write_json(tmp_path / "both.json", {"train": [{"path": "v.h5"}], "validate": [{"path": "v.h5"}]}))
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""  # nothing said when train is there
