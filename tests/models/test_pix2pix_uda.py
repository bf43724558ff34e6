"""Seed 001: pix2pix3d, vae2d and uda on tiny simulated BraTS cases (8 mm voxels, 16 x 24 x 16 crop):
KL helpers against NumPy, dry-run counts, training with falling losses, exact resume, bad input,
the test command's CSV and the NIfTI round trip onto the original grid."""

from __future__ import annotations

import contextlib
import csv
import shutil
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.data import brats
from tfmedgan.engine.launch import dry_run, launch
from tfmedgan.engine.trainer import Interrupted
from tfmedgan.errors import TfmedganError
from tfmedgan.io.nifti import pad_or_crop_center
from tfmedgan.models.pix2pix_uda import common
from tfmedgan.models.pix2pix_uda.pix2pix3d import Pix2Pix3DConfig, Pix2Pix3DRecipe
from tfmedgan.models.pix2pix_uda.uda import UDAConfig, UDARecipe
from tfmedgan.models.pix2pix_uda.vae2d import VAE2DConfig, VAE2DRecipe

CROP = [16, 24, 16]  # the 8 mm cases are 21 x 25 x 21 on the IPL grid; rotations change this shape


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from tfmedgan.data.samples.brats import make_brats_cases

    return make_brats_cases(tmp_path_factory.mktemp("brats") / "root", {"train": 2, "val": 1, "test": 1},
                            voxel_size_mm=8.0, seed=3)


def losses_of(run_dir) -> list[dict[str, float]]:
    with open(Path(run_dir.path) / "losses.csv") as stream:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(stream)]


def pix2pix_config(root, out, **values) -> Pix2Pix3DConfig:
    settings = dict(data_root=str(root), output_dir=str(out), crop_shape=CROP, filters=4, final_filters=4,
                    d_filters=4, epochs=3, epochs_decay=1, lr=1e-2, checkpoint_minutes=0, name="p2p")
    settings.update(values)
    return Pix2Pix3DConfig(**settings)


def vae_config(root, out, **values) -> VAE2DConfig:
    settings = dict(data_root=str(root), output_dir=str(out), slice_size=32, base_filters=2, batch=32, epochs=2,
                    lr=3e-3, checkpoint_minutes=0, n_samples=4, name="vae")
    settings.update(values)
    return VAE2DConfig(**settings)


def uda_config(root, out, pretrained, vae, **values) -> UDAConfig:
    settings = dict(data_root=str(root), output_dir=str(out), pretrained=str(pretrained), vae=str(vae),
                    source="domain1_train", target="domain2_val", epochs=2, lr=1e-3, checkpoint_minutes=0, name="uda")
    settings.update(values)
    return UDAConfig(**settings)


@contextlib.contextmanager
def eagerly():
    """Run the engine's compiled step eagerly: tracing these graphs costs a minute per run on a
    loaded 2-core machine, a few eager steps seconds. The pix2pix fixture run and the KL-step test
    stay compiled, so the graph path of every step is exercised once."""
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="module")
def pix2pix_run(root, tmp_path_factory):
    run_dir, summary = launch(Pix2Pix3DRecipe(pix2pix_config(root, tmp_path_factory.mktemp("runs"))), progress=False)
    return run_dir


@pytest.fixture(scope="module")
def vae_run(root, tmp_path_factory):
    with eagerly():
        run_dir, summary = launch(VAE2DRecipe(vae_config(root, tmp_path_factory.mktemp("runs"), checkpoint_steps=2)),
                                  progress=False)
    return run_dir


# ---- the KL term ---------------------------------------------------------------------------------
def _numpy_kth(values, k):
    return np.sort(values.ravel())[k - 1]


def _numpy_slices(volume, size, view):
    data = volume[0, ..., 0]
    if view == "reshape":
        data = data.reshape(data.shape[1], data.shape[2], data.shape[0])
    else:
        data = data.transpose(1, 2, 0)
        if view == "coronal":
            data = data[:, :, ::-1]
    cube, _ = pad_or_crop_center(data, (size,) * 3, allow_crop=True)
    count = cube.size
    low, high = _numpy_kth(cube, common.nearest_rank(1, count)), _numpy_kth(cube, common.nearest_rank(99, count))
    return np.clip((cube - low) / (high - low), 0, 1)[..., None]


