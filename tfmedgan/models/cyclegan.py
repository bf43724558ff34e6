"""Seed 000 recipe: the 3D CycleGAN (T1w <-> T2w NIfTI) of DCAN-Labs/MR-Image-Translation.

:class:`CycleGANRecipe` holds everything generic to a CycleGAN (two generators, two
discriminators, image pools, cycle / supervised / identity losses, the D-then-G step order,
linear learning-rate decay, mid-slice figures). Network builders, the adversarial loss, the
optimizers and the data are methods, so another CycleGAN (e.g. the seed-002 microCT one with U-Nets
and BCE) subclasses it and overrides only those. :class:`CycleGAN3DRecipe` is seed 000.

One training step (seed 000, ``CycleGAN_3D.py``)::

    fake_B = G_A2B(A), fake_A = G_B2A(B)                (inference, through the image pools)
    D update:  0.5 [LSGAN(D_A(A), 1) + LSGAN(D_A(pool(fake_A)), 0)] + same for D_B
    generator_updates x G update on the same batch:
        1 * LSGAN(D_B(G_A2B(A)), 1) + 1 * LSGAN(D_A(G_B2A(B)), 1)
        + lambda_cycle * [L1(G_B2A(G_A2B(A)), A) + L1(G_A2B(G_B2A(B)), B)]
        + lambda_supervised * [L1(G_A2B(A), B) + L1(G_B2A(B), A)]      (paired data only)
    every identity_every-th step: lambda_identity * [L1(G_A2B(B), B) + L1(G_B2A(A), A)]

Memory of the image pools: ``2 * pool_size * x*y*z * 4`` bytes, e.g. 1.83 GB for the original
50 volumes of 156x188x156 (they are also part of every checkpoint); lower it with ``--pool-size``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses
from tfmedgan.config import CycleGAN3DConfig
from tfmedgan.data import nifti as nifti_data
from tfmedgan.engine.distribute import average_loss, global_batch_size
from tfmedgan.engine.launch import launch
from tfmedgan.engine.memory import after, checkpointed_call
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.engine.rundir import RunDirectory, figure_to_rgb, save_png_atomic
from tfmedgan.errors import TfmedganError
from tfmedgan.models.base import GANRecipe
from tfmedgan.networks.patchgan import build_patchgan_discriminator
from tfmedgan.networks.resnet_translator import build_resnet_generator, valid_input_shape

#: Network presets of the original code (applied by the CLI; explicit options win).
CYCLEGAN3D_PRESETS: dict[str, dict[str, Any]] = {
    "gan_3d": dict(base_filters=64, n_downsamplings=2, n_residual_blocks=8, d_layers=3, norm="zslice"),
}

NETWORK_NAMES = ("generator_a2b", "generator_b2a", "discriminator_a", "discriminator_b")

# salts of the stateless random draws of a step
_SALT_POOL_A, _SALT_POOL_B = 11, 21


def decayed_learning_rate(lr: float, epoch: int, epochs: int, decay_epoch: int) -> float:
    """Learning rate of a (0-based) epoch: constant until ``decay_epoch``, then linear towards 0.

    ``lr * (1 - max(0, epoch - decay_epoch) / (epochs - decay_epoch))``; no decay when
    ``epochs <= decay_epoch``.

    Example:
        >>> decayed_learning_rate(2e-4, 100, 150, 75)
        0.00013333333333333334
    """
    if epochs <= decay_epoch:
        return float(lr)
    return float(lr) * (1.0 - max(0, epoch - decay_epoch) / (epochs - decay_epoch))


class ImagePool:
    """History of generated volumes shown to a discriminator (Shrivastava et al. 2017, CycleGAN).

    Until the pool is full every new fake is stored and returned. Afterwards each new fake is,
    with probability 1/2, swapped for a uniformly chosen stored one (the stored one is returned,
    the new one takes its place), else returned as it is. Unlike the original ``ImagePool``, which
    returned a view of the slot it had just overwritten (so always the new fake), older fakes are
    really returned. The buffer and fill counter are ``tf.Variable`` s, checkpointed with the run;
    random draws are stateless functions of the step seed.

    Args:
        size: Number of stored volumes (0 = no pool).
        shape: Shape of one volume, e.g. ``(x, y, z, 1)``.
        name: Variable name prefix.
    """

    def __init__(self, size: int, shape: tuple[int, ...], name: str = "pool"):
        self.size = int(size)
        self.images = tf.Variable(tf.zeros((max(self.size, 1), *shape), tf.float32), trainable=False, name=f"{name}_images")
        self.count = tf.Variable(tf.constant(0, tf.int32), trainable=False, name=f"{name}_count")

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.images, self.count] if self.size else []

    def query(self, fakes: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Return the volumes to show the discriminator for a batch of new ``fakes``."""
        if self.size == 0:
            return fakes
        fakes = tf.cast(fakes, tf.float32)
        count = tf.shape(fakes)[0]
        seed = tf.cast(seed, tf.int64)
        coins = tf.random.stateless_uniform([count], seed=seed)
        slots = tf.random.stateless_uniform([count], seed=seed + tf.constant([0, 1 << 40], tf.int64), minval=0, maxval=self.size, dtype=tf.int32)
        outputs = tf.TensorArray(tf.float32, size=count, element_shape=fakes.shape[1:])
        for index in tf.range(count):
            image = fakes[index]
            filled = self.count.read_value()
            if filled < self.size:
                self.images.scatter_nd_update([[filled]], image[None])
                self.count.assign_add(1)
                chosen = image
            elif coins[index] > 0.5:
                slot = slots[index]
                chosen = tf.identity(self.images[slot])
                with tf.control_dependencies([chosen]):
                    self.images.scatter_nd_update([[slot]], image[None])
            else:
                chosen = image
            outputs = outputs.write(index, chosen)
        return outputs.stack()


