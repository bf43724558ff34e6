"""Slice VAE of seed 001: ResBlock encoder and decoder with a spatial latent (2D, or 3D).

Channels-last functional Keras port of ``Encoder`` / ``Decoder`` / ``ResBlockDown`` /
``ResBlockUp`` of ``slices-to-3d-brain-vae/experiments/main_experiment_256.py`` (identical to
``3D-MRI/models/vae.py``) in WinstonHuTiger/2D_VAE_UDA_for_3D_sythesis, used with
``gf_dim = 4`` on 256 x 256 slices. ``F`` = ``base_filters``, BN = BatchNorm (epsilon 1e-5,
PyTorch momentum 0.1 = Keras momentum 0.9), LReLU slope 0.2::

    ResBlockDown(fi, fo, act)  a: conv k3 s2 p1 fi->fi -> BN -> LReLU -> conv k3 p1 fi->fo -> BN [-> LReLU]
                               b: conv k3 s2 p1 fi->fo -> BN [-> LReLU]                 output a + b
    ResBlockUp(fi, fo, act)    a: conv k3 fi->fi -> up x2 (nearest) -> BN -> LReLU -> conv k3 fi->fo -> BN [-> LReLU]
                               b: conv k3 fi->fo -> up x2 -> BN -> LReLU [-> LReLU]     output a + b

    encoder  conv k3 1->F -> BN -> LReLU -> res1..res6 (F, F, 2F, 4F, 8F, 16F -> 32F), each /2
             heads from the same feature: mu = res7(32F->64F, act=False), log_sigma = res2_stdev(...)
             256 x 256 x 1 -> two 2 x 2 x 256 maps (F = 4)
    decoder  res0..res6 (64F->32F->...->F->F), each x2 -> conv k3 F->F -> BN -> LReLU -> conv k3 F->1 (linear)

The second encoder head is used as log-sigma: ``z = mu + eps * exp(log_sigma)``
(:func:`reparameterize`). PyTorch's ``Conv(k3, s2, p1)`` on an even size is zero padding 1 plus
a ``"valid"`` convolution (Keras ``"same"`` would pad 0/1 and shift the grid); the stride-1
convolutions are ``"same"``.

``depth`` (7 in the original) is the number of halvings of the encoder; the latent is
``size / 2**depth`` per spatial axis with ``base_filters * 2**(depth - 1)`` channels. Smaller
slices (CPU budgets, tests) keep a 2 x 2 latent with ``depth = log2(size) - 1``.

Parameter counts for ``base_filters=4``, ``depth=7``, 256 x 256 x 1:

=========  ====================  ===========================  ====================
network    trainable (PyTorch)   BatchNorm moving mean + var  Keras count_params()
=========  ====================  ===========================  ====================
encoder    1,726,296             3,832                        1,730,128
decoder    1,576,165             2,048                        1,578,213
=========  ====================  ===========================  ====================

PyTorch's ``sum(p.numel() for p in model.parameters())`` does not count the BatchNorm running
statistics (they are buffers); Keras ``count_params()`` counts them as non-trainable weights.
:func:`pytorch_parameter_count` gives the PyTorch convention (the trainable weights).
A smaller difference: PyTorch updates ``running_var`` with the unbiased batch variance,
Keras ``moving_variance`` with the biased one (training-mode outputs are identical; only
inference-mode statistics differ by the factor ``n / (n - 1)``, n = batch x spatial size).

Initialisation: PyTorch's layer defaults, which the original VAE training script kept (kernels
``kaiming_uniform_(a=sqrt(5))`` = U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in)), BN gamma 1,
beta 0).

Layer names follow the PyTorch state-dict keys: ``res3_conv1`` = ``res3.conv1_block.0``,
``res3_bn1`` = ``res3.conv1_block.1`` (``.2`` in ResBlockUp, after the up-sampling),
``res3_conv2``/``res3_bn2`` = ``conv2_block.0/.1``, ``res3_conv3``/``res3_bn3`` =
``conv3_block.0/.1`` (``.2`` in ResBlockUp), ``conv1_conv``/``conv1_bn`` = the encoder's
``conv1_block``, ``conv_1_conv``/``conv_1_bn`` and ``conv2`` = the decoder's last layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfmedgan.errors import TfmedganError


class _Builder:
    """Creates the layers of one VAE network (2D or 3D, PyTorch default init)."""

    def __init__(self, spatial_dims: int, bn_epsilon: float, bn_momentum: float, synchronized: bool = False) -> None:
        if spatial_dims not in (2, 3):
            raise TfmedganError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.synchronized = bool(synchronized)
        self.conv_class = keras.layers.Conv3D if spatial_dims == 3 else keras.layers.Conv2D
        self.pad_class = keras.layers.ZeroPadding3D if spatial_dims == 3 else keras.layers.ZeroPadding2D
        self.up_class = keras.layers.UpSampling3D if spatial_dims == 3 else keras.layers.UpSampling2D

    def conv(self, x, filters: int, name: str, strides: int = 1, dtype=None):
        """PyTorch ``Conv(k3, stride, padding=1)`` with PyTorch's default initialisation."""
        fan_in = int(x.shape[-1]) * 3**self.spatial_dims
        bound = 1.0 / math.sqrt(fan_in)
        if strides > 1:
            x = self.pad_class(1, name=f"{name}_pad")(x)
        return self.conv_class(
            filters,
            3,
            strides=strides,
            padding="valid" if strides > 1 else "same",
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            dtype=dtype,
            name=name,
        )(x)

    def bn(self, x, name: str):
        return keras.layers.BatchNormalization(
            epsilon=self.bn_epsilon, momentum=self.bn_momentum, synchronized=self.synchronized, name=name
        )(x)

    @staticmethod
    def lrelu(x, name: str):
        return keras.layers.LeakyReLU(negative_slope=0.2, name=name)(x)

    def up(self, x, name: str):
        if self.spatial_dims == 2:
            return self.up_class(2, interpolation="nearest", name=name)(x)
        return self.up_class(2, name=name)(x)

    def res_down(self, x, filters_out: int, act: bool, name: str):
        filters_in = int(x.shape[-1])
        a = self.lrelu(self.bn(self.conv(x, filters_in, f"{name}_conv1", strides=2), f"{name}_bn1"), f"{name}_lrelu1")
        a = self.bn(self.conv(a, filters_out, f"{name}_conv2"), f"{name}_bn2")
        b = self.bn(self.conv(x, filters_out, f"{name}_conv3", strides=2), f"{name}_bn3")
        if act:
            a = self.lrelu(a, f"{name}_lrelu2")
            b = self.lrelu(b, f"{name}_lrelu3")
        return keras.layers.Add(name=f"{name}_sum")([a, b])

    def res_up(self, x, filters_out: int, act: bool, name: str):
        filters_in = int(x.shape[-1])
        a = self.up(self.conv(x, filters_in, f"{name}_conv1"), f"{name}_up1")
        a = self.lrelu(self.bn(a, f"{name}_bn1"), f"{name}_lrelu1")
        a = self.bn(self.conv(a, filters_out, f"{name}_conv2"), f"{name}_bn2")
        b = self.up(self.conv(x, filters_out, f"{name}_conv3"), f"{name}_up3")
        b = self.lrelu(self.bn(b, f"{name}_bn3"), f"{name}_lrelu3")
        if act:
            a = self.lrelu(a, f"{name}_lrelu2")
            b = self.lrelu(b, f"{name}_lrelu3b")
        return keras.layers.Add(name=f"{name}_sum")([a, b])