@pytest.mark.parametrize("view", ["coronal", "transpose", "reshape"])
def test_kl_slices_match_numpy_and_pass_gradients(view):
    rng = np.random.default_rng(1)
    volume = rng.uniform(-0.2, 1.0, (1, 10, 14, 12, 1)).astype(np.float32)  # some negatives: all percentile branches
    for size in (16, 12):  # pad every axis / crop one axis
        got = common.kl_slices(tf.constant(volume), size, view).numpy()
        np.testing.assert_allclose(got, _numpy_slices(volume, size, view), atol=1e-6)
    variable = tf.Variable(volume)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(common.kl_slices(variable, 16, view) ** 2)
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, variable)))) > 0


def test_coronal_view_is_the_native_lps_slicing_the_vae_was_trained_on():
    lps = np.random.default_rng(2).uniform(size=(6, 8, 5)).astype(np.float32)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    geometry = brats.case_geometry(lps.shape, affine, crop_shape=(5, 8, 6), crop_start=(0, 0, 0), multiple=1)
    ipl = brats.to_model_grid(lps, geometry)
    assert ipl.shape == (5, 8, 6)
    view = tf.reverse(tf.transpose(tf.constant(ipl), [1, 2, 0]), axis=[2]).numpy()
    # the VAE's slice i of the native file is lps[:, i, :] (rows axis 0, columns axis 2)
    np.testing.assert_array_equal(view, lps.transpose(1, 0, 2))


def test_percentile_kl_and_top_percent_mean_match_numpy():
    rng = np.random.default_rng(3)
    values = rng.normal(size=1001).astype(np.float32)
    for k in (1, 2, 500, 1000, 1001):
        assert float(common.kth_smallest(tf.constant(values), k)) == _numpy_kth(values, k)
    assert common.nearest_rank(45, 262_144) == 1 + round(0.45 * 262_143)
    kl = np.abs(rng.normal(size=(8, 2, 2, 4))).astype(np.float32)
    threshold = _numpy_kth(kl, common.nearest_rank(45, kl.size))
    expected = kl[kl > threshold].mean()
    assert float(common.top_percent_mean(tf.constant(kl), 55)) == pytest.approx(expected, rel=1e-6)
    assert float(common.top_percent_mean(tf.constant(kl), 100)) == pytest.approx(np.sort(kl.ravel())[1:].mean(), rel=1e-6)
    mu_r, ls_r, mu_f, ls_f = (rng.normal(size=(3, 5)).astype(np.float32) for _ in range(4))
    s_r, s_f = np.exp(ls_r), np.exp(ls_f)
    reference = np.log(s_f / s_r) + (s_r**2 + (mu_r - mu_f) ** 2) / (2 * s_f**2) - 0.5
    np.testing.assert_allclose(common.elementwise_kl(mu_r, ls_r, mu_f, ls_f).numpy(), reference, rtol=1e-5, atol=1e-6)


