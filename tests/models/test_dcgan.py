"""The DCGAN through the shared engine: run directory, exact resume, mirrored step, precision, Neptune."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.models.dcgan import DCGANConfig
from tfmedgan.engine.launch import launch
from tfmedgan.engine.trainer import Interrupted, Trainer
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.errors import TfmedganError
from tfmedgan.models.dcgan import DCGANRecipe


def tiny(png_folder, tmp_path, **overrides):
    values = dict(data_dirs=[str(png_folder)], resolution=32, latent=8, batch=4, epochs=2,
                  output_dir=str(tmp_path / "runs"), name="run", checkpoint_minutes=0)
    values.update(overrides)
    return DCGANConfig(**values)


def read_losses(run_dir):
    with open(run_dir.path / "losses.csv") as stream:
        return [(int(r["step"]), float(r["d_loss"]), float(r["g_loss"])) for r in csv.DictReader(stream)]


def test_run_directory_contents(png_folder, tmp_path):
    run_dir, summary = launch(DCGANRecipe(tiny(png_folder, tmp_path)), progress=False)
    assert summary["steps"] == 12  # 24 images / batch 4 x 2 epochs
    config = json.loads((run_dir.path / "config.json").read_text())
    assert config["model"] == "dcgan" and config["resolution"] == 32
    assert [r[0] for r in read_losses(run_dir)] == list(range(1, 13))
    assert sorted(p.name for p in run_dir.samples.iterdir()) == ["epoch_0000.png", "epoch_0001.png"]
    assert (run_dir.path / "loss_curve.png").stat().st_size > 1000
    assert {p.name for p in run_dir.models.iterdir()} == {"generator.keras", "discriminator.keras"}
    assert len(list((run_dir.path / "generated").glob("generated_*.png"))) == 16
    with pytest.raises(TfmedganError, match="already exists"):
        launch(DCGANRecipe(tiny(png_folder, tmp_path)), progress=False)


def test_interrupted_and_resumed_run_repeats_the_uninterrupted_losses(png_folder, tmp_path):
    """22 images, batch 4: 6 steps per epoch, the last one partial. Crash after step 5 with the last
    checkpoint at step 4 (mid-epoch), resume: the same losses and weights as without the crash."""
    for extra in sorted(png_folder.rglob("*.png"))[:2]:
        extra.unlink()
    reference, _ = launch(DCGANRecipe(tiny(png_folder, tmp_path, name="ref", checkpoint_steps=4)), progress=False)
    config = tiny(png_folder, tmp_path, name="cut", checkpoint_steps=4)
    with pytest.raises(Interrupted):
        launch(DCGANRecipe(config), progress=False, stop_after_steps=5)
    assert [p.name for p in (tmp_path / "runs" / "cut" / "checkpoints").iterdir()] == ["ckpt-000000004.npz"]
    resumed_config = tiny(png_folder, tmp_path, name="cut", checkpoint_steps=4)
    resumed, summary = launch(DCGANRecipe(resumed_config), resume=str(tmp_path / "runs" / "cut"), progress=False)
    assert summary["steps"] == 12
    expected, got = read_losses(reference), read_losses(resumed)
    assert [r[0] for r in got] == list(range(1, 13))
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=0, atol=1e-6)
    import keras

    a = keras.models.load_model(reference.models / "generator.keras")
    b = keras.models.load_model(resumed.models / "generator.keras")
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), atol=1e-6)


def test_neptune_debug_mode_logs_losses(png_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    logged = {}
    from tfmedgan.engine import logging as engine_logging

    original = engine_logging.NeptuneLogger.stop

    def keep(self):
        if self.run is not None:
            logged["g"] = self.run["train/g_loss"].fetch_values()["value"].tolist()
            logged["params"] = self.run["parameters"].fetch()
        original(self)

    monkeypatch.setattr(engine_logging.NeptuneLogger, "stop", keep)
    launch(DCGANRecipe(tiny(png_folder, tmp_path, neptune=True, epochs=1)), progress=False)
    assert len(logged["g"]) == 6
    assert logged["params"]["resolution"] == 32


def test_neptune_without_token_is_a_clear_error(monkeypatch):
    from tfmedgan.engine.logging import NeptuneLogger

    monkeypatch.setenv("NEPTUNE_MODE", "async")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    with pytest.raises(TfmedganError, match="NEPTUNE_API_TOKEN"):
        NeptuneLogger(True, {})


def test_float16_is_refused_without_gpu():
    from tfmedgan.engine.precision import set_precision

    with pytest.raises(TfmedganError, match="needs a GPU"):
        set_precision("mixed_float16")


def test_mixed_bfloat16_trains(png_folder, tmp_path):
    run_dir, summary = launch(DCGANRecipe(tiny(png_folder, tmp_path, precision="mixed_bfloat16", epochs=1)), progress=False)
    assert all(np.isfinite(r[1]) and np.isfinite(r[2]) for r in read_losses(run_dir))


@pytest.mark.parametrize("frozen, learner", [("lr_g", "d_loss"), ("lr_d", "g_loss")])
def test_each_network_lowers_its_loss_against_a_frozen_opponent(png_folder, tmp_path, frozen, learner):
    """With one network frozen (learning rate 0), the other's loss falls: the loss signs are right."""
    config = tiny(png_folder, tmp_path, epochs=6, dropout=0.0, **{frozen: 0.0, "lr_g" if frozen == "lr_d" else "lr_d": 1e-3})
    run_dir, _ = launch(DCGANRecipe(config), progress=False)
    column = 1 if learner == "d_loss" else 2
    values = np.array([r[column] for r in read_losses(run_dir)])
    assert values[-6:].mean() < 0.5 * values[:6].mean()


