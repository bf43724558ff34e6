"""SIT ("Scout-Identify-Transform") generator of seed 001 (3D pix2pix, T2 + FLAIR -> T1).

Channels-last functional Keras port of ``SIT`` / ``DenseShortut`` in
``3D-MRI/models/networks.py`` of WinstonHuTiger/2D_VAE_UDA_for_3D_sythesis (forked from
Linus4world/3D-MRI-style-transfer), built there as ``SIT((2, 64, 1), factor=4,
norm=InstanceNorm3d(affine=False))``. Layout for the default ``factor=4`` (``F`` = filters)::

    encoder  layers_in_0..2:  conv k4 s2 p1 -> IN -> ReLU   (2->F, F->F, F->F; outputs are skips)
    decoder  layers_2 (deepest, input skip 2):      DS -> IN -> ReLU -> up(F->F) -> IN -> ReLU
             layers_1 (concat[skip 1, previous]):   conv1x1 2F->F -> DS -> IN -> ReLU -> up(F->F) -> IN -> ReLU
             layers_0 (concat[skip 0, previous]):   conv1x1 2F->F -> DS -> IN -> ReLU -> DS -> IN -> ReLU
                                                    -> up(F->8) -> IN -> ReLU
    head     out:             IN -> ReLU -> conv k3 p1 (8->1) -> sigmoid     (float32)

``up`` is PyTorch's ``ConvTranspose(k3, s2, p1, output_padding 1)``: a Keras ``"valid"``
transposed convolution (size 2n+1) followed by cropping the first voxel of every spatial axis,
which reproduces PyTorch's output grid exactly (Keras ``"same"`` would be shifted by one voxel).
The k4 s2 p1 encoder convolutions equal Keras ``"same"`` padding for even sizes; every spatial
size must be a multiple of ``2 ** (factor - 1)`` (8).

The dense shortcut block ``DS`` (three k3 convolutions and six learned per-channel factors
``w``) computes::

    x0 = ReLU(IN(x))
    x1 = ReLU(IN(conv1(x0) + w1 * x0))
    x2 = ReLU(IN(conv2(x1) + w21 * x0 + w22 * x1))
    y  = conv3(x2) + w31 * x0 + w32 * x1 + w33 * x2

Instance normalisation has no affine parameters (PyTorch ``affine=False``, epsilon 1e-5), so it
adds no weights. All convolutions have a bias. Initialisation as the original ``init_net(...,
init_type='kaiming')``: kernels ``kaiming_normal_(a=0, mode='fan_in')`` (untruncated normal,
std ``sqrt(2 / fan_in)``; PyTorch and Keras compute the same fan-in for convolutions and
transposed convolutions), biases 0, and the ``w`` factors N(0, 1) (not touched by the init).

Parameter count (Keras ``count_params()`` == PyTorch ``sum(p.numel() for p in parameters())``,
there are no non-trainable weights): **2,113,953** for filters 64, 2 inputs and 1 output.

Layer names follow the PyTorch module paths (``layers_in_0_conv``, ``layers_1_combine``,
``layers_1_ds0_conv1``, ``layers_1_ds0_w21``, ``layers_0_up``, ``out_conv``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.normalization import InstanceNormalization
from tfmedgan.layers.scale import ChannelScale


#: Up-sampling of the decoder: the original's transposed convolutions, or resize + convolution.
UPSAMPLE_CHOICES = ("transposed", "resize")


def kaiming_normal() -> keras.initializers.Initializer:
    """PyTorch ``kaiming_normal_(a=0, mode='fan_in')``: untruncated N(0, 2 / fan_in)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")


class _Builder:
    """Creates the layers of one SIT network (shared choices: dimensions, norm, init)."""

    def __init__(self, spatial_dims: int, norm_epsilon: float, upsample: str = "transposed") -> None:
        self.spatial_dims = spatial_dims
        self.norm_epsilon = norm_epsilon
        self.upsample = upsample
        self.resize_class = keras.layers.UpSampling3D if spatial_dims == 3 else keras.layers.UpSampling2D
        self.conv_class = keras.layers.Conv3D if spatial_dims == 3 else keras.layers.Conv2D
        self.transpose_class = (
            keras.layers.Conv3DTranspose if spatial_dims == 3 else keras.layers.Conv2DTranspose
        )
        self.crop_class = keras.layers.Cropping3D if spatial_dims == 3 else keras.layers.Cropping2D

    @staticmethod
    def _init() -> dict:
        return {"kernel_initializer": kaiming_normal(), "bias_initializer": "zeros"}

    def conv(self, x, filters: int, kernel_size: int, name: str, strides: int = 1, dtype=None):
        return self.conv_class(
            filters, kernel_size, strides=strides, padding="same", name=name, dtype=dtype, **self._init()
        )(x)

    def up(self, x, filters: int, name: str):
        """PyTorch ``ConvTranspose(k3, s2, p1, output_padding=1)``: valid, then drop voxel 0;
        or, with ``upsample="resize"``, nearest x2 then a 3-wide ``"same"`` convolution."""
        if self.upsample == "resize":
            x = self.resize_class(size=2, name=f"{name}_resize")(x)
            return self.conv(x, filters, 3, name)
        full = self.transpose_class(filters, 3, strides=2, padding="valid", name=name, **self._init())(x)
        return self.crop_class(((1, 0),) * self.spatial_dims, name=f"{name}_crop")(full)

    def norm_relu(self, x, name: str):
        x = InstanceNormalization(center=False, scale=False, epsilon=self.norm_epsilon, name=f"{name}_norm")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    def dense_shortcut(self, x, name: str):
        """The ``DenseShortut`` block (see the module docstring)."""
        filters = int(x.shape[-1])
        x0 = self.norm_relu(x, f"{name}_in0")
        conv1 = self.conv(x0, filters, 3, f"{name}_conv1")
        x1 = keras.layers.Add(name=f"{name}_sum1")([conv1, ChannelScale(name=f"{name}_w1")(x0)])
        x1 = self.norm_relu(x1, f"{name}_in1")
        conv2 = self.conv(x1, filters, 3, f"{name}_conv2")
        x2 = keras.layers.Add(name=f"{name}_sum2")(
            [conv2, ChannelScale(name=f"{name}_w21")(x0), ChannelScale(name=f"{name}_w22")(x1)]
        )
        x2 = self.norm_relu(x2, f"{name}_in2")
        conv3 = self.conv(x2, filters, 3, f"{name}_conv3")
        return keras.layers.Add(name=f"{name}_sum3")(
            [
                conv3,
                ChannelScale(name=f"{name}_w31")(x0),
                ChannelScale(name=f"{name}_w32")(x1),
                ChannelScale(name=f"{name}_w33")(x2),
            ]
        )


