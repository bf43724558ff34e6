"""3D PatchGAN discriminator with BatchNorm and sigmoid output (seed 002, pvilla/3DCycleGaN).

Channels-last (NDHWC) port of ``NLayerDiscriminator3d(input_nc, ndf=64, n_layers=3,
norm_layer=nn.BatchNorm3d)`` from the original ``models/discriminator.py``::

    Conv3d(in, 64, k4, s2, p1, bias) + LeakyReLU(0.2)
    Conv3d(64, 128, k4, s2, p1, no bias) + BatchNorm + LeakyReLU(0.2)
    Conv3d(128, 256, k4, s2, p1, no bias) + BatchNorm + LeakyReLU(0.2)
    Conv3d(256, 512, k4, s1, p1, no bias) + BatchNorm + LeakyReLU(0.2)
    Conv3d(512, 1, k4, s1, p1, bias) -> sigmoid

11,048,769 trainable parameters; Keras ``count_params()`` also counts the 1,792 BatchNorm moving
statistics (11,050,561). Every convolution is ``ZeroPadding3D(1)`` + a ``"valid"`` convolution, so
output sizes equal PyTorch's for every input size (a Keras ``"same"`` stride-2 convolution would
differ for odd sizes): side ``S -> floor(S/2)`` three times, then ``-1`` twice (``S/8 - 2`` for
multiples of 8). The last convolution and the sigmoid run in float32 under mixed precision.

Initialisation as the original trainer (``init_weights(..., 'normal', 0.02)``): convolution
kernels N(0, 0.02), biases 0. Its ``BatchNorm2d`` rule does not match ``BatchNorm3d``, so the
BatchNorm layers keep PyTorch's defaults gamma = 1, beta = 0 (not the pix2pix N(1, 0.02) gamma).
BatchNorm uses PyTorch's epsilon 1e-5 and momentum 0.1 (Keras ``momentum=0.9``).

Train/eval quirk of the original: the discriminators are put in ``.eval()`` mode at creation and
``.train()`` is never called, so BatchNorm always normalises with its initial running statistics
(mean 0, variance 1): it acts as a learnable per-channel affine ``gamma * x / sqrt(1 + eps) + beta``
and never looks at batch statistics. ``use_batch_statistics=False`` (default) reproduces this with
:class:`RunningStatisticsBatchNormalization`, which ignores the ``training`` flag;
``use_batch_statistics=True`` gives standard Keras BatchNormalization (batch statistics while
training, moving averages at inference).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.normalization import RunningStatisticsBatchNormalization

DEFAULT_INPUT_SHAPE = (None, None, None, 1)

#: trainable parameters of the original ``NLayerDiscriminator3d(1, 64, 3)``
ORIGINAL_TRAINABLE_PARAMETERS = 11_048_769
#: Keras ``count_params()`` of the same network (moving mean / variance included)
KERAS_PARAMETER_COUNT = 11_050_561


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def patchgan_bn_output_shape(spatial_shape: Sequence[int], n_layers: int = 3) -> tuple[int, ...]:
    """Spatial shape of the discriminator's patch map for an input of ``spatial_shape``.

    Uses the PyTorch formula of the original (k4, p1): ``floor(S / 2)`` for each of the
    ``n_layers`` stride-2 convolutions, then ``S - 1`` for each of the two stride-1 convolutions.

    Example:
        >>> patchgan_bn_output_shape((64, 128, 128))
        (6, 14, 14)

    Raises:
        TfmedganError: if a side is not a positive integer or the patch map would be empty.
    """
    shape = tuple(spatial_shape)
    if not shape or not all(_is_integer(side) and side > 0 for side in shape):
        raise TfmedganError(f"discriminator input size {shape} must be positive integers")
    output = []
    for side in shape:
        side = int(side)
        for _ in range(n_layers):
            side = (side + 2 - 4) // 2 + 1
        side = side - 2
        output.append(side)
    if min(output) < 1:
        raise TfmedganError(
            f"discriminator input size {shape} is too small for {n_layers} layers: "
            f"every side must be at least {3 * 2**n_layers}"
        )
    return tuple(output)


def build_patchgan_bn_discriminator(
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    base_filters: int = 64,
    n_layers: int = 3,
    use_batch_statistics: bool = False,
    name: str = "patchgan_bn_discriminator",
    synchronized: bool = False,
) -> keras.Model:
    """Build the 3D PatchGAN discriminator of the microCT CycleGAN.

    Args:
        input_shape: ``(depth, height, width, channels)``; spatial sides may be ``None``.
        base_filters: filters of the first convolution (``ndf``, 64); later layers use
            ``base_filters * min(2**n, 8)``.
        n_layers: number of stride-2 convolutions (3).
        use_batch_statistics: ``False`` (faithful) keeps BatchNorm on its running statistics as
            the original's eval-mode networks; ``True`` uses standard BatchNormalization.
        name: model name.
        synchronized: with ``use_batch_statistics``, compute the batch statistics over the
            global batch of all replicas (Keras ``BatchNormalization(synchronized=True)``), as
            one device computes them; the recipe sets it when training on several replicas.
            No effect without a multi-replica strategy or without batch statistics.

    Returns:
        A functional model mapping images to a float32 map of per-patch probabilities in (0, 1),
        shape ``(batch, d, h, w, 1)`` with ``(d, h, w) = patchgan_bn_output_shape(...)``.

    Example:
        >>> discriminator = build_patchgan_bn_discriminator()
        >>> discriminator.count_params()
        11050561
    """
    shape = tuple(input_shape)
    if len(shape) != 4 or not _is_integer(shape[-1]) or shape[-1] < 1:
        raise TfmedganError(f"input_shape {shape} must be (depth, height, width, channels) with known channels")
    for side in shape[:3]:
        if side is not None and (not _is_integer(side) or side < 1):
            raise TfmedganError(f"input_shape {shape} has an invalid spatial size {side!r}")
    if not _is_integer(base_filters) or base_filters < 1:
        raise TfmedganError(f"base_filters must be a positive integer, got {base_filters!r}")
    if not _is_integer(n_layers) or n_layers < 0:
        raise TfmedganError(f"n_layers must be a non-negative integer, got {n_layers!r}")
    if all(side is not None for side in shape[:3]):
        patchgan_bn_output_shape(shape[:3], n_layers)

    if use_batch_statistics:
        def normalization(**options):
            return keras.layers.BatchNormalization(synchronized=bool(synchronized), **options)
    else:
        normalization = RunningStatisticsBatchNormalization

    def conv(inputs, filters: int, strides: int, use_bias: bool, layer_name: str, dtype=None):
        padded = keras.layers.ZeroPadding3D(padding=1, name=f"{layer_name}_pad")(inputs)
        return keras.layers.Conv3D(
            filters,
            4,
            strides=strides,
            padding="valid",
            use_bias=use_bias,
            kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.02),
            bias_initializer="zeros",
            dtype=dtype,
            name=layer_name,
        )(padded)

    def norm_act(inputs, index: int):
        normalized = normalization(
            axis=-1,
            momentum=0.9,
            epsilon=1e-5,
            gamma_initializer="ones",
            beta_initializer="zeros",
            name=f"norm{index}",
        )(inputs)
        return keras.layers.LeakyReLU(negative_slope=0.2, name=f"lrelu{index}")(normalized)

    image = keras.Input(shape=shape, name="image")
    features = conv(image, base_filters, 2, True, "conv0")
    features = keras.layers.LeakyReLU(negative_slope=0.2, name="lrelu0")(features)
    multiplier = 1
    for index in range(1, n_layers):
        multiplier = min(2**index, 8)
        features = conv(features, base_filters * multiplier, 2, False, f"conv{index}")
        features = norm_act(features, index)
    multiplier = min(2**n_layers, 8)
    features = conv(features, base_filters * multiplier, 1, False, f"conv{n_layers}")
    features = norm_act(features, n_layers)
    logits = conv(features, 1, 1, True, f"conv{n_layers + 1}", dtype="float32")
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="sigmoid")(logits)
    return keras.Model(image, probabilities, name=name)