# ---- dry run ------------------------------------------------------------------------------------
def test_dry_run_parameter_counts_and_memory_estimates(tmp_path):
    resolved = dry_run(Pix2Pix3DRecipe(Pix2Pix3DConfig(data_root="unused")))
    assert resolved["parameters"] == {"generator": 2_113_953, "discriminator": 540_737}
    assert resolved["model_shape"] == [144, 192, 192] and resolved["memory_estimate_gib"] > 5
    recompute = dry_run(Pix2Pix3DRecipe(Pix2Pix3DConfig(data_root="unused", recompute=True)))
    assert recompute["memory_estimate_gib"] < resolved["memory_estimate_gib"] - 2
    bfloat16 = dry_run(Pix2Pix3DRecipe(Pix2Pix3DConfig(data_root="unused", precision="mixed_bfloat16")))
    assert bfloat16["memory_estimate_gib"] < 0.8 * resolved["memory_estimate_gib"]
    # with the discriminator slabs the peak is mostly float32 (measured 4.75 against 4.62 GiB)
    bfloat16 = dry_run(Pix2Pix3DRecipe(Pix2Pix3DConfig(data_root="unused", recompute=True, precision="mixed_bfloat16")))
    assert 0.8 * recompute["memory_estimate_gib"] < bfloat16["memory_estimate_gib"] < recompute["memory_estimate_gib"]
    vae = dry_run(VAE2DRecipe(VAE2DConfig(data_root="unused")))
    assert vae["parameters"] == {"vae_encoder": 1_726_296, "vae_decoder": 1_576_165}
    assert vae["parameters_keras_count_params"] == {"vae_encoder": 1_730_128, "vae_decoder": 1_578_213}
    # uda from exported full-size .keras files (the discriminator beside the generator)
    full = Pix2Pix3DRecipe(Pix2Pix3DConfig(data_root="unused"))
    full.build_networks_only()
    for name, model in full.networks.items():
        model.save(tmp_path / f"{name}.keras")
    vae_recipe = VAE2DRecipe(VAE2DConfig(data_root="unused"))
    vae_recipe.build_networks_only()
    vae_recipe.networks["vae_encoder"].save(tmp_path / "vae_encoder.keras")
    uda = dry_run(UDARecipe(UDAConfig(data_root="unused", pretrained=str(tmp_path / "generator.keras"),
                                      vae=str(tmp_path / "vae_encoder.keras"))))
    assert uda["parameters"] == {"generator": 2_113_953, "discriminator": 540_737, "vae_encoder": 1_726_296}
    assert uda["crop_shape"] == [144, 192, 192] and uda["vae_slice_size"] == 256
    assert uda["memory_estimate_gib"] > resolved["memory_estimate_gib"]


def test_memory_estimate_is_within_20_percent_of_the_measured_full_size_peaks():
    """common.MEMORY_FIT holds the peaks bench/bench_pix2pix_uda.py measured at 144x192x192."""
    for (stage, precision, recompute), peak in common.MEMORY_FIT.items():
        vae = dict(size=256, base_filters=4, depth=7) if stage == "uda" else None
        estimate = common.estimate_step_memory(64, 8, 64, (144, 192, 192), recompute, vae=vae, precision=precision)
        assert estimate["total"] / 2**30 == pytest.approx(peak, rel=0.2), (stage, precision, recompute)


# ---- training -----------------------------------------------------------------------------------
def test_pix2pix3d_learns_and_writes_its_outputs(pix2pix_run):
    rows = losses_of(pix2pix_run)
    assert len(rows) == 6  # 2 cases x 3 epochs, batch 1
    assert [r["lr"] for r in rows] == pytest.approx([1e-2] * 4 + [5e-3] * 2)  # 2 + 1 epochs: linear decay
    l1 = np.array([r["g_l1"] for r in rows])
    assert l1[-2:].mean() < 0.92 * l1[:2].mean()
    assert sorted(p.name for p in pix2pix_run.samples.iterdir()) == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    assert {p.name for p in pix2pix_run.models.iterdir()} >= {"generator.keras", "discriminator.keras",
                                                              "best_generator.keras"}
    with open(pix2pix_run.path / "validation.csv") as stream:
        validation = list(csv.DictReader(stream))
    assert len(validation) == 3 and 0 < float(validation[-1]["ssim"]) < 1


def test_vae2d_learns_resumes_exactly_and_shows_reconstructions(root, vae_run, tmp_path):
    rows = losses_of(vae_run)
    assert len(rows) == 4  # 2 volumes x 1 batch of 32 slices x 2 epochs
    sse = [r["sse"] for r in rows]
    assert sse[2] < 0.9 * sse[0] and sse[3] < 0.9 * sse[1]  # each volume, epoch 2 against epoch 1
    grid = keras.utils.load_img(vae_run.samples / "epoch_0001.png")
    assert grid.size == (2 * 64, 2 * 32)  # 4 pairs (input | reconstruction) of 32 x 64 in a 2 x 2 grid
    with eagerly():
        with pytest.raises(Interrupted):
            launch(VAE2DRecipe(vae_config(root, tmp_path, checkpoint_steps=2)), progress=False, stop_after_steps=3)
        resumed, _ = launch(VAE2DRecipe(vae_config(root, tmp_path, checkpoint_steps=2)), resume=str(tmp_path / "vae"),
                            progress=False)
    for expected, got in zip(rows, losses_of(resumed)):
        for key in ("sse", "kl"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5), key


