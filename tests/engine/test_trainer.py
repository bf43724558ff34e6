"""The shared engine on the toy recipe of ``toy.py`` (no real model involved): the loop and its run
directory, exact resumption, checkpoint pruning, the NaN guard, roll-backs, validation, mirrored
equivalence, the run lock and damaged checkpoints.

Unless a test says otherwise the toy has 22 examples and batch 4: 6 steps per epoch, the last one
a partial batch of 2.
"""

from __future__ import annotations

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.engine.toy import ToyConfig, ToyRecipe
from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine import trainer as trainer_module
from tfmedgan.engine.config import config_from_dict
from tfmedgan.engine.distribute import make_strategy
from tfmedgan.engine.export import load_network
from tfmedgan.engine.launch import dry_run, launch
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import Interrupted, Trainer
from tfmedgan.errors import TfmedganError

LOSS_COLUMNS = ["step", "epoch", "regressor_loss", "critic_loss"]


def toy(tmp_path, name="run", **overrides) -> ToyConfig:
    return ToyConfig(output_dir=str(tmp_path / "runs"), name=name, **{"epochs": 2, **overrides})


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def losses(run_dir) -> np.ndarray:
    """losses.csv as an array [rows, 4] (step, epoch, regressor_loss, critic_loss)."""
    return np.array([[float(r[c]) for c in LOSS_COLUMNS] for r in read_rows(run_dir.losses_path)])


def steps(run_dir) -> list[int]:
    return [int(r["step"]) for r in read_rows(run_dir.losses_path)]


def checkpoint_names(run_dir) -> list[str]:
    return [p.name for p in ckpt.list_checkpoints(run_dir.checkpoints)]


def checkpoint_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {k: stored[k] for k in stored.files if not k.startswith("meta/")}


def assert_same_checkpoint(a, b, atol=1e-6) -> None:
    """Every network, optimizer, state variable and counter of two checkpoints agree."""
    first, second = checkpoint_arrays(a), checkpoint_arrays(b)
    assert sorted(first) == sorted(second)
    assert any(k.startswith("optimizer.critic/") for k in first)
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=0, atol=atol, err_msg=key)


def network_arrays(checkpoint, name) -> list[np.ndarray]:
    arrays = checkpoint_arrays(checkpoint)
    return [arrays[k] for k in sorted(arrays) if k.startswith(f"network.{name}/")]


def _no_plot(self, validation_rows=()):
    return None


@pytest.fixture
def real_plots():
    """Requested by the tests that look at loss_curve.png; the others skip drawing it (matplotlib
    takes most of a toy run's time)."""