def build_sit_generator(
    input_shape: Sequence[int | None] | None = None,
    output_channels: int = 1,
    filters: int = 64,
    factor: int = 4,
    final_filters: int = 8,
    spatial_dims: int = 3,
    norm_epsilon: float = 1e-5,
    name: str = "sit_generator",
    upsample: str = "transposed",
    input_skip: bool = False,
) -> keras.Model:
    """Build the SIT generator as a functional ``keras.Model``.

    Args:
        input_shape: ``(D, H, W, channels)`` (or ``(H, W, channels)`` in 2D); spatial sizes may
            be None. Default ``(None, None, None, 2)``: T2 and FLAIR. Every spatial size must be a
            multiple of ``2 ** (factor - 1)``.
        output_channels: Output channels (1: T1).
        filters: Width ``C_mid`` of every stage (the original ``--ngf``, 64).
        factor: ``factor - 1`` encoder/decoder stages (original 4).
        final_filters: Channels of the last up-sampling and the head (8 in the original).
        spatial_dims: 3 (the original) or 2.
        norm_epsilon: Instance-norm epsilon (PyTorch 1e-5).
        name: Model name.
        upsample: ``"transposed"`` (the original's transposed convolutions, which leave a
            2-voxel checkerboard in early training) or ``"resize"`` (nearest x2 then a 3-wide
            convolution: no checkerboard, the same number of weights and the same layer names,
            but the kernels' in/out axes are swapped, so weights of one kind do not load into
            the other).
        input_skip: Concatenate the input to the head's features before ``out_conv`` (not the
            original). The SIT's first convolution has stride 2, so without it nothing reaches the
            output at full resolution; the head then sees the input's voxels. It adds
            ``27 * input_channels * output_channels`` weights to ``out_conv`` (one more layer,
            ``out_input_skip``), so original weights do not load into it.

    Returns:
        A model mapping ``[batch, D, H, W, input_channels]`` to a float32 sigmoid output
        ``[batch, D, H, W, output_channels]`` in (0, 1).

    Example:
        >>> generator = build_sit_generator((144, 192, 192, 2))
        >>> generator.count_params()
        2113953
    """
    if spatial_dims not in (2, 3):
        raise TfmedganError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if input_shape is None:
        input_shape = (None,) * spatial_dims + (2,)
    input_shape = tuple(None if size is None else int(size) for size in input_shape)
    if len(input_shape) != spatial_dims + 1 or input_shape[-1] is None:
        raise TfmedganError(
            f"input_shape {input_shape} must have {spatial_dims} spatial sizes and a static channel count"
        )
    if factor < 2 or filters < 1 or final_filters < 1 or output_channels < 1:
        raise TfmedganError(
            f"need factor >= 2 and positive filters, got factor={factor}, filters={filters}, "
            f"final_filters={final_filters}, output_channels={output_channels}"
        )
    if upsample not in UPSAMPLE_CHOICES:
        raise TfmedganError(f"upsample must be one of {UPSAMPLE_CHOICES}, got {upsample!r}")
    multiple = 2 ** (factor - 1)
    bad = [size for size in input_shape[:-1] if size is not None and size % multiple]
    if bad:
        raise TfmedganError(
            f"SIT input sizes must be multiples of {multiple}, got {input_shape[:-1]}"
        )
    build = _Builder(spatial_dims, norm_epsilon, upsample)
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    skips = []
    for stage in range(factor - 1):
        x = build.conv(x, filters, 4, f"layers_in_{stage}_conv", strides=2)
        x = build.norm_relu(x, f"layers_in_{stage}")
        skips.append(x)
    previous = None
    for stage in range(factor - 2, -1, -1):
        x = skips[stage]
        prefix = f"layers_{stage}"
        if previous is not None:
            x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, previous])
            x = build.conv(x, filters, 1, f"{prefix}_combine")
        x = build.dense_shortcut(x, f"{prefix}_ds0")
        x = build.norm_relu(x, f"{prefix}_ds0_post")
        if stage == 0:
            x = build.dense_shortcut(x, f"{prefix}_ds1")
            x = build.norm_relu(x, f"{prefix}_ds1_post")
            x = build.up(x, final_filters, f"{prefix}_up")
        else:
            x = build.up(x, filters, f"{prefix}_up")
        x = build.norm_relu(x, f"{prefix}_up")
        previous = x
    x = build.norm_relu(previous, "out")
    if input_skip:
        x = keras.layers.Concatenate(name="out_input_skip")([x, inputs])
    x = build.conv(x, output_channels, 3, "out_conv", dtype="float32")
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name="out_sigmoid")(x)
    return keras.Model(inputs, outputs, name=name)
