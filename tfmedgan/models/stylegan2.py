"""Seed 004 recipe: the simplified residual StyleGAN2 on 2D brain slices.

The networks are :func:`tfmedgan.networks.stylegan2.build_generator` (output skips, pixel norm) and
:func:`~tfmedgan.networks.stylegan2.build_discriminator` (residual blocks blended with a fade-in
``alpha``, minibatch standard deviation, a logit). This module adds what the original ``train.py``
did around them, on the shared engine:

* **fade-in**: ``alpha = epoch / fade_in_base`` set at the start of every epoch (clipped to [0, 1]
  unless ``clip_alpha`` is off, the original did not clip). alpha lives in a ``tf.Variable`` that
  is checkpointed with the run and fed to the discriminator as a ``[1, 1]`` tensor, so the
  compiled step never retraces when it changes; the engine logs it to ``losses.csv`` and Neptune.
* **BCE** (the original): per batch one discriminator step (fake = G(z) in inference mode; D sees
  the real and the fake batch in two separate training-mode calls; D loss = BCE(1, D(real)) +
  BCE(0, D(fake))), then one generator step with fresh latents (G in training mode, D in
  inference mode; G loss = BCE(1, D(G(z)))). Adam(lr, beta_1) for both networks.
* **WGAN-GP** (the variant the authors tried and reverted): ``n_critic`` critic steps per
  generator step, each on the same real batch with fresh latents; critic loss = mean(D(fake)) -
  mean(D(real)) + ``gp_weight`` * GP; generator loss = -mean(D(G(z))).

Every random input is drawn from a stateless seed that depends only on (seed, step, salt), so an
interrupted and resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses
from tfmedgan.config import StyleGAN2Config
from tfmedgan.engine.distribute import average_loss, global_batch_size, replica_slice
from tfmedgan.engine.launch import launch
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import save_generated
from tfmedgan.errors import TfmedganError
from tfmedgan.models.base import SliceGANRecipe
from tfmedgan.networks import stylegan2 as networks

__all__ = ["StyleGAN2Recipe", "fade_in_alpha", "gradient_penalty", "train"]

#: Minibatch standard deviation group size of the discriminator (4 in the original).
GROUP_SIZE = 4
#: Dropout rate of the discriminator's residual blocks (0.3 in the original).
DISCRIMINATOR_DROPOUT = 0.3

# Salts of the stateless random draws of one step (each draw gets its own stream; < 1000).
_SALT_GENERATOR_LATENTS = 0


def _salt_critic_latents(index: int) -> int:
    return 1 + 2 * index


def _salt_interpolation(index: int) -> int:
    return 2 + 2 * index


def fade_in_alpha(epoch: int, fade_in_base: float, clip: bool = True) -> float:
    """The discriminator's fade-in weight of an epoch: ``epoch / fade_in_base``.

    Args:
        epoch: 0-based epoch.
        fade_in_base: the divisor (positive).
        clip: clip to [0, 1]; the original did not, so after ``fade_in_base`` epochs its conv
            path got a negative weight ``1 - alpha``.

    Returns:
        alpha as a Python float.

    Example:
        >>> [fade_in_alpha(e, 2.0) for e in range(4)]
        [0.0, 0.5, 1.0, 1.0]
    """
    value = epoch / float(fade_in_base)
    return float(min(max(value, 0.0), 1.0)) if clip else float(value)


def _group_ok(size: int) -> bool:
    """Whether a batch of ``size`` suits the minibatch standard deviation (groups of min(4, size))."""
    return size > 0 and size % min(GROUP_SIZE, size) == 0


def gradient_penalty(
    critic: Callable[[tf.Tensor], tf.Tensor],
    real: tf.Tensor,
    fake: tf.Tensor,
    weights: tf.Tensor,
) -> tf.Tensor:
    """Per-example WGAN-GP penalty ``(||grad_x critic(x_hat)||_2 - 1)^2``.

    ``x_hat = real + weights * (fake - real)``; the gradient norm is taken over every non-batch
    axis (H, W, C). Call it inside the critic's gradient tape: the penalty is differentiable
    with respect to the critic's weights (second-order gradients).

    Args:
        critic: maps images [N, H, W, C] to outputs [N, 1] (or [N]).
        real: real images [N, H, W, C].
        fake: generated images of the same shape.
        weights: interpolation weights [N, 1, 1, 1] (Gulrajani et al.: Uniform[0, 1]).

    Returns:
        The penalty per example, shape [N] (float32); reduce with
        :func:`tfmedgan.engine.distribute.average_loss`.

    Example:
        >>> w = tf.fill((1, 2, 2, 1), 0.25)  # critic(x) = sum(w * x): gradient norm 0.5 everywhere
        >>> critic = lambda x: tf.reduce_sum(w * x, axis=[1, 2, 3])
        >>> x = tf.zeros((3, 2, 2, 1))
        >>> gradient_penalty(critic, x, x, tf.zeros((3, 1, 1, 1))).numpy().tolist()
        [0.25, 0.25, 0.25]
    """
    real = tf.cast(real, tf.float32)
    fake = tf.cast(fake, tf.float32)
    interpolated = real + tf.cast(weights, tf.float32) * (fake - real)
    with tf.GradientTape() as tape:
        tape.watch(interpolated)
        outputs = tf.cast(critic(interpolated), tf.float32)
    gradients = tape.gradient(outputs, interpolated)
    squared = tf.reduce_sum(tf.square(tf.reshape(gradients, (tf.shape(gradients)[0], -1))), axis=1)
    norms = tf.sqrt(squared + 1e-12)
    return tf.square(norms - 1.0)


class StyleGAN2Recipe(SliceGANRecipe):
    """Data, networks, optimizers and train step of the seed-004 simplified residual StyleGAN2.

    Args:
        config: a :class:`~tfmedgan.config.StyleGAN2Config`.

    Example:
        >>> from tfmedgan.config import StyleGAN2Config
        >>> recipe = StyleGAN2Recipe(StyleGAN2Config(resolution=32, g_input_res=4, g_init_filters=32,
        ...                                          d_final_res=4, d_input_filters=8, latent=8, batch=4))
        >>> recipe.build_networks_only()
        >>> recipe.on_epoch_begin(10)
        {'alpha': 0.25}
    """

    config: StyleGAN2Config

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        """List and check the images, decide on the last partial batch, set ``steps_per_epoch``.

        The last partial batch of an epoch is dropped when its size is not divisible by the
        minibatch standard deviation group ``min(4, size)`` (e.g. 5 or 6 images; the original
        would crash there) and always when training on several replicas (every replica then
        gets an equal share). With several replicas each replica's share must itself suit the
        minibatch standard deviation. Note that the statistic is then computed per replica, so a
        mirrored step is not numerically identical to a single-device step.
        """
        config = self.config
        if not config.data_dir:
            raise TfmedganError("no data folder given (or use --sample-data)")
        batch = config.batch
        if num_replicas > 1 and batch % num_replicas == 0 and not _group_ok(batch // num_replicas):
            raise TfmedganError(
                f"--batch {batch} gives {batch // num_replicas} images per replica, which is not divisible "
                f"by the minibatch-stddev group min({GROUP_SIZE}, {batch // num_replicas})"
            )
        self.plan_slices([config.data_dir], num_replicas, drop_partial=True)
        remainder = len(self.files) % batch
        if num_replicas == 1 and remainder and _group_ok(remainder):  # a partial batch the network can take
            self.drop_remainder = False
            self.steps_per_epoch = -(-len(self.files) // batch)

    # -- networks --------------------------------------------------------------------------------
    def build(self, num_replicas: int = 1) -> None:
        config = self.config
        self.networks = {
            "generator": networks.build_generator(
                resolution=config.resolution,
                latent_dim=config.latent,
                channels=config.channels,
                input_resolution=config.g_input_res,
                initial_filters=config.g_init_filters,
                pixel_norm_axis=config.pixel_norm_axis,
                name="generator",
            ),
            "discriminator": networks.build_discriminator(
                resolution=config.resolution,
                channels=config.channels,
                final_resolution=config.d_final_res,
                input_filters=config.d_input_filters,
                minibatch_std_mode=config.minibatch_std,
                dropout_rate=DISCRIMINATOR_DROPOUT,
                name="discriminator",
                group_size=GROUP_SIZE,
            ),
        }
        self.optimizers = {
            name: wrap_optimizer(keras.optimizers.Adam(learning_rate=config.lr, beta_1=config.beta), config.precision)
            for name in ("generator", "discriminator")
        }
        self.alpha = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="fade_in_alpha")
        self.fixed_latents = tf.random.stateless_normal((config.val, config.latent), seed=(config.seed, 7))

    def build_networks_only(self) -> None:
        self.build()

    def optimizer_variables(self) -> dict[str, list]:
        return {name: self.networks[name].trainable_variables for name in self.optimizers}

    def state_variables(self) -> list[tf.Variable]:
        """The fade-in alpha (checkpointed so a resumed run knows it before its first epoch hook)."""
        return [self.alpha]

    # -- training --------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        value = fade_in_alpha(epoch, self.config.fade_in_base, self.config.clip_alpha)
        self.alpha.assign(value)
        return {"alpha": value}

    def _alpha(self) -> tf.Tensor:
        return tf.reshape(tf.convert_to_tensor(self.alpha), (1, 1))

    def _latents(self, total: tf.Tensor, step: tf.Tensor, salt: int) -> tf.Tensor:
        draw = tf.random.stateless_normal(tf.stack([total, self.config.latent]), seed=self.noise_seed(step, salt))
        return replica_slice(draw)

    def discriminator_step(self, real: tf.Tensor, step: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
        """One BCE discriminator update on a real batch; returns the D loss before the update."""
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        optimizer = self.optimizers["discriminator"]
        alpha = self._alpha()
        fake = generator(self._latents(total, step, _salt_critic_latents(0)), training=False)
        with tf.GradientTape() as tape:
            real_logits = discriminator([real, alpha], training=True)
            fake_logits = discriminator([fake, alpha], training=True)
            loss = average_loss(losses.bce_with_logits(real_logits, 1.0), total) + average_loss(
                losses.bce_with_logits(fake_logits, 0.0), total
            )
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, discriminator.trainable_variables)
        return loss

    def critic_step(
        self, real: tf.Tensor, step: tf.Tensor, total: tf.Tensor, index: int = 0
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One WGAN-GP critic update (critic step ``index`` of this training step).

        Returns:
            (critic loss including the weighted penalty, the unweighted penalty), both as means
            over the global batch, computed before the update.
        """
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        optimizer = self.optimizers["discriminator"]
        alpha = self._alpha()
        fake = generator(self._latents(total, step, _salt_critic_latents(index)), training=False)
        # Interpolation weights ~ Uniform[0, 1] (Gulrajani et al.); the seed's variant drew Normal(0, 1).
        weights = replica_slice(
            tf.random.stateless_uniform(tf.stack([total, 1, 1, 1]), seed=self.noise_seed(step, _salt_interpolation(index)))
        )
        with tf.GradientTape() as tape:
            real_logits = discriminator([real, alpha], training=True)
            fake_logits = discriminator([fake, alpha], training=True)
            penalty = average_loss(
                gradient_penalty(lambda images: discriminator([images, alpha], training=True), real, fake, weights),
                total,
            )
            loss = (
                average_loss(losses.wasserstein(fake_logits, 1.0), total)
                + average_loss(losses.wasserstein(real_logits, -1.0), total)
                + self.config.gp_weight * penalty
            )
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, discriminator.trainable_variables)
        return loss, penalty

    def generator_step(self, step: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
        """One generator update with fresh latents against the (inference-mode) discriminator."""
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        optimizer = self.optimizers["generator"]
        latents = self._latents(total, step, _SALT_GENERATOR_LATENTS)
        with tf.GradientTape() as tape:
            fake = generator(latents, training=True)
            logits = discriminator([fake, self._alpha()], training=False)
            if self.config.loss == "wgan-gp":
                loss = average_loss(losses.wasserstein(logits, -1.0), total)
            else:
                loss = average_loss(losses.bce_with_logits(logits, 1.0), total)
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, generator.trainable_variables)
        return loss

    def train_step(self, batch: tf.Tensor, step: tf.Tensor) -> dict[str, tf.Tensor]:
        """D update(s) then one G update on this replica's share of a batch.

        Returns:
            ``d_loss`` and ``g_loss`` (for WGAN-GP ``d_loss`` and ``gradient_penalty`` are the
            means over the ``n_critic`` critic steps), each averaged over the global batch.
        """
        total = global_batch_size(tf.shape(batch)[0])
        if self.config.loss == "wgan-gp":
            results = [self.critic_step(batch, step, total, index) for index in range(self.config.n_critic)]
            d_loss = tf.add_n([r[0] for r in results]) / float(len(results))
            penalty = tf.add_n([r[1] for r in results]) / float(len(results))
            g_loss = self.generator_step(step, total)
            return {"d_loss": d_loss, "g_loss": g_loss, "gradient_penalty": penalty}
        d_loss = self.discriminator_step(batch, step, total)
        g_loss = self.generator_step(step, total)
        return {"d_loss": d_loss, "g_loss": g_loss}

    # -- outputs ---------------------------------------------------------------------------------
    def sample_images(self) -> np.ndarray:
        """G(fixed latents) in inference mode: ``val`` images [val, R, R, channels]."""
        return np.asarray(self.networks["generator"](self.fixed_latents, training=False), dtype=np.float32)

    def sample_filename(self, epoch: int) -> str:
        return f"image_at_epoch_{epoch}.png"

    def on_train_end(self, run_dir: RunDirectory) -> None:
        save_generated(self.sample_images(), Path(run_dir.path) / "generated")


def train(config: StyleGAN2Config, run_dir: str | None = None, **kwargs) -> tuple[RunDirectory, dict]:
    """Train the seed-004 StyleGAN2 from ``config``; ``run_dir`` resumes an existing run.

    Args:
        config: the run configuration.
        run_dir: an existing run directory to continue from its newest checkpoint.
        **kwargs: passed to :func:`tfmedgan.engine.launch.launch` (``progress``, ``stop_after_steps``).

    Returns:
        (run directory, summary dict).
    """
    return launch(StyleGAN2Recipe(config), resume=run_dir, **kwargs)
