"""The NIfTI pair pipeline of the 3D CycleGAN: checks, padding, scaling, streaming order."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfmedgan.data import nifti
from tfmedgan.errors import TfmedganError

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def tiny_volume(shape, seed, contrast="A"):
    """A blurred 'brain' ellipsoid with an inner 'ventricle', zero outside; T1-like (A) or T2-like (B)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    centre = rng.uniform(-0.2, 0.2, 3)
    radius = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    brain, inner = radius < 0.7, radius < 0.35
    high, low = (200.0, 100.0) if contrast == "A" else (100.0, 200.0)
    values = np.where(brain, np.where(inner, high, low), 0.0) + brain * rng.normal(0, 3, shape)
    return values.astype(np.float32)


def write_tiny_dataset(root, n_train=4, n_test=2, shapes=((16, 20, 12), (14, 18, 12))):
    """trainA/trainB/testA/testB with n pairs of small gz NIfTIs (alternating shapes)."""
    root = Path(root)
    for split, count in (("train", n_train), ("test", n_test)):
        for domain in "AB":
            (root / f"{split}{domain}").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            shape = shapes[index % len(shapes)]
            seed = index + (100 if split == "test" else 0)
            for domain, suffix in (("A", "T1w"), ("B", "T2w")):
                image = nib.Nifti1Image(tiny_volume(shape, seed, domain), AFFINE)
                nib.save(image, root / f"{split}{domain}" / f"sub-{index:02d}_{suffix}.nii.gz")
    return root


@pytest.fixture
def dataset_dir(tmp_path):
    return write_tiny_dataset(tmp_path / "data")


def test_pairs_and_largest_shape(dataset_dir):
    pairs = nifti.paired_files(dataset_dir, "train")
    assert [(a.name, b.name) for a, b in pairs][0] == ("sub-00_T1w.nii.gz", "sub-00_T2w.nii.gz")
    assert len(pairs) == 4
    assert nifti.largest_shape(pairs) == (16, 20, 12)
    assert nifti.validate_pairs(pairs, progress=False) == (16, 20, 12)


def test_dataset_batches_are_padded_scaled_and_deterministic(dataset_dir):
    pairs = nifti.paired_files(dataset_dir, "train")
    shape = (16, 20, 16)
    batches = list(nifti.volume_pair_dataset(pairs, shape, batch=3, seed=5, epoch=2))
    assert [tuple(a.shape) for a, _ in batches] == [(3, 16, 20, 16, 1), (1, 16, 20, 16, 1)]
    a = np.concatenate([b[0].numpy() for b in batches])
    b = np.concatenate([b[1].numpy() for b in batches])
    for volume in (*a, *b):  # per-volume min-max to [-1, 1]
        assert volume.min() == pytest.approx(-1.0) and volume.max() == pytest.approx(1.0)
    order = nifti.epoch_order(4, 5, 2)
    for row, index in enumerate(order):
        expected_a = nifti.load_model_input(pairs[index][0], shape)
        np.testing.assert_array_equal(a[row], expected_a)
        # centre padding (floor before, ceil after): the 14x18x12 volume sits at [1:15, 1:19, 2:14]
        raw = nib.load(pairs[index][1]).get_fdata()
        padded = np.zeros(shape)
        start = [(s - r) // 2 for s, r in zip(shape, raw.shape)]
        padded[tuple(slice(o, o + r) for o, r in zip(start, raw.shape))] = raw
        scaled = 2 * (padded - padded.min()) / (padded.max() - padded.min()) - 1
        np.testing.assert_allclose(b[row, ..., 0], scaled, atol=1e-5)
    again = np.concatenate([x[0].numpy() for x in nifti.volume_pair_dataset(pairs, shape, 3, seed=5, epoch=2)])
    np.testing.assert_array_equal(a, again)
    other = nifti.epoch_order(4, 5, 3)
    assert not np.array_equal(order, other) or not np.array_equal(order, nifti.epoch_order(4, 5, 4))


def test_unpaired_lists_repeat_the_shorter_domain(dataset_dir):
    (dataset_dir / "trainB" / "sub-03_T2w.nii.gz").unlink()
    with pytest.raises(TfmedganError, match="has no partner"):
        nifti.paired_files(dataset_dir, "train")
    pairs = nifti.paired_files(dataset_dir, "train", paired=False)
    assert len(pairs) == 4 and pairs[3][1].name == "sub-00_T2w.nii.gz"


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("nan", "NaN or infinite"),
        ("zero", "all voxels are zero"),
        ("4d", "expected a 3D volume"),
        ("2d", "expected a 3D volume"),
        ("shape", "differs from"),
        ("affine", "affine differs"),
        ("large", "larger than the model input shape"),
    ],
)
def test_validation_names_the_bad_file(dataset_dir, case, pattern):
    target = dataset_dir / "trainB" / "sub-02_T2w.nii.gz"
    data, affine = tiny_volume((16, 20, 12), 2, "B"), AFFINE
    if case == "nan":
        data[3, 3, 3] = np.nan
    elif case == "zero":
        data[:] = 0
    elif case == "4d":
        data = np.stack([data, data], axis=-1)
    elif case == "2d":
        data = data[:, :, 0]
    elif case == "shape":
        data = data[:, :, :10]
    elif case == "affine":
        affine = np.diag([2.0, 2.0, 2.5, 1.0])
    elif case == "large":
        data = np.pad(data, ((0, 4), (0, 0), (0, 0)))
        nib.save(nib.Nifti1Image(data, affine), dataset_dir / "trainA" / "sub-02_T1w.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), target)
    pairs = nifti.paired_files(dataset_dir, "train")
    max_shape = (16, 20, 12) if case == "large" else None
    with pytest.raises(TfmedganError, match=pattern) as error:
        nifti.validate_pairs(pairs, max_shape=max_shape, progress=False)
    assert "sub-02" in str(error.value) and "\n" not in str(error.value)


def test_paired_files_refuses_mismatched_names_unless_pair_by_order(dataset_dir):
    (dataset_dir / "trainB" / "sub-01_T2w.nii.gz").rename(dataset_dir / "trainB" / "sub-01x_T2w.nii.gz")
    with pytest.raises(TfmedganError, match="sub-01_T1w.nii.gz ~ sub-01x_T2w.nii.gz"):
        nifti.paired_files(dataset_dir, "train")
    pairs = nifti.paired_files(dataset_dir, "train", pair_by_order=True)
    assert (pairs[1][0].name, pairs[1][1].name) == ("sub-01_T1w.nii.gz", "sub-01x_T2w.nii.gz")
    assert len(nifti.paired_files(dataset_dir, "train", paired=False)) == 4  # unpaired data: no name check
