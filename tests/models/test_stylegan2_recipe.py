"""The seed-004 StyleGAN2 recipe on the shared engine (tiny 32 px networks)."""

import csv
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.models.stylegan2 import StyleGAN2Config
from tfmedgan.data import png
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import Interrupted, Trainer
from tfmedgan.errors import TfmedganError
from tfmedgan.models.stylegan2 import StyleGAN2Recipe, fade_in_alpha, gradient_penalty, train

REPO = Path(__file__).resolve().parents[2]


def tiny(png_folder, tmp_path, **overrides) -> StyleGAN2Config:
    values = dict(
        data_dir=str(png_folder), output_dir=str(tmp_path / "runs"), name="run", resolution=32,
        g_input_res=4, g_init_filters=32, d_final_res=4, d_input_filters=8, latent=8, batch=4,
        epochs=2, fade_in_base=2.0, n_samples=4, checkpoint_minutes=0,
    )
    values.update(overrides)
    return StyleGAN2Config(**values)


def read_rows(run_dir: RunDirectory) -> list[dict[str, float]]:
    with open(run_dir.path / "losses.csv") as stream:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(stream)]


def built_recipe(config: StyleGAN2Config) -> StyleGAN2Recipe:
    keras.utils.set_random_seed(config.seed)
    recipe = StyleGAN2Recipe(config)
    recipe.build()
    for name, variables in recipe.optimizer_variables().items():
        recipe.optimizers[name].build(variables)
    return recipe


# -- fade-in -------------------------------------------------------------------------------------
def test_fade_in_alpha_is_epoch_over_base_clipped_unless_asked():
    assert [fade_in_alpha(e, 2.0) for e in range(4)] == [0.0, 0.5, 1.0, 1.0]
    assert [fade_in_alpha(e, 2.0, clip=False) for e in range(4)] == [0.0, 0.5, 1.0, 1.5]
    assert fade_in_alpha(39, 80.0) == pytest.approx(0.4875)  # the README's 256 px run ends here
    assert [fade_in_alpha(e, 2.0, max_alpha=0.5) for e in range(4)] == [0.0, 0.5, 0.5, 0.5]
    assert fade_in_alpha(9, 2.0, clip=False, max_alpha=0.5) == 4.5  # no clip: no bound


def test_max_alpha_bounds_the_recipe_alpha_and_is_validated(png_folder, tmp_path):
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, fade_in_base=4.0, max_alpha=0.25))
    recipe.build_networks_only()
    assert recipe.on_epoch_begin(1) == {"alpha": 0.25}
    assert recipe.on_epoch_begin(100) == {"alpha": 0.25}
    with pytest.raises(TfmedganError, match="max-alpha"):
        tiny(png_folder, tmp_path, max_alpha=1.5).validate()


def test_on_epoch_begin_sets_the_checkpointed_alpha(png_folder, tmp_path, capsys):
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, fade_in_base=4.0, clip_alpha=False))
    recipe.build_networks_only()
    assert recipe.on_epoch_begin(3) == {"alpha": 0.75}
    assert "warning" not in capsys.readouterr().err
    assert recipe.on_epoch_begin(6) == {"alpha": 1.5}
    assert recipe.on_epoch_begin(7) == {"alpha": 1.75}
    warnings = [line for line in capsys.readouterr().err.splitlines() if "fade-in alpha" in line]
    assert len(warnings) == 1 and "epoch 6" in warnings[0] and "--max-alpha" in warnings[0]
    assert float(recipe.alpha.numpy()) == 1.75
    assert recipe.state_variables() == [recipe.alpha]


