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

import dataclasses
import math
import sys
from typing import Any, Callable

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
from tfmedgan.networks import stylegan2 as networks

__all__ = ["StyleGAN2Config", "StyleGAN2Recipe", "PRESETS", "MODEL", "fade_in_alpha", "gradient_penalty", "train"]


#: The authors' recommended settings per resolution (readme table): epochs, fade_in_base, batch,
#: lr; the architecture values are the original run.py configs for 64/128 and the README's
#: example for 256.
PRESETS: dict[str, dict[str, Any]] = {
    "64": dict(resolution=64, epochs=30, fade_in_base=40.0, batch=128, lr=2e-4,
               g_input_res=4, g_init_filters=512, d_final_res=4, d_input_filters=64),
    "128": dict(resolution=128, epochs=30, fade_in_base=40.0, batch=64, lr=2e-4,
                g_input_res=8, g_init_filters=512, d_final_res=8, d_input_filters=32),
    "256": dict(resolution=256, epochs=40, fade_in_base=80.0, batch=64, lr=1e-4,
                g_input_res=8, g_init_filters=512, d_final_res=8, d_input_filters=32),
    # Not the authors': a 64 px run sized for a CPU (half the widths, batch 32, the
    # fade-in over 10 epochs and held at 0.5, the bounded tanh output, resize up-sampling; see
    # docs/faithfulness.md). The quality bench measures it beside the "64" preset.
    "cpu": dict(resolution=64, epochs=200, fade_in_base=10.0, max_alpha=0.5, batch=32, lr=2e-4,
                g_input_res=4, g_init_filters=256, d_final_res=4, d_input_filters=32, output_activation="tanh",
                upsample="resize"),
}


@dataclasses.dataclass
class StyleGAN2Config(EngineConfig):
    """The simplified residual StyleGAN2's options; defaults are the original run.py's.

    Attributes:
        data_dir: folder of PNG/JPEG slices (searched recursively).
        g_input_res, g_init_filters: generator reshape resolution and filters after the Dense.
        d_final_res, d_input_filters: discriminator resolution after the last residual block and
            filters of fromRGB / the first block.
        fade_in_base: alpha = epoch / fade_in_base, clipped to [0, max_alpha].
        resolution, channels, latent, lr, beta_1: as the original options (``--beta``).
        n_samples: number of preview images in the per-epoch grid (the original ``--val``).
        loss: ``bce`` (the original) or ``wgan-gp`` (the variant the authors tried: GP weight 10,
            2 critic steps per generator step).
        minibatch_std: ``channel`` (intended) or ``row`` (the original's quirk, for its weights).
        pixel_norm_axis: -1 normalises over channels (intended); 1 reproduces the original.
        clip_alpha: clip the fade-in to [0, max_alpha] (the original did not clip).
        max_alpha: the clip's upper bound (1.0; the ``cpu`` preset lowers it).
    """

    model = "stylegan2"
    renamed_fields = {"beta": "beta_1", "val": "n_samples"}
    data_dir: str = ""
    g_input_res: int = 4
    g_init_filters: int = 512
    d_final_res: int = 4
    d_input_filters: int = 64
    fade_in_base: float = 40.0
    resolution: int = option(64, "image resolution (power of two)")
    channels: int = option(1, "1 grayscale, 3 RGB", choices=(1, 3))
    latent: int = option(100, "latent dimension")
    batch: int = option(128, "global batch size", group="training engine")
    epochs: int = option(20, "number of epochs", group="training engine")
    lr: float = option(2e-4, "Adam learning rate of G and D")
    beta_1: float = option(0.5, "Adam beta_1", aliases=("--beta",))
    n_samples: int = option(16, "number of preview images per epoch grid", aliases=("--val",))
    output_activation: str = option("linear", "generator output: linear (the original's unbounded sum of skip RGBs) "
                                    "or tanh (bounded to the data's [-1, 1]; same weights)", choices=("linear", "tanh"))
    upsample: str = option("transposed", "generator up-sampling: transposed (the original's stride-2 transposed conv) "
                           "or resize (nearest x2 then a 3x3 conv: same weight count, no checkerboard)",
                           choices=networks.UPSAMPLE_CHOICES)
    seed: int = option(1, "random seed (Python, NumPy, TensorFlow)", group="training engine")
    loss: str = option("bce", "adversarial loss", choices=("bce", "wgan-gp"))
    gp_weight: float = option(10.0, "gradient penalty weight (wgan-gp)")
    n_critic: int = option(2, "critic steps per generator step (wgan-gp)")
    minibatch_std: str = option("channel", "minibatch stddev appended as channel (intended) or row (original)",
                                choices=("channel", "row"))
    pixel_norm_axis: int = option(-1, "PixelNorm axis: -1 channels, 1 the original's rows")
    clip_alpha: bool = option(True, "clip the fade-in alpha to [0, --max-alpha]", negative="--no-clip-alpha")
    max_alpha: float = option(1.0, "upper bound of the clipped fade-in alpha (at 1 the discriminator's blocks "
                              "keep only their strided 1x1 skips)")

    def validate(self) -> None:
        super().validate()
        networks.validate_config(self.resolution, self.g_input_res, self.d_final_res, self.batch, channels=self.channels)
        if self.loss not in ("bce", "wgan-gp"):
            raise TfmedganError(f"--loss must be bce or wgan-gp, got {self.loss!r}")
        if self.minibatch_std not in ("channel", "row"):
            raise TfmedganError(f"--minibatch-std must be channel or row, got {self.minibatch_std!r}")
        if not math.isfinite(self.fade_in_base) or self.fade_in_base <= 0:
            raise TfmedganError(f"fade_in_base must be positive, got {self.fade_in_base}")
        if not 0.0 <= self.max_alpha <= 1.0:
            raise TfmedganError(f"--max-alpha must be in [0, 1], got {self.max_alpha}")
        if self.n_samples < 1 or self.latent < 1 or self.n_critic < 1:
            raise TfmedganError("--val, --latent and --n-critic must be positive")

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


