"""The dcgan subcommand, generate_images/generate.py and dcgan-ssim as a user runs them."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfmedgan.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "generate_images"))
import generate  # noqa: E402

TINY = ["--resolution", "32", "--latent", "8", "--batch", "4", "--no-progress"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_dry_run_reports_the_seed_parameter_counts(capsys, tmp_path):
    assert main(["dcgan", str(tmp_path / "nodata"), str(tmp_path / "out"), "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["parameters"] == {"generator": 69_114_432, "discriminator": 296_545}
    assert (resolved["resolution"], resolved["latent"], resolved["batch"], resolved["epochs"]) == (256, 256, 10, 200)
    assert resolved["lr_g"] == 2e-4 and resolved["lr_d"] == 1e-4 and resolved["beta_1"] == 0.9
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", "does not exist"),
        ("empty", "holds no .png"),
        ("corrupt", "cannot read image"),
        ("mixed", "mixed image sizes"),
        ("resolution", "multiple of 8"),
    ],
)
def test_bad_input_is_one_line_error_before_training(case, pattern, png_folder, tmp_path, capsys):
    data = png_folder
    extra = []
    if case == "missing":
        data = tmp_path / "nowhere"
    elif case == "empty":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "corrupt":
        (png_folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "mixed":
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(png_folder / "b" / "big.png")
    elif case == "resolution":
        extra = ["--resolution", "36"]
    out = tmp_path / "out"
    assert main(["dcgan", str(data), str(out), *TINY, *extra]) == 2
    assert pattern in one_line_error(capsys)
    assert not out.exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    assert main(["dcgan", "--resume", str(tmp_path / "notarun")]) == 2
    assert "not a tfmedgan run directory" in one_line_error(capsys)


def test_train_resume_longer_generate_and_ssim(png_folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["dcgan", str(png_folder / "a"), str(png_folder / "b"), str(out), *TINY, "--epochs", "1", "--name", "r"]
    assert main(args) == 0
    run = out / "r"
    assert (run / "samples" / "epoch_0000.png").exists()
    assert main(args) == 2 and "already exists" in one_line_error(capsys)
    # continue the finished run for one more epoch; changing the architecture is refused
    assert main(["dcgan", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert len((run / "losses.csv").read_text().splitlines()) == 1 + 12
    assert main(["dcgan", "--resume", str(run), "--resolution", "64"]) == 2
    assert "cannot change resolution" in one_line_error(capsys)
    # generate
    assert generate.main([str(run), str(tmp_path / "gen"), "--n", "7"]) == 0
    assert len(list((tmp_path / "gen").glob("generated_*.png"))) == 7
    assert Image.open(tmp_path / "gen" / "generated_00000.png").size == (32, 32)
    assert (tmp_path / "gen" / "grid.png").exists()
    assert generate.main([str(run), str(tmp_path / "gen"), "--n", "7"]) == 2
    capsys.readouterr()
    # dcgan-ssim agrees with a loop of skimage calls
    assert main(["dcgan-ssim", str(run), "--n", "2"]) == 0
    rows = (run / "ssim.csv").read_text().splitlines()[1:]
    from skimage.metrics import structural_similarity

    from tfmedgan.data import png
    from tfmedgan.inference.generate import generate_images, load_network

    fakes = generate_images(load_network(run), 2, seed=0)[..., 0].astype(np.float64)
    reals = png.load_images(png.list_images([str(png_folder / "a"), str(png_folder / "b")]), 32, 1)[..., 0].astype(np.float64)
    for row, fake in zip(rows, fakes):
        _, best, index, _ = row.split(",")
        scores = [structural_similarity(r, fake, data_range=fake.max() - fake.min()) for r in reals]
        assert int(index) == int(np.argmax(scores))
        assert float(best) == pytest.approx(max(scores), abs=1e-4)
    assert (run / "ssim_match_000.png").exists()


def test_sample_data_subcommand_writes_slices_and_refuses_existing_folder(tmp_path, capsys):
    out = tmp_path / "slices"
    assert main(["sample-data", "slices", str(out), "--n", "3", "--resolution", "32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["slice_00000.png", "slice_00001.png", "slice_00002.png"]
    assert Image.open(out / "slice_00000.png").size == (32, 32)
    assert main(["sample-data", "slices", str(out)]) == 2
    assert "already exists" in one_line_error(capsys)


def test_demo_preset_and_explicit_options_win(capsys):
    assert main(["dcgan", "--sample-data", "out", "--preset", "demo", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["beta_1"], resolved["dropout"], resolved["output_activation"], resolved["lr_g"]) == (
        0.5, 0.0, "tanh", 2e-4)
    assert main(["dcgan", "data", "out", "--preset", "demo", "--dropout", "0.2", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["dropout"] == 0.2