# -- a full run ----------------------------------------------------------------------------------
def test_run_directory_contents_alpha_column_and_neptune(png_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    from tfmedgan.engine import logging as engine_logging

    logged = {}
    original_stop = engine_logging.NeptuneLogger.stop

    def keep(self):
        if self.run is not None:
            logged["d"] = self.run["train/d_loss"].fetch_values()["value"].tolist()
            logged["alpha"] = self.run["train/alpha"].fetch_values()["value"].tolist()
            logged["params"] = self.run["parameters"].fetch()
        original_stop(self)

    monkeypatch.setattr(engine_logging.NeptuneLogger, "stop", keep)
    config = tiny(png_folder, tmp_path, batch=8, epochs=4, neptune=True)  # 3 steps per epoch
    run_dir, summary = train(config, progress=False)
    assert summary["steps"] == 12 and summary["epochs"] == 4
    stored = json.loads((run_dir.path / "config.json").read_text())
    assert stored["model"] == "stylegan2" and stored["fade_in_base"] == 2.0
    rows = read_rows(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert set(rows[0]) == {"step", "epoch", "d_loss", "g_loss", "alpha"}
    assert [r["alpha"] for r in rows] == [0.0] * 3 + [0.5] * 3 + [1.0] * 6
    # Real BCE losses near log(4) and log(2) at the start, not logit means.
    assert rows[0]["d_loss"] == pytest.approx(np.log(4.0), abs=0.05)
    assert rows[0]["g_loss"] == pytest.approx(np.log(2.0), abs=0.05)
    assert sorted(p.name for p in run_dir.samples.iterdir()) == [f"image_at_epoch_{e}.png" for e in range(4)]
    assert (run_dir.path / "loss_curve.png").stat().st_size > 1000
    assert {p.name for p in run_dir.models.iterdir()} == {"generator.keras", "discriminator.keras"}
    assert len(list((run_dir.path / "generated").glob("generated_*.png"))) == 4
    assert logged["alpha"] == [0.0, 0.5, 1.0, 1.0]
    assert len(logged["d"]) == 12 and logged["d"][0] == pytest.approx(rows[0]["d_loss"], abs=1e-6)
    assert logged["params"]["g_input_res"] == 4

    # generate_images/generate.py works on the finished run.
    sys.path.insert(0, str(REPO / "generate_images"))
    try:
        import generate
    finally:
        sys.path.remove(str(REPO / "generate_images"))
    out = tmp_path / "generated_cli"
    assert generate.main([str(run_dir.path), str(out), "--n", "5"]) == 0
    assert len(list(out.glob("generated_*.png"))) == 5 and (out / "grid.png").is_file()
    from PIL import Image

    assert Image.open(out / "generated_00000.png").size == (32, 32)


def test_interrupted_and_resumed_run_repeats_the_uninterrupted_one(png_folder, tmp_path):
    """Crash after step 9 (newest checkpoint: step 8, epoch 1, alpha 0.5), resume: same run."""
    reference, _ = train(tiny(png_folder, tmp_path, name="ref", checkpoint_steps=4), progress=False)
    with pytest.raises(Interrupted):
        train(tiny(png_folder, tmp_path, name="cut", checkpoint_steps=4), progress=False, stop_after_steps=9)
    cut = tmp_path / "runs" / "cut"

    # alpha is part of the checkpoint: a fresh recipe (alpha 0) reads 0.5 back from ckpt 8.
    probe = StyleGAN2Recipe(tiny(png_folder, tmp_path, name="cut", checkpoint_steps=4))
    trainer = Trainer(probe, RunDirectory.open(cut), resume=True, progress=False)
    assert float(probe.alpha.numpy()) == 0.0
    assert trainer.restore_latest().name == "ckpt-000000008.npz"
    assert float(probe.alpha.numpy()) == 0.5 and trainer.step == 8

    resumed, summary = train(tiny(png_folder, tmp_path, name="cut", checkpoint_steps=4), run_dir=str(cut), progress=False)
    assert summary["steps"] == 12
    expected, got = read_rows(reference), read_rows(resumed)
    assert [r["step"] for r in got] == list(range(1, 13))
    for key in ("d_loss", "g_loss", "alpha"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in expected], rtol=0, atol=1e-6)
    for name in ("generator", "discriminator"):
        a = keras.models.load_model(reference.models / f"{name}.keras")
        b = keras.models.load_model(resumed.models / f"{name}.keras")
        for va, vb in zip(a.weights, b.weights):  # not .variables: loading re-seeds Dropout's seed state
            np.testing.assert_allclose(va.numpy(), vb.numpy(), atol=1e-6)


def test_channels_3_trains_one_epoch(png_folder, tmp_path):
    run_dir, summary = train(tiny(png_folder, tmp_path, channels=3, batch=8, epochs=1), progress=False)
    assert summary["steps"] == 3
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in read_rows(run_dir))
    generator = keras.models.load_model(run_dir.models / "generator.keras")
    assert generator.output_shape == (None, 32, 32, 3)
    from PIL import Image

    assert Image.open(run_dir.samples / "image_at_epoch_0.png").mode == "RGB"


# -- the step ------------------------------------------------------------------------------------
def test_compiled_step_does_not_retrace_when_alpha_changes(png_folder, tmp_path):
    config = tiny(png_folder, tmp_path)
    recipe = StyleGAN2Recipe(config)
    recipe.prepare_data()
    trainer = Trainer(recipe, RunDirectory.create(config.output_dir, "trace"), progress=False)
    batch = next(iter(recipe.dataset(0)))
    for step, epoch in enumerate((0, 1, 2)):
        recipe.on_epoch_begin(epoch)
        losses = trainer.train_step(batch, step)
        assert set(losses) == {"d_loss", "g_loss"}
    assert trainer._compiled_step.experimental_get_tracing_count() == 1