def test_full_run_under_mirrored_strategy(png_folder, tmp_path):
    """fit() on 2 logical CPUs: the step is traced once from the distributed element_spec."""
    config = tiny(png_folder, tmp_path, strategy="mirrored", epochs=1, name="mirrored-run")
    run_dir, summary = launch(DCGANRecipe(config), progress=False)
    assert summary["steps"] == 6
    assert all(np.isfinite(r[1]) for r in read_losses(run_dir))
    assert (run_dir.models / "generator.keras").exists()


def test_max_steps_at_an_epoch_end_leaves_a_checkpoint_to_resume_from(png_folder, tmp_path):
    config = tiny(png_folder, tmp_path, epochs=4, checkpoint=2, max_steps=6, name="short")
    run_dir, summary = launch(DCGANRecipe(config), progress=False)
    assert summary["steps"] == 6
    assert [p.name for p in run_dir.checkpoints.iterdir()] == ["ckpt-000000006.npz"]
    longer = tiny(png_folder, tmp_path, epochs=4, checkpoint=2, max_steps=12, name="short")
    _, summary = launch(DCGANRecipe(longer), resume=str(run_dir.path), progress=False)
    assert summary["steps"] == 12
    assert [r[0] for r in read_losses(run_dir)] == list(range(1, 13))


def test_float16_loss_scaling_path(png_folder, tmp_path):
    """The GPU float16 path, run on CPU on purpose: loss-scaled steps update the weights and the
    loss scale is part of the checkpointed optimizer state."""
    import keras

    from tfmedgan.engine.precision import set_precision

    set_precision("mixed_float16", allow_float16_on_cpu=True)
    config = tiny(png_folder, tmp_path, resolution=8, precision="mixed_float16", name="fp16")
    recipe = DCGANRecipe(config)
    recipe.prepare_data()
    trainer = Trainer(recipe, RunDirectory.create(config.output_dir, config.name), progress=False)
    assert isinstance(recipe.optimizers["generator"], keras.optimizers.LossScaleOptimizer)
    before = [v.numpy().copy() for v in recipe.networks["generator"].trainable_variables]
    batch = tf.random.uniform((4, 8, 8, 1), -1, 1)
    for step in range(2):
        losses = trainer.train_step(batch, step)
    assert all(np.isfinite(v) for v in losses.values())
    after = recipe.networks["generator"].trainable_variables
    assert any(np.abs(a.numpy() - b).max() > 0 for a, b in zip(after, before))
    state = [v.path for v in trainer.variable_groups()["optimizer.generator"]]
    assert any("scale" in path for path in state), state


def test_non_finite_loss_stops_training_with_a_clear_message(png_folder, tmp_path, monkeypatch):
    original = Trainer.train_step

    def diverging(self, batch, step):
        losses = original(self, batch, step)
        return {**losses, "d_loss": float("nan")} if step == 2 else losses

    monkeypatch.setattr(Trainer, "train_step", diverging)
    with pytest.raises(TfmedganError, match="diverged at step 3"):
        launch(DCGANRecipe(tiny(png_folder, tmp_path, epochs=1)), progress=False)


def test_neptune_error_leaves_no_run_directory(png_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NEPTUNE_MODE", "async")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    with pytest.raises(TfmedganError, match="NEPTUNE_API_TOKEN"):
        launch(DCGANRecipe(tiny(png_folder, tmp_path, neptune=True)), progress=False)
    assert not (tmp_path / "runs").exists()
