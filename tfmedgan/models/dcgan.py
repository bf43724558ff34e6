"""Seed 003 recipe: DCGAN on 2D brain slices (BCE from logits, simultaneous G and D updates)."""

from __future__ import annotations


import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses
from tfmedgan.config import DCGANConfig
from tfmedgan.engine.distribute import average_loss, global_batch_size, replica_slice
from tfmedgan.engine.launch import launch
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import save_generated
from tfmedgan.errors import TfmedganError
from tfmedgan.models.base import SliceGANRecipe
from tfmedgan.networks import dcgan as networks


class DCGANRecipe(SliceGANRecipe):
    """Networks, optimizers and train step of the seed-003 DCGAN.

    One step, as the original ``train_step``: fake = G(z); D sees the real batch and the fake
    batch in training mode; D loss = BCE(1, D(real)) + BCE(0, D(fake)); G loss = BCE(1, D(fake));
    both networks are updated from that single forward pass. Adam G 2e-4 / D 1e-4, beta_1 0.9.
    """

    config: DCGANConfig

    def prepare_data(self, num_replicas: int = 1) -> None:
        config = self.config
        if not config.data_dirs:
            raise TfmedganError("no data folder given (or use --sample-data)")
        self.plan_slices(config.data_dirs, num_replicas)

    def build(self, num_replicas: int = 1) -> None:
        config = self.config
        sync = num_replicas > 1
        self.networks = {
            "generator": networks.build_generator(config.resolution, config.latent, config.channels, sync),
            "discriminator": networks.build_discriminator(config.resolution, config.channels, config.dropout, sync),
        }
        self.optimizers = {
            "generator": wrap_optimizer(keras.optimizers.Adam(config.lr_g, beta_1=config.beta_1), config.precision),
            "discriminator": wrap_optimizer(keras.optimizers.Adam(config.lr_d, beta_1=config.beta_1), config.precision),
        }
        self.fixed_latents = tf.random.stateless_normal((config.n_samples, config.latent), seed=(config.seed, 7))

    def build_networks_only(self) -> None:
        self.build()

    def optimizer_variables(self) -> dict[str, list]:
        return {name: self.networks[name].trainable_variables for name in self.optimizers}

    def train_step(self, batch: tf.Tensor, step: tf.Tensor) -> dict[str, tf.Tensor]:
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        g_opt, d_opt = self.optimizers["generator"], self.optimizers["discriminator"]
        total = global_batch_size(tf.shape(batch)[0])
        latents = replica_slice(tf.random.stateless_normal((total, self.config.latent), seed=self.noise_seed(step)))
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(latents, training=True)
            real_logits = discriminator(batch, training=True)
            fake_logits = discriminator(fake, training=True)
            d_loss = average_loss(losses.bce_with_logits(real_logits, 1.0), total) + average_loss(
                losses.bce_with_logits(fake_logits, 0.0), total
            )
            g_loss = average_loss(losses.bce_with_logits(fake_logits, 1.0), total)
            d_scaled, g_scaled = scale_loss(d_opt, d_loss), scale_loss(g_opt, g_loss)
        apply_gradients(g_opt, g_tape, g_scaled, generator.trainable_variables)
        apply_gradients(d_opt, d_tape, d_scaled, discriminator.trainable_variables)
        return {"d_loss": d_loss, "g_loss": g_loss}

    def sample_images(self) -> np.ndarray:
        return self.networks["generator"](self.fixed_latents, training=False).numpy()

    def on_train_end(self, run_dir: RunDirectory) -> None:
        save_generated(self.sample_images(), run_dir.path / "generated")


def train(config: DCGANConfig, run_dir: str | None = None, **kwargs) -> tuple[RunDirectory, dict]:
    """Train a DCGAN from ``config``; ``run_dir`` resumes an existing run. Returns (run dir, summary)."""
    return launch(DCGANRecipe(config), resume=run_dir, **kwargs)