def test_pix2pix3d_resumes_exactly_across_an_epoch_boundary(root, tmp_path):
    """Cut back to the step-1 checkpoint (epoch 1 of 2 samples), resumed: the losses, the
    augmentation draws of epoch 2, the learning-rate decay and the final weights match."""
    def config(name):
        return pix2pix_config(root, tmp_path, epochs=2, epochs_decay=1, checkpoint_steps=1, keep_checkpoints=4,
                              validate_every=0, name=name)

    with eagerly():
        reference, summary = launch(Pix2Pix3DRecipe(config("ref")), progress=False)
        shutil.copytree(reference.path, tmp_path / "cut")
        for later in ("ckpt-000000002.npz", "ckpt-000000003.npz", "ckpt-000000004.npz"):
            (tmp_path / "cut" / "checkpoints" / later).unlink()
        shutil.rmtree(tmp_path / "cut" / "models")
        resumed, resumed_summary = launch(Pix2Pix3DRecipe(config("cut")), resume=str(tmp_path / "cut"), progress=False)
    assert summary["steps"] == resumed_summary["steps"] == 4  # 2 cases x 2 epochs
    rows, resumed_rows = losses_of(reference), losses_of(resumed)
    assert len(resumed_rows) == 4 and rows[2]["lr"] < rows[0]["lr"]  # epoch 2 decays
    for expected, got in zip(rows, resumed_rows):
        for key in ("d_real", "d_fake", "g_gan", "g_l1", "g_perceptual", "lr"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    for name in ("generator", "discriminator"):
        a = keras.models.load_model(reference.models / f"{name}.keras")
        b = keras.models.load_model(resumed.models / f"{name}.keras")
        for x, y in zip(a.weights, b.weights):
            np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-7)


