"""The conditional PatchGAN's full-resolution first stage, evaluated in depth slabs (``--recompute``).

At the original 144x192x192 crop the discriminator's first stage (PyTorch indices 0-3:
``Conv(k4, s1) -> InstanceNorm -> LeakyReLU -> BlurPool``) makes 64-channel maps of the whole
crop, 1.24 GiB each in float32. A training step holds several of them for the backward pass and
several more while it runs (the gradients of the blur pool, the activation and the norm), and the
perceptual loss compares two of them (feature 0 of the fake and of the real). That is most of the
step's peak.

:class:`SlabDiscriminator` computes the same network with the first stage cut into slabs along the
first spatial axis. Each slab is a ``tf.recompute_grad`` function, so the backward pass keeps only
the slab's input rows and recomputes its full-resolution maps one slab at a time
(:func:`tfmedgan.engine.memory.after` orders the slabs, forward and backward). The instance norm's
statistics are global; they are computed in two extra slab passes (the sum, then the sum of
squared deviations, the same two-pass formula as the layer), and their gradient flows back through
those passes. Only the stage's output (half resolution) is kept whole; the rest of the network
runs as usual. Feature 0 never exists whole either: with a ``reference`` target the slabs also
return the per-example mean absolute difference between the fake's and the reference's feature 0,
which is the perceptual loss's first term.

Values equal the plain call up to float rounding (summation order of the statistics); the test
compares the outputs, the feature-0 L1 and the gradients of both. The cost is one more
first-layer convolution per slab pass (the first layer has only 3 input channels) and the
recomputation in the backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfmedgan.errors import TfmedganError
from tfmedgan.layers.blurpool import BlurPool
from tfmedgan.layers.normalization import InstanceNormalization

__all__ = ["SlabDiscriminator", "DEFAULT_ROWS_PER_SLAB", "slab_count_for"]

#: Output rows of the first stage per slab: 9 gives 8 slabs at the original 144-deep crop.
DEFAULT_ROWS_PER_SLAB = 9

_STAGE = ("model_0_pad", "model_0_conv", "model_1_norm", "model_2_lrelu", "model_3_blurpool")


def slab_count_for(shape: Sequence[int], rows_per_slab: int | None = None) -> int:
    """Slabs for a crop ``shape`` whose axes may be permuted: about ``rows_per_slab`` (default
    :data:`DEFAULT_ROWS_PER_SLAB`) output rows each on its shortest axis (8 for 144x192x192)."""
    rows = DEFAULT_ROWS_PER_SLAB if rows_per_slab is None else int(rows_per_slab)
    return max(1, math.ceil(min(int(size) for size in shape) / 2 / rows))


def _pytorch_index(layer: keras.layers.Layer) -> int | None:
    """The PyTorch index of a discriminator layer named ``model_<index>_<kind>`` (None for the
    paddings, which share their convolution's index, and for other layers)."""
    parts = layer.name.split("_")
    return int(parts[1]) if parts[0] == "model" and parts[-1] != "pad" else None


def _reflect(index: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    index = tf.where(index < 0, -index, index)
    return tf.where(index > size - 1, 2 * (size - 1) - index, index)


class SlabDiscriminator:
    """Calls a :func:`~tfmedgan.networks.patchgan_conditional.build_conditional_patchgan` model
    with its first stage in depth slabs (same weights, same values).

    Args:
        discriminator: The conditional PatchGAN (with anti-aliasing and instance norm, the
            original's settings; its feature outputs may be any of the inner layers).
        slab_count: Number of slabs (static). The slab boundaries follow the input's size, which
            may be dynamic (the augmentation's rotations swap the crop's axes); every slab must get
            at least one output row, see :func:`slab_count_for`.

    Example:
        >>> slabs = SlabDiscriminator(discriminator, slab_count_for([144, 192, 192]))  # doctest: +SKIP
        >>> logits, features, l1_0 = slabs([t2_flair, fake_t1], reference=real_t1)  # doctest: +SKIP
    """

    def __init__(self, discriminator: keras.Model, slab_count: int) -> None:
        layers = {layer.name: layer for layer in discriminator.layers}
        missing = [name for name in _STAGE if name not in layers]
        if missing:
            raise TfmedganError(f"{discriminator.name} has no {', '.join(missing)}: slabs need the original "
                                "discriminator (anti-aliased, instance norm)")
        self.conv, self.norm = layers["model_0_conv"], layers["model_1_norm"]
        self.activation, self.blur = layers["model_2_lrelu"], layers["model_3_blurpool"]
        if not isinstance(self.norm, InstanceNormalization) or self.norm.scale or self.norm.center \
                or self.norm.axis_mode != "channel" or self.norm.epsilon_mode != "variance":
            raise TfmedganError("slabs need an affine-free per-channel instance norm after the first convolution")
        if not isinstance(self.blur, BlurPool) or self.blur.pad_mode != "reflect" or self.blur.filter_size < 2:
            raise TfmedganError("slabs need a reflection-padded blur pool after the first activation")
        if tuple(self.conv.strides) != (1,) * len(self.conv.strides) or self.conv.padding != "valid":
            raise TfmedganError("slabs need the first convolution with stride 1 and 'valid' padding")
        if int(slab_count) < 1:
            raise TfmedganError(f"slab_count must be >= 1, got {slab_count!r}")
        self.discriminator = discriminator
        self.slab_count = int(slab_count)
        self.pad = int(layers["model_0_pad"].padding[0][0])
        self.kernel = int(self.conv.kernel_size[0])
        self.spatial_dims = len(self.conv.kernel_size)
        # the layers after the stage, in order, with the PyTorch index of those that give features
        names = [layer.name for layer in discriminator.layers]
        self.rest = discriminator.layers[names.index("model_3_blurpool") + 1:]
        self.feature_indices = self._feature_indices()

    def _feature_indices(self) -> list[int]:
        """PyTorch indices of the model's feature outputs (matched by tensor identity)."""
        by_tensor = {id(layer.output): _pytorch_index(layer) for layer in self.discriminator.layers
                     if _pytorch_index(layer) is not None}
        return [by_tensor[id(tensor)] for tensor in self.discriminator.outputs[1:]]

    # -- slab functions ----------------------------------------------------------------------------
    def _conv(self, rows: tf.Tensor) -> tf.Tensor:
        return self.conv(rows)

    def _padded(self, condition: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        dtype = self.conv.compute_dtype
        inputs = tf.concat([tf.cast(condition, dtype), tf.cast(target, dtype)], axis=-1)
        paddings = [[0, 0]] + [[self.pad, self.pad]] * self.spatial_dims + [[0, 0]]
        return tf.pad(inputs, paddings)

    def _blur_rows(self, activated: tf.Tensor) -> tf.Tensor:
        """The blur pool of rows already gathered (and reflected) along axis 1."""
        blur = self.blur
        paddings = [[0, 0], [0, 0]] + [[blur.pad_before, blur.pad_after]] * (self.spatial_dims - 1) + [[0, 0]]
        return blur.filter_padded(tf.pad(activated, paddings, mode="REFLECT"))

    # -- the call ----------------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Sequence[tf.Tensor],
        reference: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor | None]:
        """Evaluate the discriminator on ``[condition, target]``.

        Args:
            inputs: ``[condition, target]`` as for the model.
            reference: Optional second target (the real one, no gradient): the slabs then also
                give the per-example mean absolute difference of feature 0 between ``target`` and
                ``reference``.

        Returns:
            ``(logits, features, l1_0)``: the patch logits, the model's feature outputs other than
            feature 0 (in the model's order), and the feature-0 L1 per example (float32) or None.
        """
        from tfmedgan.engine.memory import after

        condition, target = inputs
        padded = self._padded(condition, target)
        reference_padded = None if reference is None else tf.stop_gradient(self._padded(condition, reference))
        shape = tf.shape(padded)
        rows = shape[1] - self.kernel + 1              # conv rows (feature 0); may be dynamic
        blur = self.blur
        out_rows = (rows + blur.pad_before + blur.pad_after - blur.filter_size) // blur.strides + 1
        count_n = self.slab_count
        # balanced boundaries: slab i covers [floor(i n / N), floor((i + 1) n / N)), never empty for N <= n
        conv_bounds = [(rows * index) // count_n for index in range(count_n + 1)]
        out_bounds = [(out_rows * index) // count_n for index in range(count_n + 1)]
        with tf.control_dependencies([tf.debugging.assert_greater_equal(
                out_rows, count_n, message="the crop is too small for the discriminator's slabs")]):
            rows = tf.identity(rows)
        axes = list(range(1, self.spatial_dims + 1))
        epsilon = self.norm.epsilon
        compute_dtype = self.norm.compute_dtype
        count = tf.cast(rows, tf.float32) * tf.cast(tf.reduce_prod(shape[2:-1] - self.kernel + 1), tf.float32)

        # pass 1: per-channel sums of feature 0 (and the feature-0 L1 against the reference)
        def sums(rows_in):
            return tf.reduce_sum(tf.cast(self._conv(rows_in), tf.float32), axis=axes, keepdims=True)

        def sums_and_difference(rows_in, reference_rows):
            values = tf.cast(self._conv(rows_in), tf.float32)
            other = tf.stop_gradient(tf.cast(self._conv(reference_rows), tf.float32))
            difference = tf.reduce_sum(tf.abs(values - other), axis=axes + [self.spatial_dims + 1])
            return tf.reduce_sum(values, axis=axes, keepdims=True), difference

        def deviations(rows_in, mean):
            values = tf.cast(self._conv(rows_in), tf.float32)
            return tf.reduce_sum(tf.math.squared_difference(values, mean), axis=axes, keepdims=True)

        def stage(rows_in, mean, scale, gather):
            values = tf.cast(self._conv(rows_in), tf.float32)
            normalised = tf.cast((values - mean) * scale, compute_dtype)
            activated = self.activation(normalised)
            return self._blur_rows(tf.gather(activated, gather, axis=1))

        sums_slab = tf.recompute_grad(sums)
        sums_reference_slab = tf.recompute_grad(sums_and_difference)
        deviations_slab = tf.recompute_grad(deviations)
        previous = None
        totals, differences = [], []
        for start, stop in zip(conv_bounds[:-1], conv_bounds[1:]):
            rows_in = padded[:, start:stop + self.kernel - 1]
            if previous is not None:
                rows_in = after(rows_in, previous)
            if reference_padded is None:
                total = sums_slab(rows_in)
            else:
                total, difference = sums_reference_slab(rows_in, reference_padded[:, start:stop + self.kernel - 1])
                differences.append(difference)
            totals.append(total)
            previous = total
        mean = tf.add_n(totals) / count
        squared = []
        for start, stop in zip(conv_bounds[:-1], conv_bounds[1:]):
            rows_in = after(padded[:, start:stop + self.kernel - 1], previous)
            previous = deviations_slab(rows_in, mean)
            squared.append(previous)
        scale = tf.math.rsqrt(tf.add_n(squared) / count + epsilon)

        # pass 2: the stage's output, slab by slab
        outputs = []
        for start, stop in zip(out_bounds[:-1], out_bounds[1:]):
            # the activation rows this slab's blur pool reads (reflected at the crop's ends)
            wanted = _reflect(tf.range(start * blur.strides, (stop - 1) * blur.strides + blur.filter_size)
                              - blur.pad_before, rows)
            low, high = tf.reduce_min(wanted), tf.reduce_max(wanted)
            rows_in = after(padded[:, low:high + self.kernel], previous)
            previous = tf.recompute_grad(stage)(rows_in, mean, scale, wanted - low)
            outputs.append(previous)
        x = tf.concat(outputs, axis=1) if len(outputs) > 1 else outputs[0]

        features = {3: x}
        for layer in self.rest:
            x = layer(x)
            if _pytorch_index(layer) is not None:
                features[_pytorch_index(layer)] = x
        l1_0 = None
        if reference is not None:
            l1_0 = tf.add_n(differences) / (count * float(self.conv.filters))
        return x, [features[index] for index in self.feature_indices if index != 0], l1_0
