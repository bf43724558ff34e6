"""``--ema``: the engine's moving average of the generators' weights (tfmedgan/engine/averaging.py),
on a bare Dense model and on the toy recipe of ``toy.py`` (export, checkpoint, exact resumption,
two replicas)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.engine.test_trainer import checkpoint_arrays, network_arrays, toy
from tests.engine.toy import ToyConfig, ToyRecipe
from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.averaging import WeightAverage, effective_decay
from tfmedgan.engine.config import config_from_dict
from tfmedgan.engine.export import load_network
from tfmedgan.engine.launch import launch
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import Interrupted
from tfmedgan.errors import TfmedganError


class AveragedToy(ToyRecipe):
    """The toy with its regressor averaged (the role of a generator)."""

    averaged_networks = ("regressor",)


@pytest.fixture(autouse=True)
def _quick_plots(monkeypatch):
    monkeypatch.setattr(RunDirectory, "plot_losses", lambda self, validation_rows=(): None)


def _dense(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_effective_decay_starts_low_and_reaches_the_given_decay():
    assert effective_decay(0.999, 1) == pytest.approx(2 / 11)
    assert effective_decay(0.999, 100) == pytest.approx(101 / 110)
    assert effective_decay(0.9, 1000) == 0.9


def test_update_follows_the_weights_and_applied_swaps_them_in_and_back():
    model = _dense()
    start = [v.numpy().copy() for v in model.variables]
    average = WeightAverage({"generator": model}, decay=0.5)
    expected = start
    for update, shift in enumerate((1.0, -2.0, 3.0), start=1):
        for variable in model.variables:
            variable.assign(variable.numpy() + shift)
        average.update()
        decay = effective_decay(0.5, update)  # 2/11, 3/12, then 0.5
        expected = [decay * e + (1 - decay) * v.numpy() for e, v in zip(expected, model.variables)]
    raw = [v.numpy().copy() for v in model.variables]
    for shadow, value in zip(average.shadows["generator"], expected, strict=True):
        np.testing.assert_allclose(shadow.numpy(), value, rtol=1e-6)
    with average.applied():
        for variable, value in zip(model.variables, expected, strict=True):
            np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6)
    for variable, value in zip(model.variables, raw, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert int(average.updates.numpy()) == 3


def test_bad_decays_and_recipes_without_generators_are_refused(tmp_path):
    with pytest.raises(TfmedganError, match=r"--ema must be in \[0, 1\)"):
        launch(AveragedToy(toy(tmp_path, ema=1.0)), progress=False)
    with pytest.raises(TfmedganError, match="--ema: toy has no generator weights to average"):
        launch(ToyRecipe(toy(tmp_path, ema=0.9)), progress=False)
    assert not (tmp_path / "runs").exists()  # refused before the run directory exists


def test_export_holds_the_average_and_a_resumed_run_repeats_the_uninterrupted_one(tmp_path):
    whole, _ = launch(AveragedToy(toy(tmp_path, "whole", ema=0.9, checkpoint_steps=4)), progress=False)
    final = ckpt.list_checkpoints(whole.checkpoints)[-1]
    arrays = checkpoint_arrays(final)
    averaged = [arrays[k] for k in sorted(arrays) if k.startswith("ema.regressor/")]
    raw = network_arrays(final, "regressor")
    assert int(arrays["ema/00000"]) == 12 and len(averaged) == len(raw) == 4
    assert not any(np.allclose(a, r) for a, r in zip(averaged, raw))  # the average lags the weights
    exported = keras.models.load_model(whole.models / "regressor.keras", compile=False)
    for variable, value in zip(exported.variables, averaged, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    critic = keras.models.load_model(whole.models / "critic.keras", compile=False)
    for variable, value in zip(critic.variables, network_arrays(final, "critic"), strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)  # not averaged

    with pytest.raises(Interrupted):
        launch(AveragedToy(toy(tmp_path, "cut", ema=0.9, checkpoint_steps=4)), progress=False, stop_after_steps=6)
    # a run stopped before its export yields the averaged weights of its newest checkpoint
    stopped = load_network(tmp_path / "runs" / "cut", "regressor",
                           build_recipe=lambda values: AveragedToy(config_from_dict(ToyConfig, values)))
    at_step_4 = checkpoint_arrays(tmp_path / "runs" / "cut" / "checkpoints" / "ckpt-000000004.npz")
    for variable, key in zip(stopped.variables, sorted(k for k in at_step_4 if k.startswith("ema.regressor/")), strict=True):
        np.testing.assert_array_equal(variable.numpy(), at_step_4[key])
    resumed, summary = launch(AveragedToy(toy(tmp_path, "cut", ema=0.9, checkpoint_steps=4)),
                              resume=str(tmp_path / "runs" / "cut"), progress=False)
    assert summary["steps"] == 12
    again = checkpoint_arrays(ckpt.list_checkpoints(resumed.checkpoints)[-1])
    for key in arrays:
        if key.startswith(("ema", "network.")):
            np.testing.assert_allclose(again[key], arrays[key], rtol=0, atol=1e-6, err_msg=key)


def test_two_replicas_average_like_one_device(tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2
    runs = {}
    for strategy in ("default", "mirrored"):
        run, _ = launch(AveragedToy(toy(tmp_path, strategy, examples=24, epochs=1, ema=0.8, strategy=strategy)),
                        progress=False)
        runs[strategy] = checkpoint_arrays(ckpt.list_checkpoints(run.checkpoints)[-1])
    keys = [k for k in runs["default"] if k.startswith("ema.regressor/")]
    assert keys
    for key in keys:
        np.testing.assert_allclose(runs["mirrored"][key], runs["default"][key], rtol=0, atol=1e-5, err_msg=key)