def fade_in_alpha(epoch: int, fade_in_base: float, clip: bool = True, max_alpha: float = 1.0) -> float:
    """The discriminator's fade-in weight of an epoch: ``epoch / fade_in_base``.

    Args:
        epoch: 0-based epoch.
        fade_in_base: the divisor (positive).
        clip: clip to [0, max_alpha]; the original did not, so after ``fade_in_base`` epochs its
            conv path got a negative weight ``1 - alpha``.
        max_alpha: the upper bound when clipping, in [0, 1]. At alpha 1 the residual blocks
            keep only their linear 1x1 stride-2 skips, so the discriminator sees one pixel in
            ``2**blocks`` per axis; the authors' recommended runs end at alpha 0.49-0.73.

    Returns:
        alpha as a Python float.

    Example:
        >>> [fade_in_alpha(e, 2.0) for e in range(4)]
        [0.0, 0.5, 1.0, 1.0]
    """
    value = epoch / float(fade_in_base)
    return float(min(max(value, 0.0), max_alpha)) if clip else float(value)


def _group_ok(size: int) -> bool:
    """Whether a batch of ``size`` suits the minibatch standard deviation (groups of min(4, size))."""
    return size > 0 and size % min(GROUP_SIZE, size) == 0


def gradient_penalty(
    critic: Callable[[tf.Tensor], tf.Tensor],
    real: tf.Tensor,
    fake: tf.Tensor,
    weights: tf.Tensor,
    loss_scale: tf.Tensor | float | None = None,
) -> tf.Tensor:
    """Per-example WGAN-GP penalty ``(||grad_x critic(x_hat)||_2 - 1)^2``.

    ``x_hat = real + weights * (fake - real)``; the gradient norm is taken over every non-batch
    axis (H, W, C). Call it inside the critic's gradient tape: the penalty is differentiable
    with respect to the critic's weights (second-order gradients).

    Under ``mixed_float16`` the inner gradient runs backwards through float16 layers, where small
    values underflow to 0 just as an unscaled loss gradient would. Pass the optimizer's loss scale
    (``LossScaleOptimizer.dynamic_scale``): the critic's output is multiplied by it inside the
    inner tape and the gradient divided by it afterwards (in float32). If the scaled inner
    gradient overflows the penalty is not finite, and so are the gradients of any loss holding
    it, which makes the LossScaleOptimizer skip the update and lower its scale.

    Args:
        critic: maps images [N, H, W, C] to outputs [N, 1] (or [N]).
        real: real images [N, H, W, C].
        fake: generated images of the same shape.
        weights: interpolation weights [N, 1, 1, 1] (Gulrajani et al.: Uniform[0, 1]).
        loss_scale: the loss scale of the inner gradient (None: unscaled, for float32/bfloat16).

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
        if loss_scale is not None:
            outputs = outputs * tf.cast(loss_scale, tf.float32)
    gradients = tape.gradient(outputs, interpolated)
    if loss_scale is not None:
        gradients = gradients / tf.cast(loss_scale, tf.float32)
    squared = tf.reduce_sum(tf.square(tf.reshape(gradients, (tf.shape(gradients)[0], -1))), axis=1)
    norms = tf.sqrt(squared + 1e-12)
    return tf.square(norms - 1.0)


def _loss_scale(optimizer: keras.optimizers.Optimizer) -> tf.Tensor | float | None:
    """The loss scale of a LossScaleOptimizer (what its ``scale_loss`` multiplies by); else None."""
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    return optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale


class StyleGAN2Recipe(SliceRecipe):
    """Data, networks, optimizers and train step of the seed-004 simplified residual StyleGAN2.

    Args:
        config: a :class:`StyleGAN2Config`.

    Example:
        >>> recipe = StyleGAN2Recipe(StyleGAN2Config(resolution=32, g_input_res=4, g_init_filters=32,
        ...                                          d_final_res=4, d_input_filters=8, latent=8, batch=4))
        >>> recipe.build_networks_only()
        >>> recipe.on_epoch_begin(10)
        {'alpha': 0.25}
    """

    averaged_networks = ("generator",)

    config: StyleGAN2Config

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        """List and check the images, decide on the last partial batch, set ``steps_per_epoch``.

        The last partial batch of an epoch is dropped when its size is not divisible by the
        minibatch standard deviation group ``min(4, size)`` (e.g. 5 or 6 images; the original
        would crash there) and always when training on several replicas (every replica then
        gets an equal share). With several replicas the discriminator's minibatch standard
        deviation all-gathers the batch and forms its groups over the GLOBAL batch, as one device
        does, so only the global batch must suit it.
        """
        config = self.config
        if not config.data_dir:
            raise TfmedganError("no data folder given (or use --sample-data)")
        batch = config.batch
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
                output_activation=config.output_activation,
                upsample=config.upsample,
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
                synchronized_minibatch_std=num_replicas > 1,  # groups of the global batch, as one device
            ),
        }
        self.optimizers = {
            name: wrap_optimizer(keras.optimizers.Adam(learning_rate=config.lr, beta_1=config.beta_1), config.precision)
            for name in ("generator", "discriminator")
        }
        self.alpha = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="fade_in_alpha")
        self.fixed_latents = tf.random.stateless_normal((config.n_samples, config.latent), seed=(config.seed, 7))

    def optimizer_variables(self) -> dict[str, list]:
        return {name: self.networks[name].trainable_variables for name in self.optimizers}

    def state_variables(self) -> list[tf.Variable]:
        """The fade-in alpha (checkpointed so a resumed run knows it before its first epoch hook)."""
        return [self.alpha]

    # -- training --------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        value = fade_in_alpha(epoch, self.config.fade_in_base, self.config.clip_alpha, self.config.max_alpha)
        if value >= 1.0 and not getattr(self, "_warned_alpha", False):
            self._warned_alpha = True
            print(f"warning: the fade-in alpha is {value:g} from epoch {epoch}: the discriminator's residual blocks "
                  "now keep only their strided 1x1 skips (no 3x3 conv path); the authors' runs ended at alpha "
                  "0.49-0.73; see --max-alpha", file=sys.stderr)
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
        scale = _loss_scale(optimizer)
        with tf.GradientTape() as tape:
            real_logits = discriminator([real, alpha], training=True)
            fake_logits = discriminator([fake, alpha], training=True)
            per_example = gradient_penalty(
                lambda images: discriminator([images, alpha], training=True), real, fake, weights, loss_scale=scale
            )
            critic_loss = average_loss(losses.wasserstein(fake_logits, 1.0), total) + average_loss(
                losses.wasserstein(real_logits, -1.0), total
            )
            penalty = average_loss(per_example, total)
            loss = critic_loss + self.config.gp_weight * penalty
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, discriminator.trainable_variables)
        if scale is not None:
            # an overflow of the scaled inner gradient: the LossScaleOptimizer skipped this update
            # (non-finite gradients) and lowered its scale; log the penalty of the finite examples
            penalty = average_loss(tf.where(tf.math.is_finite(per_example), per_example, 0.0), total)
            loss = critic_loss + self.config.gp_weight * penalty
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
        """G(fixed latents) in inference mode: ``n_samples`` images [n_samples, R, R, channels]."""
        return np.asarray(self.networks["generator"](self.fixed_latents, training=False), dtype=np.float32)

    def sample_filename(self, epoch: int) -> str:
        return f"image_at_epoch_{epoch}.png"

    def is_checkpoint_epoch(self, epoch: int) -> bool:
        """The original's grid epochs: 0-based ``epoch % checkpoint == 0`` (0, N, 2N, ...)."""
        return epoch % self.config.checkpoint == 0



