"""Seed-004 simplified residual "StyleGAN2" generator and discriminator (functional builders).

The seed-004 project (OASIS brain slices) ended up with a much simplified StyleGAN2: no mapping
network, no noise, no modulation. What is left is

* a generator with **output skips**: a Dense input block, stride-2 transposed-conv up-blocks with
  pixel normalisation, one 1x1 ``ToRGB`` per resolution, and the RGB images summed after
  nearest-neighbour up-sampling (the output is that sum and is *not* bounded to [-1, 1]);
* a **residual** discriminator: a 1x1 ``FromRGB``, stride-2 blocks whose 3x3 conv path and
  1x1 strided skip path are blended with a fade-in weight ``alpha``
  (``(1 - alpha) * conv + alpha * skip``), then minibatch standard deviation, a stride-2 conv and
  a Dense logit.

The builders are pure functions returning ``keras.Model`` objects (no optimiser, no loss). The
discriminator takes ``[image, alpha]`` where ``alpha`` is an input of shape ``(1,)``: pass a
``[N, 1]`` tensor (one value per sample, works with ``predict``/``fit``) or a ``[1, 1]`` tensor
(one value for the whole batch) when calling the model directly, e.g.
``discriminator([images, tf.constant([[0.25]])], training=False)``. Feeding alpha as a tensor
means a ``tf.function`` training step does not retrace when the fade-in changes.

Faithfulness: the parameter counts of the original are reproduced exactly with
``minibatch_std_mode="row"`` (the original appended a row instead of a channel) and are
independent of ``pixel_norm_axis``. See the layer docstrings in :mod:`tfmedgan.layers.stylegan`.
"""

from __future__ import annotations

import math

import keras

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.stylegan import (
    MINIBATCH_STD_MODES,
    MinibatchStandardDeviation,
    PixelNormalization,
    WeightedSum,
)

__all__ = ["build_generator", "build_discriminator", "validate_config", "UPSAMPLE_CHOICES"]

#: Feature-path up-sampling of the generator: the original's stride-2 transposed convolution, or
#: nearest x2 then a 3x3 convolution (same parameter count, no checkerboard pattern).
UPSAMPLE_CHOICES = ("transposed", "resize")

LEAKY_RELU_SLOPE = 0.3  # Keras' default slope, used everywhere in the original.
WEIGHT_STDDEV = 0.02
MAX_NORM = 1.0


def _is_power_of_two(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value > 0
        and value & (value - 1) == 0
    )


def _number_of_doublings(low: int, high: int) -> int:
    """``int(|log2 high - log2 low|)``: the original's ``_get_layers`` helper."""
    return int(abs(math.log2(high) - math.log2(low)))


def validate_config(
    resolution: int,
    input_resolution: int | None,
    final_resolution: int | None,
    batch_size: int | None,
    group_size: int = 4,
    channels: int = 1,
) -> None:
    """Check a seed-004 StyleGAN2 configuration and raise on the first problem.

    Arguments passed as ``None`` are not checked (the generator builder has no
    ``final_resolution`` and neither builder knows the batch size).

    Args:
        resolution: Image side length; a power of two.
        input_resolution: Generator reshape resolution; a power of two below ``resolution``.
        final_resolution: Discriminator resolution after the last residual block; a power of two
            below ``resolution``.
        batch_size: Training batch size; must be divisible by ``min(group_size, batch_size)``
            (the minibatch standard deviation group).
        group_size: Minibatch standard deviation group size (4 in the original).
        channels: Image channels, 1 (grayscale) or 3 (RGB).

    Raises:
        TfmedganError: With a one-line message naming the bad value.

    Example:
        >>> validate_config(256, 8, 8, 64)
        >>> validate_config(100, 8, 8, 64)
        Traceback (most recent call last):
        ...
        tfmedgan.errors.TfmedganError: stylegan2: resolution must be a power of two, got 100
    """
    if not _is_power_of_two(resolution):
        raise TfmedganError(f"stylegan2: resolution must be a power of two, got {resolution}")
    for label, value in (
        ("input_resolution", input_resolution),
        ("final_resolution", final_resolution),
    ):
        if value is None:
            continue
        if not _is_power_of_two(value):
            raise TfmedganError(f"stylegan2: {label} must be a power of two, got {value}")
        if value >= resolution:
            raise TfmedganError(
                f"stylegan2: {label} ({value}) must be smaller than resolution ({resolution})"
            )
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise TfmedganError(f"stylegan2: group_size must be a positive integer, got {group_size}")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise TfmedganError(
                f"stylegan2: batch_size must be a positive integer, got {batch_size}"
            )
        group = min(group_size, batch_size)
        if batch_size % group != 0:
            raise TfmedganError(
                f"stylegan2: batch_size {batch_size} is not divisible by the minibatch-stddev "
                f"group min({group_size}, {batch_size}) = {group}"
            )
    if channels not in (1, 3) or isinstance(channels, bool):
        raise TfmedganError(f"stylegan2: channels must be 1 or 3, got {channels}")