@pytest.fixture(autouse=True)
def _quick_plots(request, monkeypatch):
    if "real_plots" not in request.fixturenames:
        monkeypatch.setattr(RunDirectory, "plot_losses", _no_plot)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 3-epoch run (18 steps) with a checkpoint every 2 steps, all kept."""
    folder = tmp_path_factory.mktemp("reference")
    keras.mixed_precision.set_global_policy("float32")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunDirectory, "plot_losses", _no_plot)
        run_dir, summary = launch(ToyRecipe(toy(folder, "reference", epochs=3, checkpoint_steps=2,
                                                keep_checkpoints=20, validate_every=1)), progress=False)
    assert summary["steps"] == 18
    return run_dir


# -- 1. the loop -----------------------------------------------------------------------------------
def test_run_directory_contents_hooks_and_falling_losses(tmp_path, real_plots):
    recipe = ToyRecipe(toy(tmp_path, epochs=4, mark_after_epoch=2))
    run_dir, summary = launch(recipe, progress=False)

    config = json.loads(run_dir.config_path.read_text())
    assert config["model"] == "toy" and config["examples"] == 22 and config["name"] == "run"
    assert list(read_rows(run_dir.losses_path)[0]) == LOSS_COLUMNS
    table = losses(run_dir)
    assert steps(run_dir) == list(range(1, 25))
    assert table[:, 1].tolist() == [e for e in range(4) for _ in range(6)]
    assert np.isfinite(table).all()
    for column in (2, 3):  # both networks learn: the last epoch's mean is far below the first's
        assert table[18:, column].mean() < 0.25 * table[:6, column].mean(), column
    with Image.open(run_dir.path / "loss_curve.png") as image:
        assert image.size == (800, 450)  # one panel: no validation
    assert sorted(p.name for p in run_dir.samples.iterdir()) == [f"epoch_{e:04d}.png" for e in range(4)]
    assert sorted(p.name for p in run_dir.models.iterdir()) == ["critic.keras", "regressor.keras"]
    exported = keras.models.load_model(run_dir.models / "regressor.keras")
    for saved, trained in zip(exported.variables, recipe.networks["regressor"].variables):
        np.testing.assert_array_equal(saved.numpy(), trained.numpy())
    assert checkpoint_names(run_dir) == ["ckpt-000000018.npz", "ckpt-000000024.npz"]  # keep_checkpoints=2
    # after epoch 2 the recipe changed a state variable and asked for the checkpoint again
    marks = [int(checkpoint_arrays(run_dir.checkpoints / name)["state/00001"]) for name in checkpoint_names(run_dir)]
    assert marks == [1, 1]
    assert not (run_dir.path / "validation.csv").exists()
    written = json.loads((run_dir.path / "summary.json").read_text())
    assert (written["steps"], written["epochs"]) == (24, 4) == (summary["steps"], summary["epochs"])
    assert written["exported"] == [str(run_dir.models / "regressor.keras"), str(run_dir.models / "critic.keras")]

    hooks = [c[0] for c in recipe.calls]
    assert hooks[:2] == ["prepare_data", "build"] and hooks[-2:] == ["on_train_end", "close"]
    assert [c for c in recipe.calls if c[0] == "dataset"] == [("dataset", e, 0) for e in range(4)]
    assert [c for c in recipe.calls if c[0] == "after_epoch"] == [("after_epoch", e, 6 * (e + 1)) for e in range(4)]
    with pytest.raises(TfmedganError, match="already exists"):
        launch(ToyRecipe(toy(tmp_path, epochs=4)), progress=False)
    assert steps(run_dir) == list(range(1, 25))  # the refused launch changed nothing


def test_dry_run_counts_parameters_without_training(tmp_path):
    resolved = dry_run(ToyRecipe(toy(tmp_path)))
    assert resolved["model"] == "toy"
    assert resolved["parameters"] == {"regressor": 4 * 8 + 8 + 8 + 1, "critic": 4 * 8 + 8 + 8 + 1}
    assert not (tmp_path / "runs").exists()


def test_max_steps_mid_epoch_and_at_an_epoch_end_leave_a_checkpoint_to_resume_from(tmp_path, reference, real_plots):
    """--max-steps 3 stops mid-epoch (validated, plotted, checkpointed); resumed with 6 it stops at
    the end of epoch 0 although only every second epoch checkpoints; resumed with 9 it goes on
    from there. The losses are the uninterrupted run's."""
    options = dict(epochs=4, checkpoint=2, validate_every=1)
    run_dir, summary = launch(ToyRecipe(toy(tmp_path, max_steps=3, **options)), progress=False)
    assert summary["steps"] == 3 and checkpoint_names(run_dir) == ["ckpt-000000003.npz"]
    assert [int(r["step"]) for r in read_rows(run_dir.path / "validation.csv")] == [3]
    with Image.open(run_dir.path / "loss_curve.png") as image:
        assert image.size == (800, 750)  # drawn after the validation of step 3
    _, summary = launch(ToyRecipe(toy(tmp_path, max_steps=6, **options)), resume=str(run_dir.path), progress=False)
    assert summary["steps"] == 6 and checkpoint_names(run_dir)[-1] == "ckpt-000000006.npz"
    _, summary = launch(ToyRecipe(toy(tmp_path, max_steps=9, **options)), resume=str(run_dir.path), progress=False)
    assert summary["steps"] == 9
    assert steps(run_dir) == list(range(1, 10))
    np.testing.assert_allclose(losses(run_dir), losses(reference)[:9], rtol=0, atol=1e-6)
    assert [int(r["step"]) for r in read_rows(run_dir.path / "validation.csv")] == [3, 6, 9]


