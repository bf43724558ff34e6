"""Seed-002 recipe: loss specification, networks, training, exact resume and the HP optimizer."""

import json

import numpy as np
import pytest

from tfmedgan.models.cyclegan_sr import CycleGANSRConfig
from tfmedgan.data.samples import write_phantom_dataset
from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.trainer import Interrupted
from tfmedgan.errors import TfmedganError
from tfmedgan.models.cyclegan_sr import recipe as sr_recipe
from tfmedgan.models.cyclegan_sr import normalize_weights, parse_loss_spec, train
from tfmedgan.models.cyclegan_sr.hp_optimizer import HPOptimizer
from tfmedgan.models.cyclegan_sr.recipe import (
    CycleGANSRRecipe, adversarial_function, nearest_downsample, nearest_upsample,
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), shape=(96, 48, 48), super_resolution=2, seed=0)


def tiny_config(phantom, out, **overrides):
    values = dict(
        data_a=str(phantom["fast_json"]), data_b=str(phantom["slow_json"]), output_dir=str(out), name="r",
        net_a="UNetSim3dSRx2", net_b="UNetSim3dSRd2", super_resolution=2, patch=[12, 12, 12], num_filters=4,
        d_filters=4, d_layers=2, batch=2, num_iters=20, steps_per_epoch=10, validate_every=1, validate_batches=1,
        checkpoint_minutes=0,
    )
    values.update(overrides)
    return CycleGANSRConfig(**values)


def test_loss_spec_defaults_and_normalisation():
    entries = parse_loss_spec({})
    assert [e.name for e in entries] == ["G_A_bce", "G_B_bce", "D_A_bce", "D_B_bce", "C_A_l1", "C_B_l1"]
    weights = normalize_weights([e.weight for e in entries])
    np.testing.assert_allclose(weights, [9.009009, 9.009009, 0.9009009, 0.9009009, 90.09009, 90.09009], rtol=1e-6)
    assert weights.sum() == pytest.approx(200.0)
    custom = parse_loss_spec('{"C_A": [["l1", 50], ["mse", 5]], "G_B": 3, "D_B": []}')
    assert [(e.name, e.weight) for e in custom if e.term in ("C_A", "G_B", "D_B")] == [
        ("G_B_bce", 3.0), ("C_A_l1", 50.0), ("C_A_mse", 5.0)]


@pytest.mark.parametrize("spec, message", [
    ({"X_A": [["bce", 1]]}, "unknown loss term"),
    ({"C_A": [["bce", 1]]}, "unknown function"),
    ({"G_A": [["bce", -1]]}, "must be a finite number >= 0"),
    ({"G_A": [["bce", 1], ["bce", 2]]}, "twice"),
    ("{not json", "neither a JSON file nor valid JSON"),
])
def test_loss_spec_errors(spec, message):
    with pytest.raises(TfmedganError, match=message):
        parse_loss_spec(spec)


@pytest.mark.parametrize("net_a, net_b, factor, counts", [
    ("UNetSim3d", "UNetSim3d", 1, (707_137, 707_137)),
    ("UNetSim3dSRx2", "UNetSim3dSRd2", 2, (1_011_361, 3_721_281)),
    ("UNetSim3dSRx4", "UNetSim3dSRd4", 4, (1_149_697, 3_721_281)),
])
def test_parameter_counts_of_the_original(net_a, net_b, factor, counts):
    recipe = CycleGANSRRecipe(CycleGANSRConfig(net_a=net_a, net_b=net_b, super_resolution=factor, patch=[64, 64, 64]))
    recipe.build_networks_only()
    assert recipe.parameter_counts() == {
        "generator_a2b": counts[0], "generator_b2a": counts[1],
        "discriminator_a": 11_050_561, "discriminator_b": 11_050_561}


