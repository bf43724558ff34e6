"""``python run.py stylegan2 ...`` through :func:`tfmedgan.cli.main`."""

import csv
import json

import pytest

from tfmedgan.cli import main

README = ["--resolution", "256", "--epochs", "40", "-n", "--batch", "64", "--lr", "0.0001"]
TINY = ["--resolution", "32", "--latent", "8", "--val", "4", "--no-progress"]


def dry_run(capsys, argv):
    assert main(["stylegan2", *argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def test_dry_run_of_the_readme_example_needs_no_data_and_no_neptune_token(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NEPTUNE_MODE", "async")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    out = tmp_path / "out"
    resolved = dry_run(capsys, [*README, str(tmp_path / "no-data"), str(out), "8", "512", "8", "32", "80"])
    assert resolved["parameters"] == {"generator": 4_844_294, "discriminator": 6_498_305}
    assert (resolved["resolution"], resolved["epochs"], resolved["batch"], resolved["lr"]) == (256, 40, 64, 1e-4)
    assert (resolved["g_input_res"], resolved["g_init_filters"], resolved["d_final_res"], resolved["d_input_filters"]) == (8, 512, 8, 32)
    assert resolved["fade_in_base"] == 80.0 and resolved["neptune"] is True and resolved["model"] == "stylegan2"
    assert (resolved["latent"], resolved["beta_1"], resolved["n_samples"], resolved["seed"], resolved["loss"]) == (100, 0.5, 16, 1, "bce")
    assert not out.exists()
    row = dry_run(capsys, [*README, "--minibatch-std", "row", "d", str(out), "8", "512", "8", "32", "80"])
    assert row["parameters"] == {"generator": 4_844_294, "discriminator": 6_493_185}


def test_dry_run_of_the_128_config_and_the_presets(capsys, tmp_path):
    out = str(tmp_path / "out")
    assert dry_run(capsys, ["--resolution", "128", "d", out, "8", "512", "8", "32", "40"])["parameters"]["generator"] == 4_826_117
    preset = dry_run(capsys, ["--preset", "64", "d", out])
    assert preset["parameters"]["generator"] == 2_368_517
    assert (preset["resolution"], preset["epochs"], preset["batch"], preset["fade_in_base"], preset["d_input_filters"]) == (64, 30, 128, 40.0, 64)
    cpu = dry_run(capsys, ["--preset", "cpu", "d", out])
    assert cpu["parameters"] == {"generator": 797_189, "discriminator": 1_628_161}
    assert (cpu["resolution"], cpu["batch"], cpu["fade_in_base"], cpu["output_activation"]) == (64, 32, 10.0, "tanh")
    assert cpu["max_alpha"] == 0.5 and cpu["upsample"] == "resize"
    assert (preset["max_alpha"], preset["upsample"]) == (1.0, "transposed")
    # Explicit options and positionals win over the preset.
    mixed = dry_run(capsys, ["--preset", "256", "--batch", "32", "--loss", "wgan-gp", "d", out, "8", "512", "8", "32", "60"])
    assert (mixed["batch"], mixed["fade_in_base"], mixed["epochs"], mixed["loss"], mixed["n_critic"], mixed["gp_weight"]) == (32, 60.0, 40, "wgan-gp", 2, 10.0)


@pytest.mark.parametrize(
    "options, positionals, message",
    [
        (["--resolution", "48"], ["4", "512", "4", "64", "40"], "resolution must be a power of two, got 48"),
        (["--resolution", "64"], ["64", "512", "4", "64", "40"], "input_resolution (64) must be smaller than resolution (64)"),
        (["--resolution", "64"], ["4", "512", "64", "64", "40"], "final_resolution (64) must be smaller than resolution (64)"),
        (["--batch", "6"], ["4", "512", "4", "64", "40"], "batch_size 6 is not divisible by the minibatch-stddev group"),
        (["--loss", "wgan-gp", "--n-critic", "0"], ["4", "512", "4", "64", "40"], "must be positive"),
        ([], ["4", "512", "4", "64", "0"], "fade_in_base must be positive"),
    ],
)
def test_bad_input_is_a_one_line_error_before_training(capsys, png_folder, tmp_path, options, positionals, message):
    out = tmp_path / "out"
    assert main(["stylegan2", *options, str(png_folder), str(out), *positionals]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error
    assert not out.exists()


def test_missing_data_folder_and_wrong_positional_count(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["stylegan2", *TINY, str(tmp_path / "missing"), str(out), "4", "32", "4", "8", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "missing" in error and "does not exist" in error and "\n" not in error
    assert not out.exists()
    assert main(["stylegan2", str(tmp_path), str(out), "4", "32"]) == 2
    assert "give data_dir output_dir" in capsys.readouterr().err


def test_train_then_resume_for_more_epochs(capsys, png_folder, tmp_path):
    out = tmp_path / "out"
    args = [*TINY, "--batch", "8", "--epochs", "1", "--name", "run", str(png_folder), str(out), "4", "32", "4", "8", "2"]
    assert main(["stylegan2", *args]) == 0
    run = out / "run"
    assert (run / "samples" / "image_at_epoch_0.png").is_file() and (run / "models" / "generator.keras").is_file()
    assert main(["stylegan2", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    with open(run / "losses.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert [float(r["alpha"]) for r in rows] == [0.0] * 3 + [0.5] * 3
    assert (run / "samples" / "image_at_epoch_1.png").is_file()
    capsys.readouterr()
    assert main(["stylegan2", "--resume", str(run), "--latent", "16"]) == 2
    assert "cannot change latent" in capsys.readouterr().err
