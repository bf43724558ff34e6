"""The Python API end to end (train -> load_run -> generate -> resume), and the CLI manners that
come with the registry (same positional paths on --resume, aliases, quiet TensorFlow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfmedgan
from tfmedgan.cli import main
from tfmedgan.errors import TfmedganError

ROOT = Path(__file__).resolve().parents[1]


def test_models_lists_the_registry():
    import tfmedgan.models  # the subpackage import must not shadow the API function

    assert tfmedgan.list_models()[:4] == ["dcgan", "stylegan2", "cyclegan3d", "cyclegan-sr"]
    assert {"pix2pix3d", "vae2d", "uda"} <= set(tfmedgan.list_models())


def test_train_load_generate_and_resume_through_the_api(png_folder, tmp_path):
    options = dict(data_dirs=[str(png_folder)], output_dir=str(tmp_path), name="api", resolution=32, latent=8,
                   batch=8, epochs=1, checkpoint_minutes=0, validate_every=1)
    run = tfmedgan.train("dcgan", progress=False, **options)
    assert run.summary["steps"] == 3 and run.spec.name == "dcgan"
    loaded = tfmedgan.load_run(run.path)
    assert loaded.config.resolution == 32 and loaded.summary["steps"] == 3
    images = loaded.generate(5, seed=3)
    assert images.shape == (5, 32, 32, 1) and np.isfinite(images).all()
    np.testing.assert_allclose(loaded.generate(5, seed=3), images)  # same seed, same images
    rows = (run.path / "validation.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,best_match_ssim_mean") and len(rows) == 2
    assert (run.path / "models" / "best_generator.keras").is_file()
    longer = tfmedgan.train("dcgan", resume=run.path, epochs=2, progress=False)
    assert longer.summary["steps"] == 6
    assert len((run.path / "validation.csv").read_text().splitlines()) == 3
    with pytest.raises(TfmedganError, match="cannot change resolution"):
        tfmedgan.train("dcgan", resume=run.path, resolution=64, progress=False)
    with pytest.raises(TfmedganError, match="is a dcgan run, not stylegan2"):
        tfmedgan.train("stylegan2", resume=run.path, progress=False)
    with pytest.raises(TfmedganError, match="cannot translate"):
        loaded.translate(tmp_path, tmp_path / "out")


def test_configure_applies_presets_and_rejects_unknown_options():
    config = tfmedgan.configure("stylegan2", preset="64", data_dir="x", output_dir="y", batch=32)
    assert (config.resolution, config.batch, config.d_input_filters) == (64, 32, 64)  # explicit wins
    with pytest.raises(TfmedganError, match="unknown dcgan options: colour"):
        tfmedgan.configure("dcgan", colour=3)
    with pytest.raises(TfmedganError, match="unknown model 'vae'"):
        tfmedgan.configure("vae")


def test_resume_accepts_the_same_positional_paths_and_refuses_others(png_folder, tmp_path, capsys):
    out = tmp_path / "runs"
    base = ["dcgan", str(png_folder), str(out), "--resolution", "32", "--latent", "8", "--batch", "8",
            "--epochs", "1", "--name", "r", "--no-progress", "--checkpoint-minutes", "0"]
    assert main(base) == 0
    assert main([*base, "--resume", str(out / "r"), "--epochs", "2"]) == 0  # same command + --resume
    assert json.loads((out / "r" / "summary.json").read_text())["steps"] == 6
    capsys.readouterr()
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert main(["dcgan", str(other), str(out), "--resume", str(out / "r")]) == 2
    assert "DATA_DIR differ from the run's own" in capsys.readouterr().err


def test_seed_spellings_are_aliases_of_the_common_names(capsys):
    assert main(["stylegan2", "--sample-data", "--preset", "64", "out", "--beta", "0.3", "--val", "9", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["beta_1"], resolved["n_samples"]) == (0.3, 9)
    assert main(["dcgan", "d", "o", "--beta-1", "0.5", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["beta_1"] == 0.5


def test_cli_hides_tensorflow_start_up_lines_unless_verbose(tmp_path):
    """A user's shell sets no TF_CPP_MIN_LOG_LEVEL (tests/conftest.py does): TensorFlow then writes
    its absl line and, by CPU, its cpu_feature_guard or oneDNN lines, which only --verbose shows."""
    command = [sys.executable, str(ROOT / "run.py"), "dcgan", "d", "o", "--resolution", "32", "--dry-run"]
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "oneDNN" not in quiet.stderr and "absl" not in quiet.stderr and quiet.stderr.strip() == ""
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert verbose.returncode == 0 and "absl" in verbose.stderr, verbose.stderr