def _normal_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(stddev=WEIGHT_STDDEV)


def _max_norm() -> keras.constraints.Constraint:
    # Default axis=0 as in the original: for conv kernels [kh, kw, in, out] this bounds the norm
    # along the kernel height only (a quirk kept for faithfulness).
    return keras.constraints.MaxNorm(max_value=MAX_NORM, axis=0)


def build_generator(
    resolution: int = 64,
    latent_dim: int = 100,
    channels: int = 1,
    input_resolution: int = 4,
    initial_filters: int = 512,
    pixel_norm_axis: int = -1,
    output_activation: str = "linear",
    name: str = "generator",
    upsample: str = "transposed",
) -> keras.Model:
    """Build the seed-004 output-skip generator ``z [N, latent_dim] -> image [N, R, R, channels]``.

    Architecture (``r = input_resolution``, ``f = initial_filters``,
    ``n = log2(resolution / r) - 1``):

    * input block: ``Dense(r*r*f, no bias)`` -> PixelNormalization -> LeakyReLU(0.3) ->
      ``Reshape((r, r, f))``;
    * up-block ``i = 0..n-1``: ``Conv2DTranspose(f / 2**(i+1), 3, stride 2, same, no bias)`` ->
      PixelNormalization -> LeakyReLU(0.3), with its own 1x1 ToRGB ``Conv2D(channels)``;
    * output layer: ``Conv2DTranspose(channels, 3, stride 2, same, no bias, tanh)`` with its own
      ToRGB;
    * RGB path: ``Y = ToRGB_0(X_0)``, then ``Y = UpSampling2D(Y) + ToRGB_k(X_k)`` for every later
      layer. The output is ``Y``: a sum of linear 1x1 convs, **unbounded** (as the original).

    Weights use ``RandomNormal(0.02)`` and ``MaxNorm(1.0)`` except the last ToRGB (glorot
    uniform, no constraint). The last ToRGB and the final sum run in float32 so the output is
    float32 under a mixed-precision policy.

    Args:
        resolution: Output side length (power of two).
        latent_dim: Size of the latent vector.
        channels: Output channels, 1 or 3.
        input_resolution: Resolution of the reshaped Dense output (power of two < resolution).
        initial_filters: Filters of the reshaped Dense output; halved at every up-block, so it
            must be divisible by ``2**n``.
        pixel_norm_axis: Axis of the pixel normalisation. -1 (default) normalises over channels
            (the intent); 1 reproduces the original (image rows on conv maps).
        output_activation: ``"linear"`` (the original's unbounded sum) or ``"tanh"``.
        name: Model name.
        upsample: ``"transposed"`` (the original's ``Conv2DTranspose(3, stride 2)``) or
            ``"resize"``: nearest x2 up-sampling then ``Conv2D(3, same)``, the same number of
            weights (the kernel's in/out axes swap) without the transposed convolution's
            checkerboard pattern.

    Returns:
        A functional ``keras.Model`` with input ``latent`` and one image output.

    Raises:
        TfmedganError: For an invalid configuration.

    Example:
        >>> generator = build_generator(resolution=32, latent_dim=16, initial_filters=32)
        >>> generator.output_shape
        (None, 32, 32, 1)
    """
    validate_config(resolution, input_resolution, None, None, channels=channels)
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise TfmedganError(f"stylegan2: latent_dim must be a positive integer, got {latent_dim}")
    hidden_blocks = _number_of_doublings(input_resolution, resolution) - 1
    if (
        isinstance(initial_filters, bool)
        or not isinstance(initial_filters, int)
        or initial_filters < 1
        or initial_filters % (2**hidden_blocks) != 0
    ):
        raise TfmedganError(
            f"stylegan2: initial_filters ({initial_filters}) must be a positive multiple of "
            f"2**{hidden_blocks} (it is halved at each of the {hidden_blocks} up-blocks)"
        )

    latent = keras.Input(shape=(latent_dim,), name="latent")
    features = keras.layers.Dense(
        input_resolution * input_resolution * initial_filters,
        use_bias=False,
        kernel_initializer=_normal_init(),
        kernel_constraint=_max_norm(),
        name="input_dense",
    )(latent)
    features = PixelNormalization(axis=pixel_norm_axis, name="input_pixel_norm")(features)
    features = keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name="input_lrelu")(
        features
    )
    features = keras.layers.Reshape(
        (input_resolution, input_resolution, initial_filters), name="input_reshape"
    )(features)

    if upsample not in UPSAMPLE_CHOICES:
        raise TfmedganError(f"stylegan2: upsample must be one of {UPSAMPLE_CHOICES}, got {upsample!r}")

    def up(inputs, filters: int, layer_name: str, resolution_label: int, **kwargs):
        """x2 up-sampling and a 3x3 conv: one transposed conv of stride 2, or nearest x2 + conv."""
        settings = dict(padding="same", use_bias=False, kernel_initializer=_normal_init(),
                        kernel_constraint=_max_norm(), name=layer_name, **kwargs)
        if upsample == "transposed":
            return keras.layers.Conv2DTranspose(filters, 3, strides=2, **settings)(inputs)
        inputs = keras.layers.UpSampling2D(size=2, interpolation="nearest",
                                           name=f"feature_upsample_{resolution_label}")(inputs)
        return keras.layers.Conv2D(filters, 3, **settings)(inputs)

    rgb = None
    total_layers = hidden_blocks + 1
    for index in range(total_layers):
        is_output_layer = index == hidden_blocks
        current_resolution = input_resolution * 2 ** (index + 1)
        if is_output_layer:
            features = up(features, channels, f"output_conv_{current_resolution}", current_resolution,
                          activation="tanh")
            to_rgb = keras.layers.Conv2D(
                channels,
                1,
                padding="same",
                kernel_initializer="glorot_uniform",
                dtype="float32",
                name=f"to_rgb_{current_resolution}",
            )
        else:
            features = up(features, initial_filters // 2 ** (index + 1), f"up_conv_{current_resolution}",
                          current_resolution)
            features = PixelNormalization(
                axis=pixel_norm_axis, name=f"up_pixel_norm_{current_resolution}"
            )(features)
            features = keras.layers.LeakyReLU(
                negative_slope=LEAKY_RELU_SLOPE, name=f"up_lrelu_{current_resolution}"
            )(features)
            to_rgb = keras.layers.Conv2D(
                channels,
                1,
                padding="same",
                kernel_initializer=_normal_init(),
                kernel_constraint=_max_norm(),
                name=f"to_rgb_{current_resolution}",
            )
        branch = to_rgb(features)
        if rgb is None:
            rgb = branch
        else:
            upsampled = keras.layers.UpSampling2D(
                size=2, interpolation="nearest", name=f"rgb_upsample_{current_resolution}"
            )(rgb)
            add_dtype = "float32" if is_output_layer else None
            rgb = keras.layers.Add(dtype=add_dtype, name=f"rgb_add_{current_resolution}")(
                [upsampled, branch]
            )
    if output_activation not in ("linear", "tanh"):
        raise ValueError(f"output_activation must be 'linear' or 'tanh', got {output_activation!r}")
    if output_activation == "tanh":  # bounds the summed skip RGBs to the data's [-1, 1]; no weights
        rgb = keras.layers.Activation("tanh", dtype="float32", name="output_tanh")(rgb)
    return keras.Model(latent, rgb, name=name)


