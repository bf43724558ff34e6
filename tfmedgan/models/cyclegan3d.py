"""3D CycleGAN T1w <-> T2w on whole NIfTI volumes (seed 000: DCAN-Labs/MR-Image-Translation).

ResNet generators and PatchGAN discriminators on whole volumes (:mod:`tfmedgan.networks`), LSGAN,
cycle / supervised / identity L1, image pools and linear learning-rate decay (shared CycleGAN parts
in :mod:`tfmedgan.models.cyclegan`).

One training step (seed 000, ``CycleGAN_3D.py``)::

    fake_B = G_A2B(A), fake_A = G_B2A(B)                (inference, through the image pools)
    D updates: 0.5 LSGAN(D_A(A), 1) + same for D_B, then 0.5 LSGAN(D_A(pool(fake_A)), 0) + same for D_B
               (``discriminator_steps=1``: one update on the sum)
    generator_updates x G update on the same batch:
        1 * LSGAN(D_B(G_A2B(A)), 1) + 1 * LSGAN(D_A(G_B2A(B)), 1)
        + lambda_cycle * [L1(G_B2A(G_A2B(A)), A) + L1(G_A2B(G_B2A(B)), B)]
        + lambda_supervised * [L1(G_A2B(A), B) + L1(G_B2A(B), A)]      (paired data only; L2 with
                                                                          ``supervised_loss='l2'``)
    every identity_every-th step: lambda_identity * [L1(G_A2B(B), B) + L1(G_B2A(A), A)]

Memory of the image pools: ``2 * pool_size * x*y*z * 4`` bytes, e.g. 1.83 GB for the original
50 volumes of 156x188x156 (they are also part of every checkpoint); lower it with ``--pool-size``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses
from tfmedgan.data import nifti as nifti_data
from tfmedgan.engine.config import EngineConfig, option
from tfmedgan.engine.distribute import average_loss, cond_across_replicas, global_batch_size
from tfmedgan.engine.memory import after, checkpointed_call
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.errors import TfmedganError
from tfmedgan.models.cyclegan import CycleGANBase, ImagePool, decayed_learning_rate
from tfmedgan.models.spec import ModelSpec, Positional
from tfmedgan.networks.patchgan import build_patchgan_discriminator
from tfmedgan.networks.resnet_translator import build_resnet_generator, valid_input_shape

#: Network presets of the original code (explicit options win).
PRESETS: dict[str, dict[str, Any]] = {
    "gan_3d": dict(base_filters=64, n_downsamplings=2, n_residual_blocks=8, d_layers=3, norm="zslice"),
    # Not the original's recipe: learns faster per CPU-minute (docs/cyclegan3d.md "Learning at CPU
    # scale"): resize-convolution up-sampling (no checkerboard), 48^3 random crops (about 4x the
    # steps of whole 2 mm volumes), no instance norm (a crop's norm removes the absolute intensity
    # that T1w -> T2w depends on; 22.0 against 18.8 dB in the bench), the output masked to the
    # input's foreground (the generator blurred the brain's edge into the background; +1.8 dB at
    # the same step), the original's Adam 2e-4 (1e-3 made the scores fall).
    "cpu": dict(upsample="resize", patch=[48, 48, 48], norm="none", mask_background=True),
}

#: ``--norm`` values: instance norm per channel, per Z slice (the original's), or none.
NORM_OPTIONS = ("channel", "zslice", "none")
#: ``--skip`` values (see :func:`~tfmedgan.networks.resnet_translator.build_resnet_generator`).
SKIP_OPTIONS = ("none", "add", "concat")
#: ``--supervised-loss`` values: absolute (the original) or squared error.
SUPERVISED_LOSSES = ("l1", "l2")

# salts of the stateless random draws of a step
_SALT_POOL_A, _SALT_POOL_B = 11, 21
# offset of the flips' draws from the crops' (the batch index of the same key)
_FLIP_SALT = 1_000_000_007
# offset of the random affine transforms' draws
_AFFINE_SALT = 2_000_000_011
# offset of the random bias fields' draws
_BIAS_SALT = 3_000_000_019


@dataclasses.dataclass
class CycleGAN3DConfig(EngineConfig):
    """The 3D CycleGAN's options; defaults are the original CycleGAN_3D.py's values.

    Attributes:
        data_dir: folder holding ``trainA``/``trainB`` (and optionally ``testA``/``testB``) NIfTIs.
        shape: model input spatial shape ``[x, y, z]``; empty = the largest training volume shape
            rounded up to a shape the generator accepts. Given shapes are rounded up the same way.
        norm: instance normalisation ``channel`` (per channel, intended), ``zslice`` (per index
            of the last spatial axis, the original's keras-contrib ``axis=3`` quirk) or ``none``
            (not the original: no normalisation in either network; instance norm of a crop
            removes the absolute intensity that a T1w -> T2w mapping depends on).
        base_filters, n_downsamplings, n_residual_blocks: generator size (original 32, 1, 1).
        preset: ``""``, ``gan_3d`` (the deeper GAN_3D.py networks) or ``cpu`` (not the original:
            ``--upsample resize --patch 48 48 48 --norm none --mask-background`` for CPU-scale runs);
            explicit options win.
        d_layers, d_filters: stride-2 blocks and first-layer filters of the PatchGAN (1, 64).
        lr, beta_1, beta_2: Adam of generators and discriminators.
        decay_epoch: the learning rates fall linearly towards 0 from this epoch to ``epochs``
            (no decay when ``epochs <= decay_epoch``).
        lambda_cycle, lambda_supervised, lambda_identity: loss weights (10, 40, 1); with
            ``lambda_cycle`` 0 the reconstructions are neither computed nor logged.
        edge_weight: weight of the supervised L1 at the brain's outermost voxels (foreground voxels
            with a background neighbour in the generator's input, :func:`tfmedgan.losses.boundary_weights`)
            relative to the others; 1 = uniform (the original). Not the original.
        supervised: add the supervised L1 terms (needs co-registered pairs; ``--unpaired`` = off).
        supervised_loss: the supervised terms' distance: ``l1`` (the original) or ``l2`` (squared
            error: its minimiser is the conditional mean, which PSNR rewards where the truth is
            ambiguous; the L1's is the median). Not the original.
        identity_every: identity L1 update every N steps (0 = never).
        generator_updates: generator updates per discriminator update (2).
        discriminator_steps: discriminator updates per iteration: 2 (the original: one on the real
            volumes, then one on the pooled fakes) or 1 (one update on both).
        pool_size: history of generated volumes per domain shown to the discriminators (50).
        upsample: generator up-sampling, ``transposed`` (the original) or ``resize`` (nearest x2
            + 3-wide convolution, the original's disabled resize-convolution path; no checkerboard).
        mask_background: wrap each generator in :class:`~tfmedgan.layers.InputBackgroundMask`: its
            output is -1 wherever its input is -1, the background of a skull-stripped volume (exact
            zeros) after scaling. Not the original; adds no weights. The generator then need not
            draw the sharp step from the brain's edge to the background, where the original's
            blurs (docs/cyclegan3d.md).
        skip: a full-resolution skip from each generator's stem to its head: ``none`` (the
            original), ``add`` (no weights added) or ``concat`` (the head convolution's kernel
            takes twice the channels). Not the original.
        patch: train on random crops of this size ``[x, y, z]`` (the same crop of A and B) instead
            of whole volumes; empty = whole volumes (the original). Inference stays whole-volume.
        flip_axes: random flips of the training pairs (A and B alike): along each listed spatial
            axis (0, 1, 2) with probability 1/2, drawn from the seed, the epoch and the batch (a
            resumed epoch repeats them); empty = none (the original). Not the original.
        affine_degrees: random affine augmentation of the training pairs (A and B alike): a
            rotation of up to this many degrees about each axis (0 with ``affine_scale`` 0 = off,
            the original). The crop (or the whole volume) is resampled linearly around its centre
            from the whole volume; see :func:`random_affine_crop_pair`. Not the original.
        affine_scale: random scale of up to this fraction per axis (e.g. 0.05 = +-5 %).
        affine_probability: the fraction of training pairs so transformed; the rest stay as read
            (linear resampling smooths the noise, which the test volumes keep).
        bias_field: random smooth multiplicative bias fields on the training volumes: each volume
            of a pair gets its own field ``exp(a * f)``, ``f`` smooth with unit deviation and ``a``
            uniform in [0, bias_field] (0 = off, the original); see
            :func:`random_bias_field_pair`. Not the original.
        recompute: gradient checkpointing of the generators: their activations are recomputed
            in the backward pass instead of kept (less memory, ~1.3-2.2x the step time).
    """

    model = "cyclegan3d"
    #: Runs made before --discriminator-steps existed trained with one update on the summed loss.
    older_run_values = {"discriminator_steps": 1}
    data_dir: str = ""
    shape: list[int] = option(help="model input shape X Y Z (rounded up to a valid shape; default: largest "
                              "training volume, rounded up)", nargs=3, type=int, metavar=("X", "Y", "Z"),
                              default_factory=list)
    norm: str = option("channel", "instance norm per channel, per Z slice (the original), or none (keeps absolute "
                       "intensities)", choices=NORM_OPTIONS)
    base_filters: int = option(32, "generator filters of the first convolution")
    n_downsamplings: int = option(1, "generator down-/up-sampling stages")
    n_residual_blocks: int = option(1, "generator residual blocks")
    preset: str = ""
    d_layers: int = option(1, "PatchGAN stride-2 blocks")
    d_filters: int = option(64, "PatchGAN filters of the first convolution")
    lr: float = option(2e-4, "Adam learning rate of generators and discriminators")
    beta_1: float = option(0.5, "Adam beta_1")
    beta_2: float = option(0.999, "Adam beta_2")
    epochs: int = option(150, "number of epochs", group="training engine")
    decay_epoch: int = option(75, "linear learning-rate decay to 0 from this epoch")
    batch: int = option(1, "global batch size", group="training engine")
    lambda_cycle: float = option(10.0, "weight of the cycle L1 losses (0: the reconstructions are not computed)")
    lambda_supervised: float = option(40.0, "weight of the supervised L1 losses (paired data)")
    lambda_identity: float = option(1.0, "weight of the identity L1 losses")
    edge_weight: float = option(1.0, "weight of the supervised L1 at the foreground voxels next to the background, "
                                "relative to the rest (1: uniform, the original); not the original")
    supervised_loss: str = option("l1", "distance of the supervised terms: l1 (the original) or l2 (squared error; "
                                  "predicts the conditional mean, which PSNR rewards); not the original",
                                  choices=SUPERVISED_LOSSES)
    supervised: bool = option(True, "unpaired data: no supervised loss, no pair checks, unequal counts allowed",
                              negative="--unpaired")
    pair_by_order: bool = option(False, "pair trainA/trainB by sorted position only, as the original did; otherwise "
                                 "the names less their modality suffix must match")
    identity_every: int = option(10, "identity update every N steps (0: never)")
    generator_updates: int = option(2, "generator updates per discriminator update")
    discriminator_steps: int = option(2, "discriminator updates per iteration: 2 = one on the real volumes, then one "
                                      "on the pooled fakes (the original's train_on_batch calls); 1 = one update on "
                                      "both", choices=(1, 2))
    pool_size: int = option(50, "fake-volume history per domain (memory: 2 x N volumes)")
    upsample: str = option("transposed", "generator up-sampling: transposed convolutions (the original) or resize "
                           "(nearest x2 + convolution; no checkerboard)", choices=("transposed", "resize"))
    mask_background: bool = option(False, "set the generators' output to the background wherever their input is "
                                   "background (exact zeros of skull-stripped volumes); not the original")
    skip: str = option("none", "full-resolution skip from the generators' stem to their head: none (the original), "
                       "add (no weights added) or concat; not the original", choices=SKIP_OPTIONS)
    patch: list[int] = option(help="train on random crops X Y Z of the volumes (same crop of A and B; rounded up to "
                              "a valid shape); default: whole volumes, as the original", nargs=3, type=int,
                              metavar=("X", "Y", "Z"), default_factory=list)
    flip_axes: list[int] = option(help="flip each training pair (A and B alike) along each of these spatial axes with "
                                  "probability 1/2, e.g. 0 for left-right in RAS volumes; default: no flips, as the "
                                  "original", nargs="+", type=int, metavar="AXIS", default_factory=list)
    affine_degrees: float = option(0.0, "random affine augmentation of the training pairs (A and B alike): rotations "
                                   "of up to this many degrees about each axis; 0 with --affine-scale 0: none, as "
                                   "the original")
    affine_scale: float = option(0.0, "random affine augmentation: scale each axis by up to this fraction (0.05 = "
                                 "+-5 per cent); not the original")
    affine_probability: float = option(0.5, "fraction of the training pairs that get the random affine transform "
                                       "(linear resampling smooths their noise)")
    bias_field: float = option(0.0, "random smooth multiplicative bias fields on the training volumes, each volume of "
                               "a pair its own, of log-amplitude up to this (e.g. 0.15); 0: none, as the original")
    recompute: bool = option(False, "gradient checkpointing of the generators: ~3x less memory, 1.3-2.2x step time")
    seed: int = option(12346, "random seed (Python, NumPy, TensorFlow)", group="training engine")

    @property
    def network_norm(self) -> str | None:
        """The builders' ``norm`` argument: ``None`` for ``--norm none``."""
        return None if self.norm == "none" else self.norm

    @property
    def generator_arguments(self) -> dict[str, Any]:
        """The :func:`build_resnet_generator` arguments these options give (all but the input
        shape and the name)."""
        return dict(base_filters=self.base_filters, n_downsamplings=self.n_downsamplings,
                    n_residual_blocks=self.n_residual_blocks, norm=self.network_norm, upsample=self.upsample,
                    mask_background=self.mask_background, skip=None if self.skip == "none" else self.skip)

    def validate(self) -> None:
        super().validate()
        if self.norm not in NORM_OPTIONS:
            raise TfmedganError(f"--norm must be channel, zslice or none, got {self.norm!r}")
        if self.preset not in ("", *PRESETS):
            raise TfmedganError(f"--preset must be one of {', '.join(PRESETS)} (or empty), got {self.preset!r}")
        if self.shape and (len(self.shape) != 3 or any(int(size) < 1 for size in self.shape)):
            raise TfmedganError(f"--shape needs three positive sizes X Y Z, got {self.shape}")
        self.check_at_least(1, "base_filters", "d_layers", "d_filters", "generator_updates")
        if self.upsample not in ("transposed", "resize"):
            raise TfmedganError(f"--upsample must be transposed or resize, got {self.upsample!r}")
        if self.skip not in SKIP_OPTIONS:
            raise TfmedganError(f"--skip must be one of {', '.join(SKIP_OPTIONS)}, got {self.skip!r}")
        if self.skip != "none" and self.n_downsamplings < 1:
            raise TfmedganError(f"--skip {self.skip} needs --n-downsamplings >= 1")
        if self.patch and (len(self.patch) != 3 or any(int(size) < 1 for size in self.patch)):
            raise TfmedganError(f"--patch needs three positive sizes X Y Z, got {self.patch}")
        if self.patch and self.norm == "zslice":
            raise TfmedganError("--patch needs --norm channel or none (zslice normalisation ties the network to the Z size)")
        if self.supervised_loss not in SUPERVISED_LOSSES:
            raise TfmedganError(f"--supervised-loss must be l1 or l2, got {self.supervised_loss!r}")
        if not self.edge_weight > 0:
            raise TfmedganError(f"--edge-weight must be > 0, got {self.edge_weight}")
        if any(axis not in (0, 1, 2) for axis in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            raise TfmedganError(f"--flip-axes takes distinct spatial axes among 0 1 2, got {self.flip_axes}")
        if self.discriminator_steps not in (1, 2):
            raise TfmedganError(f"--discriminator-steps must be 1 or 2, got {self.discriminator_steps}")
        if not 0 <= self.affine_degrees <= 45:
            raise TfmedganError(f"--affine-degrees must be between 0 and 45, got {self.affine_degrees}")
        if not 0 <= self.affine_scale < 0.5:
            raise TfmedganError(f"--affine-scale must be in [0, 0.5), got {self.affine_scale}")
        if not 0 < self.affine_probability <= 1:
            raise TfmedganError(f"--affine-probability must be in (0, 1], got {self.affine_probability}")
        if not 0 <= self.bias_field <= 1:
            raise TfmedganError(f"--bias-field must be between 0 and 1, got {self.bias_field}")
        self.check_at_least(0, "n_downsamplings", "n_residual_blocks", "identity_every", "pool_size", "lr",
                            "lambda_cycle", "lambda_supervised", "lambda_identity", "decay_epoch")


class CycleGAN3DRecipe(CycleGANBase):
    """Seed 000: ResNet generators and 1-layer PatchGANs on whole NIfTI volumes, LSGAN.

    Example:
        >>> recipe = CycleGAN3DRecipe(CycleGAN3DConfig(data_dir="data/MR_crop", shape=[160, 192, 160]))  # doctest: +SKIP
    """

    config: CycleGAN3DConfig

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
        shape = tuple(self.training_shape()) + (1,)
        self.pools = {
            "a": ImagePool(self.config.pool_size, shape, "pool_a"),
            "b": ImagePool(self.config.pool_size, shape, "pool_b"),
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
    def supervised_loss(self, fake: tf.Tensor, real: tf.Tensor, source: tf.Tensor) -> tf.Tensor:
        """Per-example L1 (``--supervised-loss l2``: squared error) of a translation against its
        paired truth; with ``--edge-weight`` the voxels at the edge of the ``source`` volume's
        foreground weigh more."""
        weight = float(self.config.edge_weight)
        if self.config.supervised_loss == "l2":
            return losses.squared_error(fake, real, None if weight == 1.0 else losses.boundary_weights(source, weight))
        if weight == 1.0:
            return losses.l1(fake, real)
        return losses.weighted_l1(fake, real, losses.boundary_weights(source, weight))

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

        def d_losses(images_a: tf.Tensor, images_b: tf.Tensor, target: float) -> tuple[tf.Tensor, tf.Tensor]:
            return (w["discriminator"] * average_loss(self.adversarial_loss(d_a(images_a, training=True), target), total),
                    w["discriminator"] * average_loss(self.adversarial_loss(d_b(images_b, training=True), target), total))

        if int(self.config.discriminator_steps) == 2:
            # the original: one update on the real volumes, then one on the pooled fakes
            with tf.GradientTape() as tape:
                real_loss_a, real_loss_b = d_losses(real_a, real_b, 1.0)
                d_scaled = scale_loss(d_opt, real_loss_a + real_loss_b)
            apply_gradients(d_opt, tape, d_scaled, d_vars)
            with tf.GradientTape() as tape:
                fake_loss_a, fake_loss_b = d_losses(pooled_a, pooled_b, 0.0)
                d_scaled = scale_loss(d_opt, fake_loss_a + fake_loss_b)
            apply_gradients(d_opt, tape, d_scaled, d_vars)
        else:
            with tf.GradientTape() as tape:
                real_loss_a, real_loss_b = d_losses(real_a, real_b, 1.0)
                fake_loss_a, fake_loss_b = d_losses(pooled_a, pooled_b, 0.0)
                d_scaled = scale_loss(d_opt, real_loss_a + real_loss_b + fake_loss_a + fake_loss_b)
            apply_gradients(d_opt, tape, d_scaled, d_vars)
        d_a_loss, d_b_loss = real_loss_a + fake_loss_a, real_loss_b + fake_loss_b

        # generators, generator_updates times on the same batch
        # --lambda-cycle 0: the reconstructions would only be logged, so they are not computed (2 of the 4
        # generator passes of an update; a step then costs 0.53x, measured in float32)
        cycled = w["cycle"] != 0.0
        a2b, b2a = self.generator_calls["generator_a2b"], self.generator_calls["generator_b2a"]
        for _ in range(int(self.config.generator_updates)):
            with tf.GradientTape() as tape:
                fake_b = a2b(real_a)
                fake_a = b2a(then(real_b, fake_b))
                adv_a = average_loss(self.adversarial_loss(d_a(fake_a, training=True), 1.0), total)
                adv_b = average_loss(self.adversarial_loss(d_b(fake_b, training=True), 1.0), total)
                g_loss = w["adversarial"] * (adv_a + adv_b)
                if cycled:
                    rec_a = b2a(then(fake_b, fake_a))
                    rec_b = a2b(then(fake_a, rec_a))
                    cycle_a = average_loss(losses.l1(rec_a, real_a), total)
                    cycle_b = average_loss(losses.l1(rec_b, real_b), total)
                    g_loss += w["cycle"] * (cycle_a + cycle_b)
                if w["supervised"]:
                    supervised_a = average_loss(self.supervised_loss(fake_a, real_a, real_b), total)
                    supervised_b = average_loss(self.supervised_loss(fake_b, real_b, real_a), total)
                    g_loss += w["supervised"] * (supervised_a + supervised_b)
                g_scaled = scale_loss(g_opt, g_loss)
            apply_gradients(g_opt, tape, g_scaled, g_vars)

        result = {"d_a": d_a_loss, "d_b": d_b_loss, "g": g_loss, "adv_a": adv_a, "adv_b": adv_b}
        if cycled:
            result.update(cycle_a=cycle_a, cycle_b=cycle_b)
        if w["supervised"]:
            result.update(supervised_a=supervised_a, supervised_b=supervised_b)
        every = int(self.config.identity_every)
        if every:
            def identity_update(real_a: tf.Tensor, real_b: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
                with tf.GradientTape() as tape:
                    same_b = a2b(real_b)
                    same_a = b2a(then(real_a, same_b))
                    loss = w["identity"] * (
                        average_loss(losses.l1(same_b, real_b), total) + average_loss(losses.l1(same_a, real_a), total)
                    )
                    scaled = scale_loss(g_opt, loss)
                apply_gradients(g_opt, tape, scaled, g_vars)
                return loss

            # the branch applies gradients: under a strategy the condition is taken across replicas
            result["identity"] = cond_across_replicas(
                tf.equal(tf.math.floormod(tf.cast(step, tf.int64), every), 0), identity_update,
                lambda real_a, real_b, total: tf.constant(0.0), args=(real_a, real_b, total),
            )
        return result


    # -- data ------------------------------------------------------------------------------------
    def _train_pairs(self) -> list[nifti_data.Pair]:
        if not self.config.data_dir:
            raise TfmedganError("no data folder given: DATA_DIR must hold trainA and trainB")
        if not hasattr(self, "_pairs"):
            self._pairs = nifti_data.paired_files(self.config.data_dir, "train", paired=self.config.supervised,
                                                   pair_by_order=self.config.pair_by_order)
        return self._pairs

    def _test_pairs(self) -> list[nifti_data.Pair]:
        data = Path(self.config.data_dir)
        if (data / "testA").is_dir() and (data / "testB").is_dir():
            return nifti_data.paired_files(data, "test", paired=self.config.supervised, pair_by_order=self.config.pair_by_order)
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

    def training_shape(self) -> tuple[int, int, int]:
        """The shape of a training batch: ``--patch`` (rounded up to a valid shape, at most the
        model shape) or the model shape."""
        shape = self.model_shape()
        if not self.config.patch:
            return shape
        patch = valid_input_shape([int(size) for size in self.config.patch], self.config.n_downsamplings)
        return tuple(min(int(p), int(s)) for p, s in zip(patch, shape))

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
        if config.flip_axes:
            self._warn_flips_across_the_midline(pairs[0][0])
        # The original's Sequence had int(count / batch) batches: a last partial batch is dropped.
        self.drop_remainder = True
        if num_replicas > 1 and config.batch % num_replicas:
            raise TfmedganError(f"--batch {config.batch} is not divisible by the {num_replicas} replicas")
        if len(pairs) < config.batch:
            raise TfmedganError(f"{len(pairs)} volume pairs are fewer than one batch of {config.batch}")
        self.steps_per_epoch = len(pairs) // config.batch

    def _warn_flips_across_the_midline(self, path: str | Path) -> None:
        """Warn when --flip-axes names an axis that is not left-right in the training volumes
        (a flip along it turns the anatomy upside down or back to front)."""
        codes = nifti_data.header_axis_codes(path)
        for axis in self.config.flip_axes:
            if codes[axis] not in ("L", "R"):
                print(f"warning: --flip-axes {axis}: axis {axis} of the training volumes runs towards {codes[axis]} "
                      f"(orientation {''.join(codes)}), not left-right: its flips mirror the anatomy "
                      f"{'top to bottom' if codes[axis] in ('S', 'I') else 'front to back'}", file=sys.stderr)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        config = self.config
        dataset = nifti_data.volume_pair_dataset(
            self._train_pairs(), self.model_shape(), config.batch, config.seed, epoch,
            drop_remainder=getattr(self, "drop_remainder", True),
        )
        affine = config.affine_degrees > 0 or config.affine_scale > 0
        if config.patch or config.flip_axes or affine or config.bias_field:
            def augment(index: tf.Tensor, pair: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
                volume_a, volume_b = pair
                if config.bias_field:  # on the whole volume, so the field is as smooth as a scanner's
                    volume_a, volume_b = random_bias_field_pair(volume_a, volume_b, config.bias_field,
                                                                (config.seed, epoch), index)
                if affine:
                    volume_a, volume_b = random_affine_crop_pair(
                        volume_a, volume_b, self.training_shape(), config.affine_degrees, config.affine_scale,
                        config.affine_probability, (config.seed, epoch), index)
                elif config.patch:
                    volume_a, volume_b = random_crop_pair(volume_a, volume_b, self.training_shape(), (config.seed, epoch), index)
                if config.flip_axes:
                    volume_a, volume_b = random_flip_pair(volume_a, volume_b, config.flip_axes, (config.seed, epoch), index)
                return volume_a, volume_b

            dataset = dataset.enumerate().map(augment)
        return dataset.skip(skip_batches)

    def sample_pair(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_sample"):
            files = getattr(self, "_sample_files", None) or (self._test_pairs() or self._train_pairs())[0]
            shape = self.model_shape()
            self._sample = (nifti_data.load_model_input(files[0], shape), nifti_data.load_model_input(files[1], shape))
        return self._sample

    # -- validation ------------------------------------------------------------------------------
    validation_metric = ("a2b_ssim", "max")
    best_networks = ("generator_a2b", "generator_b2a")
    averaged_networks = ("generator_a2b", "generator_b2a")

    def validate(self, epoch: int, step: int) -> dict[str, float]:
        """MAE, PSNR, SSIM and mutual information of both directions on DATA_DIR/testA, testB
        (in the brain mask, on the training scale; as ``--evaluate``). Empty without a test split."""
        from tfmedgan.inference.volumes import mark_translator, score_pairs

        pairs = self._test_pairs()
        if not pairs:
            return {}
        shape = self.model_shape()
        for name in ("generator_a2b", "generator_b2a"):
            mark_translator(self.networks[name], self.config)
        models = {"A2B": (self.networks["generator_a2b"], shape), "B2A": (self.networks["generator_b2a"], shape)}
        means = [row for row in score_pairs(models, pairs) if row["file"] == "mean"]
        return {f"{row['direction'].lower()}_{key}": float(value) for row in means for key, value in row.items()
                if key not in ("file", "direction")}

    # -- networks --------------------------------------------------------------------------------
    def _network_input_shape(self) -> tuple:
        """Spatial sizes are dynamic (any valid shape at inference) except Z with zslice norm."""
        shape = self.model_shape()
        if self.config.norm == "zslice":
            return (None, None, shape[2], 1)
        return (None, None, None, 1)

    def build_generator(self, name: str) -> keras.Model:
        return build_resnet_generator(self._network_input_shape(), name=name, **self.config.generator_arguments)

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
            self._network_input_shape(), base_filters=config.d_filters, n_layers=config.d_layers, norm=config.network_norm, name=name
        )

    # -- dry run ---------------------------------------------------------------------------------
    def dry_run_extra(self) -> dict[str, Any]:
        estimate = estimate_training_memory(self.config, self.training_shape())
        return {"shape": list(self.model_shape()), "memory_estimate_gib": round(estimate["total"] / 2**30, 3),
                "memory_estimate_parts_gib": {k: round(v / 2**30, 3) for k, v in estimate.items() if k != "total"}}


def _batch_key(seed: tuple[int, int], index: tf.Tensor, offset: int = 0) -> tf.Tensor:
    """The stateless key of a batch's draws: ``(seed[0] * 1,000,003 + seed[1], index + offset)``."""
    return tf.stack([tf.cast(seed[0], tf.int64) * 1_000_003 + tf.cast(seed[1], tf.int64),
                     tf.cast(index, tf.int64) + offset])


def random_crop_pair(volume_a: tf.Tensor, volume_b: tf.Tensor, size: tuple[int, int, int],
                     seed: tuple[int, int], index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The same random crop ``size`` of a batch of A volumes and of B volumes ``[b, x, y, z, 1]``.

    The corner is a stateless draw from ``(seed, index)``: a resumed epoch repeats its crops.

    Args:
        volume_a, volume_b: Batches of equal spatial shape, at least ``size``.
        size: Crop spatial shape.
        seed: Two integers, e.g. ``(config seed, epoch)``.
        index: Index of the batch within the epoch.

    Returns:
        The cropped batches ``[b, *size, 1]``.
    """
    shape = tf.shape(volume_a)
    draws = tf.random.stateless_uniform([3], seed=_batch_key(seed, index), minval=0.0, maxval=1.0)
    limits = tf.cast(shape[1:4] - tf.constant(size, tf.int32) + 1, tf.float32)
    corner = tf.cast(tf.floor(draws * limits), tf.int32)
    begin = tf.concat([[0], corner, [0]], axis=0)
    extent = tf.constant([-1, *size, -1], tf.int32)
    crop_a, crop_b = tf.slice(volume_a, begin, extent), tf.slice(volume_b, begin, extent)
    crop_a.set_shape([volume_a.shape[0], *size, volume_a.shape[-1]])
    crop_b.set_shape([volume_b.shape[0], *size, volume_b.shape[-1]])
    return crop_a, crop_b


def random_flip_pair(volume_a: tf.Tensor, volume_b: tf.Tensor, axes: Sequence[int],
                     seed: tuple[int, int], index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Flip a batch of A volumes and of B volumes ``[b, x, y, z, c]`` alike along each of ``axes``
    (spatial, 0-2) with probability 1/2.

    The draws are stateless from ``(seed, index)``, independent of :func:`random_crop_pair`'s, so
    a resumed epoch repeats its flips.

    Args:
        volume_a, volume_b: Batches of equal shape.
        axes: Spatial axes that may be flipped (0 = x, which is left-right in RAS volumes).
        seed: Two integers, e.g. ``(config seed, epoch)``.
        index: Index of the batch within the epoch.

    Returns:
        The two batches, flipped alike.

    Example:
        >>> a = tf.reshape(tf.range(8.0), (1, 2, 2, 2, 1))
        >>> flipped_a, flipped_b = random_flip_pair(a, a, [0], (1, 0), 0)
        >>> bool(tf.reduce_all(flipped_a == flipped_b))
        True
    """
    draws = tf.random.stateless_uniform([len(axes)], seed=_batch_key(seed, index, _FLIP_SALT), minval=0.0, maxval=1.0)
    for position, axis in enumerate(axes):
        flip = draws[position] < 0.5
        volume_a = tf.where(flip, tf.reverse(volume_a, [int(axis) + 1]), volume_a)
        volume_b = tf.where(flip, tf.reverse(volume_b, [int(axis) + 1]), volume_b)
    return volume_a, volume_b


def _rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """The 3x3 rotation by ``angles`` (radians) about the axes 0, 1 and 2, in that order."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        first, second = [other for other in range(3) if other != axis]
        rotation = np.eye(3)
        rotation[first, first] = rotation[second, second] = np.cos(angle)
        rotation[first, second], rotation[second, first] = -np.sin(angle), np.sin(angle)
        matrix = rotation @ matrix
    return matrix


def affine_resample_pair(volume_a: np.ndarray, volume_b: np.ndarray, matrix: np.ndarray, centre: np.ndarray,
                         size: Sequence[int], background: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample two batches ``[b, x, y, z, c]`` alike on a ``size`` grid: output voxel ``o`` takes
    the linear interpolation of the input at ``centre + matrix @ (o - (size - 1) / 2)``
    (:func:`scipy.ndimage.affine_transform`); outside the input it is ``background``.

    Linear interpolation keeps the background exact: an output voxel is ``background`` only where
    all the input voxels it mixes are, so a skull-stripped pair keeps one mask for A and B.
    """
    from scipy import ndimage

    size = tuple(int(s) for s in size)
    offset = np.asarray(centre, np.float64) - matrix @ ((np.asarray(size, np.float64) - 1.0) / 2.0)
    outputs = []
    for volume in (volume_a, volume_b):
        out = np.empty((volume.shape[0], *size, volume.shape[-1]), np.float32)
        for item in range(volume.shape[0]):
            for channel in range(volume.shape[-1]):
                out[item, ..., channel] = ndimage.affine_transform(
                    volume[item, ..., channel], matrix, offset, output_shape=size, order=1, mode="constant",
                    cval=background)
        outputs.append(out)
    return outputs[0], outputs[1]


def random_affine_crop_pair(volume_a: tf.Tensor, volume_b: tf.Tensor, size: Sequence[int], degrees: float,
                            scale: float, probability: float, seed: tuple[int, int],
                            index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The same random crop ``size`` of a batch of A and of B volumes ``[b, x, y, z, c]``, with
    probability ``probability`` under a random rotation (up to ``degrees`` about each axis) and
    scale (up to ``scale`` per axis) about the crop's centre, resampled linearly from the whole
    volume (so a rotated crop has no empty corners inside the volume).

    The crop's corner is :func:`random_crop_pair`'s draw (the same crops as without the
    transform); the transform's draws are stateless from ``(seed, index)`` too, so a resumed
    epoch repeats them. A batch shares one transform.

    Args:
        volume_a, volume_b: Batches of equal spatial shape, at least ``size``.
        size: Crop spatial shape (the volume's shape: the whole volume about its centre).
        degrees: Largest rotation about each axis, in degrees.
        scale: Largest relative scale change per axis.
        probability: Chance that a batch is transformed; otherwise it is the plain crop.
        seed: Two integers, e.g. ``(config seed, epoch)``.
        index: Index of the batch within the epoch.

    Returns:
        The two batches ``[b, *size, c]``, transformed alike.

    Example:
        >>> a = tf.random.stateless_uniform((1, 12, 12, 12, 1), seed=(1, 2))
        >>> crop_a, crop_b = random_affine_crop_pair(a, a, (8, 8, 8), 10.0, 0.05, 1.0, (1, 0), 0)
        >>> crop_a.shape, bool(tf.reduce_all(crop_a == crop_b))
        (TensorShape([1, 8, 8, 8, 1]), True)
    """
    size = tuple(int(s) for s in size)
    shape = tf.shape(volume_a)
    corner_draws = tf.random.stateless_uniform([3], seed=_batch_key(seed, index), minval=0.0, maxval=1.0)
    limits = tf.cast(shape[1:4] - tf.constant(size, tf.int32) + 1, tf.float32)
    corner = tf.floor(corner_draws * limits)
    centre = tf.cast(corner, tf.float64) + (tf.constant(size, tf.float64) - 1.0) / 2.0
    draws = tf.random.stateless_uniform([7], seed=_batch_key(seed, index, _AFFINE_SALT), minval=-1.0, maxval=1.0,
                                        dtype=tf.float64)

    def transform(volume_a, volume_b, centre, draws):
        apply = (draws[6] + 1.0) / 2.0 < probability
        angles = np.deg2rad(degrees) * draws[:3] if apply else np.zeros(3)
        factors = 1.0 + scale * draws[3:6] if apply else np.ones(3)
        # output -> input coordinates: rotate, then divide by the scale (a scale > 1 enlarges)
        matrix = _rotation_matrix(angles) @ np.diag(1.0 / factors)
        if not apply:  # the plain crop, without resampling
            begin = np.round(centre - (np.asarray(size) - 1.0) / 2.0).astype(int)
            window = (slice(None), *(slice(b, b + s) for b, s in zip(begin, size)), slice(None))
            return volume_a[window].astype(np.float32), volume_b[window].astype(np.float32)
        return affine_resample_pair(volume_a, volume_b, matrix, centre, size)

    crop_a, crop_b = tf.numpy_function(transform, [volume_a, volume_b, centre, draws], [tf.float32, tf.float32],
                                       stateful=False)
    crop_a.set_shape([volume_a.shape[0], *size, volume_a.shape[-1]])
    crop_b.set_shape([volume_b.shape[0], *size, volume_b.shape[-1]])
    return crop_a, crop_b


def random_bias_field_pair(volume_a: tf.Tensor, volume_b: tf.Tensor, strength: float, seed: tuple[int, int],
                           index: tf.Tensor, background: float = -1.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Multiply the foreground of every volume of a batch of A and of B volumes ``[b, x, y, z, c]``
    by its own random smooth bias field.

    A volume ``x`` in [-1, 1] becomes ``(x + 1) * exp(a * f) - 1``: ``f`` is a smooth random field
    of unit deviation (:func:`tfmedgan.data.samples.template.smooth_random_field`, 4 bumps per
    axis, as the built-in subjects' own fields) and ``a`` is uniform in ``[0, strength]``. The
    background (-1) stays exact, so ``--mask-background`` sees the same mask. A and B get
    independent fields: the network learns that a smooth intensity change of its input says
    nothing about its output, while the median of a target's field is 1, which leaves an L1
    target's minimiser in place. The draws are stateless from ``(seed, index)``: a resumed epoch
    repeats them. Values above 1 are kept (not clipped).

    Args:
        volume_a, volume_b: Batches scaled to [-1, 1] with the background at ``background``.
        strength: Largest log-amplitude of a field.
        seed: Two integers, e.g. ``(config seed, epoch)``.
        index: Index of the batch within the epoch.
        background: The background value, left unchanged.

    Returns:
        The two batches, each volume times its own field (float32).

    Example:
        >>> a = tf.fill((1, 16, 16, 16, 1), 0.0)
        >>> biased_a, biased_b = random_bias_field_pair(a, a, 0.2, (1, 0), 0)
        >>> bool(tf.reduce_any(biased_a != biased_b)), bool(tf.reduce_all(tf.abs(biased_a) < 0.5))
        (True, True)
    """
    from tfmedgan.data.samples.template import smooth_random_field

    key = tf.random.stateless_uniform([2], seed=_batch_key(seed, index, _BIAS_SALT), minval=0, maxval=2**31 - 1,
                                      dtype=tf.int64)

    def multiply(volume_a, volume_b, key):
        rng = np.random.default_rng([int(k) for k in key])
        outputs = []
        for volume in (volume_a, volume_b):
            out = np.array(volume, np.float32)
            for item in range(out.shape[0]):
                for channel in range(out.shape[-1]):
                    field = np.exp(rng.uniform(0.0, strength) * smooth_random_field(rng, out.shape[1:4], 4))
                    image = out[item, ..., channel]
                    out[item, ..., channel] = np.where(image > background,
                                                       (image - background) * field + background, image)
            outputs.append(out)
        return outputs[0], outputs[1]

    biased_a, biased_b = tf.numpy_function(multiply, [volume_a, volume_b, key], [tf.float32, tf.float32],
                                           stateful=False)
    biased_a.set_shape(volume_a.shape)
    biased_b.set_shape(volume_b.shape)
    return biased_a, biased_b


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
    largest activations, computed in float32 (then two float32 tensors kept per normalisation, plus
    float32 copies of their bfloat16 inputs), and oneDNN's bfloat16 kernels add buffers.
    ``mixed_bfloat16`` is worth it on CPU for speed (2-3x), not for memory. Since session 3 an
    instance norm keeps only its output (closed-form gradient) and is counted so; the peaks the
    constants were fitted to were measured before that change and were not re-measured.

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
        generator = build_resnet_generator(spatial, **config.generator_arguments)
        discriminator = build_patchgan_discriminator(spatial, base_filters=config.d_filters, n_layers=config.d_layers,
                                                     norm=config.network_norm)
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




def _evaluate(run_dir: Path, test_dir: str | None) -> int:
    from tfmedgan.inference.volumes import evaluate_run

    rows, path = evaluate_run(run_dir, test_dir)
    for row in (r for r in rows if r["file"] == "mean"):
        print(f"{row['direction']}: MAE {row['mae']:.4f}  PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  "
              f"MI {row['mutual_information']:.4f}")
    print(f"wrote {path}")
    return 0


def _add_arguments(parser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument("--evaluate", action="store_true",
                       help="score the test volumes after training (with --resume RUN_DIR: evaluate only)")
    group.add_argument("--test-dir", help="folder holding testA/testB for --evaluate (default: DATA_DIR)")


def _before_training(args) -> int | None:
    if args.resume and args.evaluate and not args.dry_run:
        if args.paths:
            raise TfmedganError("with --resume RUN_DIR --evaluate give no DATA_DIR/OUTPUT_DIR: the run's config.json has them")
        return _evaluate(Path(args.resume), args.test_dir)
    return None


def _after_training(args, run_path: Path) -> int:
    return _evaluate(run_path, args.test_dir) if args.evaluate else 0


MODEL = ModelSpec(
    name="cyclegan3d",
    config_class=CycleGAN3DConfig,
    recipe="tfmedgan.models.cyclegan3d:CycleGAN3DRecipe",
    help="3D CycleGAN between two NIfTI domains, e.g. T1w <-> T2w (seed 000)",
    description="Train the 3D CycleGAN on DATA_DIR/trainA and DATA_DIR/trainB (NIfTI volumes, paired by sorted "
    "file name unless --unpaired). Volumes are streamed from disk, centre-padded to the model shape and scaled per "
    "volume to [-1, 1]. With --evaluate, synthetic volumes of DATA_DIR/testA and testB are scored (MAE, PSNR, SSIM, "
    "mutual information in the brain mask) into RUN_DIR/evaluation.csv; '--resume RUN_DIR --evaluate' only "
    "evaluates a trained run.",
    positionals=(Positional("data_dir", "DATA_DIR"), Positional("output_dir", "OUTPUT_DIR")),
    presets=PRESETS,
    generates="volumes",
    add_arguments=_add_arguments,
    before_training=_before_training,
    after_training=_after_training,
)


def train(config: CycleGAN3DConfig, run_dir: str | None = None, **kwargs):
    """Train the 3D CycleGAN from ``config``; ``run_dir`` resumes an existing run."""
    return MODEL.train(config, run_dir=run_dir, **kwargs)
