"""ResNet image-to-image translator (the seed-000 3D CycleGAN generator), 2D or 3D.

Layout (Zhu et al. 2017, as ported to 3D by DCAN-Labs/MR-Image-Translation ``CycleGAN_3D.py``)::

    reflection pad 3 -> conv 7 (base) -> IN -> ReLU
    n_downsamplings x [conv 3 stride 2 (filters x2) -> IN -> ReLU]
    n_residual_blocks x [conv 3 -> IN -> ReLU -> conv 3 -> IN -> add input]
    n_downsamplings x [transposed conv 3 stride 2 (filters /2) -> IN -> ReLU]
        (upsample="resize": nearest x2 -> reflection pad 1 -> conv 3 instead of the transposed conv)
    reflection pad 3 -> conv 7 (output_channels) -> tanh (float32)

The seed-000 default (``base_filters=32, n_downsamplings=1, n_residual_blocks=1``) has 354,497
parameters with ``norm="channel"`` and 355,077 with ``norm="zslice"`` at input (156, 188, 156, 1),
the configuration of the shipped Keras 2 weights.

The module also answers which input shapes a configuration accepts (:func:`valid_input_shape`)
and pads volumes centrally to such a shape (:func:`pad_to_valid`, undone by
:func:`crop_padding`).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.normalization import InstanceNormalization
from tfmedgan.layers.padding import ReflectionPadding
from tfmedgan.layers.masking import InputBackgroundMask

#: Reflection padding (voxels per side) before the first and the last 7-wide convolution.
REFLECTION_PADDING = 3

#: ``None``: no normalisation (not the original; keeps the absolute intensity an intensity
#: translation needs, see docs/faithfulness.md).
NORM_CHOICES = ("channel", "zslice", None)

#: Up-sampling of the decoder stages: ``transposed`` (stride-2 transposed convolution, the
#: original's default) or ``resize`` (nearest-neighbour x2 then reflection pad 1 and a 3-wide
#: convolution: the original's disabled ``use_resize_convolution`` path, free of the transposed
#: convolution's checkerboard).
UPSAMPLE_CHOICES = ("transposed", "resize")
SKIP_CHOICES = ("add", "concat", None)

#: Configurations of the original code. ``cyclegan_3d`` is CycleGAN_3D.py (the shipped weights);
#: ``gan_3d`` is the older, deeper GAN_3D.py. Both used keras-contrib InstanceNormalization with
#: axis=3, i.e. ``norm="zslice"`` (for gan_3d assumed from the shared code, see the spec A2.4).
GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    "cyclegan_3d": {
        "input_shape": (156, 188, 156, 1),
        "base_filters": 32,
        "n_downsamplings": 1,
        "n_residual_blocks": 1,
        "norm": "zslice",
        "output_channels": 1,
    },
    "gan_3d": {
        "input_shape": (92, 108, 84, 1),
        "base_filters": 64,
        "n_downsamplings": 2,
        "n_residual_blocks": 8,
        "norm": "zslice",
        "output_channels": 1,
    },
}


# --------------------------------------------------------------------------------------------
# Valid input shapes


def required_multiple(n_downsamplings: int) -> int:
    """Return the number every spatial size must be a multiple of (``2 ** n_downsamplings``).

    Each stride-2 'same' convolution maps n to ceil(n / 2) and each stride-2 'same' transposed
    convolution doubles, so the output equals the input only when n is divisible by 2**N.

    Args:
        n_downsamplings: Number of stride-2 down-sampling stages.

    Returns:
        The required multiple.
    """
    if n_downsamplings < 0:
        raise TfmedganError(f"n_downsamplings must be >= 0, got {n_downsamplings}")
    return 2 ** int(n_downsamplings)


def minimum_spatial_size(n_downsamplings: int, reflection_padding: int = REFLECTION_PADDING) -> int:
    """Return the smallest spatial size the generator accepts on every axis.

    It is the smallest multiple of :func:`required_multiple` that is larger than the reflection
    padding (reflection needs ``size > padding``).

    Args:
        n_downsamplings: Number of stride-2 down-sampling stages.
        reflection_padding: Reflection padding of the 7-wide convolutions.

    Returns:
        The minimum size per spatial axis.
    """
    multiple = required_multiple(n_downsamplings)
    return multiple * (reflection_padding // multiple + 1)


def is_valid_spatial_size(size: int, n_downsamplings: int) -> bool:
    """Return whether one spatial size is accepted (output size equals input size).

    Args:
        size: Size of one spatial axis.
        n_downsamplings: Number of stride-2 down-sampling stages.

    Returns:
        True if ``size`` is a multiple of ``2**n_downsamplings`` and at least the minimum size.
    """
    return size % required_multiple(n_downsamplings) == 0 and size >= minimum_spatial_size(
        n_downsamplings
    )


def valid_input_shape(shape: Sequence[int], n_downsamplings: int = 1) -> tuple[int, ...]:
    """Round a spatial shape up to the nearest shape the generator accepts.

    Args:
        shape: Spatial shape only (no batch and no channel axis), e.g. ``(150, 181, 149)``.
        n_downsamplings: Number of stride-2 down-sampling stages of the generator.

    Returns:
        The smallest valid spatial shape that is >= ``shape`` on every axis.

    Example:
        >>> valid_input_shape((150, 181, 149), n_downsamplings=2)
        (152, 184, 152)
    """
    multiple = required_multiple(n_downsamplings)
    minimum = minimum_spatial_size(n_downsamplings)
    result = []
    for size in shape:
        size = int(size)
        if size < 1:
            raise TfmedganError(f"spatial sizes must be >= 1, got shape {tuple(shape)}")
        result.append(max(minimum, -(-size // multiple) * multiple))
    return tuple(result)


def centre_padding(
    shape: Sequence[int], target_shape: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Return the (before, after) amounts that centre ``shape`` inside ``target_shape``.

    The split is floor before and ceil after, as the seed-000 loader (``load_crop_data.py``) did.

    Args:
        shape: Current spatial shape.
        target_shape: Spatial shape to reach; every size must be >= the current one.

    Returns:
        One ``(before, after)`` pair per axis.
    """
    if len(shape) != len(target_shape):
        raise TfmedganError(
            f"shape {tuple(shape)} and target shape {tuple(target_shape)} differ in length"
        )
    padding = []
    for size, target in zip(shape, target_shape):
        if size > target:
            raise TfmedganError(
                f"volume shape {tuple(shape)} is larger than the target shape "
                f"{tuple(target_shape)}; crop it first"
            )
        total = int(target) - int(size)
        padding.append((total // 2, total - total // 2))
    return tuple(padding)


def pad_to_valid(
    volume: np.ndarray,
    n_downsamplings: int = 1,
    target_shape: Sequence[int] | None = None,
    spatial_dims: int | None = None,
    constant_value: float = 0.0,
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Zero-pad (or pad with ``constant_value``) a volume centrally to a valid generator shape.

    Args:
        volume: Array whose first ``spatial_dims`` axes are spatial (e.g. ``(x, y, z)`` or
            ``(x, y, z, channels)``).
        n_downsamplings: Number of stride-2 stages of the generator that will read the volume.
        target_shape: Spatial shape to pad to; default: :func:`valid_input_shape` of the volume.
            It must itself be valid (e.g. the (156, 188, 156) the seed-000 weights need).
        spatial_dims: Number of leading spatial axes; default: all axes of ``volume``.
        constant_value: Value of the added voxels.

    Returns:
        ``(padded_volume, padding)`` where ``padding`` holds one ``(before, after)`` pair per
        spatial axis; :func:`crop_padding` undoes it.

    Example:
        >>> padded, padding = pad_to_valid(np.zeros((5, 7, 6)), n_downsamplings=1)
        >>> padded.shape, padding
        ((6, 8, 6), ((0, 1), (0, 1), (0, 0)))
    """
    volume = np.asarray(volume)
    spatial_dims = volume.ndim if spatial_dims is None else int(spatial_dims)
    if not 1 <= spatial_dims <= volume.ndim:
        raise TfmedganError(
            f"spatial_dims={spatial_dims} does not fit a volume of shape {volume.shape}"
        )
    spatial_shape = volume.shape[:spatial_dims]
    if target_shape is None:
        target_shape = valid_input_shape(spatial_shape, n_downsamplings)
    else:
        target_shape = tuple(int(size) for size in target_shape)
        invalid = [
            size for size in target_shape if not is_valid_spatial_size(size, n_downsamplings)
        ]
        if invalid:
            raise TfmedganError(
                f"target shape {target_shape} is not accepted by a generator with "
                f"{n_downsamplings} down-sampling stage(s); nearest valid: "
                f"{valid_input_shape(target_shape, n_downsamplings)}"
            )
    padding = centre_padding(spatial_shape, target_shape)
    full_padding = list(padding) + [(0, 0)] * (volume.ndim - spatial_dims)
    padded = np.pad(volume, full_padding, mode="constant", constant_values=constant_value)
    return padded, padding


def crop_padding(volume: np.ndarray, padding: Sequence[tuple[int, int]]) -> np.ndarray:
    """Remove the padding added by :func:`pad_to_valid` from the leading spatial axes.

    Args:
        volume: Padded array (extra trailing axes such as channels are kept).
        padding: The ``(before, after)`` pairs returned by :func:`pad_to_valid`.

    Returns:
        The cropped array (a view).
    """
    slices = tuple(
        slice(before, volume.shape[axis] - after) for axis, (before, after) in enumerate(padding)
    )
    return volume[slices]


def _check_input_shape(input_shape: tuple, n_downsamplings: int, norm: str) -> int:
    """Validate a generator input shape and return the number of spatial axes."""
    spatial_dims = len(input_shape) - 1
    if spatial_dims not in (2, 3):
        raise TfmedganError(
            f"input_shape {input_shape} must be (x, y, channels) or (x, y, z, channels)"
        )
    if input_shape[-1] is None:
        raise TfmedganError(f"input_shape {input_shape} needs a static channel count")
    static = [size for size in input_shape[:-1] if size is not None]
    if any(not is_valid_spatial_size(size, n_downsamplings) for size in static):
        spatial = tuple(input_shape[:-1])
        suggestion = tuple(
            size if size is None else valid_input_shape((size,), n_downsamplings)[0]
            for size in spatial
        )
        raise TfmedganError(
            f"input_shape {input_shape}: every spatial size must be a multiple of "
            f"{required_multiple(n_downsamplings)} and >= {minimum_spatial_size(n_downsamplings)}; "
            f"nearest valid spatial shape {suggestion} (see tfmedgan pad_to_valid)"
        )
    if norm == "zslice" and input_shape[-2] is None:
        raise TfmedganError(
            f"norm='zslice' needs a static last spatial axis (gamma/beta length), got "
            f"input_shape {input_shape}"
        )
    return spatial_dims


# --------------------------------------------------------------------------------------------
# Builder


def build_resnet_generator(
    input_shape: Sequence[int | None] = (None, None, None, 1),
    base_filters: int = 32,
    n_downsamplings: int = 1,
    n_residual_blocks: int = 1,
    norm: str = "channel",
    output_channels: int = 1,
    norm_epsilon: float = 1e-5,
    norm_epsilon_mode: str | None = None,
    name: str = "resnet_generator",
    upsample: str = "transposed",
    mask_background: bool = False,
    skip: str | None = None,
) -> keras.Model:
    """Build the ResNet translator generator (seed 000) as a functional Keras model.

    Args:
        input_shape: ``(x, y, channels)`` or ``(x, y, z, channels)``; spatial sizes may be None.
            Static sizes must be valid (see :func:`valid_input_shape`). With ``norm="zslice"``
            the last spatial size must be static.
        base_filters: Filters of the first 7-wide convolution; doubled at each down-sampling.
        n_downsamplings: Stride-2 down-sampling (and up-sampling) stages.
        n_residual_blocks: Residual blocks at the lowest resolution.
        norm: ``"channel"`` (standard instance norm, gamma/beta per channel) or ``"zslice"``
            (the original's normalisation per index of the last spatial axis, needed to load the
            seed-000 weights) or ``None`` (no normalisation, not the original: instance norm of a
            crop removes its absolute intensity, which an intensity translation needs).
        output_channels: Channels of the output image.
        norm_epsilon: Epsilon of the instance normalisation (original: 1e-5).
        norm_epsilon_mode: ``"std"`` (keras-contrib, divide by std + eps) or ``"variance"``
            (divide by sqrt(var + eps)). Default: ``"std"`` for ``norm="zslice"`` (faithful to the
            trained weights), ``"variance"`` for ``norm="channel"``.
        name: Model name.
        upsample: ``"transposed"`` (transposed convolution 3 stride 2, the original's default)
            or ``"resize"`` (nearest x2, reflection pad 1, convolution 3 'valid': the original's
            disabled ``use_resize_convolution`` path). Same layer names (``up{k}_conv``), but the
            kernel shapes differ (``(3, 3, 3, in, out)`` vs ``(3, 3, 3, out, in)``), so weights of
            one kind do not load into the other.
        mask_background: Set the output to -1 wherever the input is -1 (the background of a
            skull-stripped volume scaled to [-1, 1]) with :class:`InputBackgroundMask`. Not the
            original. The network then only predicts the foreground and need not draw the step from
            the brain's edge to the background. Adds no weights.
        skip: A full-resolution skip from the stem to the head, not the original: ``"add"`` adds
            the stem's activations to the last up-sampling stage's (no weights added),
            ``"concat"`` concatenates them (the head convolution takes twice the channels, so its
            kernel shape changes), ``None`` (the original) has none. Needs ``n_downsamplings >= 1``.
            It hands the head the input's sharp edges, which the down-sampled path blurs.

    Returns:
        A functional ``keras.Model`` mapping an image to an image of the same spatial shape with
        values in [-1, 1] (tanh, computed in float32 under mixed precision).

    Example:
        >>> generator = build_resnet_generator((16, 16, 16, 1), base_filters=8)
        >>> tuple(generator.output_shape)
        (None, 16, 16, 16, 1)
    """
    input_shape = tuple(None if size is None else int(size) for size in input_shape)
    if norm not in NORM_CHOICES:
        raise TfmedganError(f"norm must be one of {NORM_CHOICES}, got {norm!r}")
    if upsample not in UPSAMPLE_CHOICES:
        raise TfmedganError(f"upsample must be one of {UPSAMPLE_CHOICES}, got {upsample!r}")
    if skip not in SKIP_CHOICES:
        raise TfmedganError(f"skip must be one of {SKIP_CHOICES}, got {skip!r}")
    if skip is not None and n_downsamplings < 1:
        raise TfmedganError(f"skip={skip!r} needs n_downsamplings >= 1, got {n_downsamplings}")
    if base_filters < 1 or output_channels < 1 or n_residual_blocks < 0:
        raise TfmedganError(
            f"base_filters ({base_filters}) and output_channels ({output_channels}) must be >= 1 "
            f"and n_residual_blocks ({n_residual_blocks}) >= 0"
        )
    spatial_dims = _check_input_shape(input_shape, n_downsamplings, norm)
    if norm_epsilon_mode is None:
        norm_epsilon_mode = "std" if norm == "zslice" else "variance"

    convolution = keras.layers.Conv3D if spatial_dims == 3 else keras.layers.Conv2D
    transposed = keras.layers.Conv3DTranspose if spatial_dims == 3 else keras.layers.Conv2DTranspose
    upsampling = keras.layers.UpSampling3D if spatial_dims == 3 else keras.layers.UpSampling2D

    def normalise(tensor, layer_name):
        if norm is None:
            return tensor
        return InstanceNormalization(
            axis_mode=norm, epsilon=norm_epsilon, epsilon_mode=norm_epsilon_mode, name=layer_name
        )(tensor)

    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = ReflectionPadding(REFLECTION_PADDING, spatial_dims=spatial_dims, name="stem_pad")(inputs)
    x = convolution(base_filters, 7, padding="valid", name="stem_conv")(x)
    x = normalise(x, "stem_norm")
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    stem = x

    filters = base_filters
    for stage in range(1, n_downsamplings + 1):
        filters *= 2
        x = convolution(filters, 3, strides=2, padding="same", name=f"down{stage}_conv")(x)
        x = normalise(x, f"down{stage}_norm")
        x = keras.layers.Activation("relu", name=f"down{stage}_relu")(x)

    for block in range(1, n_residual_blocks + 1):
        shortcut = x
        x = convolution(filters, 3, padding="same", name=f"res{block}_conv1")(x)
        x = normalise(x, f"res{block}_norm1")
        x = keras.layers.Activation("relu", name=f"res{block}_relu")(x)
        x = convolution(filters, 3, padding="same", name=f"res{block}_conv2")(x)
        x = normalise(x, f"res{block}_norm2")
        x = keras.layers.Add(name=f"res{block}_add")([x, shortcut])

    for stage in range(1, n_downsamplings + 1):
        filters //= 2
        if upsample == "resize":
            x = upsampling(2, name=f"up{stage}_resize")(x)
            x = ReflectionPadding(1, spatial_dims=spatial_dims, name=f"up{stage}_pad")(x)
            x = convolution(filters, 3, padding="valid", name=f"up{stage}_conv")(x)
        else:
            x = transposed(filters, 3, strides=2, padding="same", name=f"up{stage}_conv")(x)
        x = normalise(x, f"up{stage}_norm")
        x = keras.layers.Activation("relu", name=f"up{stage}_relu")(x)

    if skip == "add":
        x = keras.layers.Add(name="skip_add")([x, stem])
    elif skip == "concat":
        x = keras.layers.Concatenate(name="skip_concat")([x, stem])
    x = ReflectionPadding(REFLECTION_PADDING, spatial_dims=spatial_dims, name="head_pad")(x)
    x = convolution(output_channels, 7, padding="valid", name="head_conv")(x)
    outputs = keras.layers.Activation("tanh", dtype="float32", name="head_tanh")(x)
    if mask_background:
        outputs = InputBackgroundMask(dtype="float32", name="head_background")([inputs, outputs])
    return keras.Model(inputs, outputs, name=name)


def build_preset_generator(preset: str = "cyclegan_3d", **overrides: Any) -> keras.Model:
    """Build a generator from :data:`GENERATOR_PRESETS`, optionally overriding arguments.

    Args:
        preset: ``"cyclegan_3d"`` (CycleGAN_3D.py, the shipped weights, 355,077 parameters) or
            ``"gan_3d"`` (the deeper GAN_3D.py: 64 filters, 2 down-samplings, 8 residual blocks).
        **overrides: Any :func:`build_resnet_generator` argument, e.g. ``norm="channel"``.

    Returns:
        The generator model.
    """
    if preset not in GENERATOR_PRESETS:
        raise TfmedganError(
            f"unknown generator preset {preset!r}; choose from {sorted(GENERATOR_PRESETS)}"
        )
    arguments = dict(GENERATOR_PRESETS[preset])
    arguments.setdefault("name", preset + "_generator")
    arguments.update(overrides)
    return build_resnet_generator(**arguments)