def build_discriminator(
    resolution: int = 64,
    channels: int = 1,
    final_resolution: int = 4,
    input_filters: int = 64,
    minibatch_std_mode: str = "channel",
    dropout_rate: float = 0.3,
    name: str = "discriminator",
    *,
    group_size: int = 4,
    synchronized_minibatch_std: bool = False,
) -> keras.Model:
    """Build the seed-004 residual discriminator ``[image, alpha] -> logit [N, 1]``.

    Architecture (``F_j = input_filters * 2**j``, ``m = log2(resolution / final_resolution) - 1``):

    * FromRGB: ``Conv2D(input_filters, 1)`` (glorot, no constraint) -> LeakyReLU(0.3);
    * residual block ``j = 0..m``: main ``Conv2D(F_j, 3, stride 2, same)`` -> LeakyReLU(0.3) ->
      ``Dropout(dropout_rate)``; skip ``Conv2D(F_j, 1, stride 2, same)``; merged with
      :class:`~tfmedgan.layers.stylegan.WeightedSum` as ``(1 - alpha) * main + alpha * skip``;
    * output block: :class:`~tfmedgan.layers.stylegan.MinibatchStandardDeviation` (extra
      channel, or extra row with ``minibatch_std_mode="row"`` as the original) ->
      ``Conv2D(input_filters * 2**(m+1), 3, stride 2, same)`` -> LeakyReLU(0.3) -> Flatten ->
      ``Dense(1)`` logit (float32, no sigmoid).

    Block, skip and output convs use ``RandomNormal(0.02)`` and ``MaxNorm(1.0)``.

    Inputs: ``image`` of shape ``(resolution, resolution, channels)`` and ``alpha`` of shape
    ``(1,)``. Feed alpha as ``[N, 1]`` (per sample) or ``[1, 1]`` (whole batch). The batch size
    of every call must be divisible by ``min(group_size, N)``.

    Args:
        resolution: Input side length (power of two).
        channels: Image channels, 1 or 3.
        final_resolution: Resolution after the last residual block (power of two <
            resolution).
        input_filters: Filters of FromRGB and block 0; doubled at each block.
        minibatch_std_mode: ``"channel"`` (default, the intent) or ``"row"`` (the original).
        dropout_rate: Dropout rate of the main path of each residual block (0.3 originally).
        name: Model name.
        group_size: Minibatch standard deviation group size (keyword only, 4 originally).
        synchronized_minibatch_std: Form the minibatch standard deviation groups over the global
            batch of all replicas (keyword only; see
            :class:`~tfmedgan.layers.stylegan.MinibatchStandardDeviation`).

    Returns:
        A functional ``keras.Model`` with inputs ``[image, alpha]`` and a ``[N, 1]`` logit.

    Raises:
        TfmedganError: For an invalid configuration.

    Example:
        >>> discriminator = build_discriminator(resolution=32, input_filters=8)
        >>> [tuple(shape) for shape in discriminator.input_shape]
        [(None, 32, 32, 1), (None, 1)]
    """
    validate_config(resolution, None, final_resolution, None, group_size, channels)
    if minibatch_std_mode not in MINIBATCH_STD_MODES:
        raise TfmedganError(
            f"stylegan2: minibatch_std_mode must be one of {MINIBATCH_STD_MODES}, "
            f"got {minibatch_std_mode!r}"
        )
    if isinstance(input_filters, bool) or not isinstance(input_filters, int) or input_filters < 1:
        raise TfmedganError(
            f"stylegan2: input_filters must be a positive integer, got {input_filters}"
        )
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise TfmedganError(f"stylegan2: dropout_rate must be in [0, 1), got {dropout_rate}")

    last_block = _number_of_doublings(resolution, final_resolution) - 1
    image = keras.Input(shape=(resolution, resolution, channels), name="image")
    alpha = keras.Input(shape=(1,), name="alpha")

    features = keras.layers.Conv2D(
        input_filters, 1, kernel_initializer="glorot_uniform", name="from_rgb"
    )(image)
    features = keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name="from_rgb_lrelu")(
        features
    )
    for block in range(last_block + 1):
        filters = input_filters * 2**block
        block_resolution = resolution // 2 ** (block + 1)
        main = keras.layers.Conv2D(
            filters,
            3,
            strides=2,
            padding="same",
            kernel_initializer=_normal_init(),
            kernel_constraint=_max_norm(),
            name=f"block_conv_{block_resolution}",
        )(features)
        main = keras.layers.LeakyReLU(
            negative_slope=LEAKY_RELU_SLOPE, name=f"block_lrelu_{block_resolution}"
        )(main)
        main = keras.layers.Dropout(dropout_rate, name=f"block_dropout_{block_resolution}")(main)
        skip = keras.layers.Conv2D(
            filters,
            1,
            strides=2,
            padding="same",
            kernel_initializer=_normal_init(),
            kernel_constraint=_max_norm(),
            name=f"block_skip_{block_resolution}",
        )(features)
        features = WeightedSum(name=f"block_fade_{block_resolution}")([main, skip, alpha])

    features = MinibatchStandardDeviation(
        group_size=group_size, mode=minibatch_std_mode, synchronized=synchronized_minibatch_std,
        name="minibatch_stddev",
    )(features)
    features = keras.layers.Conv2D(
        input_filters * 2 ** (last_block + 1),
        3,
        strides=2,
        padding="same",
        kernel_initializer=_normal_init(),
        kernel_constraint=_max_norm(),
        name="output_conv",
    )(features)
    features = keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name="output_lrelu")(
        features
    )
    features = keras.layers.Flatten(name="flatten")(features)
    logit = keras.layers.Dense(1, dtype="float32", name="logit")(features)
    return keras.Model([image, alpha], logit, name=name)
