"""Seed 003: the DCGAN generator and discriminator of Amy Zhao's OASIS brain-slice GAN.

Reference: A. Radford, L. Metz, S. Chintala, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", arXiv:1511.06434, with the seed author's changes
(4x4 transposed convolutions, 3 upsampling + 2 plain convolutions, LeakyReLU 0.2 everywhere,
linear generator output, dropout 0.4 in the discriminator).
"""

from __future__ import annotations

import keras
from keras import layers


def build_generator(
    resolution: int = 256,
    latent_dim: int = 256,
    channels: int = 1,
    synchronized_batchnorm: bool = False,
    output_activation: str = "linear",
    name: str = "generator",
) -> keras.Model:
    """DCGAN generator: latent [B, latent_dim] -> image [B, res, res, channels], linear output.

    Dense(res/8 * res/8 * 256) + LeakyReLU(0.2) -> reshape -> three Conv2DTranspose (256, 128, 64;
    4x4, stride 2, no bias) each + BatchNorm + LeakyReLU(0.2) -> Conv2D(64, 3x3, no bias) + BN +
    LeakyReLU -> Conv2D(channels, 3x3, no bias). 69,114,432 parameters at 256 px, latent 256.

    Args:
        resolution: output size, a multiple of 8.
        latent_dim: latent vector length.
        channels: output channels (1 grayscale, 3 RGB).
        synchronized_batchnorm: batch statistics over the global batch under a multi-replica
            strategy (same results as one device); no effect on one device.
        output_activation: ``"linear"`` (the original: its author found no tanh worked better)
            or ``"tanh"``, which bounds the images to the data's [-1, 1]. No weights change.
        name: model name.
    Example:
        >>> generator = build_generator(resolution=32, latent_dim=16)
        >>> generator.output_shape
        (None, 32, 32, 1)
    """
    start = resolution // 8
    latent = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(start * start * 256, name="project")(latent)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Reshape((start, start, 256))(x)
    for index, filters in enumerate((256, 128, 64)):
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, name=f"up{index}")(x)
        x = layers.BatchNormalization(synchronized=synchronized_batchnorm, name=f"up{index}_bn")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="refine")(x)
    x = layers.BatchNormalization(synchronized=synchronized_batchnorm, name="refine_bn")(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    if output_activation not in ("linear", "tanh"):
        raise ValueError(f"output_activation must be 'linear' or 'tanh', got {output_activation!r}")
    image = layers.Conv2D(channels, 3, padding="same", use_bias=False, dtype="float32", name="to_image")(x)
    if output_activation == "tanh":
        image = layers.Activation("tanh", dtype="float32", name="tanh")(image)
    return keras.Model(latent, image, name=name)


def build_discriminator(
    resolution: int = 256,
    channels: int = 1,
    dropout_rate: float = 0.4,
    synchronized_batchnorm: bool = False,
    name: str = "discriminator",
) -> keras.Model:
    """DCGAN discriminator: image -> one logit (no sigmoid).

    Three Conv2D (32, 64, 128; 4x4, stride 2) each + BatchNorm + LeakyReLU(0.2) + Dropout(0.4) ->
    Flatten -> Dense(1). 296,545 parameters at 256 px, one channel.

    Example:
        >>> build_discriminator(resolution=32).output_shape
        (None, 1)
    """
    image = keras.Input((resolution, resolution, channels), name="image")
    x = image
    for index, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"down{index}")(x)
        x = layers.BatchNormalization(synchronized=synchronized_batchnorm, name=f"down{index}_bn")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
        x = layers.Dropout(dropout_rate)(x)
    x = layers.Flatten()(x)
    logit = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(image, logit, name=name)
