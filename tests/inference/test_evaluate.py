"""dcgan-ssim (best_match_report): every output goes where ``output`` says."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from tfmedgan.inference import evaluate


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """A run directory with config.json, three 16 px training slices, and a tiny generator."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(data / f"s{index}.png")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "dcgan", "data_dirs": [str(data)]}))
    latent = keras.Input((4,))
    image = keras.layers.Reshape((16, 16, 1))(keras.layers.Dense(256, activation="tanh")(latent))
    generator = keras.Model(latent, image)
    monkeypatch.setattr(evaluate, "load_network", lambda run_dir, name="generator": generator)
    return run


def _written(folder):
    return sorted(p.name for p in folder.iterdir())


def test_default_writes_into_the_run_directory(tiny_run):
    rows = evaluate.best_match_report(tiny_run, n=2)
    assert len(rows) == 2
    assert _written(tiny_run) == ["config.json", "ssim.csv", "ssim_match_000.png", "ssim_match_001.png"]


def test_output_csv_puts_the_figures_beside_it_and_nothing_in_the_run(tiny_run, tmp_path):
    target = tmp_path / "report" / "scores.csv"
    evaluate.best_match_report(tiny_run, n=2, output=target)
    assert _written(tiny_run) == ["config.json"]  # the run directory is left alone
    assert _written(target.parent) == ["scores.csv", "ssim_match_000.png", "ssim_match_001.png"]
    assert target.read_text().splitlines()[0] == "generated,max_ssim,best_index,best_file"


def test_output_folder_holds_the_csv_and_the_figures(tiny_run, tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    evaluate.best_match_report(tiny_run, n=1, output=folder)
    assert _written(tiny_run) == ["config.json"]
    assert _written(folder) == ["ssim.csv", "ssim_match_000.png"]