def test_uda_faithful_kl_trains_and_resumes_exactly(root, pix2pix_run, vae_run, tmp_path):
    def config(name):
        return uda_config(root, tmp_path, pix2pix_run.path, vae_run.path, faithful_kl=True, epochs=1,
                          checkpoint_steps=1, validate_every=0, name=name)

    with eagerly():
        reference, summary = launch(UDARecipe(config("ref")), progress=False)
        # a copy of the finished run cut back to its step-1 checkpoint (as after a crash there), resumed
        shutil.copytree(reference.path, tmp_path / "cut")
        (tmp_path / "cut" / "checkpoints" / "ckpt-000000002.npz").unlink()
        shutil.rmtree(tmp_path / "cut" / "models")
        resumed, resumed_summary = launch(UDARecipe(config("cut")), resume=str(tmp_path / "cut"), progress=False)
    assert summary["steps"] == 2  # max(2 source cases, 1 target case) samples per epoch
    assert resumed_summary["steps"] == 2 and len(losses_of(resumed)) == 2
    rows = losses_of(reference)
    assert all(r["kl"] > 0 for r in rows) and {"d_real", "g_l1", "g_perceptual", "kl"} <= set(rows[0])
    for expected, got in zip(rows, losses_of(resumed)):
        for key in ("d_real", "d_fake", "g_l1", "g_perceptual", "kl"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    pretrained = keras.models.load_model(pix2pix_run.models / "generator.keras")
    adapted = keras.models.load_model(reference.models / "generator.keras")
    assert max(np.abs(a - b).max() for a, b in zip(pretrained.get_weights(), adapted.get_weights())) > 1e-4
    vae = keras.models.load_model(vae_run.models / "vae_encoder.keras")
    frozen = keras.models.load_model(reference.models / "vae_encoder.keras")
    for a, b in zip(vae.trainable_weights, frozen.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # never optimised
    moving = [(a, b) for a, b in zip(vae.non_trainable_weights, frozen.non_trainable_weights) if "moving_mean" in a.path]
    assert any(np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in moving)  # train-mode BatchNorm drifts, as the original
    resumed_generator = keras.models.load_model(resumed.models / "generator.keras")
    for a, b in zip(adapted.weights, resumed_generator.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    resumed_encoder = keras.models.load_model(resumed.models / "vae_encoder.keras")
    for a, b in zip(frozen.weights, resumed_encoder.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)  # the drift is checkpointed


def test_uda_kl_step_lowers_the_kl_in_inference_mode(root, pix2pix_run, vae_run, tmp_path):
    recipe = UDARecipe(uda_config(root, tmp_path, pix2pix_run.path, vae_run.path, lr=3e-3))
    recipe.prepare_data()
    recipe.build()
    encoder_before = [w.numpy().copy() for w in recipe.networks["vae_encoder"].weights]
    source_inputs, source_target, target_inputs = next(iter(recipe.dataset(0)))
    values = [float(recipe.kl_step(target_inputs, source_target)) for _ in range(5)]
    assert values[-1] < 0.8 * values[0]
    for before, weight in zip(encoder_before, recipe.networks["vae_encoder"].weights):
        np.testing.assert_array_equal(before, weight.numpy())  # inference mode: nothing of the encoder changes


def test_recompute_gives_the_same_kl_step(root, pix2pix_run, vae_run, tmp_path):
    """--recompute also recomputes the frozen encoder on the fake slices: same KL, same update."""
    batch = None

    def one_step(recompute):
        nonlocal batch
        recipe = UDARecipe(uda_config(root, tmp_path, pix2pix_run.path, vae_run.path, recompute=recompute))
        recipe.prepare_data()
        recipe.build()
        recipe.optimizers["generator"] = keras.optimizers.SGD(0.1)
        if batch is None:
            batch = next(iter(recipe.dataset(0)))
        before = [w.numpy().copy() for w in recipe.networks["generator"].trainable_weights]
        loss = float(recipe.kl_step(batch[2], batch[1]))
        return loss, [w.numpy() - b for w, b in zip(recipe.networks["generator"].trainable_weights, before)]

    plain_loss, plain_update = one_step(False)
    recomputed_loss, recomputed_update = one_step(True)
    assert recomputed_loss == pytest.approx(plain_loss, rel=1e-5)
    assert max(np.abs(update).max() for update in plain_update) > 1e-6
    for a, b in zip(plain_update, recomputed_update):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-7)


def test_kl_term_in_a_compiled_function_with_dynamic_shapes():
    """The KL helpers traced once with unknown spatial sizes (rotations change them) give the eager values."""

    def pipeline(fake, real):
        def latent(volume):  # a stand-in encoder: per-row mean and spread of every slice
            slices = common.kl_slices(volume, 16, "coronal")
            return tf.reduce_mean(slices, axis=2), tf.math.reduce_std(slices, axis=2) - 1.0

        return common.top_percent_mean(common.elementwise_kl(*latent(real), *latent(fake)), 55)

    spec = tf.TensorSpec((1, None, None, None, 1), tf.float32)
    compiled = tf.function(pipeline, input_signature=[spec, spec], autograph=False)  # plain graph ops; no conversion
    rng = np.random.default_rng(4)
    for shape in ((1, 16, 24, 16, 1), (1, 24, 16, 16, 1)):
        fake, real = (tf.constant(rng.uniform(size=shape).astype(np.float32)) for _ in range(2))
        assert float(compiled(fake, real)) == pytest.approx(float(pipeline(fake, real)), rel=1e-4)
    assert len(compiled._list_all_concrete_functions()) == 1


def _one_supervised_step(tmp_path, recompute: bool, initial=None, sgd: bool = False, compiled: bool = False,
                         dynamic: bool = False):
    """One supervised pix2pix step on a fixed random 16^3 pair: (losses, weights before, weights after)."""
    keras.utils.set_random_seed(5)
    recipe = Pix2Pix3DRecipe(pix2pix_config("unused", tmp_path, crop_shape=[16, 16, 16], recompute=recompute))
    recipe.build()
    if sgd:
        recipe.optimizers = {"generator": keras.optimizers.SGD(1.0), "discriminator": keras.optimizers.SGD(1.0)}
    if initial is not None:
        for name, values in initial.items():
            recipe.networks[name].set_weights(values)
    before = {name: model.get_weights() for name, model in recipe.networks.items()}
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.uniform(size=(1, 16, 16, 16, 2)).astype(np.float32))
    target = tf.constant(rng.uniform(size=(1, 16, 16, 16, 1)).astype(np.float32))
    if dynamic:  # traced with unknown spatial sizes, as the training loop (rotations swap the axes)
        step = tf.function(recipe.supervised_step, input_signature=[
            tf.TensorSpec([None, None, None, None, 2], tf.float32), tf.TensorSpec([None, None, None, None, 1], tf.float32)])
    else:
        step = tf.function(recipe.supervised_step) if compiled else recipe.supervised_step
    losses = {k: float(v) for k, v in step(inputs, target).items()}
    return losses, before, {name: model.get_weights() for name, model in recipe.networks.items()}


def test_recompute_gives_the_same_supervised_step(tmp_path, monkeypatch):
    """--recompute (gradient checkpointing of the SIT, the discriminator's first stage in depth
    slabs): same losses and, with SGD(1), same updates."""
    from tfmedgan.models.pix2pix_uda import slabs

    monkeypatch.setattr(slabs, "DEFAULT_ROWS_PER_SLAB", 3)  # 3 slabs of the 8 rows at 16^3

    def one_step(recompute, initial=None):
        return _one_supervised_step(tmp_path, recompute, initial, sgd=True)

    plain_losses, start, plain = one_step(False)
    recomputed_losses, _, recomputed = one_step(True, initial=start)
    assert recomputed_losses == pytest.approx(plain_losses, rel=1e-5)
    traced_losses, _, traced = _one_supervised_step(tmp_path, True, start, sgd=True, dynamic=True)
    assert traced_losses == pytest.approx(plain_losses, rel=1e-5)
    largest = max(np.abs(a - first).max() for first, a in zip(start["generator"], plain["generator"]))
    for first, a, b in zip(start["generator"], plain["generator"], traced["generator"]):
        np.testing.assert_allclose(b - first, a - first, rtol=1e-3, atol=1e-4 * largest)
    changed = 0
    for name in start:
        for index, (first, a, b) in enumerate(zip(start[name], plain[name], recomputed[name])):
            # Convolutions that feed an instance norm have gradients made of terms that cancel
            # (exactly so for their biases), so rounding differences are amplified there: the
            # slabs' autodiff of the discriminator's first norm and the layer's closed-form
            # gradient differ by ~1e-3 of that kernel's update, which reaches the generator's
            # kernels at ~1e-5 of theirs. A wrong slab boundary would differ by tens of percent.
            largest = max(np.abs(after - before).max() for before, after in zip(start[name], plain[name]))
            atol = max(1e-6, (1e-3 if name == "discriminator" and index < 2 else 1e-4) * largest)
            np.testing.assert_allclose(b - first, a - first, rtol=1e-4, atol=atol, err_msg=f"{name} weight {index}")
            changed += int(np.abs(a - first).max() > 1e-5)
    assert changed > 20


def test_supervised_step_is_unchanged_by_the_low_memory_l1(tmp_path, monkeypatch):
    """The supervised step with losses.l1_low_memory and with tfmedgan.losses.l1 in the perceptual loss:
    the same losses and the same updated weights (Adam, one step)."""
    from tfmedgan import losses

    def one_step(l1, initial=None):
        monkeypatch.setattr(losses, "l1_low_memory", l1)
        return _one_supervised_step(tmp_path, False, initial)

    sign_losses, start, sign_weights = one_step(losses.l1_low_memory)
    plain_losses, _, plain_weights = one_step(losses.l1, initial=start)
    assert sign_losses == plain_losses
    for name in start:
        for first, a, b in zip(start[name], plain_weights[name], sign_weights[name]):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
            assert np.abs(a - first).max() > 0


# ---- bad input ----------------------------------------------------------------------------------
def _copy(root, tmp_path):
    return Path(shutil.copytree(root, tmp_path / "copy"))


def _prepare(config) -> None:
    recipe = {Pix2Pix3DConfig: Pix2Pix3DRecipe, VAE2DConfig: VAE2DRecipe, UDAConfig: UDARecipe}[type(config)](config)
    config.validate()
    recipe.prepare_data()


def test_bad_inputs_are_one_line_errors(root, pix2pix_run, vae_run, tmp_path):
    data = _copy(root, tmp_path)
    out = tmp_path / "out"
    case = sorted((data / "domain1_train").iterdir())[0]
    with pytest.raises(TfmedganError, match="smaller than the crop"):
        _prepare(pix2pix_config(data, out, crop_shape=[32, 32, 32]))
    with pytest.raises(TfmedganError, match=r"--ele-percent must be in \(0, 100\]"):
        uda_config(data, out, pix2pix_run.path, vae_run.path, ele_percent=0).validate()
    with pytest.raises(TfmedganError, match=r"--ele-percent must be in \(0, 100\], got 100.5"):
        uda_config(data, out, pix2pix_run.path, vae_run.path, ele_percent=100.5).validate()
    with pytest.raises(TfmedganError, match="--vae .* is a pix2pix3d run, not a vae2d run"):
        _prepare(uda_config(data, out, pix2pix_run.path, pix2pix_run.path))
    with pytest.raises(TfmedganError, match="--pretrained .* is a vae2d run, not a pix2pix3d run"):
        _prepare(uda_config(data, out, vae_run.path, vae_run.path))
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    shutil.copy(vae_run.models / "vae_encoder.keras", impostor / "generator.keras")
    shutil.copy(pix2pix_run.models / "discriminator.keras", impostor / "discriminator.keras")
    with pytest.raises(TfmedganError, match="not a SIT generator"):
        _prepare(uda_config(data, out, impostor / "generator.keras", vae_run.path))

    # a target folder without FLAIR
    target_case = sorted((data / "domain2_val").iterdir())[0]
    flair = next(target_case.glob("*_flair.nii.gz"))
    flair.rename(tmp_path / flair.name)
    with pytest.raises(TfmedganError, match="flair"):
        _prepare(uda_config(data, out, pix2pix_run.path, vae_run.path))
    (tmp_path / flair.name).rename(flair)

    # NaNs, then modalities differing in shape, then in affine
    t2 = next(case.glob("*_t2.nii.gz"))
    original = nib.load(t2)
    array = original.get_fdata().astype(np.float32)
    broken = array.copy()
    broken[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(broken, original.affine), t2)
    with pytest.raises(TfmedganError, match="NaN"):
        _prepare(pix2pix_config(data, out))
    nib.save(nib.Nifti1Image(array[:-1], original.affine), t2)
    with pytest.raises(TfmedganError, match="shape"):
        _prepare(pix2pix_config(data, out))
    shifted = original.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(array, shifted), t2)
    with pytest.raises(TfmedganError, match="affine"):
        _prepare(pix2pix_config(data, out))
    nib.save(nib.Nifti1Image(array, original.affine), t2)

    # a missing modality, an empty domain folder, no ROOT
    t1 = next(case.glob("*_t1.nii.gz"))
    t1.unlink()
    with pytest.raises(TfmedganError, match="t1"):
        _prepare(vae_config(data, out))
    for child in (data / "domain1_train").iterdir():
        shutil.rmtree(child)
    with pytest.raises(TfmedganError, match="no case folders"):
        _prepare(pix2pix_config(data, out))
    with pytest.raises(TfmedganError, match="does not exist"):
        _prepare(pix2pix_config(tmp_path / "nowhere", out))


