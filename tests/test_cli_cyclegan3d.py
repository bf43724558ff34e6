"""The cyclegan3d subcommand, --evaluate and 3D generate_images/generate.py as a user runs them."""

import csv
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.data.test_nifti_pipeline import AFFINE, tiny_volume, write_tiny_dataset
from tfmedgan.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "generate_images"))
import generate  # noqa: E402

WEIGHTS = ROOT.parent / "shared" / "seed-weights" / "dcan-cyclegan3d"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "G_A2B_model.hdf5").exists(), reason="seed-000 weights not available")
slow = pytest.mark.skipif(os.environ.get("TFMEDGAN_SLOW") != "1", reason="full-size 3D forward pass; set TFMEDGAN_SLOW=1")

TINY = ["--base-filters", "4", "--d-filters", "4", "--pool-size", "2", "--no-progress"]


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("unequal", "has no partner"),
        ("4d", "expected a 3D volume"),
        ("2d", "expected a 3D volume"),
        ("not_nifti", "not a NIfTI file"),
        ("nan", "NaN or infinite"),
        ("zero", "all voxels are zero"),
        ("large", "larger than the model input shape"),
        ("shape", "differs from"),
        ("affine", "affine differs"),
        ("existing", "already exists"),
    ],
)
def test_bad_input_is_one_line_error_before_training(case, pattern, tmp_path, capsys):
    data = write_tiny_dataset(tmp_path / "data", n_test=0)
    target = data / "trainB" / "sub-01_T2w.nii.gz"
    volume, affine, extra = tiny_volume((14, 18, 12), 1, "B"), AFFINE, []
    out = tmp_path / "out"
    if case == "unequal":
        target.unlink()
    elif case == "not_nifti":
        (data / "trainA" / "notes.txt").write_text("x")
    elif case == "existing":
        (out / "taken").mkdir(parents=True)
        extra = ["--name", "taken"]
    elif case == "large":
        extra = ["--shape", "12", "12", "12"]
    else:
        if case == "4d":
            volume = np.stack([volume] * 2, -1)
        elif case == "2d":
            volume = volume[..., 0]
        elif case == "nan":
            volume[2, 2, 2] = np.inf
        elif case == "zero":
            volume[:] = 0
        elif case == "shape":
            volume = volume[:, :, :8]
        elif case == "affine":
            affine = AFFINE.copy()
            affine[0, 3] = 5.0
        nib.save(nib.Nifti1Image(volume, affine), target)
    assert main(["cyclegan3d", str(data), str(out), *TINY, *extra]) == 2
    message = one_line_error(capsys)
    assert pattern in message
    if case not in ("existing", "large"):
        named = {"unequal": "sub-03_T1w", "not_nifti": "notes.txt"}.get(case, "sub-01_T2w")
        assert named in message
    if case != "existing":
        assert not out.exists()


def test_train_evaluate_and_generate_nifti(tmp_path, capsys):
    data = write_tiny_dataset(tmp_path / "data", n_train=2, n_test=2)
    out = tmp_path / "out"
    args = ["cyclegan3d", str(data), str(out), *TINY, "--epochs", "1", "--name", "r", "--evaluate", "--identity-every", "0"]
    assert main(args) == 0
    run = out / "r"
    config = json.loads((run / "config.json").read_text())
    assert config["shape"] == [16, 20, 12] and config["model"] == "cyclegan3d"
    assert (run / "samples" / "epoch_0000.png").stat().st_size > 1000
    with open(run / "evaluation.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["file"], r["direction"]) for r in rows] == [
        ("sub-00_T1w.nii.gz", "A2B"), ("sub-00_T2w.nii.gz", "B2A"),
        ("sub-01_T1w.nii.gz", "A2B"), ("sub-01_T2w.nii.gz", "B2A"), ("mean", "A2B"), ("mean", "B2A")]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("mae", "psnr", "ssim", "mutual_information"))
    # evaluation only, of the trained run, agrees with the one after training
    (run / "evaluation.csv").unlink()
    assert main(["cyclegan3d", "--resume", str(run), "--evaluate"]) == 0
    with open(run / "evaluation.csv") as stream:
        again = list(csv.DictReader(stream))
    assert [float(r["mae"]) for r in again] == pytest.approx([float(r["mae"]) for r in rows], abs=1e-6)

    # generation: one NIfTI per input, input shape/affine/header, named after it
    inputs = data / "testB"
    for index, path in enumerate(sorted(inputs.iterdir())):  # give the inputs distinctive headers
        image = nib.load(path)
        affine = image.affine.copy()
        affine[:3, 3] = [-10.0 - index, 4.0, 7.5]
        header = image.header.copy()
        header["descrip"] = b"subject %d" % index
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine, header), path)
    gen = tmp_path / "gen"
    assert generate.main([str(run), str(inputs), str(gen), "--direction", "B2A", "--no-progress"]) == 0
    written = sorted(p.name for p in gen.iterdir())
    assert written == ["sub-00_T2w_synthetic.nii.gz", "sub-01_T2w_synthetic.nii.gz"]
    for index, name in enumerate(written):
        source = nib.load(inputs / name.replace("_synthetic", ""))
        result = nib.load(gen / name)
        assert result.shape == source.shape
        np.testing.assert_allclose(result.affine, source.affine)
        assert result.header["descrip"] == source.header["descrip"]
        values = result.get_fdata()
        assert values.min() >= -1.0 and values.max() <= 1.0 and values.std() > 0
    assert generate.main([str(run), str(inputs), str(gen)]) == 2
    assert "not empty" in one_line_error(capsys)
    # a single file and a volume larger than the training shape (sliding window) also work
    big = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(tiny_volume((20, 24, 12), 3, "A"), AFFINE), big)
    assert generate.main([str(run), str(big), str(tmp_path / "gen_big"), "--no-progress"]) == 0
    assert nib.load(tmp_path / "gen_big" / "big_synthetic.nii.gz").shape == (20, 24, 12)
    # --flip-average: the mean of the translation and the mirrored translation of the mirrored input, so
    # mirroring the input left-right (axis 0 of this affine) mirrors the output
    plain = nib.load(tmp_path / "gen_big" / "big_synthetic.nii.gz").get_fdata()
    assert generate.main([str(run), str(big), str(tmp_path / "gen_flip"), "--no-progress", "--flip-average"]) == 0
    averaged = nib.load(tmp_path / "gen_flip" / "big_synthetic.nii.gz").get_fdata()
    mirrored = tmp_path / "mirrored" / "big.nii.gz"
    mirrored.parent.mkdir()
    nib.save(nib.Nifti1Image(tiny_volume((20, 24, 12), 3, "A")[::-1].copy(), AFFINE), mirrored)
    assert generate.main([str(run), str(mirrored), str(tmp_path / "gen_flip_m"), "--no-progress", "--flip-average"]) == 0
    np.testing.assert_allclose(nib.load(tmp_path / "gen_flip_m" / "big_synthetic.nii.gz").get_fdata()[::-1], averaged,
                               atol=1e-6)
    assert np.abs(averaged - plain).max() > 1e-4
    # the 2D command line is unchanged: a cyclegan3d run has no 2D "generator"
    assert generate.main([str(run), str(tmp_path / "gen2d"), "--n", "2"]) == 2
    capsys.readouterr()