def test_each_network_lowers_its_loss_against_a_frozen_opponent(png_folder, tmp_path):
    """D steps lower the D loss (G untouched); G steps lower the G loss (D untouched)."""
    recipe = built_recipe(tiny(png_folder, tmp_path, lr=1e-3))
    generator, discriminator = recipe.networks["generator"], recipe.networks["discriminator"]
    real = tf.constant(png.load_images(png.list_images([png_folder])[:4], 32, 1))
    step, total = tf.constant(0, tf.int64), tf.constant(4)
    alpha = recipe._alpha()

    def d_loss():
        fake = generator(recipe._latents(total, step, 1), training=False)  # the D step's latents
        real_logits = discriminator([real, alpha], training=False)
        fake_logits = discriminator([fake, alpha], training=False)
        return float(tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(tf.nn.softplus(fake_logits)))

    def g_loss():
        fake = generator(recipe._latents(total, step, 0), training=False)  # the G step's latents
        return float(tf.reduce_mean(tf.nn.softplus(-discriminator([fake, alpha], training=False))))

    g_before = [v.numpy().copy() for v in generator.trainable_variables]
    before = d_loss()
    for _ in range(3):
        recipe.discriminator_step(real, step, total)
    assert d_loss() < before - 1e-3
    for a, b in zip(g_before, generator.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())

    d_before = [v.numpy().copy() for v in discriminator.trainable_variables]
    before = g_loss()
    for _ in range(5):
        recipe.generator_step(step, total)
    assert g_loss() < before - 5e-4
    for a, b in zip(d_before, discriminator.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


# -- WGAN-GP -------------------------------------------------------------------------------------
def test_gradient_penalty_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    fake = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    weights = rng.uniform(size=(3, 1, 1, 1)).astype("float32")
    scale = rng.uniform(0.5, 1.5, size=(1, 4, 4, 2)).astype("float32")
    # critic(x) = sum(scale * x^2): gradient 2 * scale * x_hat.
    penalty = gradient_penalty(lambda x: tf.reduce_sum(scale * x**2, axis=[1, 2, 3]), real, fake, weights)
    x_hat = real + weights * (fake - real)
    norms = np.sqrt(((2 * scale * x_hat) ** 2).reshape(3, -1).sum(axis=1))
    np.testing.assert_allclose(penalty.numpy(), (norms - 1.0) ** 2, rtol=1e-5)

    # The penalty is differentiable with respect to the critic's weights (second order).
    dense = keras.layers.Dense(1)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(gradient_penalty(lambda x: dense(keras.ops.reshape(x, (3, -1)) ** 2), real, fake, weights))
    gradients = tape.gradient(value, dense.trainable_variables)
    assert gradients[0] is not None and float(tf.reduce_sum(tf.abs(gradients[0]))) > 0


def test_wgan_gp_critic_loss_includes_the_weighted_penalty(png_folder, tmp_path):
    real = tf.constant(png.load_images(png.list_images([png_folder])[:4], 32, 1))
    results = {}
    for weight in (0.0, 10.0):
        recipe = built_recipe(tiny(png_folder, tmp_path, loss="wgan-gp", gp_weight=weight))
        results[weight] = [float(v) for v in recipe.critic_step(real, tf.constant(3, tf.int64), tf.constant(4))]
    (loss0, penalty0), (loss10, penalty10) = results[0.0], results[10.0]
    assert penalty0 == pytest.approx(penalty10, rel=1e-5) and penalty10 > 0.1
    assert loss10 - loss0 == pytest.approx(10.0 * penalty10, rel=1e-4)


def test_wgan_gp_run_logs_two_critic_steps_worth_of_losses(png_folder, tmp_path):
    run_dir, summary = train(tiny(png_folder, tmp_path, loss="wgan-gp", batch=8, epochs=1), progress=False)
    rows = read_rows(run_dir)
    assert summary["steps"] == 3
    assert set(rows[0]) == {"step", "epoch", "d_loss", "g_loss", "gradient_penalty", "alpha"}
    for row in rows:
        assert np.isfinite(row["d_loss"]) and row["gradient_penalty"] > 0
        # At initialisation the critic is nearly flat: GP ~ 1 and the critic loss ~ 10 * GP.
        assert row["d_loss"] == pytest.approx(10.0 * row["gradient_penalty"], abs=0.5)


# -- data ----------------------------------------------------------------------------------------
def test_last_partial_batch_is_dropped_only_when_it_breaks_the_minibatch_stddev(png_folder, tmp_path):
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, batch=20))  # 24 = 20 + 4: 4 is fine
    recipe.prepare_data()
    assert (recipe.drop_remainder, recipe.steps_per_epoch) == (False, 2)
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, batch=8))
    recipe.prepare_data(num_replicas=2)  # several replicas: always drop
    assert (recipe.drop_remainder, recipe.steps_per_epoch) == (True, 3)
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, batch=12))  # 6 per replica: the stddev groups are global
    recipe.prepare_data(num_replicas=2)
    assert (recipe.drop_remainder, recipe.steps_per_epoch) == (True, 2)
    for path in sorted(png_folder.rglob("*.png"))[:2]:
        path.unlink()
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, batch=8))  # 22 = 2 * 8 + 6: 6 is not
    recipe.prepare_data()
    assert (recipe.drop_remainder, recipe.steps_per_epoch) == (True, 2)
    assert sum(1 for _ in recipe.dataset(0)) == 2
    with pytest.raises(TfmedganError, match="no data folder"):
        StyleGAN2Recipe(tiny(png_folder, tmp_path, data_dir="")).prepare_data()


