"""Simplified 3D U-Net generators of the microCT CycleGAN (seed 002, pvilla/3DCycleGaN).

Five channels-last (NDHWC) functional Keras models, one per PyTorch class of the original
``models/networks.py``:

=================  =========  ================  ========  ===========
name               direction  output / input    multiple  parameters
=================  =========  ================  ========  ===========
``UNetSim3d``      same       1                 4         707,137
``UNetSim3dSRx2``  up         2                 4         1,011,361
``UNetSim3dSRd2``  down       1/2               8         3,721,281
``UNetSim3dSRx4``  up         4                 2         1,149,697
``UNetSim3dSRd4``  down       1/4               16        3,721,281
=================  =========  ================  ========  ===========

(parameters for the default ``num_filters=32``, one input and one output channel.)

All of them share the original's design: 3x3x3 convolutions with zero padding 1 and ReLU, 2x2x2
max pooling, decoder blocks ``conv3 + ReLU -> transposed conv (k3, s2) + ReLU``, skip connections
by channel concatenation, **no normalisation layers** and a **linear** 1x1x1 output convolution
(kept in float32 under mixed precision).

Transposed convolution alignment: PyTorch's ``ConvTranspose3d(k=3, stride=2, padding=1,
output_padding=1)`` keeps voxels ``1 .. 2S`` of the full ``2S + 1`` transposed output, while a
Keras ``padding="same"`` transposed convolution keeps voxels ``0 .. 2S - 1`` (a one-voxel shift of
every tap). We therefore use a ``"valid"`` transposed convolution followed by cropping the first
voxel of each spatial axis, which reproduces the PyTorch output exactly (tested against a NumPy
implementation of the PyTorch definition).

Layer names follow the PyTorch attribute names (``conv1``, ``conv2``, ``conv3s``, ``conv3``,
``center_conv``/``center_upconv``, ``dec2_conv``/``dec2_upconv``, ``dec2s_*``, ``dec1_conv``,
``dec1_upconv``, ``final``) so weights can be mapped one to one.

Initialisation: the original trainer calls ``init_weights(net, 'normal', init_gain=0.02)`` on the
generators as well as the discriminators (weights N(0, 0.02), bias 0), so ``initializer="normal"``
is the default. ``initializer="torch_default"`` gives PyTorch's own layer defaults instead:
``kaiming_uniform_(a=sqrt(5))`` == ``VarianceScaling(1/3, "fan_in", "uniform")`` (bound
``1/sqrt(fan_in)``) for the kernel and ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the bias, with
PyTorch's fan-in (``in_channels * 27`` for a convolution, ``out_channels * 27`` for a transposed
convolution, which is also what Keras computes for a ``Conv3DTranspose`` kernel).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import keras

from tfmedgan.errors import TfmedganError

INITIALIZERS = ("normal", "torch_default")

DEFAULT_INPUT_SHAPE = (None, None, None, 1)


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def _initializers(
    initializer: str, fan_in: int
) -> tuple[keras.initializers.Initializer, keras.initializers.Initializer]:
    """Return (kernel, bias) initialisers for a layer with the PyTorch fan-in ``fan_in``."""
    if initializer == "normal":
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.02), keras.initializers.Zeros()
    if initializer == "torch_default":
        bound = 1.0 / math.sqrt(fan_in)
        return (
            keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform"),
            keras.initializers.RandomUniform(minval=-bound, maxval=bound),
        )
    raise TfmedganError(f"unknown initializer {initializer!r}; choose one of {', '.join(INITIALIZERS)}")


class _Builder:
    """Creates the layers of one U-Net with a shared initialiser choice."""

    def __init__(self, initializer: str) -> None:
        _initializers(initializer, 1)  # validates the name early
        self.initializer = initializer

    def conv_relu(self, inputs: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        """PyTorch ``Conv3d(in, filters, 3, padding=1)`` followed by ReLU."""
        kernel_init, bias_init = _initializers(self.initializer, int(inputs.shape[-1]) * 27)
        return keras.layers.Conv3D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            name=name,
        )(inputs)

    def up_relu(self, inputs: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        """PyTorch ``ConvTranspose3d(in, filters, 3, stride=2, padding=1, output_padding=1)`` + ReLU."""
        kernel_init, bias_init = _initializers(self.initializer, filters * 27)
        full = keras.layers.Conv3DTranspose(
            filters,
            3,
            strides=2,
            padding="valid",
            activation="relu",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            name=name,
        )(inputs)
        return keras.layers.Cropping3D(cropping=((1, 0), (1, 0), (1, 0)), name=f"{name}_crop")(full)

    def decoder(self, inputs: keras.KerasTensor, middle: int, out: int, name: str) -> keras.KerasTensor:
        """``DecoderBlock3d``: conv3 + ReLU (``middle`` filters), then 2x up-convolution + ReLU."""
        hidden = self.conv_relu(inputs, middle, f"{name}_conv")
        return self.up_relu(hidden, out, f"{name}_upconv")

    def final(self, inputs: keras.KerasTensor, output_channels: int) -> keras.KerasTensor:
        """Linear 1x1x1 output convolution, computed in float32 under mixed precision."""
        kernel_init, bias_init = _initializers(self.initializer, int(inputs.shape[-1]))
        return keras.layers.Conv3D(
            output_channels,
            1,
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            dtype="float32",
            name="final",
        )(inputs)


def _pool(inputs: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return keras.layers.MaxPooling3D(pool_size=2, strides=2, name=name)(inputs)


def _concat(tensors: list[keras.KerasTensor], name: str) -> keras.KerasTensor:
    return keras.layers.Concatenate(axis=-1, name=name)(tensors)


def _input(input_shape: Sequence[int | None]) -> keras.KerasTensor:
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise TfmedganError(f"input_shape {shape} must be (depth, height, width, channels)")
    if not _is_integer(shape[-1]) or shape[-1] < 1:
        raise TfmedganError(f"input_shape {shape} must have a known positive channel count")
    for side in shape[:3]:
        if side is not None and (not _is_integer(side) or side < 1):
            raise TfmedganError(f"input_shape {shape} has an invalid spatial size {side!r}")
    return keras.Input(shape=shape, name="image")


def _check_filters(num_filters: int, output_channels: int) -> None:
    if not _is_integer(num_filters) or num_filters < 2:
        raise TfmedganError(f"num_filters must be an integer >= 2, got {num_filters!r}")
    if not _is_integer(output_channels) or output_channels < 1:
        raise TfmedganError(f"output_channels must be a positive integer, got {output_channels!r}")


# --------------------------------------------------------------------------------------------
# the five networks
# --------------------------------------------------------------------------------------------
def build_unet_sim3d(
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    output_channels: int = 1,
    num_filters: int = 32,
    initializer: str = "normal",
    name: str = "UNetSim3d",
) -> keras.Model:
    """Simplified 3D U-Net, same output size as input (original ``UNetSim3d``).

    Args:
        input_shape: ``(depth, height, width, channels)``; spatial sides may be ``None`` and must be
            multiples of 4 when given.
        output_channels: channels of the linear output.
        num_filters: the original's ``num_filters`` (encoder widths 2x and 4x this).
        initializer: ``"normal"`` (N(0, 0.02), bias 0, as the original trainer) or
            ``"torch_default"``.
        name: model name.

    Returns:
        A functional model mapping ``(batch, S, S, S, C)`` to ``(batch, S, S, S, output_channels)``.
    """
    _check_filters(num_filters, output_channels)
    nf = num_filters
    layers = _Builder(initializer)
    image = _input(input_shape)
    conv1 = layers.conv_relu(image, nf * 2, "conv1")
    conv2 = layers.conv_relu(_pool(conv1, "pool1"), nf * 4, "conv2")
    center = layers.decoder(_pool(conv2, "pool2"), nf * 2, nf, "center")
    dec2 = layers.decoder(_concat([center, conv2], "cat2"), nf, nf, "dec2")
    dec1 = layers.conv_relu(_concat([dec2, conv1], "cat1"), nf // 2, "dec1_conv")
    return keras.Model(image, layers.final(dec1, output_channels), name=name)


def build_unet_sim3d_srx2(
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    output_channels: int = 1,
    num_filters: int = 32,
    initializer: str = "normal",
    name: str = "UNetSim3dSRx2",
) -> keras.Model:
    """2x up-sampling simplified 3D U-Net (original ``UNetSim3dSRx2``, the A->B generator).

    Spatial sides must be multiples of 4; the output is twice the input size. Arguments as
    :func:`build_unet_sim3d`.
    """
    _check_filters(num_filters, output_channels)
    nf = num_filters
    layers = _Builder(initializer)
    image = _input(input_shape)
    conv1 = layers.conv_relu(image, nf * 2, "conv1")
    conv2 = layers.conv_relu(_pool(conv1, "pool1"), nf * 4, "conv2")
    center = layers.decoder(_pool(conv2, "pool2"), nf * 2, nf, "center")
    dec2 = layers.decoder(_concat([center, conv2], "cat2"), nf * 2, nf * 2, "dec2")
    dec1 = layers.decoder(_concat([dec2, conv1], "cat1"), nf, nf // 2, "dec1")
    return keras.Model(image, layers.final(dec1, output_channels), name=name)


def _down_body(
    layers: _Builder, features: keras.KerasTensor, nf: int, output_channels: int
) -> keras.KerasTensor:
    """Shared body of ``UNetSim3dSRd2`` / ``UNetSim3dSRd4`` applied to ``features``."""
    conv1 = layers.conv_relu(features, nf * 2, "conv1")
    # conv1 is not skip-connected in the original (it only feeds the first pooling)
    conv2 = layers.conv_relu(_pool(conv1, "pool1"), nf * 4, "conv2")
    conv3s = layers.conv_relu(_pool(conv2, "pool2"), nf * 8, "conv3s")
    conv3 = layers.conv_relu(conv3s, nf * 8, "conv3")
    center = layers.decoder(_pool(conv3, "pool3"), nf * 2, nf, "center")
    dec2 = layers.decoder(_concat([center, conv3], "cat3"), nf, nf, "dec2")
    dec1 = layers.conv_relu(_concat([dec2, conv2], "cat2"), nf // 2, "dec1_conv")
    return layers.final(dec1, output_channels)


def build_unet_sim3d_srd2(
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    output_channels: int = 1,
    num_filters: int = 32,
    initializer: str = "normal",
    name: str = "UNetSim3dSRd2",
) -> keras.Model:
    """2x down-sampling simplified 3D U-Net (original ``UNetSim3dSRd2``, the B->A generator).

    Spatial sides must be multiples of 8; the output is half the input size. Arguments as
    :func:`build_unet_sim3d`.
    """
    _check_filters(num_filters, output_channels)
    layers = _Builder(initializer)
    image = _input(input_shape)
    return keras.Model(image, _down_body(layers, image, num_filters, output_channels), name=name)


def build_unet_sim3d_srx4(
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    output_channels: int = 1,
    num_filters: int = 32,
    initializer: str = "normal",
    name: str = "UNetSim3dSRx4",
) -> keras.Model:
    """4x up-sampling simplified 3D U-Net (original ``UNetSim3dSRx4``, the A->B generator).

    Spatial sides must be multiples of 2; the output is four times the input size. Arguments as
    :func:`build_unet_sim3d`.
    """
    _check_filters(num_filters, output_channels)
    nf = num_filters
    layers = _Builder(initializer)
    image = _input(input_shape)
    conv1 = layers.conv_relu(image, nf * 2, "conv1")
    conv2 = layers.conv_relu(conv1, nf * 4, "conv2")  # no pooling before conv2 in the original
    center = layers.decoder(_pool(conv2, "pool1"), nf * 2, nf, "center")
    dec2 = layers.decoder(_concat([center, conv2], "cat2"), nf * 2, nf * 2, "dec2")
    dec2s = layers.decoder(_concat([center, conv1], "cat2s"), nf, nf * 2, "dec2s")
    dec1 = layers.decoder(_concat([dec2, dec2s], "cat1"), nf, nf // 2, "dec1")
    return keras.Model(image, layers.final(dec1, output_channels), name=name)


def build_unet_sim3d_srd4(
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    output_channels: int = 1,
    num_filters: int = 32,
    initializer: str = "normal",
    name: str = "UNetSim3dSRd4",
) -> keras.Model:
    """4x down-sampling simplified 3D U-Net (original ``UNetSim3dSRd4``, the B->A generator).

    Same layers as ``UNetSim3dSRd2`` applied to the 2x max-pooled input. Spatial sides must be
    multiples of 16; the output is a quarter of the input size. Arguments as
    :func:`build_unet_sim3d`.
    """
    _check_filters(num_filters, output_channels)
    layers = _Builder(initializer)
    image = _input(input_shape)
    pooled = _pool(image, "pool0")
    return keras.Model(image, _down_body(layers, pooled, num_filters, output_channels), name=name)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class UNetInfo:
    """Static facts about one registered U-Net.

    Attributes:
        name: the original class name, e.g. ``"UNetSim3dSRx2"``.
        super_resolution: resolution factor between the two domains (1, 2 or 4).
        direction: ``"same"``, ``"up"`` (output = input * factor) or ``"down"``
            (output = input / factor).
        required_multiple: every spatial side of the input patch must be a multiple of this.
        parameter_count: parameters of the original (``num_filters=32``, 1 in / 1 out channel).
        builder: the builder function.
    """

    name: str
    super_resolution: int
    direction: str
    required_multiple: int
    parameter_count: int
    builder: Callable[..., keras.Model]

    @property
    def spatial_scale(self) -> float:
        """Output side divided by input side (1, 2, 4, 0.5 or 0.25)."""
        if self.direction == "up":
            return float(self.super_resolution)
        if self.direction == "down":
            return 1.0 / self.super_resolution
        return 1.0


UNETS: dict[str, UNetInfo] = {
    info.name: info
    for info in (
        UNetInfo("UNetSim3d", 1, "same", 4, 707_137, build_unet_sim3d),
        UNetInfo("UNetSim3dSRx2", 2, "up", 4, 1_011_361, build_unet_sim3d_srx2),
        UNetInfo("UNetSim3dSRd2", 2, "down", 8, 3_721_281, build_unet_sim3d_srd2),
        UNetInfo("UNetSim3dSRx4", 4, "up", 2, 1_149_697, build_unet_sim3d_srx4),
        UNetInfo("UNetSim3dSRd4", 4, "down", 16, 3_721_281, build_unet_sim3d_srd4),
    )
}
UNET_NAMES: tuple[str, ...] = tuple(UNETS)


def unet_info(name: str) -> UNetInfo:
    """Return the :class:`UNetInfo` of a registered U-Net.

    Raises:
        TfmedganError: if ``name`` is not registered.
    """
    try:
        return UNETS[name]
    except (KeyError, TypeError):
        raise TfmedganError(f"unknown U-Net {name!r}; choose one of {', '.join(UNET_NAMES)}") from None


def super_resolution_factor(name: str) -> int:
    """Resolution factor of a U-Net: 1 for ``UNetSim3d``, 2 for SRx2/SRd2, 4 for SRx4/SRd4."""
    return unet_info(name).super_resolution


def spatial_scale(name: str) -> float:
    """Output side / input side of a U-Net: 1, 2 (SRx2), 0.5 (SRd2), 4 (SRx4) or 0.25 (SRd4)."""
    return unet_info(name).spatial_scale


def required_multiple(name: str) -> int:
    """Every spatial side of a patch fed to U-Net ``name`` must be a multiple of this number."""
    return unet_info(name).required_multiple


def check_patch(name: str, patch_shape: Sequence[int]) -> None:
    """Raise if ``patch_shape`` (depth, height, width) cannot be fed to U-Net ``name``.

    Example:
        ``check_patch("UNetSim3dSRd2", (64, 128, 128))`` passes;
        ``check_patch("UNetSim3dSRd2", (60, 128, 128))`` raises (60 is not a multiple of 8).

    Raises:
        TfmedganError: unknown name, not three sides, or a side that is not a positive multiple
            of :func:`required_multiple`.
    """
    multiple = required_multiple(name)
    shape = tuple(patch_shape)
    if len(shape) != 3 or not all(_is_integer(side) for side in shape):
        raise TfmedganError(f"patch size {shape} for {name} must be three integers (depth, height, width)")
    _check_sides(name, tuple(int(side) for side in shape), multiple)


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_sides(name: str, shape: tuple[int | None, ...], multiple: int) -> None:
    """Raise unless every known side in ``shape`` is a positive multiple of ``multiple``."""
    if any(side is not None and (side < multiple or side % multiple) for side in shape):
        raise TfmedganError(
            f"patch size {shape} does not fit {name}: every side must be a positive multiple of {multiple}"
        )


def output_patch_shape(name: str, patch_shape: Sequence[int]) -> tuple[int, int, int]:
    """Spatial output shape of U-Net ``name`` for an input patch (checked with :func:`check_patch`)."""
    check_patch(name, patch_shape)
    info = unet_info(name)
    depth, height, width = (int(side) for side in patch_shape)
    if info.direction == "up":
        factor = info.super_resolution
        return depth * factor, height * factor, width * factor
    if info.direction == "down":
        factor = info.super_resolution
        return depth // factor, height // factor, width // factor
    return depth, height, width


def check_pair(
    net_a: str,
    net_b: str,
    super_resolution: int,
    patch_shape_a: Sequence[int] | None = None,
) -> None:
    """Raise if two U-Nets do not form a CycleGAN pair for ``super_resolution``.

    ``net_a`` translates domain A to domain B and must multiply sizes by ``super_resolution``;
    ``net_b`` translates B to A and must divide them by it (``UNetSim3d`` / ``UNetSim3d`` for 1,
    ``UNetSim3dSRx2`` / ``UNetSim3dSRd2`` for 2, ``UNetSim3dSRx4`` / ``UNetSim3dSRd4`` for 4).
    With ``patch_shape_a`` the A patch and the B patch (``patch_shape_a * super_resolution``) are
    also checked with :func:`check_patch`.

    Raises:
        TfmedganError: unknown names, a bad factor, a mismatching pair or an unusable patch size.
    """
    info_a, info_b = unet_info(net_a), unet_info(net_b)
    if isinstance(super_resolution, bool) or not isinstance(super_resolution, int) or super_resolution < 1:
        raise TfmedganError(f"super_resolution must be a positive integer, got {super_resolution!r}")
    fitting_a = [i.name for i in UNETS.values() if i.spatial_scale == super_resolution]
    fitting_b = [i.name for i in UNETS.values() if i.spatial_scale == 1.0 / super_resolution]
    if info_a.spatial_scale != super_resolution:
        raise TfmedganError(
            f"net_a {net_a} scales A->B by {info_a.spatial_scale:g}, but super_resolution is "
            f"{super_resolution}; use {' or '.join(fitting_a) or 'no registered U-Net'}"
        )
    if info_b.spatial_scale != 1.0 / super_resolution:
        raise TfmedganError(
            f"net_b {net_b} scales B->A by {info_b.spatial_scale:g}, but super_resolution "
            f"{super_resolution} needs 1/{super_resolution}; use {' or '.join(fitting_b) or 'no registered U-Net'}"
        )
    if patch_shape_a is not None:
        check_patch(net_a, patch_shape_a)
        check_patch(net_b, tuple(int(side) * super_resolution for side in patch_shape_a))


def build_unet(
    name: str,
    input_shape: Sequence[int | None] = DEFAULT_INPUT_SHAPE,
    output_channels: int = 1,
    num_filters: int = 32,
    initializer: str = "normal",
) -> keras.Model:
    """Build a registered U-Net by its original class name.

    Args:
        name: one of :data:`UNET_NAMES`.
        input_shape: ``(depth, height, width, channels)``; given spatial sides are checked with
            :func:`check_patch`.
        output_channels: channels of the linear output.
        num_filters: the original's ``num_filters`` (32).
        initializer: ``"normal"`` (original trainer) or ``"torch_default"`` (PyTorch defaults).

    Returns:
        The functional ``keras.Model`` (named ``name``).

    Example:
        >>> generator_a = build_unet("UNetSim3dSRx2")          # A -> B, 2x up
        >>> generator_b = build_unet("UNetSim3dSRd2")          # B -> A, 2x down
    """
    info = unet_info(name)
    shape = tuple(input_shape)
    if len(shape) == 4 and all(side is None or _is_integer(side) for side in shape[:3]):
        _check_sides(name, shape[:3], info.required_multiple)
    return info.builder(
        input_shape=shape,
        output_channels=output_channels,
        num_filters=num_filters,
        initializer=initializer,
        name=name,
    )