def test_bce_matches_pytorch_and_does_not_saturate_early():
    """Regression: BCE used to clip p to [1e-7, 1 - 1e-7], which zeroed the generator's adversarial
    gradient beyond logit -16.1 (G BCE stuck at 16.12 once the discriminators won)."""
    import tensorflow as tf

    logits = tf.constant([[-40.0, -20.0, -5.0, 0.0, 5.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        probabilities = tf.sigmoid(logits)
        real, fake = adversarial_function("bce", probabilities, 1.0), adversarial_function("bce", probabilities, 0.0)
    p = 1.0 / (1.0 + np.exp(-np.array([-40.0, -20.0, -5.0, 0.0, 5.0])))
    expected_real = -np.maximum(np.log(p), -100.0)
    np.testing.assert_allclose(real.numpy(), [expected_real.mean()], rtol=1e-5)
    np.testing.assert_allclose(fake.numpy(), [-np.log1p(-p).mean()], rtol=1e-4)
    # PyTorch gradient (p - y) / max(p (1 - p), 1e-12) times sigmoid': logit gradient p - y down to p ~ 1e-12
    gradient = tape.gradient(real, logits).numpy()[0] * 5
    np.testing.assert_allclose(gradient[1:], p[1:] - 1.0, rtol=1e-4, atol=1e-6)
    assert gradient[1] == pytest.approx(-1.0, rel=1e-4)  # logit -20: was exactly 0 with the 1e-7 clip
    assert abs(gradient[0]) < 1e-4  # logit -40: p < 1e-12, PyTorch's epsilon takes over
    extremes = tf.constant([[0.0, 1.0]])  # log clamped at -100, finite gradients
    with tf.GradientTape() as tape:
        tape.watch(extremes)
        loss = adversarial_function("bce", extremes, 1.0)
    assert loss.numpy()[0] == pytest.approx(50.0)
    assert np.isfinite(tape.gradient(loss, extremes).numpy()).all()


def test_iteration_schedule_and_nearest_resampling():
    config = CycleGANSRConfig(num_iters=250, steps_per_epoch=100)
    CycleGANSRRecipe(config)
    assert (config.max_steps, config.epochs) == (250, 3)
    volume = np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4, 1)
    up = np.asarray(nearest_upsample(volume, 2))
    assert up.shape == (2, 8, 8, 8, 1) and up[1, 5, 2, 7, 0] == volume[1, 2, 1, 3, 0]
    np.testing.assert_array_equal(np.asarray(nearest_downsample(up, 2)), volume)


def test_training_outputs_losses_fall_and_resume_is_exact(phantom, tmp_path):
    config = tiny_config(phantom, tmp_path / "full", num_iters=30, kickstart=True, kickstart_steps=10, lr_g=5e-3)
    run, summary = train(config, progress=False)
    assert summary["steps"] == 30
    rows = run.read_losses()
    assert [r["step"] for r in rows] == list(range(1, 31))
    for term in ("D_A", "D_B"):  # truth tables: fractions of the judged voxels
        total = [sum(r[f"tt_{term}_{k}"] for k in ("tp", "tn", "fp", "fn")) for r in rows]
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert {r["kickstart"] for r in rows[:10]} == {0.0, 1.0} and {r["kickstart"] for r in rows[10:]} == {0.0}
    assert rows[0]["w_C_A_l1"] == pytest.approx(90.09009, rel=1e-5) and rows[0]["lr_g"] == pytest.approx(5e-3) and rows[0]["lr_d"] == pytest.approx(1e-4)
    cycle = np.array([r["loss_C_A_l1"] + r["loss_C_B_l1"] for r in rows])
    # 0.8 held on the AMX machines of earlier sessions; an AVX2-only one (other kernels, another trajectory)
    # measured 0.802
    assert cycle[-5:].mean() < 0.85 * cycle[:5].mean(), cycle
    samples = sorted(p.name for p in run.samples.iterdir())
    assert samples == ["cycle_plot_step0000010.png", "cycle_plot_step0000020.png", "cycle_plot_step0000030.png"]
    validation = (run.path / "validation.csv").read_text().splitlines()
    assert validation[0].startswith("step,epoch,cycle_a_l1") and len(validation) == 4
    assert sorted(p.name for p in run.models.iterdir()) == [
        "best_generator_a2b.keras", "best_generator_b2a.keras",
        "discriminator_a.keras", "discriminator_b.keras", "generator_a2b.keras", "generator_b2a.keras"]
    assert len(ckpt.list_checkpoints(run.checkpoints)) == 3  # keep_checkpoints

    # interrupted after 17 steps, resumed from the step-10 checkpoint: same result
    config2 = tiny_config(phantom, tmp_path / "split", num_iters=30, kickstart=True, kickstart_steps=10, lr_g=5e-3)
    with pytest.raises(Interrupted):
        train(config2, progress=False, stop_after_steps=17)
    config3 = tiny_config(phantom, tmp_path / "split", num_iters=30, kickstart=True, kickstart_steps=10, lr_g=5e-3)
    resumed, _ = train(config3, run_dir=str(tmp_path / "split" / "r"), progress=False)
    again = resumed.read_losses()
    assert [r["step"] for r in again] == list(range(1, 31))
    for key in ("loss_C_A_l1", "loss_G_B_bce", "loss_D_A_bce"):
        np.testing.assert_allclose([r[key] for r in again], [r[key] for r in rows], rtol=1e-6, atol=1e-7)
    final = ckpt.latest_checkpoint(run.checkpoints)
    other = ckpt.latest_checkpoint(resumed.checkpoints)
    with np.load(final) as a, np.load(other) as b:
        assert a.files == b.files
        for key in a.files:
            if a[key].dtype.kind in "US":  # the payload checksum
                continue
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_hp_tests_on_synthetic_histories():
    flat = np.full(300, 1.0)
    assert HPOptimizer.loss_test({"loss_G_A_bce": flat}) == 0.0
    rising = np.concatenate([np.full(200, 1.0), np.full(100, 2.0)])
    assert HPOptimizer.loss_test({"loss_G_A_bce": rising}) == pytest.approx(1.0)  # m1 / m0 - 1
    exploding = flat.copy()
    exploding[-50:-30] = 100.0  # R = 100 > 4 m0; m1 = 20.8 > m0 = 1; m1 > 20
    assert HPOptimizer.loss_test({"loss_G_A_bce": exploding}) == pytest.approx(100 / 3 - 1 + 20.8 - 1 + 20)
    drifting = np.concatenate([np.full(200, 0.2), np.full(100, 1.0)])
    assert HPOptimizer.cycle_test({"loss_C_A_l1": drifting}) == 20
    assert HPOptimizer.cycle_test({"loss_C_A_l1": np.full(300, 0.2), "loss_G_A_bce": drifting}) == 0


def test_hp_optimizer_rolls_back_once_and_applies_new_rates(phantom, tmp_path, monkeypatch):
    monkeypatch.setattr(sr_recipe, "HP_START_STEP", 25)
    calls = []
    original = HPOptimizer.flip_test

    def flip_once(self):
        value, details = original(self)
        calls.append(value)
        return (20.0 if len(calls) == 1 else 0.0), details

    monkeypatch.setattr(HPOptimizer, "flip_test", flip_once)
    # a time-based checkpoint after every step: the roll-back target (step 10) is still kept
    config = tiny_config(phantom, tmp_path, num_iters=50, hp_optimizer=True, validate_every=0, checkpoint_minutes=1e-9)
    run, summary = train(config, progress=False)
    assert summary["steps"] == 50
    reports = [json.loads(line) for line in (run.path / "hp_optimizer.jsonl").read_text().splitlines()]
    # check at 30 fails (max step 29 -> target round(9) = 10), then 30, 40 pass after the roll-back
    assert [(r["step"], r["rollback_to"]) for r in reports] == [(30, 10), (30, None), (40, None)]
    assert reports[0]["failcondition"] >= 20
    rows = run.read_losses()
    assert [r["step"] for r in rows] == list(range(1, 51))  # history truncated at the roll-back
    changed = rows[10]  # step 11, after the roll-back: new weights and learning rates in effect
    assert changed["w_C_A_l1"] != pytest.approx(rows[0]["w_C_A_l1"])
    assert changed["lr_g"] == pytest.approx(reports[0]["lrs"]["generators"], rel=1e-5)
    assert sum(changed[k] for k in changed if k.startswith("w_")) == pytest.approx(200.0, rel=1e-5)
    steps = [int(p.name[5:14]) for p in ckpt.list_checkpoints(run.checkpoints)]
    assert steps == list(range(10, 51))  # keep_checkpoints 3, plus all a roll-back may reach (40 steps)
    assert rows[9]["w_C_A_l1"] == pytest.approx(rows[0]["w_C_A_l1"])  # step 10 itself was restored


# -- HP optimizer details (issue 10 section 3), on a stub recipe: no networks -------------------
class _StubRecipe:
    """What HPOptimizer.check reads of a recipe, without networks."""

    def __init__(self, weights=None):
        self.config = CycleGANSRConfig(steps_per_epoch=100)
        self.entries = parse_loss_spec({})
        self.weights = normalize_weights(weights or [e.weight for e in self.entries])
        self.state = {"fallbacks": 0, "max_step": 0, "rollbacks": 0}
        self.applied = None

    def hyperparameter_snapshot(self):
        return {"weights": self.weights.copy(), "lrs": self.learning_rates(), **self.state}

    def learning_rates(self):
        return {"generators": 2e-4, "discriminators": 1e-4}

    def initial_weights(self):
        return normalize_weights([e.weight for e in self.entries])

    def apply_hyperparameters(self, snapshot):
        self.applied = snapshot


class _StubRun:
    def __init__(self, path, rows):
        self.path, self.rows = path, rows

    def read_losses(self):
        return self.rows


def _history_rows(last_step, every, value_of_step):
    names = [f"loss_{e.name}" for e in parse_loss_spec({})]
    return [{"step": float(s), "epoch": 0.0, **{n: value_of_step(s) for n in names},
             "tt_D_A_tp": 0.25, "tt_D_A_tn": 0.25, "tt_D_B_tp": 0.25, "tt_D_B_tn": 0.25, "tt_D_A_fp": 0.25,
             "tt_D_B_fp": 0.25} for s in range(every, last_step + 1, every)]


def test_per_step_history_counts_steps_not_rows():
    from tfmedgan.models.cyclegan_sr.hp_optimizer import per_step_history

    rows = _history_rows(300, 10, lambda s: float(s))
    series = per_step_history(rows, "loss_C_A_l1")
    assert len(series) == 300 and series[0] == 10.0 and series[9] == 10.0 and series[10] == 20.0
    assert per_step_history([], "x").size == 0


@pytest.mark.parametrize("every", [1, 10])
def test_hp_windows_span_steps_whatever_log_every(every, tmp_path, monkeypatch):
    """The 100- and 200-value windows of the loss tests count steps: with --log-every 10 the same
    rising history (1 until step 200, then 2.5) fails the same way as with every step logged."""
    monkeypatch.setattr(HPOptimizer, "flip_test", lambda self: (0.0, {}))
    recipe = _StubRecipe()
    rows = _history_rows(300, every, lambda s: 1.0 if s <= 200 else 2.5)
    report = HPOptimizer(recipe).check(300, _StubRun(tmp_path, rows))
    # m1 / m0 - 1 = 1.5 per loss column (6 columns); the cycle drift test adds 20 per cycle loss
    assert report["losses"] == pytest.approx(6 * 1.5)
    assert report["cycle"] == 40
    assert report["rollback_to"] == 100  # round(299 - 200, -2)


def test_hp_failure_rescales_random_weights_to_the_total_before_steering(tmp_path, monkeypatch):
    """Spec B7 step 1: rand_lambdas renormalises to 200 before fix_lambdas adds 0.1 and clamps."""
    monkeypatch.setattr(HPOptimizer, "flip_test", lambda self: (20.0, {}))
    seen = []
    original = HPOptimizer.fix_weights

    def spy(self, weights, rate, *rest):
        seen.append((rate, weights.copy()))
        return original(self, weights, rate, *rest)

    monkeypatch.setattr(HPOptimizer, "fix_weights", spy)
    recipe = _StubRecipe(weights=[90, 90, 9, 9, 1, 1])
    rows = _history_rows(300, 1, lambda s: 1.0)
    report = HPOptimizer(recipe).check(300, _StubRun(tmp_path, rows))
    assert report["rollback_to"] is not None and [rate for rate, _ in seen] == [0.3]
    assert seen[0][1].sum() == pytest.approx(200.0)
    # the whole failure branch, by hand
    rng = np.random.default_rng([recipe.config.seed, 300, 0, 0])
    randomised = np.clip((recipe.weights + 0.1) * (0.5 + rng.uniform(0, 1, 6)), 0.1, 100.0)
    np.testing.assert_allclose(seen[0][1], normalize_weights(randomised), rtol=1e-12)
    assert sum(report["weights"].values()) == pytest.approx(200.0, abs=1e-3)


def test_cpu_demo_preset_sets_its_values_and_explicit_options_win():
    from tfmedgan.models.cyclegan_sr import MODEL, PRESETS

    assert MODEL.presets is PRESETS
    config = MODEL.config(preset="cpu-demo", data_a="a.json", data_b="b.json")
    assert (config.preset, config.lr_g, config.kickstart, config.use_batch_statistics) == ("cpu-demo", 1e-3, True, True)
    assert config.kickstart_steps >= 1_000_000 and config.losses["G_A"] == [["bce", 2.0]]
    assert config.kickstart_downsample == "mean" and MODEL.config().kickstart_downsample == "nearest"
    assert MODEL.config(preset="cpu-demo", lr_g=5e-4).lr_g == 5e-4
    assert MODEL.config().lr_g == 2e-4 and not MODEL.config().kickstart  # defaults stay the original's
    with pytest.raises(TfmedganError, match="no preset"):
        MODEL.config(preset="fast")


def test_kickstart_mean_downsample_is_the_block_mean_and_nearest_the_corner_voxel():
    import tensorflow as tf

    volume = tf.reshape(tf.range(4 * 4 * 4, dtype=tf.float32), (1, 4, 4, 4, 1))
    mean = sr_recipe.mean_downsample(volume, 2).numpy()[0, ..., 0]
    nearest = sr_recipe.nearest_downsample(volume, 2).numpy()[0, ..., 0]
    blocks = volume.numpy()[0, ..., 0].reshape(2, 2, 2, 2, 2, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(mean, blocks)
    assert nearest[0, 0, 0] == 0.0 and mean[0, 0, 0] == blocks[0, 0, 0] != 0.0
    assert sr_recipe.mean_downsample(volume, 1) is volume
    with pytest.raises(TfmedganError, match="--kickstart-downsample"):
        CycleGANSRConfig(kickstart_downsample="cubic").validate()