# -- 2. resume exactness ---------------------------------------------------------------------------
def test_interrupted_and_resumed_run_repeats_the_uninterrupted_one(tmp_path, reference):
    """Crash after step 5 with the last checkpoint at step 4 (mid-epoch), resume: the same losses,
    weights and optimizer state as the uninterrupted run, to 1e-6."""
    with pytest.raises(Interrupted):
        launch(ToyRecipe(toy(tmp_path, checkpoint_steps=4)), progress=False, stop_after_steps=5)
    run_path = tmp_path / "runs" / "run"
    cut = RunDirectory.open(run_path)
    assert checkpoint_names(cut) == ["ckpt-000000004.npz"]
    assert steps(cut) == [1, 2, 3, 4, 5]
    assert not list(cut.models.iterdir())

    # a run stopped before the export still yields its networks, from the newest checkpoint
    stopped = load_network(run_path, "regressor",
                           build_recipe=lambda values: ToyRecipe(config_from_dict(ToyConfig, values)))
    at_step_4 = network_arrays(cut.checkpoints / "ckpt-000000004.npz", "regressor")
    for variable, stored in zip(stopped.variables, at_step_4, strict=True):
        np.testing.assert_array_equal(variable.numpy(), stored)

    recipe = ToyRecipe(toy(tmp_path, checkpoint_steps=4))
    resumed, summary = launch(recipe, resume=str(run_path), progress=False)
    assert summary["steps"] == 12
    assert [c for c in recipe.calls if c[0] == "dataset"] == [("dataset", 0, 4), ("dataset", 1, 0)]
    assert steps(resumed) == list(range(1, 13))
    np.testing.assert_allclose(losses(resumed), losses(reference)[:12], rtol=0, atol=1e-6)
    assert_same_checkpoint(resumed.checkpoints / "ckpt-000000012.npz", reference.checkpoints / "ckpt-000000012.npz")
    finished = load_network(run_path, "regressor")
    at_step_12 = network_arrays(reference.checkpoints / "ckpt-000000012.npz", "regressor")
    for variable, stored in zip(finished.variables, at_step_12, strict=True):
        np.testing.assert_allclose(variable.numpy(), stored, rtol=0, atol=1e-6)


# -- 3. checkpoints --------------------------------------------------------------------------------
def test_keep_checkpoints_prunes_the_older_ones(tmp_path):
    run_dir, _ = launch(ToyRecipe(toy(tmp_path, checkpoint_steps=2, keep_checkpoints=3)), progress=False)
    assert checkpoint_names(run_dir) == ["ckpt-000000008.npz", "ckpt-000000010.npz", "ckpt-000000012.npz"]
    assert not list(run_dir.checkpoints.glob(".tmp-*"))


def test_a_rollback_window_keeps_the_checkpoints_it_may_reach(tmp_path):
    """Checkpoints every 2 steps, keep 1, reach 5. At step 12 a roll-back may ask for step 7, which
    needs ckpt-6: everything from step 6 on stays. The recipe then asks for exactly that."""
    recipe = ToyRecipe(toy(tmp_path, checkpoint_steps=2, keep_checkpoints=1, rollback_reach=5,
                           rollback_after_epoch=1, rollback_to=7))
    run_dir, summary = launch(recipe, progress=False)
    assert recipe.seen_at_rollback["checkpoints"] == ["ckpt-000000006.npz"]
    assert ("after_rollback", 6) in recipe.calls
    assert summary["steps"] == 12 and steps(run_dir) == list(range(1, 13))
    assert checkpoint_names(run_dir) == [f"ckpt-{s:09d}.npz" for s in (6, 8, 10, 12)]


