"""DCGAN on 2D brain MRI slices (seed 003: Amy Zhao's DCGAN on OASIS slices).

BCE from logits, simultaneous generator and discriminator updates; the defaults are the original's
hard-coded values. Networks: :mod:`tfmedgan.networks.dcgan`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses
from tfmedgan.engine.config import EngineConfig, option
from tfmedgan.engine.distribute import average_loss, global_batch_size, replica_slice
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.errors import TfmedganError
from tfmedgan.models.slices import SSIM_COMMAND, SliceRecipe, sample_slices
from tfmedgan.models.spec import ModelSpec, Positional
from tfmedgan.networks import dcgan as networks


#: Named settings (explicit options win). ``demo``: Adam beta_1 0.5 and no discriminator dropout,
#: for the README's 3-minute demo on the built-in slices; measured on 256 slices at 64 px, 520
#: steps: best-match SSIM of 64 fakes 0.31 (faithful defaults: 0.13), 700 steps 0.37 (0.15).
PRESETS: dict[str, dict] = {"demo": {"beta_1": 0.5, "dropout": 0.0, "output_activation": "tanh"}}


@dataclasses.dataclass
class DCGANConfig(EngineConfig):
    """The DCGAN's options; defaults are the original's hard-coded values.

    Attributes:
        data_dirs: folders of PNG/JPEG slices, searched recursively and concatenated.
        resolution: image size (multiple of 8); the original used the OASIS 256 px slices.
        channels: 1 (grayscale) or 3 (RGB).
        latent: latent vector length.
        lr_g, lr_d: Adam learning rates of generator and discriminator.
        beta_1: Adam beta_1 of both optimizers (the original kept Keras' default 0.9).
        dropout: discriminator dropout rate.
        n_samples: images in the per-epoch sample grid (fixed latents).
        output_activation: generator output, ``linear`` (the original) or ``tanh``.
    """

    model = "dcgan"
    data_dirs: list[str] = dataclasses.field(default_factory=list)
    resolution: int = option(256, "image size, a multiple of 8")
    channels: int = option(1, "1 grayscale, 3 RGB", choices=(1, 3))
    latent: int = option(256, "latent vector length")
    batch: int = option(10, "global batch size", group="training engine")
    epochs: int = option(200, "number of epochs", group="training engine")
    lr_g: float = option(2e-4, "generator Adam learning rate")
    lr_d: float = option(1e-4, "discriminator Adam learning rate")
    beta_1: float = option(0.9, "Adam beta_1 of both optimizers", aliases=("--beta",))
    dropout: float = option(0.4, "discriminator dropout rate")
    n_samples: int = option(16, "images in the sample grid")
    output_activation: str = option("linear", "generator output: linear (the original) or tanh (bounded to the "
                                    "data's [-1, 1]; same weights)", choices=("linear", "tanh"))

    def validate(self) -> None:
        super().validate()
        if self.resolution < 8 or self.resolution % 8:
            raise TfmedganError(f"--resolution must be a multiple of 8 (the generator upsamples 3 times), got {self.resolution}")
        if self.channels not in (1, 3):
            raise TfmedganError(f"--channels must be 1 or 3, got {self.channels}")
        if self.latent < 1 or self.n_samples < 1:
            raise TfmedganError("--latent and --n-samples must be positive")
        if self.output_activation not in ("linear", "tanh"):
            raise TfmedganError(f"--output-activation must be linear or tanh, got {self.output_activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise TfmedganError(f"--dropout must be in [0, 1), got {self.dropout}")


class DCGANRecipe(SliceRecipe):
    """Networks, optimizers and train step of the seed-003 DCGAN.

    One step, as the original ``train_step``: fake = G(z); D sees the real batch and the fake
    batch in training mode; D loss = BCE(1, D(real)) + BCE(0, D(fake)); G loss = BCE(1, D(fake));
    both networks are updated from that single forward pass. Adam G 2e-4 / D 1e-4, beta_1 0.9.
    """

    averaged_networks = ("generator",)

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
            "generator": networks.build_generator(config.resolution, config.latent, config.channels, sync,
                                                  output_activation=config.output_activation),
            "discriminator": networks.build_discriminator(config.resolution, config.channels, config.dropout, sync),
        }
        self.optimizers = {
            "generator": wrap_optimizer(keras.optimizers.Adam(config.lr_g, beta_1=config.beta_1), config.precision),
            "discriminator": wrap_optimizer(keras.optimizers.Adam(config.lr_d, beta_1=config.beta_1), config.precision),
        }
        self.fixed_latents = tf.random.stateless_normal((config.n_samples, config.latent), seed=(config.seed, 7))

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



MODEL = ModelSpec(
    name="dcgan",
    config_class=DCGANConfig,
    recipe="tfmedgan.models.dcgan:DCGANRecipe",
    help="DCGAN on 2D brain slices (seed 003)",
    description="Train the DCGAN on folders of PNG/JPEG slices (searched recursively and concatenated), "
    "e.g. the OASIS keras_png_slices_train/test/validate folders.",
    positionals=(Positional("data_dirs", "DATA_DIR", variadic=True, sample_data=True), Positional("output_dir", "OUTPUT_DIR")),
    presets=PRESETS,
    sample_data=sample_slices,
    generates="images",
    commands=(SSIM_COMMAND,),
)


def train(config: DCGANConfig, run_dir: str | None = None, **kwargs):
    """Train a DCGAN from ``config``; ``run_dir`` resumes an existing run. Returns (run dir, summary)."""
    return MODEL.train(config, run_dir=run_dir, **kwargs)
