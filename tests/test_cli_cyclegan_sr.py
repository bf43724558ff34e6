"""The cyclegan-sr subcommand (bad input, training) and tomogram enhancement with generate.py."""

import json
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from tfmedgan.cli import main
from tfmedgan.data.samples import write_phantom_dataset
from tfmedgan.inference.tomogram import scaled_affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "generate_images"))
import generate  # noqa: E402

TINY = ["--net-a", "UNetSim3dSRx2", "--net-b", "UNetSim3dSRd2", "--super-resolution", "2", "--patch", "12", "12", "12",
        "--num-filters", "4", "--d-filters", "4", "--d-layers", "2", "--batch-size", "2", "--steps-per-epoch", "5",
        "--validate-every", "0", "--checkpoint-minutes", "0", "--no-progress"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), shape=(96, 48, 48), super_resolution=2, seed=0)


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


def _write_h5(path, data, dset="data"):
    with h5py.File(path, "w") as handle:
        handle.create_dataset(dset, data=data)
    return path


@pytest.mark.parametrize("case, pattern", [
    ("missing_file", "HDF5 file not found"),
    ("missing_dset", "dataset 'volume' not found"),
    ("roi_outside", "is outside axis 1"),
    ("patch_larger_than_roi", "larger than the ROI"),
    ("patch_not_divisible", "every side must be a positive multiple of 4"),
    ("sr_mismatch", "net_a UNetSim3dSRx2 scales A->B by 2, but super_resolution is 4"),
    ("non_finite", "non-finite values"),
    ("bad_losses", "unknown loss term"),
    ("discriminator_too_small", "too small for the 3-layer discriminator"),
])
def test_bad_input_is_one_line_error_before_training(case, pattern, phantom, tmp_path, capsys):
    data_a, data_b = str(phantom["fast_json"]), str(phantom["slow_json"])
    options = list(TINY)
    volume = np.zeros((16, 16, 16), np.float32)
    if case == "missing_file":
        (tmp_path / "a.json").write_text(json.dumps({"train": [{"path": "nowhere.h5"}]}))
        data_a = str(tmp_path / "a.json")
    elif case == "missing_dset":
        _write_h5(tmp_path / "v.h5", volume)
        (tmp_path / "a.json").write_text(json.dumps({"train": [{"path": "v.h5", "dset": "volume"}]}))
        data_a = str(tmp_path / "a.json")
    elif case == "roi_outside":
        _write_h5(tmp_path / "v.h5", volume)
        (tmp_path / "a.json").write_text(json.dumps({"train": [{"path": "v.h5", "ROI1": [4, 40]}]}))
        data_a = str(tmp_path / "a.json")
    elif case == "patch_larger_than_roi":
        _write_h5(tmp_path / "v.h5", volume)
        (tmp_path / "a.json").write_text(json.dumps({"train": [{"path": "v.h5", "ROI2": [0, 8]}]}))
        data_a = str(tmp_path / "a.json")
    elif case == "patch_not_divisible":
        options[options.index("--patch") + 1] = "14"
    elif case == "sr_mismatch":
        options[options.index("--super-resolution") + 1] = "4"
    elif case == "non_finite":
        bad = volume + 1.0
        bad[3, 4, 5] = np.nan
        data_a = str(_write_h5(tmp_path / "nan.h5", bad))
    elif case == "bad_losses":
        options += ["--losses", '{"G_X": [["bce", 1]]}']
    elif case == "discriminator_too_small":
        options[options.index("--d-layers") + 1] = "3"
    out = tmp_path / "out"
    assert main(["cyclegan-sr", data_a, data_b, str(out), *options]) == 2
    message = one_line_error(capsys)
    assert pattern in message, message
    if case in ("missing_file", "non_finite"):
        assert ("nowhere.h5" if case == "missing_file" else "nan.h5") in message
    assert not out.exists()  # nothing created before the checks