# -- 4. NaN guard ----------------------------------------------------------------------------------
def test_a_non_finite_loss_stops_training_with_a_one_line_error_naming_the_step(tmp_path):
    recipe = ToyRecipe(toy(tmp_path, nan_at_step=3, checkpoint_steps=2))
    with pytest.raises(TfmedganError) as caught:
        launch(recipe, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("training diverged at step 3: {'regressor_loss': nan} is not finite")
    assert "last checkpoint: ckpt-000000002.npz" in message
    run_dir = RunDirectory(tmp_path / "runs" / "run")
    assert steps(run_dir) == [1, 2]  # the rows before the bad step are on disk, the bad one is not
    assert recipe.calls[-1] == ("close",)
    with run_dir.lock():  # the failed run released its lock
        pass


# -- 5. roll-back ----------------------------------------------------------------------------------
def test_rollback_restores_truncates_calls_the_recipe_and_continues(tmp_path, reference, capsys):
    """After epoch 1 (step 12) the recipe asks to go back to step 9: the engine restores ckpt-8
    (the newest at or before 9), drops later rows and checkpoints, calls after_rollback(8) and
    trains to the end. Data and noise depend only on (seed, epoch, step), so the result equals the
    uninterrupted reference: no duplicated, missing or changed step."""
    recipe = ToyRecipe(toy(tmp_path, epochs=3, checkpoint_steps=2, keep_checkpoints=1, rollback_reach=4,
                           rollback_after_epoch=1, rollback_to=9, validate_every=1))
    run_dir, summary = launch(recipe, progress=False)
    assert summary["steps"] == 18
    hooks = [c for c in recipe.calls if c[0] in ("after_epoch", "after_rollback", "validate")]
    assert hooks == [
        ("validate", 0, 6), ("after_epoch", 0, 6),
        ("validate", 1, 12), ("after_epoch", 1, 12), ("after_rollback", 8),
        ("validate", 1, 12), ("after_epoch", 1, 12),
        ("validate", 2, 18), ("after_epoch", 2, 18),
    ]
    # when after_rollback runs, the later checkpoints and log rows are gone already
    assert recipe.seen_at_rollback == {"checkpoints": ["ckpt-000000008.npz"], "last_logged_step": 8}
    assert ("dataset", 1, 2) in recipe.calls  # epoch 1 resumed at its third batch
    assert steps(run_dir) == list(range(1, 19))
    np.testing.assert_allclose(losses(run_dir), losses(reference), rtol=0, atol=1e-6)
    validation = read_rows(run_dir.path / "validation.csv")
    assert [int(r["step"]) for r in validation] == [6, 12, 18]
    np.testing.assert_allclose([float(r["mse"]) for r in validation],
                               [float(r["mse"]) for r in read_rows(reference.path / "validation.csv")], rtol=1e-5)
    assert checkpoint_names(run_dir) == ["ckpt-000000014.npz", "ckpt-000000016.npz", "ckpt-000000018.npz"]
    final = checkpoint_arrays(run_dir.checkpoints / "ckpt-000000018.npz")
    assert int(final["state/00000"]) == 1  # after_rollback's change was checkpointed and kept
    assert int(checkpoint_arrays(reference.checkpoints / "ckpt-000000018.npz")["state/00000"]) == 0
    for key in final:
        if key.startswith("network."):
            np.testing.assert_allclose(
                final[key], checkpoint_arrays(reference.checkpoints / "ckpt-000000018.npz")[key], rtol=0, atol=1e-6)
    assert "refused" not in capsys.readouterr().err


def test_rollback_to_a_pruned_step_is_refused_and_training_goes_on(tmp_path, reference, capsys):
    recipe = ToyRecipe(toy(tmp_path, checkpoint_steps=2, keep_checkpoints=1, rollback_reach=4,
                           rollback_after_epoch=0, rollback_to=1))
    run_dir, summary = launch(recipe, progress=False)
    err = capsys.readouterr().err
    assert "roll-back to step 1 refused: the oldest checkpoint left is ckpt-000000002.npz" in err
    assert not [c for c in recipe.calls if c[0] == "after_rollback"]
    assert summary["steps"] == 12
    assert steps(run_dir) == list(range(1, 13))
    np.testing.assert_allclose(losses(run_dir), losses(reference)[:12], rtol=0, atol=1e-6)


# -- 6. validation ---------------------------------------------------------------------------------
def test_validation_history_plot_and_best_model(tmp_path, monkeypatch, real_plots):
    """validate_every=2 over 5 epochs: validations after epochs 1, 3 and the last one (4). Scripted
    scores 0.5, 0.3, 0.4 with 'min': the best model is written after epochs 1 and 3, not 4."""
    best_exports = []
    original = trainer_module.export_networks

    def spy(networks, folder, prefix=""):
        if prefix:
            best_exports.append((prefix, sorted(networks)))
        return original(networks, folder, prefix=prefix)

    monkeypatch.setattr(trainer_module, "export_networks", spy)
    recipe = ToyRecipe(toy(tmp_path, epochs=5, validate_every=2, keep_checkpoints=5, validation_scores=[0.5, 0.3, 0.4]))
    run_dir, _ = launch(recipe, progress=False)
    rows = read_rows(run_dir.path / "validation.csv")
    assert list(rows[0]) == ["step", "epoch", "score", "mse"]
    assert [(int(r["step"]), int(r["epoch"]), float(r["score"])) for r in rows] == [
        (12, 1, 0.5), (24, 3, 0.3), (30, 4, 0.4)]
    assert all(0 < float(r["mse"]) < 1 for r in rows)
    assert best_exports == [("best_", ["regressor"])] * 2
    assert sorted(p.name for p in run_dir.models.iterdir()) == [
        "best_regressor.keras", "critic.keras", "regressor.keras"]  # best_networks: the regressor only
    best = keras.models.load_model(run_dir.models / "best_regressor.keras")
    at_best = network_arrays(run_dir.checkpoints / "ckpt-000000024.npz", "regressor")
    at_end = network_arrays(run_dir.checkpoints / "ckpt-000000030.npz", "regressor")
    for variable, stored, last in zip(best.variables, at_best, at_end):
        np.testing.assert_array_equal(variable.numpy(), stored)
    assert any(not np.array_equal(a, b) for a, b in zip(at_best, at_end))
    with Image.open(run_dir.path / "loss_curve.png") as image:
        assert image.size == (800, 750)  # a second panel for the validation metrics
    for variable, stored in zip(load_network(run_dir.path, "regressor", best=True).variables, at_best, strict=True):
        np.testing.assert_array_equal(variable.numpy(), stored)


def test_resume_truncates_and_continues_the_validation_history(tmp_path, reference):
    """Checkpoints every 2 epochs (steps 12, 24), validation every epoch. The first attempt scores
    9.0 and crashes at step 20, after validating at step 18; the resumed attempt (scoring the true
    mse) restarts from step 12, so the row of step 18 is replaced, not duplicated or kept."""
    with pytest.raises(Interrupted):
        launch(ToyRecipe(toy(tmp_path, epochs=4, checkpoint=2, validate_every=1, validation_scores=[9.0] * 4)),
               progress=False, stop_after_steps=20)
    run_path = tmp_path / "runs" / "run"
    assert [int(r["step"]) for r in read_rows(run_path / "validation.csv")] == [6, 12, 18]
    run_dir, _ = launch(ToyRecipe(toy(tmp_path, epochs=4, checkpoint=2, validate_every=1)), resume=str(run_path),
                        progress=False)
    rows = read_rows(run_dir.path / "validation.csv")
    assert [int(r["step"]) for r in rows] == [6, 12, 18, 24]
    assert [float(r["score"]) for r in rows[:2]] == [9.0, 9.0]  # before the checkpoint: kept
    for row in rows[2:]:
        assert float(row["score"]) == pytest.approx(float(row["mse"]))
    reference_mse = {int(r["step"]): float(r["mse"]) for r in read_rows(reference.path / "validation.csv")}
    assert float(rows[2]["mse"]) == pytest.approx(reference_mse[18], rel=1e-5)


# -- 7. mirrored equivalence -----------------------------------------------------------------------
def _three_steps(tmp_path, strategy_name):
    config = toy(tmp_path, name=strategy_name, strategy=strategy_name, examples=8)
    keras.utils.set_random_seed(0)
    recipe = ToyRecipe(config)
    strategy = make_strategy(strategy_name)
    recipe.prepare_data(strategy.num_replicas_in_sync)
    trainer = Trainer(recipe, RunDirectory.create(config.output_dir, config.name), strategy=strategy, progress=False)
    assert strategy.num_replicas_in_sync == (2 if strategy_name == "mirrored" else 1)
    history = []
    for step, batch in enumerate(strategy.experimental_distribute_dataset(recipe.dataset(0).repeat(2).take(3))):
        history.append(trainer.train_step(batch, step))
    state = {name: [v.numpy() for v in variables] for name, variables in trainer.variable_groups().items()}
    return history, state


def test_mirrored_steps_match_the_single_device_steps(tmp_path):
    """Three steps on 2 logical CPUs equal three steps on one device: losses, weights, optimizer state."""
    assert len(tf.config.list_logical_devices("CPU")) == 2
    single, single_state = _three_steps(tmp_path, "default")
    mirrored, mirrored_state = _three_steps(tmp_path, "mirrored")
    for one, two in zip(single, mirrored, strict=True):
        assert one.keys() == two.keys() == {"regressor_loss", "critic_loss"}
        for key in one:
            assert one[key] == pytest.approx(two[key], abs=1e-5)
    assert single_state.keys() == mirrored_state.keys()
    for group in single_state:
        for a, b in zip(single_state[group], mirrored_state[group], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=group)
    assert not all(np.array_equal(a, b) for a, b in zip(single_state["network.regressor"],
                                                        _initial_regressor_weights(tmp_path)))


def _initial_regressor_weights(tmp_path):
    keras.utils.set_random_seed(0)
    recipe = ToyRecipe(toy(tmp_path))
    recipe.build()
    return [v.numpy() for v in recipe.networks["regressor"].variables]


def test_a_full_mirrored_run_matches_the_single_device_run(tmp_path):
    """fit() under MirroredStrategy (dataset distributed by the engine, step traced from its
    element_spec) writes the same losses as on one device."""
    default_run, _ = launch(ToyRecipe(toy(tmp_path, "default", examples=24, epochs=1)), progress=False)
    mirrored_run, summary = launch(ToyRecipe(toy(tmp_path, "mirrored", examples=24, epochs=1, strategy="mirrored")),
                                   progress=False)
    assert summary["steps"] == 6
    np.testing.assert_allclose(losses(mirrored_run), losses(default_run), rtol=0, atol=1e-5)


# -- 8. run lock -----------------------------------------------------------------------------------
def test_a_run_held_by_another_lock_is_refused_naming_the_pid(tmp_path):
    config = toy(tmp_path, epochs=1)
    run_dir = RunDirectory.create(config.output_dir, config.name)
    config.to_json(run_dir.config_path)
    with run_dir.lock():
        with pytest.raises(TfmedganError) as caught:
            launch(ToyRecipe(toy(tmp_path, epochs=1)), resume=str(run_dir.path), progress=False)
    message = str(caught.value)
    assert message == (f"run directory {run_dir.path} is in use by process {os.getpid()}: "
                       "wait for it to finish or stop it first")
    assert not run_dir.losses_path.exists() and not checkpoint_names(run_dir)
    _, summary = launch(ToyRecipe(toy(tmp_path, epochs=1)), resume=str(run_dir.path), progress=False)
    assert summary["steps"] == 6


# -- 9. damaged checkpoint -------------------------------------------------------------------------
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, capsys):
    with pytest.raises(Interrupted):
        launch(ToyRecipe(toy(tmp_path, checkpoint_steps=2)), progress=False, stop_after_steps=5)
    run_dir = RunDirectory.open(tmp_path / "runs" / "run")
    assert checkpoint_names(run_dir) == ["ckpt-000000002.npz", "ckpt-000000004.npz"]
    newest = run_dir.checkpoints / "ckpt-000000004.npz"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy that stopped half way
    capsys.readouterr()
    recipe = ToyRecipe(toy(tmp_path, checkpoint_steps=2))
    _, summary = launch(recipe, resume=str(run_dir.path), progress=False)
    err = capsys.readouterr().err
    assert "warning: damaged checkpoint ckpt-000000004.npz" in err and "resuming from ckpt-000000002.npz" in err
    assert [c for c in recipe.calls if c[0] == "dataset"][0] == ("dataset", 0, 2)
    assert summary["steps"] == 12
    assert steps(run_dir) == list(range(1, 13))
    np.testing.assert_allclose(losses(run_dir), losses(reference)[:12], rtol=0, atol=1e-6)
    assert (run_dir.checkpoints / "ckpt-000000004.npz.damaged").exists()
    assert_same_checkpoint(run_dir.checkpoints / "ckpt-000000012.npz", reference.checkpoints / "ckpt-000000012.npz")