class CycleGANRecipe(GANRecipe):
    """Generic CycleGAN training (two generators, two discriminators, pools, cycle losses).

    Subclasses implement :meth:`build_generator`, :meth:`build_discriminator`,
    :meth:`model_shape` and the data methods, and may override :meth:`adversarial_loss`,
    :meth:`make_optimizers` and the loss weights read by :meth:`weights`.
    """

    # -- hooks for subclasses --------------------------------------------------------------------
    def build_generator(self, name: str) -> keras.Model:
        raise NotImplementedError

    def build_discriminator(self, name: str) -> keras.Model:
        raise NotImplementedError

    def model_shape(self) -> tuple[int, ...]:
        """Spatial input shape of the networks during training."""
        raise NotImplementedError

    def adversarial_loss(self, outputs: tf.Tensor, target: float) -> tf.Tensor:
        """Per-example adversarial loss (LSGAN for seed 000)."""
        return losses.least_squares(outputs, target)

    def make_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        """One Adam for both generators and one for both discriminators (as the original)."""
        config = self.config
        return {
            "generators": wrap_optimizer(keras.optimizers.Adam(config.lr, beta_1=config.beta_1, beta_2=config.beta_2), config.precision),
            "discriminators": wrap_optimizer(keras.optimizers.Adam(config.lr, beta_1=config.beta_1, beta_2=config.beta_2), config.precision),
        }

    def checkpoint_boundaries(self, name: str) -> list[str] | None:
        """Layers of generator ``name`` after which ``--recompute`` cuts it into segments.

        None (the default) checkpoints each generator as one piece (``tf.recompute_grad`` around
        the whole model); see :func:`tfmedgan.engine.memory.checkpointed_call`.
        """
        return None

    def weights(self) -> dict[str, float]:
        """Loss weights: adversarial (G), discriminator, cycle, supervised, identity."""
        config = self.config
        return {
            "adversarial": 1.0,
            "discriminator": 0.5,
            "cycle": float(config.lambda_cycle),
            "supervised": float(config.lambda_supervised) if config.supervised else 0.0,
            "identity": float(config.lambda_identity),
        }

    # -- networks --------------------------------------------------------------------------------
    def build(self, num_replicas: int = 1) -> None:
        self.build_networks_only()
        self.build_generator_calls()
        self.optimizers = self.make_optimizers()
        shape = tuple(self.model_shape()) + (1,)
        self.pools = {
            "a": ImagePool(self.config.pool_size, shape, "pool_a"),
            "b": ImagePool(self.config.pool_size, shape, "pool_b"),
        }

    def build_networks_only(self) -> None:
        self.networks = {
            "generator_a2b": self.build_generator("generator_a2b"),
            "generator_b2a": self.build_generator("generator_b2a"),
            "discriminator_a": self.build_discriminator("discriminator_a"),
            "discriminator_b": self.build_discriminator("discriminator_b"),
        }

    #: How ``--recompute`` wraps a generator (see :data:`tfmedgan.engine.memory.RECOMPUTE_MODES`).
    recompute_mode: str = "nested"

    def build_generator_calls(self) -> None:
        """The functions the generator updates call: plain, or gradient-checkpointed with --recompute.

        With ``--recompute`` every generator call of an update is also ordered after the previous
        one (:func:`tfmedgan.engine.memory.after`), so the backward pass recomputes one generator
        at a time instead of several in parallel.
        """
        recompute = bool(getattr(self.config, "recompute", False))
        self.generator_order = after if recompute else (lambda inputs, previous: inputs)
        self.generator_calls = {}
        for name in ("generator_a2b", "generator_b2a"):
            model = self.networks[name]
            if recompute:
                self.generator_calls[name] = checkpointed_call(model, self.checkpoint_boundaries(name), self.recompute_mode)
            else:
                self.generator_calls[name] = lambda inputs, model=model: model(inputs, training=True)

    def optimizer_variables(self) -> dict[str, list]:
        n = self.networks
        return {
            "generators": n["generator_a2b"].trainable_variables + n["generator_b2a"].trainable_variables,
            "discriminators": n["discriminator_a"].trainable_variables + n["discriminator_b"].trainable_variables,
        }

    def state_variables(self) -> list[tf.Variable]:
        return self.pools["a"].variables + self.pools["b"].variables

    # -- schedule --------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        config = self.config
        rate = decayed_learning_rate(config.lr, epoch, config.epochs, config.decay_epoch)
        for optimizer in self.optimizers.values():
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            inner.learning_rate.assign(rate)
        return {"lr": rate}

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        real_a, real_b = batch
        n = self.networks
        g_a2b, g_b2a, d_a, d_b = n["generator_a2b"], n["generator_b2a"], n["discriminator_a"], n["discriminator_b"]
        g_opt, d_opt = self.optimizers["generators"], self.optimizers["discriminators"]
        w = self.weights()
        total = global_batch_size(tf.shape(real_a)[0])
        g_vars = g_a2b.trainable_variables + g_b2a.trainable_variables
        d_vars = d_a.trainable_variables + d_b.trainable_variables

        # discriminators, on fakes drawn through the pools
        if not hasattr(self, "generator_calls"):
            self.build_generator_calls()
        then = self.generator_order
        fake_b = tf.stop_gradient(g_a2b(real_a, training=False))
        fake_a = tf.stop_gradient(g_b2a(then(real_b, fake_b), training=False))
        pooled_a = self.pools["a"].query(fake_a, self.noise_seed(step, _SALT_POOL_A))
        pooled_b = self.pools["b"].query(fake_b, self.noise_seed(step, _SALT_POOL_B))
        with tf.GradientTape() as tape:
            d_a_loss = w["discriminator"] * (
                average_loss(self.adversarial_loss(d_a(real_a, training=True), 1.0), total)
                + average_loss(self.adversarial_loss(d_a(pooled_a, training=True), 0.0), total)
            )
            d_b_loss = w["discriminator"] * (
                average_loss(self.adversarial_loss(d_b(real_b, training=True), 1.0), total)
                + average_loss(self.adversarial_loss(d_b(pooled_b, training=True), 0.0), total)
            )
            d_scaled = scale_loss(d_opt, d_a_loss + d_b_loss)
        apply_gradients(d_opt, tape, d_scaled, d_vars)

        # generators, generator_updates times on the same batch
        a2b, b2a = self.generator_calls["generator_a2b"], self.generator_calls["generator_b2a"]
        for _ in range(int(self.config.generator_updates)):
            with tf.GradientTape() as tape:
                fake_b = a2b(real_a)
                fake_a = b2a(then(real_b, fake_b))
                rec_a = b2a(then(fake_b, fake_a))
                rec_b = a2b(then(fake_a, rec_a))
                adv_a = average_loss(self.adversarial_loss(d_a(fake_a, training=True), 1.0), total)
                adv_b = average_loss(self.adversarial_loss(d_b(fake_b, training=True), 1.0), total)
                cycle_a = average_loss(losses.l1(rec_a, real_a), total)
                cycle_b = average_loss(losses.l1(rec_b, real_b), total)
                g_loss = w["adversarial"] * (adv_a + adv_b) + w["cycle"] * (cycle_a + cycle_b)
                if w["supervised"]:
                    supervised_a = average_loss(losses.l1(fake_a, real_a), total)
                    supervised_b = average_loss(losses.l1(fake_b, real_b), total)
                    g_loss += w["supervised"] * (supervised_a + supervised_b)
                g_scaled = scale_loss(g_opt, g_loss)
            apply_gradients(g_opt, tape, g_scaled, g_vars)

        result = {
            "d_a": d_a_loss, "d_b": d_b_loss, "g": g_loss, "adv_a": adv_a, "adv_b": adv_b,
            "cycle_a": cycle_a, "cycle_b": cycle_b,
        }
        if w["supervised"]:
            result.update(supervised_a=supervised_a, supervised_b=supervised_b)
        every = int(self.config.identity_every)
        if every:
            def identity_update() -> tf.Tensor:
                with tf.GradientTape() as tape:
                    same_b = a2b(real_b)
                    same_a = b2a(then(real_a, same_b))
                    loss = w["identity"] * (
                        average_loss(losses.l1(same_b, real_b), total) + average_loss(losses.l1(same_a, real_a), total)
                    )
                    scaled = scale_loss(g_opt, loss)
                apply_gradients(g_opt, tape, scaled, g_vars)
                return loss

            result["identity"] = tf.cond(
                tf.equal(tf.math.floormod(tf.cast(step, tf.int64), every), 0), identity_update, lambda: tf.constant(0.0)
            )
        return result

    # -- outputs ---------------------------------------------------------------------------------
    def sample_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed (A, B) pair [x, y, z, 1] in [-1, 1] for the per-epoch figure."""
        raise NotImplementedError

    def translate_sample(self) -> dict[str, np.ndarray]:
        """Real, synthetic and reconstructed volumes of the sample pair (each [x, y, z])."""
        real_a, real_b = self.sample_pair()
        n = self.networks
        a, b = tf.constant(real_a[None]), tf.constant(real_b[None])
        fake_b = n["generator_a2b"](a, training=False)
        fake_a = n["generator_b2a"](b, training=False)
        rec_a = n["generator_b2a"](fake_b, training=False)
        rec_b = n["generator_a2b"](fake_a, training=False)
        return {
            "real A": real_a[..., 0], "synthetic B": np.asarray(fake_b)[0, ..., 0], "reconstructed A": np.asarray(rec_a)[0, ..., 0],
            "real B": real_b[..., 0], "synthetic A": np.asarray(fake_a)[0, ..., 0], "reconstructed B": np.asarray(rec_b)[0, ..., 0],
        }

    def on_epoch_end(self, epoch: int, run_dir) -> dict[str, np.ndarray]:
        image = mid_slice_figure(self.translate_sample(), title=f"epoch {epoch}")
        save_png_atomic(image, Path(run_dir.samples) / self.sample_filename(epoch))
        return {"mid_slices": image}


def mid_slice_figure(volumes: dict[str, np.ndarray], title: str = "") -> np.ndarray:
    """Orthogonal mid-slices (sagittal, coronal, axial) of several volumes in [-1, 1].

    Args:
        volumes: label -> 3D array; six of them are laid out as 2 rows (A then B) of 3 volumes.
        title: Figure title.

    Returns:
        The figure as a uint8 RGB array [H, W, 3].
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(volumes)
    rows = 2 if len(names) == 6 else len(names)
    per_row = len(names) // rows
    figure, axes = plt.subplots(rows, 3 * per_row, figsize=(2.0 * 3 * per_row, 2.2 * rows), squeeze=False)
    for index, name in enumerate(names):
        volume = volumes[name]
        centre = [size // 2 for size in volume.shape]
        views = (volume[centre[0], :, :], volume[:, centre[1], :], volume[:, :, centre[2]])
        row, group = divmod(index, per_row)
        for view_index, view in enumerate(views):
            axis = axes[row][3 * group + view_index]
            axis.imshow(np.rot90(view), cmap="gray", vmin=-1, vmax=1)
            axis.set_axis_off()
            if view_index == 1:
                axis.set_title(name, fontsize=9)
    return figure_to_rgb(figure, title)


class CycleGAN3DRecipe(CycleGANRecipe):
    """Seed 000: ResNet generators and 1-layer PatchGANs on whole NIfTI volumes, LSGAN.

    Example:
        >>> recipe = CycleGAN3DRecipe(CycleGAN3DConfig(data_dir="data/MR_crop", shape=[160, 192, 160]))  # doctest: +SKIP
    """

    config: CycleGAN3DConfig

    # -- data ------------------------------------------------------------------------------------
    def _train_pairs(self) -> list[nifti_data.Pair]:
        if not self.config.data_dir:
            raise TfmedganError("no data folder given: DATA_DIR must hold trainA and trainB")
        if not hasattr(self, "_pairs"):
            self._pairs = nifti_data.paired_files(self.config.data_dir, "train", paired=self.config.supervised)
        return self._pairs

    def _test_pairs(self) -> list[nifti_data.Pair]:
        data = Path(self.config.data_dir)
        if (data / "testA").is_dir() and (data / "testB").is_dir():
            return nifti_data.paired_files(data, "test", paired=self.config.supervised)
        return []

    def resolve_shape(self, largest: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
        """Set ``config.shape`` to a valid input shape (from the data when not given) and return it."""
        config = self.config
        if config.shape:
            wanted = tuple(int(s) for s in config.shape)
        else:
            wanted = largest or nifti_data.largest_shape(self._train_pairs())
        valid = valid_input_shape(wanted, config.n_downsamplings)
        if config.shape and valid != wanted:
            print(f"note: --shape {list(wanted)} is not accepted by the generator; using {list(valid)} (padded)", file=sys.stderr)
        config.shape = list(valid)
        self._shape_resolved = True
        return valid

    def model_shape(self) -> tuple[int, int, int]:
        if getattr(self, "_shape_resolved", False):
            return tuple(self.config.shape)
        return self.resolve_shape()

    def prepare_data(self, num_replicas: int = 1) -> None:
        config = self.config
        pairs = self._train_pairs()
        max_shape = None
        if config.shape:
            max_shape = self.resolve_shape()
        largest = nifti_data.validate_pairs(pairs, paired=config.supervised, max_shape=max_shape)
        if not config.shape:
            self.resolve_shape(largest)
        test = self._test_pairs()
        sample = test[:1] if test else pairs[:1]
        nifti_data.validate_pairs(sample, paired=config.supervised, max_shape=self.model_shape(), progress=False)
        self._sample_files = sample[0]
        self.drop_remainder = num_replicas > 1
        if self.drop_remainder and config.batch % num_replicas:
            raise TfmedganError(f"--batch {config.batch} is not divisible by the {num_replicas} replicas")
        if self.drop_remainder and len(pairs) < config.batch:
            raise TfmedganError(f"{len(pairs)} volume pairs are fewer than one batch of {config.batch}")
        count = len(pairs)
        self.steps_per_epoch = count // config.batch if self.drop_remainder else int(np.ceil(count / config.batch))

    def dataset(self, epoch: int) -> tf.data.Dataset:
        config = self.config
        return nifti_data.volume_pair_dataset(
            self._train_pairs(), self.model_shape(), config.batch, config.seed, epoch,
            drop_remainder=getattr(self, "drop_remainder", False),
        )

    def sample_pair(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_sample"):
            files = getattr(self, "_sample_files", None) or (self._test_pairs() or self._train_pairs())[0]
            shape = self.model_shape()
            self._sample = (nifti_data.load_model_input(files[0], shape), nifti_data.load_model_input(files[1], shape))
        return self._sample

    # -- networks --------------------------------------------------------------------------------
    def _network_input_shape(self) -> tuple:
        """Spatial sizes are dynamic (any valid shape at inference) except Z with zslice norm."""
        shape = self.model_shape()
        if self.config.norm == "zslice":
            return (None, None, shape[2], 1)
        return (None, None, None, 1)

    def build_generator(self, name: str) -> keras.Model:
        config = self.config
        return build_resnet_generator(
            self._network_input_shape(), config.base_filters, config.n_downsamplings, config.n_residual_blocks,
            norm=config.norm, name=name,
        )

    def checkpoint_boundaries(self, name: str) -> list[str]:
        """Cut the ResNet generator after every down-sampling stage, residual block and
        up-sampling stage.

        Measured at 96^3 (one generator, forward + backward, in units U of one full-resolution
        32-channel float32 tensor): no recompute 12.6 U, whole model 13.8 U, these cuts 7.3 U;
        also cutting after the stem costs 8.3 U, and not after the last up-sampling 10.6 U.
        """
        config = self.config
        names = [f"down{stage}_relu" for stage in range(1, config.n_downsamplings + 1)]
        names += [f"res{block}_add" for block in range(1, config.n_residual_blocks + 1)]
        names += [f"up{stage}_relu" for stage in range(1, config.n_downsamplings + 1)]
        return names

    def build_discriminator(self, name: str) -> keras.Model:
        config = self.config
        return build_patchgan_discriminator(
            self._network_input_shape(), base_filters=config.d_filters, n_layers=config.d_layers, norm=config.norm, name=name
        )

    # -- dry run ---------------------------------------------------------------------------------
    def dry_run_extra(self) -> dict[str, Any]:
        estimate = estimate_training_memory(self.config, self.model_shape())
        return {"shape": list(self.model_shape()), "memory_estimate_gib": round(estimate["total"] / 2**30, 3),
                "memory_estimate_parts_gib": {k: round(v / 2**30, 3) for k, v in estimate.items() if k != "total"}}


#: Calibration constants of :func:`estimate_training_memory` (fitted to ``bench/bench_cyclegan3d.py``).
MEMORY_RUNTIME_BYTES = 1.0 * 2**30
MEMORY_BACKWARD_TRANSIENT = 3.0
#: Generator forward passes taped in one generator update (fake_B, fake_A, rec_A, rec_B).
GENERATOR_PASSES = 4


def estimate_training_memory(config: CycleGAN3DConfig, shape: tuple[int, int, int]) -> dict[str, float]:
    """Estimate (bytes) of the peak memory of one training step, as ``--dry-run`` prints it.

    Per-layer accounting of what TensorFlow keeps for the backward pass
    (:func:`tfmedgan.engine.memory.saved_activation_bytes`: ``S_G`` for a generator, ``S_D`` for a
    discriminator), ``L`` = the largest generator activation, ``P`` = 4 taped generator passes of
    a generator update, ``b`` = batch, all in float32 bytes::

        weights     = parameters x 16            (float32 weights, 2 Adam moments, gradients)
        pools       = 2 x pool_size x voxels x 4
        data        = 3 x 2 x b x voxels x 4     (the batch and 2 prefetched batches of A and B)
        activations = b x (P x S_G + 2 x S_D + 2 x 3 L)                    without --recompute
        activations = b x (B_G + max_k S_k + 3 L + 2 x S_D + P x output)   with --recompute
        runtime     = 1 GiB                      (TensorFlow, graphs, kernels: a constant)

    With ``--recompute`` only the segment boundaries of the generator being differentiated
    (``B_G``) and the activations of one segment (``S_k``) are alive at a time. ``3 L`` is the
    transient of the backward pass (gradient buffers, normalisation temporaries); without
    recompute two generator backward passes run in parallel, hence ``2 x 3 L``.

    Mixed precision: activations are counted in float32 bytes under ``mixed_bfloat16`` too. The
    measured peaks were not lower than in float32 (-8% to +9%): the instance normalisations, the
    largest activations, compute in float32 (two float32 tensors kept per normalisation, plus
    float32 copies of their bfloat16 inputs), and oneDNN's bfloat16 kernels add buffers.
    ``mixed_bfloat16`` is worth it on CPU for speed (2-3x), not for memory.

    The constants (1 GiB, 3 L) were fitted to the peak RSS measured by
    ``bench/bench_cyclegan3d.py`` at 64^3, 128^3 and 156x188x156 in float32 and mixed_bfloat16,
    with and without recompute: the estimate is within 11% of every measurement there (the goal
    is 25%); see docs/cyclegan3d.md.

    Args:
        config: The run configuration (precision, recompute, batch, pool_size, networks).
        shape: Model input spatial shape.

    Returns:
        Bytes per part (``weights``, ``pools``, ``data``, ``activations``, ``runtime``) and ``total``.
    """
    from tfmedgan.engine import memory

    spatial = tuple(int(size) for size in shape) + (1,)
    recipe = CycleGAN3DRecipe(config)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        generator = build_resnet_generator(spatial, config.base_filters, config.n_downsamplings, config.n_residual_blocks,
                                           norm=config.norm)
        discriminator = build_patchgan_discriminator(spatial, base_filters=config.d_filters, n_layers=config.d_layers,
                                                     norm=config.norm)
        saved_generator = memory.saved_activation_bytes(generator)
        saved_discriminator = memory.saved_activation_bytes(discriminator)
        transient = MEMORY_BACKWARD_TRANSIENT * 4 * memory.largest_activation_elements(generator)
        voxels = int(np.prod(shape))
        if config.recompute:
            boundaries = recipe.checkpoint_boundaries("generator_a2b")
            segments = memory.split_model(generator, boundaries) if boundaries else [generator]
            per_example = (memory.boundary_bytes(generator, boundaries) + max(memory.saved_activation_bytes(s) for s in segments)
                           + transient + 2 * saved_discriminator + GENERATOR_PASSES * voxels * 4)
        else:
            per_example = GENERATOR_PASSES * saved_generator + 2 * saved_discriminator + 2 * transient
        parameters = 2 * generator.count_params() + 2 * discriminator.count_params()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    estimate = {
        "weights": float(parameters * 4 * 4),
        "pools": float(2 * config.pool_size * voxels * 4),
        "data": float(3 * 2 * config.batch * voxels * 4),
        "activations": float(config.batch * per_example),
        "runtime": float(MEMORY_RUNTIME_BYTES),
    }
    estimate["total"] = sum(estimate.values())
    return estimate


def train(config: CycleGAN3DConfig, run_dir: str | None = None, **kwargs) -> tuple[RunDirectory, dict]:
    """Train the seed-000 3D CycleGAN from ``config``; ``run_dir`` resumes an existing run."""
    return launch(CycleGAN3DRecipe(config), resume=run_dir, **kwargs)