POSITIONALS = ("g_input_res", "g_init_filters", "d_final_res", "d_input_filters", "fade_in_base")

MODEL = ModelSpec(
    name="stylegan2",
    config_class=StyleGAN2Config,
    recipe="tfmedgan.models.stylegan2:StyleGAN2Recipe",
    help="simplified residual StyleGAN2 on 2D brain slices (seed 004)",
    description="Train the generative model to produce high resolution images. Positional arguments as the "
    "original run.py: data_dir output_dir g_input_res g_init_filters d_final_res d_input_filters fade_in_base. "
    "With --preset only data_dir output_dir are needed; with --sample-data data_dir is left out.",
    positionals=(Positional("data_dir", "data_dir", sample_data=True), Positional("output_dir", "output_dir"))
    + tuple(Positional(field, field, kind="float" if field == "fade_in_base" else "int", optional_with_preset=True)
            for field in POSITIONALS),
    presets=PRESETS,
    sample_data=sample_slices,
    generates="images",
    commands=(SSIM_COMMAND,),
)


def train(config: StyleGAN2Config, run_dir: str | None = None, **kwargs):
    """Train the StyleGAN2 from ``config``; ``run_dir`` resumes an existing run.

    Args:
        config: the run configuration.
        run_dir: an existing run directory to continue from its newest checkpoint.
        **kwargs: ``progress``, ``stop_after_steps``.

    Returns:
        (run directory, summary dict).
    """
    return MODEL.train(config, run_dir=run_dir, **kwargs)
