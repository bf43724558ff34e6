"""Seed-001 BraTS-layout data: case lists, checks, geometry round trip, augmentation, streams."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfmedgan.data import brats
from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import read_volume

LPS_AFFINE = np.array([[-2.0, 0, 0, 30.0], [0, -2.0, 0, 40.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
NATIVE_SHAPE = (18, 20, 14)  # LPS grid -> IPL shape (14, 20, 18)
CROP = (8, 16, 16)


def _volume(seed, shape=NATIVE_SHAPE, scale=100.0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    return (brain * (scale + 20 * rng.normal(size=shape)) + brain * 5).astype(np.float32)


def write_case(folder, name, modalities=("t1", "t2", "flair"), extra=("seg", "t1ce"), seed=0,
               shape=NATIVE_SHAPE, affine=LPS_AFFINE):
    case = Path(folder) / name
    case.mkdir(parents=True, exist_ok=True)
    for offset, modality in enumerate(tuple(modalities) + tuple(extra)):
        data = _volume(seed * 10 + offset, shape, scale=50.0 * (offset + 1))
        nib.save(nib.Nifti1Image(data, affine), case / f"{name}_{modality}.nii.gz")
    return case


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "BraTS"
    for index, name in enumerate(["case_10", "case_2", "case_1"]):
        write_case(root / "domain1_train", name, seed=index)
    for index in range(2):
        write_case(root / "domain2_val", f"target_{index}", modalities=("t2", "flair"), extra=(), seed=50 + index)
    return root


# ---- case lists ---------------------------------------------------------------------------------
def test_list_cases_natural_sort_and_t1_not_t1ce(root):
    cases = brats.list_split(root, "domain1", "train")
    assert [case.name for case in cases] == ["case_1", "case_2", "case_10"]
    assert cases[0].path("t1").name == "case_1_t1.nii.gz"
    assert cases[0].path("flair").name == "case_1_flair.nii.gz"
    assert set(cases[0].files) == {"t1", "t2", "flair"}
    # a target folder only needs T2/FLAIR
    target = brats.list_split(root, "domain2", "val", brats.INPUT_MODALITIES)
    assert len(target) == 2
    with pytest.raises(TfmedganError, match="can't|listed without"):
        target[0].path("t1")


def test_list_cases_errors(root, tmp_path):
    with pytest.raises(TfmedganError, match="no target_0_t1.nii.gz"):
        brats.list_split(root, "domain2", "val")  # target domain has no T1
    (root / "domain1_val").mkdir()
    with pytest.raises(TfmedganError, match="no case folders"):
        brats.list_split(root, "domain1", "val")
    with pytest.raises(TfmedganError, match="folder does not exist"):
        brats.split_folder(root, "domain3", "train")
    with pytest.raises(TfmedganError, match="data folder does not exist"):
        brats.split_folder(tmp_path / "missing", "domain1", "train")
    # only t1ce present: t1 is missing (t1ce must not count as t1)
    write_case(root / "odd_train", "c", modalities=("t2", "flair"), extra=("t1ce",))
    with pytest.raises(TfmedganError, match="no c_t1.nii.gz"):
        brats.list_split(root, "odd", "train")
    write_case(root / "dup_train", "d", extra=())
    nib.save(nib.Nifti1Image(_volume(0), LPS_AFFINE), root / "dup_train" / "d" / "other_t2.nii")
    with pytest.raises(TfmedganError, match="more than one t2"):
        brats.list_split(root, "dup", "train")
    write_case(root / "nof_train", "e", modalities=("t1", "t2"), extra=())
    with pytest.raises(TfmedganError, match="e_flair"):
        brats.list_split(root, "nof", "train")


def test_validate_cases_errors(root):
    cases = brats.list_split(root, "domain1", "train")
    brats.validate_cases(cases, crop_shape=CROP, crop_start=None, progress=False)
    with pytest.raises(TfmedganError, match="smaller than the crop"):
        brats.validate_cases(cases, crop_shape=(16, 16, 16), crop_start=None, progress=False)
    with pytest.raises(TfmedganError, match="starting at"):
        brats.validate_cases(cases, crop_shape=CROP, crop_start=(8, 0, 0), progress=False)

    def broken(name, modality, data=None, affine=LPS_AFFINE):
        folder = write_case(root / f"{name}_train", name, extra=())
        if data is None:
            data = _volume(1)
        nib.save(nib.Nifti1Image(data, affine), folder / f"{name}_{modality}.nii.gz")
        return brats.list_split(root, name, "train")

    with pytest.raises(TfmedganError, match="shape .* differs"):
        brats.validate_cases(broken("shape", "flair", _volume(1, (18, 20, 16))), crop_shape=CROP, crop_start=None, progress=False)
    moved = LPS_AFFINE.copy()
    moved[0, 3] += 4.0
    with pytest.raises(TfmedganError, match="affine differs"):
        brats.validate_cases(broken("affine", "t2", affine=moved), crop_shape=CROP, crop_start=None, progress=False)
    nan = _volume(1)
    nan[3, 4, 5] = np.nan
    with pytest.raises(TfmedganError, match="NaN"):
        brats.validate_cases(broken("nan", "t1", nan), crop_shape=CROP, crop_start=None, progress=False)
    with pytest.raises(TfmedganError, match="same value"):
        brats.validate_cases(broken("flat", "t2", np.full(NATIVE_SHAPE, 7, np.float32)), crop_shape=CROP, crop_start=None, progress=False)
    with pytest.raises(TfmedganError, match="no cases"):
        brats.validate_cases([], progress=False)


# ---- geometry -----------------------------------------------------------------------------------
def test_original_brats_geometry_is_ipl_with_the_original_crop():
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    geometry = brats.case_geometry((240, 240, 155), affine)
    assert geometry.reoriented_shape == (155, 240, 240)
    assert geometry.crop_start == (8, 24, 24) and geometry.padded_shape == (144, 192, 192)
    assert geometry.crop_slices == (slice(8, 152), slice(24, 216), slice(24, 216))
    assert nib.aff2axcodes(geometry.reoriented_affine) == ("I", "P", "L")
    # the model grid keeps world coordinates: model voxel (0,0,0) = reoriented voxel (8,24,24)
    np.testing.assert_allclose(geometry.model_affine @ [0, 0, 0, 1], geometry.reoriented_affine @ [8, 24, 24, 1])


@pytest.mark.parametrize(
    "affine",
    [
        LPS_AFFINE,
        np.diag([1.5, 1.0, 2.5, 1.0]),  # RAS
        np.array([[0, 0, -2.0, 5], [2.0, 0, 0, -3], [0, -1.0, 0, 7], [0, 0, 0, 1]]),  # permuted axes
        np.array([[1.9, 0.3, 0, 0], [-0.3, 1.9, 0, 0], [0, 0, -2.0, 0], [0, 0, 0, 1]]),  # oblique
    ],
)
def test_forward_then_inverse_is_exact_inside_the_crop(affine, tmp_path):
    shape = (19, 22, 15)
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=shape).astype(np.float32), affine),
             tmp_path / "input_t2.nii.gz")
    source = read_volume(tmp_path / "input_t2.nii.gz")  # the affine as a NIfTI file stores it
    data, affine = source.data, source.affine
    geometry = brats.case_geometry(shape, affine, crop_shape=(9, 12, 10), crop_start=None, multiple=8)
    model = brats.to_model_grid(data, geometry, pad_value=-5.0)
    assert model.shape == geometry.padded_shape == (16, 16, 16)
    assert np.all(model[9:] == -5.0) and np.all(model[:, 12:] == -5.0)
    back = brats.from_model_grid(model, geometry, fill=np.nan)
    assert back.shape == shape
    inside = ~np.isnan(back)
    assert inside.sum() == 9 * 12 * 10
    np.testing.assert_array_equal(back[inside], data[inside])
    # world coordinates agree: model voxel v sits where the original voxel with the same value is
    index = np.argwhere(inside)[17]
    model_index = np.argwhere(model == data[tuple(index)])[0]
    np.testing.assert_allclose(geometry.model_affine @ [*model_index, 1], np.asarray(affine) @ [*index, 1], atol=1e-9)
    # written NIfTI: the input's affine and shape, data inside the crop, fill outside
    written = brats.write_on_original_grid(tmp_path / "syn.nii.gz", model[..., None], geometry, fill=0.0)
    volume = read_volume(written)
    assert volume.shape == shape
    np.testing.assert_array_equal(volume.affine, affine)  # affine in -> affine out, exactly
    assert nib.load(written).header["sform_code"] > 0
    np.testing.assert_array_equal(volume.data[inside], data[inside])
    assert np.all(volume.data[~inside] == 0.0)


def test_load_case_scales_crops_and_keeps_geometry(root, tmp_path):
    case = brats.list_split(root, "domain1", "train")[0]
    loaded = brats.load_case(case, crop_shape=(7, 16, 16), crop_start=None)
    assert loaded.inputs.shape == (8, 16, 16, 2) and loaded.target.shape == (8, 16, 16, 1)
    crop = loaded.volumes["t1"][:7]
    assert crop.min() == 0.0 and crop.max() == 1.0
    assert np.all(loaded.volumes["t1"][7:] == 0.0)  # zero padding to a multiple of 8
    raw = read_volume(case.path("t1"))
    expected = brats.min_max_scale(brats.reorient(raw.data, loaded.geometry)[loaded.geometry.crop_slices])
    np.testing.assert_array_equal(crop, expected)
    # a synthetic T1 written back lands on the original grid where the real T1 was
    path = brats.write_on_original_grid(tmp_path / "t1.nii.gz", loaded.target, loaded.geometry, header=loaded.header)
    written = read_volume(path)
    assert written.shape == raw.shape and np.array_equal(written.affine, raw.affine)
    mask = brats.from_model_grid(np.ones(loaded.geometry.padded_shape), loaded.geometry) > 0
    assert mask.sum() == 7 * 16 * 16
    values = raw.data[mask]
    np.testing.assert_allclose(written.data[mask], (values - values.min()) / (values.max() - values.min()), atol=1e-6)
    assert np.all(written.data[~mask] == 0.0)


# ---- augmentation -------------------------------------------------------------------------------
def test_draws_are_deterministic_and_have_the_original_distribution():
    first = brats.draw_augmentation(3, 1, 7)
    assert first == brats.draw_augmentation(3, 1, 7)
    draws = [brats.draw_augmentation(0, 0, index) for index in range(3000)]
    assert len({(d.rotations, d.flip_axes) for d in draws[:50]}) > 5
    no_rotation = np.mean([not any(d.rotations) for d in draws])
    assert no_rotation == pytest.approx(0.8**3, abs=0.03)
    sizes = np.bincount([len(d.flip_axes) for d in draws], minlength=3)
    assert sizes.shape == (3,) and np.all(np.abs(sizes / 3000 - 1 / 3) < 0.04)
    brightness = np.array([d.brightness for d in draws])
    assert brightness.min() >= 0.3 and brightness.max() <= 1.5 and abs(brightness.mean() - 0.9) < 0.03
    assert brats.draw_augmentation(0, 0, 1) != brats.draw_augmentation(0, 1, 1)
    assert brats.draw_augmentation(0, 0, 1, stream=1).brightness != brats.draw_augmentation(0, 0, 1).brightness


def test_spatial_and_jitter_definitions():
    volume = np.random.default_rng(0).uniform(size=(4, 6, 8, 2)).astype(np.float32)
    aug = brats.Augmentation(rotations=(1, 0, 2), planes=brats.ROTATION_PLANES, flip_axes=(1,),
                             brightness=1.4, contrast=0.5)
    out = aug.spatial(volume)
    expected = np.flip(np.rot90(np.rot90(volume, 1, axes=(0, 1)), 2, axes=(1, 2)), axis=1)
    np.testing.assert_array_equal(out, expected)
    assert out.shape[:3] == aug.spatial_shape(volume.shape[:3]) == (6, 4, 8)
    jittered = aug.jitter_channels(volume)
    for channel in range(2):
        bright = np.clip(1.4 * volume[..., channel], 0, 1)
        manual = np.clip(0.5 * bright + 0.5 * bright.mean(), 0, 1)
        np.testing.assert_allclose(jittered[..., channel], manual, atol=1e-6)


# ---- tf.data streams ----------------------------------------------------------------------------
def test_pix2pix_dataset_shapes_determinism_skip_and_target_not_jittered(root):
    cases = brats.list_split(root, "domain1", "train")
    kwargs = dict(crop_shape=CROP, crop_start=None, seed=4, epoch=2)
    samples = [(a.numpy(), b.numpy()) for a, b in brats.pix2pix_dataset(cases, **kwargs)]
    assert len(samples) == 3
    again = [(a.numpy(), b.numpy()) for a, b in brats.pix2pix_dataset(cases, **kwargs)]
    for (a1, b1), (a2, b2) in zip(samples, again):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)
    skipped = [a.numpy() for a, _ in brats.pix2pix_dataset(cases, skip=1, **kwargs)]
    assert len(skipped) == 2 and np.array_equal(skipped[0], samples[1][0])
    # reproduce sample 0 by hand: epoch order, draw, spatial on all, jitter on inputs only
    index = int(brats.epoch_order(3, 4, 2)[0])
    loaded = brats.load_case(cases[index], crop_shape=CROP, crop_start=None)
    aug = brats.draw_augmentation(4, 2, index)
    np.testing.assert_array_equal(samples[0][1][0], aug.spatial(loaded.target))
    np.testing.assert_allclose(samples[0][0][0], aug.jitter_channels(aug.spatial(loaded.inputs)), atol=1e-6)
    plain = next(iter(brats.pix2pix_dataset(cases, augment=False, shuffle=False, crop_shape=CROP, crop_start=None)))
    assert tuple(plain[0].shape) == (1, 8, 16, 16, 2)
    first = brats.load_case(cases[0], crop_shape=CROP, crop_start=None)
    np.testing.assert_array_equal(plain[0].numpy()[0], first.inputs)


def test_pix2pix_dataset_dynamic_shape_rules(root):
    cases = brats.list_split(root, "domain1", "train")
    dataset = brats.pix2pix_dataset(cases, crop_shape=CROP, crop_start=None)
    assert dataset.element_spec[0].shape.as_list() == [None, None, None, None, 2]
    with pytest.raises(TfmedganError, match="batch must be 1"):
        brats.pix2pix_dataset(cases, crop_shape=CROP, crop_start=None, batch=2)
    static = brats.pix2pix_dataset(cases, crop_shape=CROP, crop_start=None, batch=2, rotation_planes=((1, 2),))
    assert static.element_spec[0].shape.as_list() == [None, 8, 16, 16, 2]
    assert [tuple(a.shape) for a, _ in static] == [(2, 8, 16, 16, 2), (1, 8, 16, 16, 2)]


def test_transfer_dataset_pairs_source_t1_with_target_inputs(root):
    source = brats.list_split(root, "domain1", "train")
    target = brats.list_split(root, "domain2", "val", brats.INPUT_MODALITIES)  # no T1 in the target folder
    assert brats.transfer_length(source, target) == 3
    items = list(brats.transfer_dataset(source, target, crop_shape=CROP, crop_start=None, seed=1, epoch=0))
    assert len(items) == 3
    order = brats.epoch_order(3, 1, 0)
    for (src_in, src_t1, tgt_in), index in zip(items, order):
        aug = brats.draw_augmentation(1, 0, int(index))
        src = brats.load_case(source[index % 3], crop_shape=CROP, crop_start=None)
        tgt = brats.load_case(target[index % 2], brats.INPUT_MODALITIES, crop_shape=CROP, crop_start=None)
        np.testing.assert_array_equal(src_t1.numpy()[0], aug.spatial(src.target))
        jitter = brats.draw_augmentation(1, 0, int(index), stream=1)
        np.testing.assert_allclose(tgt_in.numpy()[0], jitter.jitter_channels(aug.spatial(tgt.inputs)), atol=1e-6)
        assert src_in.shape[-1] == 2 and tgt_in.shape[1:4] == src_t1.shape[1:4]


# ---- VAE slices ---------------------------------------------------------------------------------
def test_volume_to_slices_pad_crop_percentiles_and_axis():
    data = np.random.default_rng(0).uniform(1, 2, size=(12, 20, 9)).astype(np.float32)
    slices = brats.volume_to_slices(data, size=16, slice_axis=1)
    assert slices.shape == (16, 16, 16, 1)
    cube = np.zeros((16, 16, 16), np.float32)
    cube[2:14, :, 3:12] = data[:, 2:18, :]  # pad 12 -> 2/2, crop 20 -> [2:18], pad 9 -> 3/4
    low, high = np.percentile(cube, [1, 99])
    expected = np.clip((cube - low) / (high - low), 0, 1)
    np.testing.assert_allclose(slices[5, :, :, 0], expected[:, 5, :], atol=1e-6)
    quantized = brats.volume_to_slices(data, size=16, quantize=True)
    assert np.allclose(quantized * 255, np.round(quantized * 255), atol=1e-4)
    with pytest.raises(TfmedganError, match="slice_axis"):
        brats.volume_to_slices(data, slice_axis=3)


def test_vae_slice_dataset_batches_per_volume_and_skip(root):
    files = [case.path("t1") for case in brats.list_split(root, "domain1", "train", ("t1",))]
    full = [b.numpy() for b in brats.vae_slice_dataset(files, size=16, batch=16)]
    assert [b.shape for b in full] == [(16, 16, 16, 1)] * 3
    expected = brats.volume_to_slices(read_volume(files[1]).data, size=16)
    np.testing.assert_array_equal(full[1], expected)
    chunks = [b.numpy() for b in brats.vae_slice_dataset(files, size=16, batch=6)]
    assert [b.shape[0] for b in chunks] == [6, 6, 4] * 3  # batches never mix volumes
    np.testing.assert_array_equal(np.concatenate(chunks[3:6]), full[1])
    resumed = [b.numpy() for b in brats.vae_slice_dataset(files, size=16, batch=6, skip=4)]
    assert len(resumed) == 5 and np.array_equal(resumed[0], chunks[4])
    shuffled = [b.numpy() for b in brats.vae_slice_dataset(files, size=16, batch=16, shuffle=True, seed=3, epoch=1)]
    order = brats.epoch_order(3, 3, 1)
    for got, index in zip(shuffled, order):
        np.testing.assert_array_equal(got, full[index])
    coronal_ipl = next(iter(brats.vae_slice_dataset(files[:1], size=16, batch=16, axis_codes="IPL"))).numpy()
    assert not np.array_equal(coronal_ipl, full[0])
