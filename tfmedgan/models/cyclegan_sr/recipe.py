"""The microCT SR CycleGAN's recipe: U-Net generators, BatchNorm PatchGANs, loss specs, lazy HDF5
patches (see the package docstring)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses as loss_library
from tfmedgan.engine.distribute import average_loss, global_batch_size
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.engine.recipe import EpochDecision
from tfmedgan.engine.rundir import save_png_atomic
from tfmedgan.errors import TfmedganError
from tfmedgan.models.cyclegan import CycleGANBase
from tfmedgan.models.cyclegan_sr.config import CycleGANSRConfig, LossEntry, normalize_weights, parse_loss_spec
from tfmedgan.models.cyclegan_sr.hp_optimizer import HP_START_STEP, HPOptimizer

_SALT_KICKSTART = 31


def adversarial_function(name: str, outputs: tf.Tensor, target: float) -> tf.Tensor:
    if name == "bce":
        return loss_library.bce_probabilities(outputs, target)
    return loss_library.least_squares(outputs, target)


def cycle_function(name: str, reconstructed: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    if name == "l1":
        return loss_library.l1(reconstructed, real)
    difference = tf.cast(reconstructed, tf.float32) - tf.cast(real, tf.float32)
    return tf.reduce_mean(tf.reshape(difference * difference, (tf.shape(difference)[0], -1)), axis=1)


def nearest_upsample(volumes: tf.Tensor, factor: int) -> tf.Tensor:
    """Nearest-neighbour upsampling of [N, D, H, W, C] by ``factor`` on the three spatial axes."""
    for axis in (1, 2, 3):
        volumes = tf.repeat(volumes, factor, axis=axis)
    return volumes


def nearest_downsample(volumes: tf.Tensor, factor: int) -> tf.Tensor:
    """PyTorch ``interpolate(scale_factor=1/factor, mode='nearest')``: every ``factor``-th voxel."""
    return volumes[:, ::factor, ::factor, ::factor, :]


def mean_downsample(volumes: tf.Tensor, factor: int) -> tf.Tensor:
    """The mean of every ``factor``^3 block (a ``factor`` times larger voxel), ``[b, d, h, w, c]``."""
    if factor == 1:
        return volumes
    return tf.nn.avg_pool3d(volumes, ksize=factor, strides=factor, padding="VALID")



class CycleGANSRRecipe(CycleGANBase):
    """Seed 002: U-Net generators, BN PatchGANs, BCE + L1 cycle, lazy HDF5 patches.

    Example:
        >>> config = CycleGANSRConfig(data_a="fast.json", data_b="slow.json", net_a="UNetSim3dSRx2",
        ...                           net_b="UNetSim3dSRd2", super_resolution=2, patch=[64, 128, 128])
        >>> run_dir, summary = train(config)  # doctest: +SKIP
    """

    config: CycleGANSRConfig
    #: The original's cycle plot: the middle slice of axis 0, gray in [-3, 3].
    figure_axes = (0,)
    figure_range = (-3.0, 3.0)
    validation_metric = ("cycle_a_l1", "min")
    best_networks = ("generator_a2b", "generator_b2a")
    averaged_networks = ("generator_a2b", "generator_b2a")

    def __init__(self, config: CycleGANSRConfig):
        super().__init__(config)
        self.entries = parse_loss_spec(config.losses)
        config.max_steps = int(config.max_steps or config.num_iters)
        config.epochs = max(1, math.ceil(config.max_steps / config.steps_per_epoch))
        self._samplers: list = []

    # -- geometry --------------------------------------------------------------------------------
    @property
    def patch_a(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.config.patch)  # type: ignore[return-value]

    @property
    def patch_b(self) -> tuple[int, int, int]:
        return tuple(int(p) * int(self.config.super_resolution) for p in self.config.patch)  # type: ignore[return-value]

    def model_shape(self) -> tuple[int, int, int]:
        return self.patch_a

    # -- data ------------------------------------------------------------------------------------
    def _specs(self):
        from tfmedgan.data.hdf5 import load_dataset_spec

        if not hasattr(self, "_spec_pair"):
            config = self.config
            if not config.data_a or not config.data_b:
                raise TfmedganError("give DATA_A DATA_B (dataset JSON files or .h5 volumes) and OUTPUT_DIR")
            self._spec_pair = (load_dataset_spec(config.data_a), load_dataset_spec(config.data_b))
        return self._spec_pair

    def prepare_data(self, num_replicas: int = 1) -> None:
        from tfmedgan.data import hdf5

        config = self.config
        spec_a, spec_b = self._specs()
        hdf5.check_patch(spec_a, self.patch_a)
        hdf5.check_patch(spec_b, self.patch_b)
        if config.batch % num_replicas:
            raise TfmedganError(f"--batch-size {config.batch} is not divisible by the {num_replicas} replicas")
        if config.check_finite:
            seen = set()
            for ref in spec_a.train + spec_a.validate + spec_b.train + spec_b.validate:
                key = (ref.path, ref.dset, ref.roi)
                if key not in seen:
                    seen.add(key)
                    hdf5.check_finite_volume(ref)
        self.steps_per_epoch = int(config.steps_per_epoch)

    def _close_samplers(self) -> None:
        for sampler in self._samplers:
            sampler.close()
        self._samplers = []

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """``steps_per_epoch`` batches of (A patches, B patches), sampled independently per domain
        with random flips, from samplers seeded by (seed, epoch, domain, number of roll-backs)."""
        from tfmedgan.data.hdf5 import PatchSampler, tf_dataset

        config = self.config
        spec_a, spec_b = self._specs()
        rollbacks = int(self.hp_state["rollbacks"].numpy()) if hasattr(self, "hp_state") else 0
        self._close_samplers()
        sampler_a = PatchSampler(spec_a.train, self.patch_a, seed=[config.seed, epoch, 0, rollbacks])
        sampler_b = PatchSampler(spec_b.train, self.patch_b, seed=[config.seed, epoch, 1, rollbacks])
        self._samplers = [sampler_a, sampler_b]
        return tf.data.Dataset.zip((
            tf_dataset(sampler_a, config.batch, self.steps_per_epoch),
            tf_dataset(sampler_b, config.batch, self.steps_per_epoch),
        )).skip(skip_batches)

    def validation_batches(self, count: int, seed_salt: int = 777) -> list[tuple[np.ndarray, np.ndarray]]:
        """``count`` fixed (A, B) batches from the ``validate`` volumes (same patches every call)."""
        from tfmedgan.data.hdf5 import PatchSampler

        spec_a, spec_b = self._specs()
        seed = self.config.seed
        with PatchSampler(spec_a.validate, self.patch_a, seed=[seed, seed_salt, 0], flips=False) as sampler_a, \
                PatchSampler(spec_b.validate, self.patch_b, seed=[seed, seed_salt, 1], flips=False) as sampler_b:
            return [(sampler_a.sample(self.config.batch), sampler_b.sample(self.config.batch)) for _ in range(count)]

    def sample_pair(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_sample"):
            a, b = self.validation_batches(1, seed_salt=12345)[0]
            self._sample = (a[0], b[0])
        return self._sample

    # -- networks --------------------------------------------------------------------------------
    def build_generator(self, name: str) -> keras.Model:
        from tfmedgan.networks.unet3d import build_unet

        config = self.config
        net = config.net_a if name == "generator_a2b" else config.net_b
        model = build_unet(net, num_filters=config.num_filters, initializer=config.initializer)
        return keras.Model(model.input, model.output, name=name)

    def build_discriminator(self, name: str) -> keras.Model:
        from tfmedgan.networks.patchgan_bn import build_patchgan_bn_discriminator

        config = self.config
        return build_patchgan_bn_discriminator(
            base_filters=config.d_filters, n_layers=config.d_layers,
            use_batch_statistics=config.use_batch_statistics, name=name,
            synchronized=getattr(self, "num_replicas", 1) > 1,
        )

    def make_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        """Adam for both generators and Adam for both discriminators. The generators' joint
        gradient-norm clip (``clip_max``) is applied in :meth:`train_step` to the gradient summed
        over replicas (:func:`tfmedgan.engine.precision.clip_joint_norm`), not by Keras'
        ``global_clipnorm``, which would clip each replica's share before the all-reduce."""
        config = self.config
        return {
            "generators": wrap_optimizer(keras.optimizers.Adam(
                config.lr_g, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=1e-8), config.precision),
            "discriminators": wrap_optimizer(keras.optimizers.Adam(
                config.lr_d, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=1e-8), config.precision),
        }

    def initial_weights(self) -> np.ndarray:
        return normalize_weights([e.weight for e in self.entries], self.config.lambda_total)

    def build(self, num_replicas: int = 1) -> None:
        self.num_replicas = num_replicas  # > 1: --batch-statistics BatchNorm is synchronised
        self.build_networks_only()
        self.optimizers = self.make_optimizers()
        self.loss_weights = tf.Variable(self.initial_weights().astype(np.float32), trainable=False, name="loss_weights")
        self.hp_state = {
            "fallbacks": tf.Variable(0, dtype=tf.int64, trainable=False, name="hp_fallbacks"),
            "max_step": tf.Variable(0, dtype=tf.int64, trainable=False, name="hp_max_step"),
            "rollbacks": tf.Variable(0, dtype=tf.int64, trainable=False, name="hp_rollbacks"),
        }

    def state_variables(self) -> list[tf.Variable]:
        return [self.loss_weights, *self.hp_state.values()]

    # -- HP state (survives a roll-back) ---------------------------------------------------------
    def learning_rates(self) -> dict[str, float]:
        return {name: float(_inner(optimizer).learning_rate.numpy()) for name, optimizer in self.optimizers.items()}

    def hyperparameter_snapshot(self) -> dict[str, Any]:
        return {"weights": self.loss_weights.numpy().copy(), "lrs": self.learning_rates(),
                **{k: int(v.numpy()) for k, v in self.hp_state.items()}}

    def apply_hyperparameters(self, snapshot: dict[str, Any]) -> None:
        self.loss_weights.assign(np.asarray(snapshot["weights"], np.float32))
        for name, rate in snapshot["lrs"].items():
            _inner(self.optimizers[name]).learning_rate.assign(rate)
        for key in self.hp_state:
            self.hp_state[key].assign(int(snapshot[key]))

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        """Weights and learning rates of this epoch (logged with every step); no LR schedule."""
        weights = self.loss_weights.numpy()
        scalars = {f"w_{entry.name}": float(w) for entry, w in zip(self.entries, weights)}
        rates = self.learning_rates()
        scalars.update(lr_g=rates["generators"], lr_d=rates["discriminators"])
        return scalars

    # -- training --------------------------------------------------------------------------------
    def _term(self, term: str) -> list[tuple[int, LossEntry]]:
        return [(i, e) for i, e in enumerate(self.entries) if e.term == term]

    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        real_a, real_b = batch
        config = self.config
        n = self.networks
        g_a2b, g_b2a, d_a, d_b = n["generator_a2b"], n["generator_b2a"], n["discriminator_a"], n["discriminator_b"]
        g_opt, d_opt = self.optimizers["generators"], self.optimizers["discriminators"]
        weights = tf.unstack(self.loss_weights.read_value())
        total = global_batch_size(tf.shape(real_a)[0])
        g_vars = g_a2b.trainable_variables + g_b2a.trainable_variables
        d_vars = d_a.trainable_variables + d_b.trainable_variables
        result: dict[str, tf.Tensor] = {}

        with tf.GradientTape() as g_tape:
            fake_b = g_a2b(real_a, training=True)
            fake_a = g_b2a(real_b, training=True)
            # (1) discriminators on the detached fakes: D_A judges domain B, D_B judges domain A
            with g_tape.stop_recording():
                with tf.GradientTape() as d_tape:
                    d_loss = tf.constant(0.0)
                    judged = {}
                    for term, disc, real, fake in (("D_A", d_b, real_b, fake_b), ("D_B", d_a, real_a, fake_a)):
                        on_real = disc(real, training=True)
                        on_fake = disc(tf.stop_gradient(fake), training=True)
                        judged[term] = (on_real, on_fake)
                        for index, entry in self._term(term):
                            raw = average_loss(adversarial_function(entry.function, on_real, 1.0), total) + average_loss(
                                adversarial_function(entry.function, on_fake, 0.0), total)
                            result[f"loss_{entry.name}"] = raw
                            d_loss += weights[index] * raw
                    d_scaled = scale_loss(d_opt, d_loss)
                apply_gradients(d_opt, d_tape, d_scaled, d_vars)
                for term, (on_real, on_fake) in judged.items():
                    result.update(_truth_table(term, on_real, on_fake, total))
            # (2) generators against the just-updated discriminators
            source_a, source_b = fake_b, fake_a
            if config.kickstart and config.kickstart_steps > 0:
                draw = tf.random.stateless_uniform([], seed=self.noise_seed(step, _SALT_KICKSTART))
                kick = tf.logical_and(tf.cast(step, tf.int64) < config.kickstart_steps, draw < config.kickstart_probability)
                factor = int(config.super_resolution)
                source_a = tf.cond(kick, lambda: nearest_upsample(real_a, factor), lambda: fake_b)
                downsample = mean_downsample if config.kickstart_downsample == "mean" else nearest_downsample
                source_b = tf.cond(kick, lambda: downsample(real_b, factor), lambda: fake_a)
                result["kickstart"] = tf.cast(kick, tf.float32) / tf.cast(
                    tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
            rec_a = g_b2a(source_a, training=True)
            rec_b = g_a2b(source_b, training=True)
            g_loss = tf.constant(0.0)
            for term, disc, fake in (("G_A", d_b, fake_b), ("G_B", d_a, fake_a)):
                entries = self._term(term)
                if entries:
                    outputs = disc(fake, training=True)
                for index, entry in entries:
                    raw = average_loss(adversarial_function(entry.function, outputs, 1.0), total)
                    result[f"loss_{entry.name}"] = raw
                    g_loss += weights[index] * raw
            for term, rec, real in (("C_A", rec_a, real_a), ("C_B", rec_b, real_b)):
                for index, entry in self._term(term):
                    raw = average_loss(cycle_function(entry.function, rec, real), total)
                    result[f"loss_{entry.name}"] = raw
                    g_loss += weights[index] * raw
            g_scaled = scale_loss(g_opt, g_loss)
        clip = float(config.clip_max) if config.clip_max > 0 else None
        apply_gradients(g_opt, g_tape, g_scaled, g_vars, clip_norm=clip)  # clipped after the all-reduce
        result["loss_g_total"] = g_loss
        result["loss_d_total"] = d_loss
        return result

    # -- outputs ---------------------------------------------------------------------------------
    def epoch_outputs(self, epoch: int, step: int, run_dir) -> dict[str, np.ndarray]:
        """The original's cycle plot: middle slice of axis 0 of real, fake and reconstructed
        volumes of both domains, gray in [-3, 3]."""
        image = self.sample_figure(f"step {step}")
        save_png_atomic(image, Path(run_dir.samples) / f"cycle_plot_step{step:07d}.png")
        return {"cycle_plot": image}

    def validate(self, epoch: int, step: int) -> dict[str, float]:
        """Cycle L1 and discriminator accuracies on ``validate_batches`` fixed validation batches."""
        sums: dict[str, float] = {}
        batches = self.validation_batches(int(self.config.validate_batches))
        d_a, d_b = self.networks["discriminator_a"], self.networks["discriminator_b"]
        for real_a, real_b in batches:
            out = self.translate_batch(real_a, real_b)
            values = {
                "cycle_a_l1": float(np.mean(np.abs(out["reconstructed A"] - real_a))),
                "cycle_b_l1": float(np.mean(np.abs(out["reconstructed B"] - real_b))),
                "d_b_real_accuracy": float(np.mean(np.asarray(d_b(real_b, training=False)) > 0.5)),
                "d_b_fake_accuracy": float(np.mean(np.asarray(d_b(out["synthetic B"], training=False)) <= 0.5)),
                "d_a_real_accuracy": float(np.mean(np.asarray(d_a(real_a, training=False)) > 0.5)),
                "d_a_fake_accuracy": float(np.mean(np.asarray(d_a(out["synthetic A"], training=False)) <= 0.5)),
            }
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / len(batches)
        return sums

    # -- HP optimizer ----------------------------------------------------------------------------
    def rollback_steps_needed(self) -> int:
        """Roll-backs reach ~2 epochs back, plus one more after 10 failures in a row."""
        return 4 * int(self.config.steps_per_epoch) if self.config.hp_optimizer else 0

    def after_epoch(self, epoch: int, step: int, run_dir) -> EpochDecision | None:
        """With ``--hp-optimizer``, after step 250 at every epoch end: the original's checks; on
        failure new weights / learning rates and a roll-back (they survive it), else the new values
        are written into this step's checkpoint."""
        config = self.config
        if not config.hp_optimizer or step <= HP_START_STEP or step % config.steps_per_epoch:
            return None
        report = HPOptimizer(self).check(step, run_dir)
        target = report["rollback_to"]
        print(f"hp-optimizer step {step}: failcondition {report['failcondition']:.3g}"
              + (f", rolling back to step {target}" if target is not None else ""), file=sys.stderr)
        if target is None:
            return EpochDecision(save_checkpoint=True)
        self._kept_hyperparameters = self.hyperparameter_snapshot()
        return EpochDecision(rollback_to=int(target))

    def after_rollback(self, step: int) -> None:
        """The hyper-parameters chosen before the roll-back replace the restored ones."""
        snapshot = getattr(self, "_kept_hyperparameters", None)
        if snapshot is not None:
            self.apply_hyperparameters(snapshot)
            self._kept_hyperparameters = None

    def dry_run_extra(self) -> dict[str, Any]:
        from tfmedgan.networks.patchgan_bn import patchgan_bn_output_shape

        return {
            "patch_b": list(self.patch_b),
            "loss_weights": {e.name: round(float(w), 4) for e, w in zip(self.entries, self.initial_weights())},
            "discriminator_output": {"A": list(patchgan_bn_output_shape(self.patch_a, self.config.d_layers)),
                                     "B": list(patchgan_bn_output_shape(self.patch_b, self.config.d_layers))},
        }

    def close(self) -> None:
        self._close_samplers()


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def _truth_table(term: str, on_real: tf.Tensor, on_fake: tf.Tensor, total: tf.Tensor) -> dict[str, tf.Tensor]:
    """TP/TN/FP/FN of a discriminator (threshold 0.5) as fractions of all judged voxels (global)."""
    voxels = tf.cast(tf.reduce_prod(tf.shape(on_real)[1:]), tf.float32)
    scale = 2.0 * tf.cast(total, tf.float32) * voxels
    real_yes = tf.cast(on_real > 0.5, tf.float32)
    fake_yes = tf.cast(on_fake > 0.5, tf.float32)
    return {
        f"tt_{term}_tp": tf.reduce_sum(real_yes) / scale,
        f"tt_{term}_fn": tf.reduce_sum(1.0 - real_yes) / scale,
        f"tt_{term}_fp": tf.reduce_sum(fake_yes) / scale,
        f"tt_{term}_tn": tf.reduce_sum(1.0 - fake_yes) / scale,
    }


