"""The seed-000 3D CycleGAN recipe: learning-rate decay, image pool, training, resume exactness."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.data.test_nifti_pipeline import write_tiny_dataset
from tfmedgan.config import CycleGAN3DConfig
from tfmedgan.engine.launch import dry_run, launch
from tfmedgan.engine.trainer import Interrupted
from tfmedgan.models.cyclegan import CycleGAN3DRecipe, ImagePool, decayed_learning_rate


def tiny(data_dir, tmp_path, **overrides):
    values = dict(data_dir=str(data_dir), base_filters=4, d_filters=4, pool_size=3, epochs=2, decay_epoch=0,
                  output_dir=str(tmp_path / "runs"), name="run", checkpoint_minutes=0, identity_every=3)
    values.update(overrides)
    return CycleGAN3DConfig(**values)


def read_losses(run_dir):
    with open(run_dir.path / "losses.csv") as stream:
        return list(csv.DictReader(stream))


def test_learning_rate_decay_values():
    assert decayed_learning_rate(2e-4, 0, 150, 75) == 2e-4
    assert decayed_learning_rate(2e-4, 75, 150, 75) == 2e-4
    assert decayed_learning_rate(2e-4, 100, 150, 75) == pytest.approx(2e-4 * 50 / 75)
    assert decayed_learning_rate(2e-4, 149, 150, 75) == pytest.approx(2e-4 / 75)
    assert decayed_learning_rate(2e-4, 2, 3, 75) == 2e-4  # no decay when epochs <= decay_epoch


def test_image_pool_returns_older_fakes_after_filling():
    pool = ImagePool(3, (2, 2, 2, 1))
    query = tf.function(lambda fakes, step: pool.query(fakes, tf.stack([tf.constant(7, tf.int64), step])))
    history = []
    for step in range(3):  # filling: the new fake comes back and is stored
        fake = np.full((1, 2, 2, 2, 1), float(step), np.float32)
        np.testing.assert_array_equal(query(fake, tf.constant(step, tf.int64)).numpy(), fake)
        history.append(float(step))
    assert int(pool.count.numpy()) == 3
    np.testing.assert_array_equal(pool.images.numpy()[:, 0, 0, 0, 0], [0.0, 1.0, 2.0])
    older = 0
    for step in range(3, 40):
        value = float(step)
        before = pool.images.numpy()[:, 0, 0, 0, 0].copy()
        out = query(np.full((1, 2, 2, 2, 1), value, np.float32), tf.constant(step, tf.int64)).numpy()
        returned = float(out.reshape(-1)[0])
        assert np.all(out == returned)
        after = pool.images.numpy()[:, 0, 0, 0, 0]
        if returned != value:  # swapped: an older fake came back and the new one took its slot
            older += 1
            assert returned in before and value in after
            assert sorted(after.tolist()) == sorted([v for v in before.tolist() if v != returned] + [value])
        else:
            np.testing.assert_array_equal(before, after)
    assert 8 <= older <= 29  # about half of 37 draws


def test_on_epoch_begin_sets_the_decayed_rate(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", n_train=2, n_test=0)
    recipe = CycleGAN3DRecipe(tiny(data, tmp_path, epochs=4, decay_epoch=2))
    recipe.build()
    rates = [recipe.on_epoch_begin(epoch)["lr"] for epoch in range(4)]
    assert rates == pytest.approx([2e-4, 2e-4, 2e-4, 1e-4])
    for optimizer in recipe.optimizers.values():
        assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-4)


def test_dry_run_counts_and_memory_estimate_at_the_original_shape(tmp_path):
    config = CycleGAN3DConfig(data_dir="unused", shape=[156, 188, 156], norm="zslice")
    resolved = dry_run(CycleGAN3DRecipe(config))
    assert resolved["parameters"] == {"generator_a2b": 355_077, "generator_b2a": 355_077,
                                      "discriminator_a": 8_257, "discriminator_b": 8_257}
    parts = resolved["memory_estimate_parts_gib"]
    assert parts["pools"] == pytest.approx(2 * 50 * 156 * 188 * 156 * 4 / 2**30, abs=1e-3)
    assert resolved["memory_estimate_gib"] > parts["pools"] + parts["activations"]
    channel = dry_run(CycleGAN3DRecipe(CycleGAN3DConfig(data_dir="unused", shape=[155, 187, 150])))
    assert channel["shape"] == [156, 188, 150] and channel["parameters"]["generator_a2b"] == 354_497


def test_training_lowers_the_cycle_loss_and_resume_is_exact(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    reference, summary = launch(CycleGAN3DRecipe(tiny(data, tmp_path, name="ref", checkpoint_steps=3)), progress=False)
    assert summary["steps"] == 8
    rows = read_losses(reference)
    assert [float(r["lr"]) for r in rows] == [2e-4] * 4 + [1e-4] * 4
    assert [float(r["identity"]) > 0 for r in rows] == [s % 3 == 0 for s in range(8)]
    cycle = np.array([float(r["cycle_a"]) + float(r["cycle_b"]) for r in rows])
    assert cycle[-2:].mean() < 0.7 * cycle[:2].mean()
    assert sorted(p.name for p in reference.samples.iterdir()) == ["epoch_0000.png", "epoch_0001.png"]
    assert {p.name for p in reference.models.iterdir()} == {
        "generator_a2b.keras", "generator_b2a.keras", "discriminator_a.keras", "discriminator_b.keras"}

    with pytest.raises(Interrupted):
        launch(CycleGAN3DRecipe(tiny(data, tmp_path, name="cut", checkpoint_steps=3)), progress=False, stop_after_steps=5)
    resumed, summary = launch(CycleGAN3DRecipe(tiny(data, tmp_path, name="cut", checkpoint_steps=3)),
                              resume=str(tmp_path / "runs" / "cut"), progress=False)
    assert summary["steps"] == 8
    got = read_losses(resumed)
    assert [int(r["step"]) for r in got] == list(range(1, 9))
    for expected_row, got_row in zip(rows, got):
        for key in ("d_a", "d_b", "g", "cycle_a", "identity"):
            assert float(got_row[key]) == pytest.approx(float(expected_row[key]), abs=1e-5)
    for name in ("generator_a2b", "discriminator_b"):
        a = keras.models.load_model(reference.models / f"{name}.keras")
        b = keras.models.load_model(resumed.models / f"{name}.keras")
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), atol=1e-5)