def _check_common(base_filters: int, depth: int) -> None:
    if base_filters < 1 or depth < 1:
        raise TfmedganError(f"base_filters ({base_filters}) and depth ({depth}) must be >= 1")


def latent_shape(
    image_shape: Sequence[int] = (256, 256), base_filters: int = 4, depth: int = 7
) -> tuple[int, ...]:
    """Spatial latent shape ``(*image_shape / 2**depth, base_filters * 2**(depth - 1))``.

    Example:
        >>> latent_shape((256, 256))
        (2, 2, 256)
    """
    _check_common(base_filters, depth)
    factor = 2**depth
    bad = [size for size in image_shape if int(size) % factor]
    if bad:
        raise TfmedganError(
            f"slice size {tuple(image_shape)} must be a multiple of 2**depth = {factor} (depth {depth})"
        )
    return tuple(int(size) // factor for size in image_shape) + (base_filters * 2 ** (depth - 1),)


def build_vae_encoder(
    input_shape: Sequence[int | None] = (256, 256, 1),
    base_filters: int = 4,
    depth: int = 7,
    spatial_dims: int = 2,
    bn_epsilon: float = 1e-5,
    bn_momentum: float = 0.9,
    name: str = "vae_encoder",
    synchronized_batchnorm: bool = False,
) -> keras.Model:
    """Build the ResBlock encoder; it returns ``[mu, log_sigma]`` (float32).

    Args:
        input_shape: ``(H, W, channels)`` (or ``(D, H, W, channels)`` with ``spatial_dims=3``);
            static sizes must be multiples of ``2**depth``.
        base_filters: ``gf_dim`` (4 in the released model).
        depth: Halvings (7: 256 -> 2).
        spatial_dims: 2 (the slice VAE) or 3 (the ``vae_3d`` variant).
        bn_epsilon: BatchNorm epsilon (PyTorch 1e-5).
        bn_momentum: Keras BatchNorm momentum (PyTorch momentum 0.1 -> 0.9).
        name: Model name.
        synchronized_batchnorm: BatchNorm statistics over the global batch of all replicas
            (Keras ``BatchNormalization(synchronized=True)``), as one device computes them; set it
            when training on several replicas. No effect on one device.

    Returns:
        A model ``x -> [mu, log_sigma]``, each ``[batch, *spatial / 2**depth, F * 2**(depth-1)]``.

    Example:
        >>> encoder = build_vae_encoder()
        >>> pytorch_parameter_count(encoder), encoder.count_params()
        (1726296, 1730128)
    """
    _check_common(base_filters, depth)
    input_shape = tuple(None if size is None else int(size) for size in input_shape)
    if len(input_shape) != spatial_dims + 1 or input_shape[-1] is None:
        raise TfmedganError(
            f"input_shape {input_shape} must have {spatial_dims} spatial sizes and a static channel count"
        )
    static = [size for size in input_shape[:-1] if size is not None]
    if static:
        latent_shape(static, base_filters, depth)
    build = _Builder(spatial_dims, bn_epsilon, bn_momentum, synchronized_batchnorm)
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = build.lrelu(build.bn(build.conv(inputs, base_filters, "conv1_conv"), "conv1_bn"), "conv1_lrelu")
    for block in range(1, depth):
        x = build.res_down(x, base_filters * 2 ** (block - 1), True, f"res{block}")
    heads_filters = base_filters * 2 ** (depth - 1)
    mu = build.res_down(x, heads_filters, False, f"res{depth}")
    log_sigma = build.res_down(x, heads_filters, False, "res2_stdev")
    mu = keras.layers.Activation("linear", dtype="float32", name="mu")(mu)
    log_sigma = keras.layers.Activation("linear", dtype="float32", name="log_sigma")(log_sigma)
    return keras.Model(inputs, [mu, log_sigma], name=name)


def build_vae_decoder(
    latent_shape: Sequence[int | None] = (2, 2, 256),
    output_channels: int = 1,
    base_filters: int = 4,
    depth: int = 7,
    spatial_dims: int = 2,
    bn_epsilon: float = 1e-5,
    bn_momentum: float = 0.9,
    name: str = "vae_decoder",
    synchronized_batchnorm: bool = False,
) -> keras.Model:
    """Build the ResBlock decoder (linear float32 output, no sigmoid).

    Args:
        latent_shape: ``(h, w, channels)`` of the latent (channels ``base_filters * 2**(depth-1)``).
        output_channels: Image channels (1).
        base_filters: ``gf_dim`` (4).
        depth: Doublings (7: 2 -> 256).
        spatial_dims: 2 or 3.
        bn_epsilon: BatchNorm epsilon (PyTorch 1e-5).
        bn_momentum: Keras BatchNorm momentum (PyTorch 0.1 -> 0.9).
        name: Model name.
        synchronized_batchnorm: BatchNorm statistics over the global batch of all replicas
            (Keras ``BatchNormalization(synchronized=True)``), as one device computes them; set it
            when training on several replicas. No effect on one device.

    Returns:
        A model ``z -> x_reconstructed`` of spatial size ``latent * 2**depth``.

    Example:
        >>> decoder = build_vae_decoder()
        >>> pytorch_parameter_count(decoder), decoder.count_params()
        (1576165, 1578213)
    """
    _check_common(base_filters, depth)
    latent_shape = tuple(None if size is None else int(size) for size in latent_shape)
    expected_channels = base_filters * 2 ** (depth - 1)
    if len(latent_shape) != spatial_dims + 1 or latent_shape[-1] != expected_channels:
        raise TfmedganError(
            f"latent_shape {latent_shape} must have {spatial_dims} spatial sizes and "
            f"{expected_channels} channels (base_filters * 2**(depth - 1))"
        )
    build = _Builder(spatial_dims, bn_epsilon, bn_momentum, synchronized_batchnorm)
    inputs = keras.Input(shape=latent_shape, name=f"{name}_input")
    x = inputs
    for block in range(depth):
        filters_out = base_filters * 2 ** max(depth - 2 - block, 0)
        x = build.res_up(x, filters_out, True, f"res{block}")
    x = build.lrelu(build.bn(build.conv(x, base_filters, "conv_1_conv"), "conv_1_bn"), "conv_1_lrelu")
    outputs = build.conv(x, output_channels, "conv2", dtype="float32")
    return keras.Model(inputs, outputs, name=name)


def pytorch_parameter_count(model: keras.Model) -> int:
    """Parameters as PyTorch's ``parameters()`` counts them: the trainable weights only.

    Keras ``count_params()`` also counts the BatchNorm moving mean and variance (PyTorch
    buffers). Call this on a model whose layers are all trainable.
    """
    return int(sum(math.prod(weight.shape) for weight in model.trainable_weights))


def reparameterize(mu: tf.Tensor, log_sigma: tf.Tensor, seed=None) -> tf.Tensor:
    """Sample ``z = mu + eps * exp(log_sigma)`` with ``eps ~ N(0, 1)``.

    Args:
        mu: Mean head output.
        log_sigma: Second head output, used as log standard deviation (as the original).
        seed: Optional ``keras.random.SeedGenerator`` or int for reproducible noise.

    Returns:
        A tensor shaped like ``mu``.
    """
    noise = keras.random.normal(tf.shape(mu), dtype=mu.dtype, seed=seed)
    return mu + noise * tf.exp(log_sigma)


def kl_to_standard_normal(mu: tf.Tensor, log_sigma: tf.Tensor) -> tf.Tensor:
    """Summed KL of ``N(mu, exp(log_sigma)**2)`` to N(0, 1), as the original VAE loss term.

    ``-0.5 * sum(1 + 2 log_sigma - mu**2 - exp(2 log_sigma))`` over all elements and the batch.
    """
    mu = tf.cast(mu, tf.float32)
    log_sigma = tf.cast(log_sigma, tf.float32)
    return -0.5 * tf.reduce_sum(1.0 + 2.0 * log_sigma - tf.square(mu) - tf.exp(2.0 * log_sigma))