def test_grid_epochs_are_the_originals_epoch_modulo_checkpoint(png_folder, tmp_path):
    """The original saved image_at_epoch_{epoch}.png when the 0-based epoch % checkpoint == 0."""
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, checkpoint=3))
    assert [e for e in range(8) if recipe.is_checkpoint_epoch(e)] == [0, 3, 6]
    recipe = StyleGAN2Recipe(tiny(png_folder, tmp_path, checkpoint=1))
    assert all(recipe.is_checkpoint_epoch(e) for e in range(4))


# -- WGAN-GP under mixed_float16 (issue 10 section 3) ---------------------------------------------
def test_gradient_penalty_scales_the_inner_gradient_against_float16_underflow():
    """critic(x) = sum(float16(x * 2^28) * 2^-14 * 2^-14) = sum(x): the gradient is 1 per pixel,
    but backwards through float16 it passes 2^-28, below float16's smallest value. Scaled by the
    loss scale 2^15 it stays representable and is unscaled in float32."""
    tiny = tf.constant(2.0**-14, tf.float16)

    def critic(images):
        return tf.reduce_sum(tf.cast(images * 2.0**28, tf.float16) * tiny * tiny, axis=[1, 2, 3])

    rng = np.random.default_rng(0)
    real = tf.constant(rng.uniform(0, 1e-4, (2, 3, 3, 1)).astype("float32"))
    fake = tf.constant(rng.uniform(0, 1e-4, (2, 3, 3, 1)).astype("float32"))
    weights = tf.constant([[[[0.25]]], [[[0.75]]]])
    expected = (np.sqrt(9.0) - 1.0) ** 2  # 9 pixels of gradient 1
    np.testing.assert_allclose(gradient_penalty(critic, real, fake, weights, loss_scale=2.0**15).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(gradient_penalty(critic, real, fake, weights).numpy(), 1.0, atol=1e-5)  # underflow: 0
    overflow = gradient_penalty(critic, real, fake, weights, loss_scale=2.0**40)  # 2^40 is inf in float16
    assert not np.isfinite(overflow.numpy()).any()


def test_wgan_gp_critic_step_passes_the_loss_scale_and_skips_on_overflow(png_folder, tmp_path, monkeypatch):
    from tfmedgan.models import stylegan2 as module

    real = tf.constant(png.load_images(png.list_images([png_folder])[:4], 32, 1))
    plain = built_recipe(tiny(png_folder, tmp_path, loss="wgan-gp"))
    plain_loss, plain_penalty = (float(v) for v in plain.critic_step(real, tf.constant(3, tf.int64), tf.constant(4)))

    seen = []
    original = module.gradient_penalty

    def spy(*args, loss_scale=None):
        seen.append(None if loss_scale is None else float(tf.convert_to_tensor(loss_scale)))
        return original(*args, loss_scale=loss_scale)

    monkeypatch.setattr(module, "gradient_penalty", spy)
    scaled = built_recipe(tiny(png_folder, tmp_path, loss="wgan-gp", precision="mixed_float16"))
    optimizer = scaled.optimizers["discriminator"]
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    loss, penalty = (float(v) for v in scaled.critic_step(real, tf.constant(3, tf.int64), tf.constant(4)))
    assert seen == [2.0**15]
    # float32 networks here: scaling by a power of two and unscaling changes nothing
    assert penalty == pytest.approx(plain_penalty, rel=1e-5) and loss == pytest.approx(plain_loss, rel=1e-5)

    # an overflowing inner gradient: the update is skipped, the scale halved, the logged values finite
    monkeypatch.setattr(module, "gradient_penalty", lambda *args, loss_scale=None: original(*args, loss_scale=loss_scale) * np.inf)
    before = [v.numpy().copy() for v in scaled.networks["discriminator"].trainable_variables]
    loss, penalty = (float(v) for v in scaled.critic_step(real, tf.constant(4, tf.int64), tf.constant(4)))
    assert np.isfinite(loss) and np.isfinite(penalty)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**14
    for value, variable in zip(before, scaled.networks["discriminator"].trainable_variables):
        np.testing.assert_array_equal(value, variable.numpy())