def test_dry_run_reports_parameter_counts(capsys):
    assert main(["cyclegan-sr", "a.json", "b.json", "out", "--net-a", "UNetSim3dSRx2", "--net-b", "UNetSim3dSRd2",
                 "--super-resolution", "2", "--patch", "64", "128", "128", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["parameters"] == {"generator_a2b": 1_011_361, "generator_b2a": 3_721_281,
                                      "discriminator_a": 11_050_561, "discriminator_b": 11_050_561}
    assert resolved["patch_b"] == [128, 256, 256] and resolved["batch"] == 4
    assert (resolved["lr_g"], resolved["lr_d"], resolved["clip_max"]) == (2e-4, 1e-4, 1.0)
    assert resolved["loss_weights"]["C_A_l1"] == pytest.approx(90.0901)
    assert resolved["discriminator_output"] == {"A": [6, 14, 14], "B": [14, 30, 30]}


def test_train_resume_and_enhance_tomograms(phantom, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    losses = tmp_path / "losses.json"
    losses.write_text(json.dumps({"C_A": [["l1", 100], ["mse", 10]]}))
    args = ["cyclegan-sr", str(phantom["fast_json"]), str(phantom["slow_json"]), str(out), *TINY,
            "--num-iters", "5", "--name", "r", "--losses", str(losses)]
    assert main(args) == 0
    run = out / "r"
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "cyclegan-sr" and config["losses"]["C_A"] == [["l1", 100], ["mse", 10]]
    assert main(["cyclegan-sr", "--resume", str(run), "--max-steps", "10", "--no-progress"]) == 0
    header = (run / "losses.csv").read_text().splitlines()[0].split(",")
    assert "loss_C_A_mse" in header and "w_C_A_mse" in header
    assert len((run / "losses.csv").read_text().splitlines()) == 11

    # HDF5 tomogram of any size (smaller than the patch on axis 0, odd sizes elsewhere)
    rng = np.random.default_rng(0)
    tomogram = _write_h5(tmp_path / "scan.h5", rng.standard_normal((10, 30, 21)).astype(np.float32), dset="recon")
    enhanced = tmp_path / "enhanced"
    from tfmedgan.inference import sliding_window

    blends, original = [], sliding_window.sliding_window_inference

    def recording(*args, **kwargs):
        blends.append(kwargs.get("blend"))
        return original(*args, **kwargs)

    monkeypatch.setattr(sliding_window, "sliding_window_inference", recording)
    assert generate.main([str(run), str(tomogram), str(enhanced), "--dset", "recon", "--no-progress"]) == 0
    with h5py.File(enhanced / "scan_enhanced.h5") as handle:
        assert handle["data"].shape == (20, 60, 42) and handle["data"].dtype == np.float16
        gaussian = handle["data"][()].astype(np.float32)
    assert np.isfinite(gaussian).all() and gaussian.std() > 0
    # the original's mean blending gives a different but close result; existing output is refused
    assert generate.main([str(run), str(tomogram), str(enhanced), "--dset", "recon", "--no-progress"]) == 2
    assert "exists" in one_line_error(capsys)
    assert generate.main([str(run), str(tomogram), str(tmp_path / "mean"), "--dset", "recon", "--blend", "mean",
                          "--no-progress"]) == 0
    with h5py.File(tmp_path / "mean" / "scan_enhanced.h5") as handle:
        mean = handle["data"][()].astype(np.float32)
    # (after 10 tiny steps the generator's output can be nearly flat, below float16's resolution, on some CPUs:
    # the blend actually used is checked, and the two results are close)
    assert blends == ["gaussian", "mean"]
    assert np.abs(mean - gaussian).max() <= 0.1 * (np.abs(gaussian).max() + 1e-3)

    # NIfTI tomogram: float16 HDF5 plus a NIfTI with zooms / affine scaled by 1/SR
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 1.6, 2.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(rng.standard_normal((16, 20, 12)).astype(np.float32), affine)
    image.header["descrip"] = b"fast scan"
    nib.save(image, tmp_path / "fast.nii.gz")
    assert generate.main([str(run), str(tmp_path / "fast.nii.gz"), str(tmp_path / "nii"), "--no-progress"]) == 0
    written = nib.load(tmp_path / "nii" / "fast_enhanced.nii.gz")
    assert written.shape == (32, 40, 24)
    np.testing.assert_allclose(written.header.get_zooms(), (0.4, 0.4, 0.8), rtol=1e-6)
    np.testing.assert_allclose(written.affine, scaled_affine(affine, 2), atol=1e-5)
    assert written.header["descrip"].tobytes().startswith(b"fast scan")
    with h5py.File(tmp_path / "nii" / "fast_enhanced.h5") as handle:
        np.testing.assert_allclose(handle["data"][()], np.asarray(written.dataobj), atol=1e-2, rtol=1e-2)


def test_scaled_affine_keeps_the_field_of_view():
    affine = np.array([[0.8, 0.1, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 1.6, 2.0], [0, 0, 0, 1]])
    fine = scaled_affine(affine, 2)
    np.testing.assert_allclose(fine[:3, :3], affine[:3, :3] / 2)
    # fine voxels 0 and 1 lie symmetrically around coarse voxel 0 (the centre of its two halves)
    centre = affine @ [0, 0, 0, 1]
    np.testing.assert_allclose((fine @ [0, 0, 0, 1] + fine @ [1, 1, 1, 1]) / 2, centre)
    np.testing.assert_allclose(fine @ [3.5, 3.5, 3.5, 1], affine @ [1.5, 1.5, 1.5, 1])


def test_sample_data_cli(tmp_path):
    out = tmp_path / "out"
    assert main(["cyclegan-sr", "--sample-data", str(out), *TINY, "--num-iters", "2", "--name", "s"]) == 0
    config = json.loads((out / "s" / "config.json").read_text())
    assert config["data_a"].endswith("fast.json") and Path(config["data_b"]).parent.name == "sample_data-96x48x48-sr2"
