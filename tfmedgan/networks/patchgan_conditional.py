"""Conditional PatchGAN with anti-aliased down-sampling (seed 001 ``NLayerDiscriminator``).

Channels-last functional Keras port of ``NLayerDiscriminator`` in ``3D-MRI/models/networks.py``
of WinstonHuTiger/2D_VAE_UDA_for_3D_sythesis (``--netD n_layers --n_layers_D 1 --normD instance``,
``no_antialias=False``). The discriminator sees the condition and the (real or generated)
target concatenated on the channel axis, ``concat([T2, FLAIR, T1])`` = 3 channels, and returns
a map of unbounded patch scores (LSGAN, no sigmoid).

The PyTorch model is one ``nn.Sequential``; its indices matter because the pix2pix
discriminator-feature loss reads the outputs of layers ``[0, 3, 6, 9]``. Keras layer names are
``model_<index>_<kind>``; for ``n_layers=1`` with anti-aliasing (the default)::

    index  PyTorch                                Keras layer(s)                   output (144x192x192 input)
    0      Conv(3->64, k4, s1, p1, bias)          model_0_pad + model_0_conv       64 @ 143x191x191
    1      InstanceNorm(64, affine=False)         model_1_norm
    2      LeakyReLU(0.2)                         model_2_lrelu
    3      Downsample(64) (blur pool)             model_3_blurpool                 64 @ 72x96x96
    4      Conv(64->64, k4, s1, p1, no bias)      model_4_pad + model_4_conv       64 @ 71x95x95
    5      InstanceNorm                           model_5_norm
    6      LeakyReLU(0.2)                         model_6_lrelu
    7      Conv(64->64, k4, s1, p1, no bias)      model_7_pad + model_7_conv       64 @ 70x94x94
    8      InstanceNorm                           model_8_norm
    9      LeakyReLU(0.2)                         model_9_lrelu
    10     Conv(64->1, k4, s1, p1, bias)          model_10_pad + model_10_conv     1 @ 69x93x93 (float32)

Feature index ``i`` is the output of Keras layer ``model_<i>_*`` (for a convolution: the
convolution output, before normalisation). :func:`pytorch_layer_names` gives this table for any
``n_layers``/``antialias``.

Parameter count: **540,737** (Keras ``count_params()`` == PyTorch ``parameters()``; the blur
kernel is a constant, instance norm has no weights).

**[CAVEAT] of the original, kept by default:** the inner convolutions have no bias because the
original tests ``norm_layer.func == nn.InstanceNorm2d``, which is False for ``InstanceNorm3d``
(``inner_bias=False``). In 2D the original would have used a bias.

PyTorch's ``Conv(k4, s1, p1)`` is zero padding 1 followed by a ``"valid"`` convolution, so every
such layer shrinks each axis by one voxel. Initialisation: kaiming normal (fan-in, gain
``sqrt(2)``: the original's ``nonlinearity='leaky_relu'`` with ``a=0``), biases 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.blurpool import BlurPool
from tfmedgan.layers.normalization import InstanceNormalization
from tfmedgan.networks.sit import kaiming_normal

PERCEPTUAL_LAYERS: tuple[int, ...] = (0, 3, 6, 9)
"""PyTorch indices of the discriminator features used by the pix2pix perceptual loss."""

PERCEPTUAL_WEIGHTS: tuple[float, ...] = (5.0, 1.5, 1.5, 1.0)
"""Weights of those features (``lambda_perceptual`` 1.5 multiplies their weighted sum)."""

NORM_CHOICES = ("instance", None)


def _layer_plan(n_layers: int, base_filters: int, antialias: bool) -> list[tuple[str, int, int]]:
    """The PyTorch sequence as ``(kind, filters, strides)``; kind in conv/conv_nobias/norm/lrelu/blurpool/out."""
    plan: list[tuple[str, int, int]] = [("conv", base_filters, 1 if antialias else 2), ("norm", base_filters, 1),
                                        ("lrelu", base_filters, 1)]
    if antialias:
        plan.append(("blurpool", base_filters, 2))
    multiplier = 1
    for layer in range(1, n_layers):
        multiplier = min(2**layer, 8)
        filters = base_filters * multiplier
        plan += [("conv_inner", filters, 1 if antialias else 2), ("norm", filters, 1), ("lrelu", filters, 1)]
        if antialias:
            plan.append(("blurpool", filters, 2))
    filters = base_filters * multiplier
    for _ in range(2):
        plan += [("conv_inner", filters, 1), ("norm", filters, 1), ("lrelu", filters, 1)]
    plan.append(("out", 1, 1))
    return plan


def pytorch_layer_names(n_layers: int = 1, antialias: bool = True) -> list[str]:
    """Keras layer name of every index of the PyTorch ``nn.Sequential`` (position = index).

    Example:
        >>> pytorch_layer_names()[:4]
        ['model_0_conv', 'model_1_norm', 'model_2_lrelu', 'model_3_blurpool']
    """
    names = []
    for index, (kind, _, _) in enumerate(_layer_plan(n_layers, 1, antialias)):
        suffix = "conv" if kind.startswith("conv") or kind == "out" else kind
        names.append(f"model_{index}_{suffix}")
    return names


def build_conditional_patchgan(
    condition_shape: Sequence[int | None] | None = None,
    target_channels: int = 1,
    base_filters: int = 64,
    n_layers: int = 1,
    spatial_dims: int = 3,
    norm: str | None = "instance",
    antialias: bool = True,
    inner_bias: bool = False,
    feature_layers: Sequence[int] = (),
    norm_epsilon: float = 1e-5,
    name: str = "conditional_patchgan",
) -> keras.Model:
    """Build the conditional PatchGAN discriminator.

    Args:
        condition_shape: ``(D, H, W, channels)`` of the condition (``(H, W, channels)`` in 2D);
            spatial sizes may be None. Default ``(None, None, None, 2)`` (T2, FLAIR).
        target_channels: Channels of the real/generated target (1: T1).
        base_filters: Filters of the first convolution (``--ndf``, 64).
        n_layers: Down-sampling blocks (``--n_layers_D``; the original run uses 1).
        spatial_dims: 3 (the original) or 2.
        norm: ``"instance"`` (affine-free instance norm, the original) or None (identity; the
            PyTorch index is kept).
        antialias: Blur-pool down-sampling after stride-1 convolutions (the original); False
            gives stride-2 convolutions instead (``--no_antialias``).
        inner_bias: Bias in the normalised inner convolutions (original 3D: False, see CAVEAT).
        feature_layers: PyTorch indices whose outputs are returned after the logits, e.g.
            :data:`PERCEPTUAL_LAYERS`. Empty: the model returns the logits only.
        norm_epsilon: Instance-norm epsilon (PyTorch 1e-5).
        name: Model name.

    Returns:
        A model called as ``model([condition, target])``; it returns the float32 patch logits
        ``[batch, d, h, w, 1]``, or ``[logits, feature_0, ...]`` when ``feature_layers`` is set.

    Example:
        >>> discriminator = build_conditional_patchgan((144, 192, 192, 2), feature_layers=PERCEPTUAL_LAYERS)
        >>> discriminator.count_params()
        540737
    """
    if spatial_dims not in (2, 3):
        raise TfmedganError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if condition_shape is None:
        condition_shape = (None,) * spatial_dims + (2,)
    condition_shape = tuple(None if size is None else int(size) for size in condition_shape)
    if len(condition_shape) != spatial_dims + 1 or condition_shape[-1] is None:
        raise TfmedganError(
            f"condition_shape {condition_shape} must have {spatial_dims} spatial sizes and a static channel count"
        )
    if n_layers < 1 or base_filters < 1 or target_channels < 1:
        raise TfmedganError(
            f"n_layers ({n_layers}), base_filters ({base_filters}) and target_channels "
            f"({target_channels}) must be >= 1"
        )
    if norm not in NORM_CHOICES:
        raise TfmedganError(f"norm must be one of {NORM_CHOICES}, got {norm!r}")
    plan = _layer_plan(n_layers, base_filters, antialias)
    wanted = [int(index) for index in feature_layers]
    bad = [index for index in wanted if not 0 <= index < len(plan) - 1]
    if bad:
        raise TfmedganError(
            f"feature_layers {bad} are not inner layers of this discriminator (0..{len(plan) - 2})"
        )
    conv_class = keras.layers.Conv3D if spatial_dims == 3 else keras.layers.Conv2D
    pad_class = keras.layers.ZeroPadding3D if spatial_dims == 3 else keras.layers.ZeroPadding2D

    condition = keras.Input(shape=condition_shape, name=f"{name}_condition")
    target = keras.Input(shape=condition_shape[:-1] + (int(target_channels),), name=f"{name}_target")
    x = keras.layers.Concatenate(name="condition_target_concat")([condition, target])
    outputs_by_index = {}
    for index, (kind, filters, strides) in enumerate(plan):
        if kind in ("conv", "conv_inner", "out"):
            x = pad_class(1, name=f"model_{index}_pad")(x)
            x = conv_class(
                filters,
                4,
                strides=strides,
                padding="valid",
                use_bias=(kind != "conv_inner") or inner_bias,
                kernel_initializer=kaiming_normal(),
                bias_initializer="zeros",
                dtype="float32" if kind == "out" else None,
                name=f"model_{index}_conv",
            )(x)
        elif kind == "norm":
            if norm == "instance":
                x = InstanceNormalization(
                    center=False, scale=False, epsilon=norm_epsilon, name=f"model_{index}_norm"
                )(x)
        elif kind == "lrelu":
            x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"model_{index}_lrelu")(x)
        else:
            x = BlurPool(spatial_dims=spatial_dims, strides=strides, name=f"model_{index}_blurpool")(x)
        outputs_by_index[index] = x
    logits = x
    if not wanted:
        return keras.Model([condition, target], logits, name=name)
    return keras.Model([condition, target], [logits] + [outputs_by_index[i] for i in wanted], name=name)