def test_a_smaller_vae_slice_size_means_one_volume_per_batch():
    from tfmedgan.models import get_model

    spec = get_model("vae2d")
    assert spec.config(slice_size=64).batch == 64 and spec.config(slice_size=64, batch=16).batch == 16
    assert spec.config().batch == 256
    with pytest.raises(TfmedganError, match="use --batch 64 or less"):
        spec.config(slice_size=64, batch=128).validate()


def test_cli_errors_are_one_line(pix2pix_run, vae_run, root, tmp_path, capsys):
    from tfmedgan.cli import main

    status = main(["uda", str(root), str(tmp_path), "--pretrained", str(pix2pix_run.path), "--vae",
                   str(vae_run.path), "--ele-percent", "101"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and error[-1] == "error: --ele-percent must be in (0, 100], got 101"
    status = main(["pix2pix3d-test", str(vae_run.path), str(root)])
    assert status == 2 and "is a vae2d run, not a pix2pix3d or uda run" in capsys.readouterr().err


# ---- test command and the original grid ---------------------------------------------------------
def test_test_command_writes_metrics_and_volumes_on_the_original_grid(root, pix2pix_run, tmp_path, capsys):
    from tfmedgan.cli import main

    assert main(["pix2pix3d-test", str(pix2pix_run.path), str(root), "--dataset-name", "domain2", "--no-progress",
                 "--output", str(tmp_path / "test")]) == 0
    assert "domain2_test: 1 cases; SSIM" in capsys.readouterr().out
    with open(tmp_path / "test" / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["case"] for r in rows] == ["SIM_SITEB_test_000", "mean", "std"]
    assert 0 < float(rows[0]["ssim"]) < 1 and float(rows[0]["psnr"]) > 0 and float(rows[0]["mae_brain"]) > 0
    case = brats.list_split(root, "domain2", "test")[0]
    written = nib.load(tmp_path / "test" / "SIM_SITEB_test_000_t1_synthetic.nii.gz")
    source = nib.load(case.path("t2"))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    with pytest.raises(TfmedganError, match="not empty"):
        common.score_run(pix2pix_run.path, root, output=tmp_path / "test")


def test_synthetic_volume_lines_up_with_the_input_file(root, tmp_path):
    """A 'generator' that returns its T2 input: the written volume must equal the min-max-scaled T2
    of the file at the same voxels (IPL reorientation and crop offset undone)."""
    inputs = keras.Input((None, None, None, 2))
    t2_copy = keras.Model(inputs, keras.layers.Lambda(lambda x: x[..., :1])(inputs))
    case = brats.list_split(root, "domain1", "train")[0]
    crop_shape, crop_start = (16, 16, 16), (2, 4, 3)  # off-centre: a lost offset would show
    common.evaluate_cases(t2_copy, [case], crop_shape, crop_start, out_dir=tmp_path, progress=False)
    written = nib.load(tmp_path / f"{case.name}_t1_synthetic.nii.gz")
    original = nib.load(case.path("t2"))
    assert written.shape == original.shape and np.allclose(written.affine, original.affine)
    geometry = brats.case_geometry(original.shape, original.affine, crop_shape, crop_start)
    inside = brats.from_model_grid(np.ones(geometry.padded_shape, bool), geometry)
    data = original.get_fdata()
    expected = (data - data[inside].min()) / (data[inside].max() - data[inside].min())
    np.testing.assert_allclose(written.get_fdata()[inside], expected[inside], atol=1e-6)
    assert np.all(written.get_fdata()[~inside] == 0)


def test_translate_cases_for_generate(pix2pix_run, root, tmp_path):
    written = common.translate_cases(pix2pix_run.path, root / "domain2_test", tmp_path / "out", progress=False)
    assert [p.name for p in written] == ["SIM_SITEB_test_000_t1_synthetic.nii.gz"]
    single = common.translate_cases(pix2pix_run.path, sorted((root / "domain2_test").iterdir())[0],
                                    tmp_path / "one", progress=False)
    assert np.array_equal(nib.load(single[0]).get_fdata(), nib.load(written[0]).get_fdata())
    with pytest.raises(TfmedganError, match="not empty"):
        common.translate_cases(pix2pix_run.path, root / "domain2_test", tmp_path / "out")


def test_input_skip_option_builds_the_skip_and_uda_rebuilds_it(root, tmp_path):
    from tfmedgan.models.pix2pix_uda.uda import generator_architecture

    for input_skip in (False, True):
        recipe = Pix2Pix3DRecipe(pix2pix_config(root, tmp_path, input_skip=input_skip))
        recipe.build_networks_only()
        generator = recipe.networks["generator"]
        assert ("out_input_skip" in {layer.name for layer in generator.layers}) == input_skip
        architecture = generator_architecture(generator)
        assert architecture["input_skip"] is input_skip
        rebuilt = common.build_generator(**architecture)  # what uda builds from a --pretrained run
        assert [w.shape for w in rebuilt.weights] == [w.shape for w in generator.weights]


def test_cpu_preset_raises_the_rate_and_adds_the_input_skip_explicit_options_win():
    from tfmedgan.models.pix2pix_uda.pix2pix3d import MODEL

    faithful, cpu = MODEL.config(data_root="r"), MODEL.config(preset="cpu", data_root="r")
    assert (faithful.lr, faithful.input_skip) == (1e-4, False)
    assert (cpu.lr, cpu.input_skip) == (1e-3, True)
    assert MODEL.config(preset="cpu", data_root="r", lr=5e-4).lr == 5e-4