def test_dry_run_prints_memory_estimate(tmp_path, capsys):
    assert main(["cyclegan3d", "unused", str(tmp_path / "out"), "--shape", "64", "64", "64", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["memory_estimate_gib"] > 0 and resolved["shape"] == [64, 64, 64]
    assert resolved["parameters"]["discriminator_a"] == 8_257
    assert main(["cyclegan3d", "unused", str(tmp_path / "out"), "--preset", "gan_3d", "--shape", "92", "108", "84", "--dry-run"]) == 0
    deep = json.loads(capsys.readouterr().out)
    assert (deep["n_downsamplings"], deep["n_residual_blocks"], deep["d_layers"], deep["norm"]) == (2, 8, 3, "zslice")
    for extra, norm in (((), "none"), (("--norm", "channel"), "channel")):  # an explicit --norm beats the preset
        assert main(["cyclegan3d", "unused", str(tmp_path / "out"), "--preset", "cpu", "--shape", "64", "64", "64",
                     *extra, "--dry-run"]) == 0
        cpu = json.loads(capsys.readouterr().out)
        assert (cpu["norm"], cpu["patch"], cpu["upsample"]) == (norm, [48, 48, 48], "resize")
    assert not (tmp_path / "out").exists()


@needs_weights
def test_legacy_generator_on_a_small_crop(tmp_path):
    """The original G_A2B weights, rebuilt for a 16x16x156 input (Z is fixed by the per-slice norm)."""
    from tfmedgan.inference.volumes import load_translator, translate_files

    model, shape = load_translator(None, "A2B", legacy_json=WEIGHTS / "G_A2B_model.json",
                                   legacy_hdf5=WEIGHTS / "G_A2B_model.hdf5", input_shape=(16, 16, 156, 1))
    assert shape == (16, 16, 156) and model.count_params() == 355_077
    source = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(tiny_volume((12, 14, 150), 0, "A"), AFFINE), source)
    written = translate_files(model, shape, [source], tmp_path / "out", progress=False)
    result = nib.load(written[0])
    assert result.shape == (12, 14, 150) and written[0].name == "t1_synthetic.nii.gz"
    values = result.get_fdata()
    assert -1.0 <= values.min() < values.max() <= 1.0


@needs_weights
@slow
def test_legacy_model_folder_full_size(tmp_path):
    """generate.py on the original model folder: full 156x188x156 forward pass (~30-70 s, ~6.5 GB)."""
    source = tmp_path / "in" / "sub_T1w.nii.gz"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(tiny_volume((150, 180, 150), 0, "A"), AFFINE), source)
    assert generate.main([str(WEIGHTS), str(source.parent), str(tmp_path / "out"), "--no-progress"]) == 0
    assert nib.load(tmp_path / "out" / "sub_T1w_synthetic.nii.gz").shape == (150, 180, 150)


@needs_weights
def test_legacy_weights_given_as_the_hdf5_file_itself():
    """The original G_A2B_model.hdf5 path works as well as its folder (the .json beside it is used)."""
    from tfmedgan.inference.volumes import load_translator

    model, shape = load_translator(WEIGHTS / "G_A2B_model.hdf5", "A2B", input_shape=(16, 16, 156, 1))
    assert shape == (16, 16, 156) and model.count_params() == 355_077


def test_generate_refuses_an_output_that_is_a_file_and_a_missing_source(tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("keep me")
    assert generate.main([str(tmp_path / "nothing-here"), str(tmp_path), str(target)]) == 2
    assert "no such run directory or model file" in capsys.readouterr().err
    (tmp_path / "legacy").mkdir()
    assert generate.main([str(tmp_path / "legacy"), str(tmp_path), str(target), "--overwrite"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and target.read_text() == "keep me"
