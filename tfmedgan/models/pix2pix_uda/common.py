"""Parts shared by the three seed-001 stages (3D pix2pix, slice VAE, adaptation).

* :class:`Pix2PixOptions`: the options of the 3D pix2pix training that pretraining and
  adaptation share (data root, crop, Adam, losses, augmentation, ``--recompute``);
* :class:`Pix2PixBase`: the recipe part both pix2pix stages share: the SIT generator and the
  conditional PatchGAN, the supervised step (:meth:`Pix2PixBase.supervised_step`), the linear
  learning-rate decay, the per-epoch mid-slice figure, validation on a case folder and the
  memory estimate;
* the KL term of the adaptation (:func:`kl_slices`, :func:`elementwise_kl`,
  :func:`top_percent_mean`), written with TensorFlow ops so that its gradient reaches the
  generator;
* scoring and writing synthetic T1 volumes on the original grid (:func:`evaluate_cases`,
  :func:`translate_cases`), used by ``pix2pix3d-test`` and ``generate_images/generate.py``;
* ``--sample-data`` (:func:`sample_brats_root`).

One supervised step (``pix2pix_model.py`` ``optimize_parameters``), ``A`` = [T2, FLAIR],
``B`` = T1, ``D`` sees ``concat([A, B or G(A)])``::

    fake = G(A)
    D update:  0.5 [LSGAN(D(A, fake), 0) + LSGAN(D(A, B), 1)]               (fake detached)
    G update (with the updated D):
        LSGAN(D(A, fake), 1) + lambda_l1 |fake - B|
        + lambda_perceptual * sum_i w_i |f_i(A, fake) - f_i(A, B)|       (i in D layers 0, 3, 6, 9;
                                                                            w = 5, 1.5, 1.5, 1)
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses
from tfmedgan.data import brats
from tfmedgan.engine.config import EngineConfig, option
from tfmedgan.engine.distribute import average_loss, global_batch_size
from tfmedgan.engine.precision import apply_gradient_list, apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.engine.recipe import Recipe
from tfmedgan.errors import TfmedganError
from tfmedgan.models.pix2pix_uda.slabs import SlabDiscriminator, slab_count_for
from tfmedgan.networks.patchgan_conditional import PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS, build_conditional_patchgan
from tfmedgan.networks.sit import build_sit_generator

#: Sample data of ``--sample-data``: voxel size, cases per split, and the crop / VAE slice size
#: used when the options are left at the original (full-size) values.
SAMPLE_VOXEL_MM = 4.0
SAMPLE_CASES = {"train": 6, "val": 2, "test": 3}
SAMPLE_CROP = (40, 48, 40)
SAMPLE_SLICE_SIZE = 64

#: Calibration constants of :func:`estimate_step_memory` (see its docstring and :data:`MEMORY_FIT`).
MEMORY_RUNTIME_BYTES = 1.0 * 2**30
MEMORY_D_BACKWARD_TRANSIENT = 6.0
MEMORY_D_SLAB_TRANSIENT = 1.0
MEMORY_E_BACKWARD_TRANSIENT = 3.0
MEMORY_MIXED_PRECISION_FACTOR = 0.65
#: With --recompute (discriminator slabs) the peak barely depends on the precision: it is mostly
#: float32 (norm statistics, the feature L1s, oneDNN's buffers): 4.75 GiB float32, 4.62 bfloat16.
MEMORY_MIXED_PRECISION_FACTOR_RECOMPUTE = 0.9
#: Peak RSS (GiB) of one step at 144x192x192 that bench/bench_pix2pix_uda.py measured on a 2-core
#: CPU machine (batch 1, 256^2 VAE slices), which the constants above were fitted to: (stage,
#: precision, recompute) -> GiB. Repeated runs of one configuration spread by about 1 GiB (glibc's
#: heaps; docs/pix2pix_uda.md, "Memory"); these are the latest runs of the current code: with
#: --recompute (discriminator slabs) and without it, session 5. Float32 without --recompute needs
#: more than 20 GiB (killed by the kernel on this 23 GiB machine; estimate 18.3).
MEMORY_FIT = {
    ("pretrain", "mixed_bfloat16", True): 4.62,
    ("pretrain", "mixed_bfloat16", False): 14.13,
    ("uda", "mixed_bfloat16", False): 15.25,
    ("pretrain", "float32", True): 4.75,
    ("uda", "mixed_bfloat16", True): 5.02,
    ("uda", "float32", True): 4.92,
}

#: Cut points of the SIT generator for ``--recompute`` (layers after which only one tensor is
#: alive; the skips of the deeper stages live inside the segment between the first two).
SIT_CHECKPOINTS = ("layers_in_0_relu", "layers_0_combine", "layers_0_ds0_sum3", "layers_0_ds1_sum3",
                   "layers_0_up_relu")


# ------------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------------
def _check_triple(values: Sequence[int], flag: str, minimum: int) -> None:
    if len(values) != 3 or any(not isinstance(v, (int, np.integer)) or v < minimum for v in values):
        raise TfmedganError(f"{flag} needs three integers >= {minimum}, got {list(values)}")


@dataclasses.dataclass
class Pix2PixOptions(EngineConfig):
    """Options shared by the pix2pix pretraining and the adaptation (defaults: the original's).

    Attributes:
        data_root: the BraTS-layout root holding ``domain1_train``, ``domain2_val``, ...
        crop_shape: crop of the IPL-reoriented volumes (the original 144 x 192 x 192).
        crop_start: first voxel of the crop; empty = the original ``[8, 24, 24]`` for the
            original crop shape, else a centred crop.
        lr, beta_1, beta_2: Adam of generator and discriminator (PyTorch epsilon 1e-8).
        epochs_decay: of the ``epochs``, the last N decay the learning rate linearly (the
            original's ``--n_epochs_decay``; its ``--n_epochs`` is ``epochs - epochs_decay``).
        lambda_l1, lambda_perceptual: loss weights (100, 1.5).
        augment: rot90/flip per sample and brightness/contrast jitter of the inputs.
        recompute: gradient checkpointing of the generator, and the discriminator's
            full-resolution first stage in recomputed depth slabs (:mod:`.slabs`).
    """

    data_root: str = ""
    crop_shape: list[int] = option(help="crop of the IPL-reoriented volumes D H W (smaller for CPU budgets)",
                                   nargs=3, type=int, metavar=("D", "H", "W"),
                                   default_factory=lambda: list(brats.ORIGINAL_CROP_SHAPE))
    crop_start: list[int] = option(help="first voxel of the crop (default: [8, 24, 24] for the original crop, "
                                   "else centred)", nargs=3, type=int, metavar=("D", "H", "W"), default_factory=list)
    lr: float = option(1e-4, "Adam learning rate of generator and discriminator")
    beta_1: float = option(0.5, "Adam beta_1")
    beta_2: float = option(0.999, "Adam beta_2")
    epochs_decay: int = option(70, "the last N epochs decay the learning rate linearly (--n_epochs_decay)")
    lambda_l1: float = option(100.0, "weight of the L1 loss")
    lambda_perceptual: float = option(1.5, "weight of the discriminator-feature loss (layers 0, 3, 6, 9)")
    augment: bool = option(True, "no rot90/flip/intensity augmentation", negative="--no-augment")
    recompute: bool = option(False, "gradient checkpointing of the generator and of the discriminator's first "
                             "stage (in depth slabs): a full-size step in under 5 GiB instead of 14-20")
    precision: str = option("float32", "numerical precision (the original's --amp: mixed_float16 on a GPU, "
                            "mixed_bfloat16 on a CPU)", choices=("float32", "mixed_bfloat16", "mixed_float16"),
                            group="training engine")

    def validate(self) -> None:
        super().validate()
        if self.crop_shape:  # empty only for uda: the pretrained run's crop
            _check_triple(self.crop_shape, "--crop-shape", 1)
        if self.crop_start:
            _check_triple(self.crop_start, "--crop-start", 0)
        self.check_at_least(0, "lr", "epochs_decay", "lambda_l1", "lambda_perceptual")
        if not 0.0 <= self.beta_1 < 1.0 or not 0.0 <= self.beta_2 < 1.0:
            raise TfmedganError(f"--beta-1 and --beta-2 must be in [0, 1), got {self.beta_1}, {self.beta_2}")

    def crop(self) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
        """(crop shape, crop start or None for centred)."""
        if not self.crop_shape:
            raise TfmedganError("the crop shape is not resolved yet")
        shape = tuple(int(size) for size in self.crop_shape)
        if self.crop_start:
            return shape, tuple(int(value) for value in self.crop_start)  # type: ignore[return-value]
        if shape == brats.ORIGINAL_CROP_SHAPE:
            return shape, brats.ORIGINAL_CROP_START  # type: ignore[return-value]
        return shape, None  # type: ignore[return-value]

    def model_shape(self) -> tuple[int, int, int]:
        """Crop shape padded to a multiple of 8 (the model grid without rotation)."""
        return tuple(int(math.ceil(size / brats.SIZE_MULTIPLE) * brats.SIZE_MULTIPLE) for size in self.crop_shape)


def decay_learning_rate(lr: float, epoch: int, epochs: int, epochs_decay: int) -> float:
    """The original's linear policy: ``lr * (1 - max(0, epoch + 1 - n_epochs) / (epochs_decay + 1))``
    with ``n_epochs = epochs - epochs_decay`` and 0-based ``epoch``.

    With 50 + 70 epochs, epochs 1..50 run at ``lr`` and epoch 120 at ``lr / 71``; with
    ``epochs_decay = 0`` the rate is constant. Equal to
    :func:`tfmedgan.models.cyclegan.decayed_learning_rate` with ``decay_epoch = n_epochs - 1``.

    Example:
        >>> decay_learning_rate(1e-4, 119, 120, 70) * 71
        0.0001
    """
    from tfmedgan.models.cyclegan import decayed_learning_rate

    n_epochs = int(epochs) - int(epochs_decay)
    return decayed_learning_rate(lr, epoch, n_epochs + int(epochs_decay), n_epochs - 1)


# ------------------------------------------------------------------------------------------------
# Sample data
# ------------------------------------------------------------------------------------------------
def sample_brats_root(config: EngineConfig) -> Path:
    """``--sample-data``: BraTS-layout cases of two simulated institutions, written once into
    ``OUTPUT_DIR/sample_data-brats-4mm`` (then reused), small enough for a CPU.

    Sets ``config.data_root``; a crop left at the original 144 x 192 x 192 becomes
    :data:`SAMPLE_CROP`, a VAE slice size left at 256 becomes :data:`SAMPLE_SLICE_SIZE`.
    """
    from tfmedgan.data.samples.brats import make_brats_cases

    folder = Path(config.output_dir) / f"sample_data-brats-{SAMPLE_VOXEL_MM:g}mm"
    complete = all((folder / f"domain{d}_{split}").is_dir() and any((folder / f"domain{d}_{split}").iterdir())
                   for d in (1, 2) for split in SAMPLE_CASES)
    if not complete:
        print(f"writing BraTS-layout sample cases to {folder} (reused by later runs) ...", file=sys.stderr)
        make_brats_cases(folder, n_per_split=SAMPLE_CASES, voxel_size_mm=SAMPLE_VOXEL_MM, seed=0)
    config.data_root = str(folder)
    if tuple(getattr(config, "crop_shape", ())) == brats.ORIGINAL_CROP_SHAPE and not getattr(config, "crop_start", []):
        config.crop_shape = list(SAMPLE_CROP)
        print(f"sample data: crop {list(SAMPLE_CROP)} (the {SAMPLE_VOXEL_MM:g} mm volumes are smaller than "
              "144 x 192 x 192)", file=sys.stderr)
    if getattr(config, "slice_size", None) == brats.VAE_SLICE_SIZE:
        config.slice_size = SAMPLE_SLICE_SIZE
        print(f"sample data: VAE slices of {SAMPLE_SLICE_SIZE} x {SAMPLE_SLICE_SIZE}", file=sys.stderr)
    return folder


# ------------------------------------------------------------------------------------------------
# The KL term of the adaptation
# ------------------------------------------------------------------------------------------------
KL_VIEWS = ("coronal", "transpose", "reshape")


def nearest_rank(q: float, count: int) -> int:
    """1-based rank of the ``q``-th percentile by the original's nearest rank:
    ``1 + round(q / 100 * (count - 1))`` (Python rounding)."""
    return 1 + int(round(0.01 * float(q) * (int(count) - 1)))


def kth_smallest(values: tf.Tensor, k) -> tf.Tensor:
    """The ``k``-th smallest (1-based) element of a 1-D tensor, like ``torch.kthvalue``.

    Uses ``top_k`` from the nearer end (much faster on CPU than sorting millions of values);
    the gradient reaches the selected element.
    """
    n = tf.size(values)
    k = tf.cast(k, tf.int32)

    def from_bottom() -> tf.Tensor:
        return -tf.math.top_k(-values, k, sorted=True).values[k - 1]

    def from_top() -> tf.Tensor:
        m = n - k + 1
        return tf.math.top_k(values, m, sorted=True).values[m - 1]

    return tf.cond(k <= n - k + 1, from_bottom, from_top)


def _kth_smallest_with_zeros(content: tf.Tensor, zeros, k: int) -> tf.Tensor:
    """``k``-th smallest of ``content`` joined with ``zeros`` extra zero values (the padding of
    the cube), without materialising or sorting the zeros."""
    negatives = tf.reduce_sum(tf.cast(content < 0, tf.int32))
    zeros = tf.cast(zeros, tf.int32)
    k_tensor = tf.constant(int(k), tf.int32)
    return tf.case(
        [(k_tensor <= negatives, lambda: kth_smallest(content, k_tensor)),
         (k_tensor <= negatives + zeros, lambda: tf.constant(0.0, content.dtype))],
        default=lambda: kth_smallest(content, k_tensor - zeros),
    )


def _centre_fit(volume: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Centre crop (start ``(n - size) // 2``) then zero pad (odd voxel after) every axis of a
    3D tensor to ``size``; returns (cube, the cropped content before padding)."""
    shape = tf.shape(volume)
    start = tf.maximum((shape - size) // 2, 0)
    length = tf.minimum(shape, size)
    content = tf.slice(volume, start, length)
    before = (size - length) // 2
    after = size - length - before
    cube = tf.pad(content, tf.stack([before, after], axis=1))
    return tf.ensure_shape(cube, (size, size, size)), content


def kl_slices(volume: tf.Tensor, size: int, view: str = "coronal") -> tf.Tensor:
    """A model-grid volume ``[1, D, H, W, 1]`` as the VAE's batch of ``size`` slices ``[size, size, size, 1]``.

    Args:
        volume: A synthetic or real T1 on the IPL model grid (batch 1, one channel).
        size: Slice size of the VAE (256): the volume is centre cropped/zero padded to ``size^3``.
        view: How the volume becomes slices:

            * ``coronal`` (default): ``(I, P, L) -> (P, L, S)``, slices along P whose rows are L and
              columns S: exactly the coronal view the VAE was trained on (BraTS files are LPS; the
              VAE cut ``volume[:, i, :]`` of the native file);
            * ``transpose``: ``(I, P, L) -> (P, L, I)``, the spec's ``transpose(0, 1, 3, 4, 2)``
              (the coronal view with the columns upside down);
            * ``reshape``: the original code's ``view(B, C, H, W, D)``: a memory reshape of
              ``(D, H, W)`` to ``(H, W, D)`` that scrambles axial planes (``--faithful-kl``).

    Then, as the original's ``normalise_image``: ``clip((x - p1) / (p99 - p1), 0, 1)`` with the
    1st and 99th nearest-rank percentiles of the whole padded cube (0/0 gives 0).
    """
    if view not in KL_VIEWS:
        raise TfmedganError(f"KL view must be one of {', '.join(KL_VIEWS)}, got {view!r}")
    data = tf.cast(volume, tf.float32)[0, ..., 0]
    shape = tf.shape(data)
    if view == "reshape":
        data = tf.reshape(data, tf.stack([shape[1], shape[2], shape[0]]))
    else:
        data = tf.transpose(data, [1, 2, 0])
        if view == "coronal":
            data = tf.reverse(data, axis=[2])
    cube, content = _centre_fit(data, int(size))
    voxels = int(size) ** 3
    flat = tf.reshape(content, [-1])
    zeros = voxels - tf.size(flat)
    low = _kth_smallest_with_zeros(flat, zeros, nearest_rank(1, voxels))
    high = _kth_smallest_with_zeros(flat, zeros, nearest_rank(99, voxels))
    scaled = tf.clip_by_value(tf.math.divide_no_nan(cube - low, high - low), 0.0, 1.0)
    return scaled[..., None]


def elementwise_kl(mu_real: tf.Tensor, log_sigma_real: tf.Tensor, mu_fake: tf.Tensor,
                   log_sigma_fake: tf.Tensor) -> tf.Tensor:
    """``KL(N(mu_r, s_r) || N(mu_f, s_f))`` per element, ``s = exp(log_sigma)`` (as
    ``torch.distributions.kl_divergence`` of two Normals)."""
    mu_real, mu_fake = tf.cast(mu_real, tf.float32), tf.cast(mu_fake, tf.float32)
    log_ratio = 2.0 * (tf.cast(log_sigma_real, tf.float32) - tf.cast(log_sigma_fake, tf.float32))
    mean_term = tf.square((mu_real - mu_fake) * tf.exp(-tf.cast(log_sigma_fake, tf.float32)))
    return 0.5 * (tf.exp(log_ratio) + mean_term - 1.0 - log_ratio)


def top_percent_mean(values: tf.Tensor, percent: float) -> tf.Tensor:
    """Mean of the elements above the ``100 - percent`` nearest-rank percentile (strict ``>``),
    i.e. about the ``percent`` % largest; the threshold carries no gradient (0 when none is above)."""
    flat = tf.reshape(tf.cast(values, tf.float32), [-1])
    count = int(flat.shape[0]) if flat.shape[0] is not None else None
    if count is None:
        raise TfmedganError("top_percent_mean needs a statically shaped tensor")
    threshold = tf.stop_gradient(kth_smallest(flat, nearest_rank(100.0 - float(percent), count)))
    above = flat > threshold
    return tf.math.divide_no_nan(tf.reduce_sum(tf.where(above, flat, 0.0)), tf.reduce_sum(tf.cast(above, tf.float32)))


# ------------------------------------------------------------------------------------------------
# The pix2pix recipe part
# ------------------------------------------------------------------------------------------------
def make_adam(lr: float, beta_1: float, beta_2: float, precision: str) -> keras.optimizers.Optimizer:
    """Adam with PyTorch's epsilon 1e-8."""
    return wrap_optimizer(keras.optimizers.Adam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=1e-8), precision)


def build_generator(filters: int = 64, final_filters: int = 8, factor: int = 4, input_channels: int = 2,
                    upsample: str = "transposed", input_skip: bool = False) -> keras.Model:
    """The SIT generator on a dynamic spatial shape (rotations change it)."""
    return build_sit_generator((None, None, None, input_channels), 1, filters=filters, factor=factor,
                               final_filters=final_filters, name="generator", upsample=upsample,
                               input_skip=input_skip)


def build_discriminator(base_filters: int = 64, n_layers: int = 1, antialias: bool = True,
                        inner_bias: bool = False, input_channels: int = 2) -> keras.Model:
    """The conditional PatchGAN returning ``[logits, f0, f3, f6, f9]``."""
    return build_conditional_patchgan((None, None, None, input_channels), 1, base_filters=base_filters,
                                      n_layers=n_layers, antialias=antialias, inner_bias=inner_bias,
                                      feature_layers=PERCEPTUAL_LAYERS, name="discriminator")


class Pix2PixBase(Recipe):
    """Generator + discriminator, the supervised step, the schedule, figures and validation.

    Subclasses fill ``self.networks`` with ``generator`` and ``discriminator`` (plus their own)
    and set :attr:`figure_case` / :attr:`validation_cases`.
    """

    config: Pix2PixOptions
    validation_metric = ("ssim", "max")
    best_networks = ("generator",)
    averaged_networks = ("generator",)

    # -- optimizers and schedule -----------------------------------------------------------------
    def make_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        config = self.config
        return {name: make_adam(config.lr, config.beta_1, config.beta_2, config.precision)
                for name in ("generator", "discriminator")}

    def optimizer_variables(self) -> dict[str, list]:
        return {name: self.networks[name].trainable_variables for name in ("generator", "discriminator")}

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        config = self.config
        rate = decay_learning_rate(config.lr, epoch, config.epochs, config.epochs_decay)
        for optimizer in self.optimizers.values():
            getattr(optimizer, "inner_optimizer", optimizer).learning_rate.assign(rate)
        return {"lr": rate}

    # -- generator calls -------------------------------------------------------------------------
    def generator_call(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """``G(x, training=True)``, gradient-checkpointed with ``--recompute``."""
        if not hasattr(self, "_generator_call"):
            generator = self.networks["generator"]
            if self.config.recompute:
                from tfmedgan.engine.memory import articulation_layers, checkpointed_call

                allowed = set(articulation_layers(generator))
                cuts = [name for name in SIT_CHECKPOINTS if name in allowed]
                self._generator_call = checkpointed_call(generator, cuts, "nested")
            else:
                self._generator_call = lambda inputs: generator(inputs, training=True)
        return self._generator_call

    def discriminator_slabs(self) -> SlabDiscriminator | None:
        """With ``--recompute``: the discriminator with its full-resolution first stage in
        recomputed depth slabs (:mod:`.slabs`); otherwise None (plain calls)."""
        if not self.config.recompute:
            return None
        if not hasattr(self, "_discriminator_slabs"):
            slabs = SlabDiscriminator(self.networks["discriminator"], slab_count_for(self.config.crop_shape))
            if slabs.feature_indices != list(PERCEPTUAL_LAYERS):
                raise TfmedganError(f"the discriminator's features are layers {slabs.feature_indices}, the "
                                    f"perceptual loss needs {list(PERCEPTUAL_LAYERS)}")
            self._discriminator_slabs = slabs
        return self._discriminator_slabs

    # -- the supervised step ---------------------------------------------------------------------
    def supervised_step(self, inputs: tf.Tensor, target: tf.Tensor) -> dict[str, tf.Tensor]:
        """One D update then one G update on a paired batch (see the module docstring)."""
        config = self.config
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        g_opt, d_opt = self.optimizers["generator"], self.optimizers["discriminator"]
        total = global_batch_size(tf.shape(inputs)[0])
        forward = self.generator_call()
        slabs = self.discriminator_slabs()

        def logits_of(target_volume):
            if slabs is None:
                return discriminator([inputs, target_volume], training=True)[0]
            return slabs([inputs, target_volume])[0]

        d_variables = discriminator.trainable_variables
        with tf.GradientTape() as g_tape:
            fake = forward(inputs)
            with g_tape.stop_recording():
                # D update: the gradients of the fake and the real pass are taken one after the
                # other (the real pass starts once the fake gradients exist), so only one D pass's
                # activations are alive at a time; their sum is the gradient of the summed loss.
                with tf.GradientTape() as d_tape:
                    fake_logits = logits_of(tf.stop_gradient(fake))
                    d_fake = average_loss(losses.least_squares(fake_logits, 0.0), total)
                    d_scaled = scale_loss(d_opt, 0.5 * d_fake)
                fake_gradients = d_tape.gradient(d_scaled, d_variables)
                with tf.control_dependencies(fake_gradients):
                    real_target = tf.identity(target)
                with tf.GradientTape() as d_tape:
                    real_logits = logits_of(real_target)
                    d_real = average_loss(losses.least_squares(real_logits, 1.0), total)
                    d_scaled = scale_loss(d_opt, 0.5 * d_real)
                real_gradients = d_tape.gradient(d_scaled, d_variables)
                apply_gradient_list(d_opt, [a + b for a, b in zip(fake_gradients, real_gradients)], d_variables)
                if slabs is None:
                    real_features = [tf.stop_gradient(f) for f in discriminator([inputs, target], training=True)[1:]]
                else:  # feature 0 is compared inside the slabs of the fake's pass
                    real_features = [tf.stop_gradient(f) for f in slabs([inputs, target])[1]]
            if slabs is None:
                fake_outputs = discriminator([inputs, fake], training=True)
                fake_logits, differences = fake_outputs[0], [
                    losses.l1_low_memory(f_fake, f_real) for f_fake, f_real in zip(fake_outputs[1:], real_features)]
            else:
                fake_logits, fake_features, difference_0 = slabs([inputs, fake], reference=target)
                differences = [difference_0] + [
                    losses.l1_low_memory(f_fake, f_real) for f_fake, f_real in zip(fake_features, real_features)]
            g_gan = average_loss(losses.least_squares(fake_logits, 1.0), total)
            g_l1 = average_loss(losses.l1(fake, target), total)
            perceptual = tf.add_n([weight * average_loss(difference, total)
                                   for weight, difference in zip(PERCEPTUAL_WEIGHTS, differences)])
            g_perceptual = config.lambda_perceptual * perceptual
            g_loss = g_gan + config.lambda_l1 * g_l1 + g_perceptual
            g_scaled = scale_loss(g_opt, g_loss)
        apply_gradients(g_opt, g_tape, g_scaled, generator.trainable_variables)
        return {"d_real": d_real, "d_fake": d_fake, "g_gan": g_gan, "g_l1": g_l1, "g_perceptual": g_perceptual}

    # -- figures and validation ------------------------------------------------------------------
    def __init__(self, config: Pix2PixOptions):
        super().__init__(config)
        #: the case of the per-epoch figure, and the cases of :meth:`validate` (set by prepare_data)
        self.figure_case: brats.BratsCase | None = None
        self.validation_cases: list[brats.BratsCase] = []

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Synthetic T1 ``[D, H, W]`` of one case's inputs ``[D, H, W, 2]`` (inference)."""
        return predict_volume(self.networks["generator"], inputs)

    def epoch_outputs(self, epoch: int, step: int, run_dir) -> dict[str, np.ndarray]:
        from tfmedgan.engine.rundir import save_png_atomic
        from tfmedgan.models.cyclegan import mid_slice_figure

        if self.figure_case is None:
            return {}
        crop_shape, crop_start = self.config.crop()
        has_t1 = brats.find_modality_file(self.figure_case.folder, "t1") is not None
        modalities = (("t1",) if has_t1 else ()) + brats.INPUT_MODALITIES
        case = brats.BratsCase(self.figure_case.name, self.figure_case.folder,
                               {m: brats.find_modality_file(self.figure_case.folder, m) for m in modalities})
        loaded = brats.load_case(case, modalities, crop_shape, crop_start)
        volumes = {"input T2": loaded.volumes["t2"], "input FLAIR": loaded.volumes["flair"],
                   "synthetic T1": self.predict(loaded.inputs)}
        if has_t1:
            volumes["real T1"] = loaded.volumes["t1"]
        image = mid_slice_figure(volumes, title=f"{case.name}, epoch {epoch}", value_range=(0.0, 1.0))
        save_png_atomic(image, Path(run_dir.samples) / self.sample_filename(epoch))
        return {"mid_slices": image}

    def validate(self, epoch: int, step: int) -> dict[str, float]:
        """Mean Gaussian SSIM, PSNR and MAE of the synthetic T1 over :attr:`validation_cases`
        (whole crop, as the original test)."""
        if not self.validation_cases:
            return {}
        crop_shape, crop_start = self.config.crop()
        rows = evaluate_cases(self.networks["generator"], self.validation_cases, crop_shape, crop_start, progress=False)
        return {key: float(np.mean([row[key] for row in rows])) for key in ("ssim", "psnr", "mae")}

    # -- dry run ---------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameters by PyTorch's convention (trainable weights; equal to Keras' count for the
        SIT and the PatchGAN, which have no non-trainable weights)."""
        from tfmedgan.networks.vae2d import pytorch_parameter_count

        return {name: pytorch_parameter_count(model) for name, model in self.networks.items()}


# ------------------------------------------------------------------------------------------------
# Inference, scoring and writing on the original grid
# ------------------------------------------------------------------------------------------------
def predict_volume(generator: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """``G(inputs[None])`` in inference mode as a float32 ``[D, H, W]``."""
    output = generator(tf.constant(np.asarray(inputs, np.float32)[None]), training=False)
    return np.asarray(output, np.float32)[0, ..., 0]


def brain_mask(volumes: dict[str, np.ndarray]) -> np.ndarray:
    """Voxels where any modality is non-zero (BraTS volumes are skull-stripped, 0 outside)."""
    return np.any(np.stack([volume > 0 for volume in volumes.values()]), axis=0)


def psnr_original(real: np.ndarray, fake: np.ndarray) -> float:
    """The original test's PSNR: data range from the prediction, ``-10 log10(MSE / R^2 + 1e-8)``."""
    data_range = float(fake.max() - fake.min())
    if data_range <= 0:
        return float("nan")
    mse = float(np.mean((real.astype(np.float64) / data_range - fake.astype(np.float64) / data_range) ** 2))
    return float(-10.0 * np.log10(mse + 1e-8))


def score_case(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """SSIM (Gaussian 11^3), PSNR (range 1) and MAE on the whole crop and in the brain mask,
    plus the original test's PSNR."""
    from tfmedgan.metrics import gaussian_ssim_map, mae, psnr

    ssim_values = gaussian_ssim_map(real, fake, data_range=1.0)
    row = {"ssim": float(ssim_values.mean()), "psnr": psnr(real, fake, 1.0), "mae": mae(real, fake)}
    if mask.any():
        row.update(ssim_brain=float(ssim_values[mask].mean()), psnr_brain=psnr(real, fake, 1.0, mask=mask),
                   mae_brain=mae(real, fake, mask=mask))
    else:
        row.update(ssim_brain=float("nan"), psnr_brain=float("nan"), mae_brain=float("nan"))
    row["psnr_original"] = psnr_original(real, fake)
    return row


def synthetic_name(case: brats.BratsCase) -> str:
    return f"{case.name}_t1_synthetic.nii.gz"


def evaluate_cases(
    generator: keras.Model,
    cases: Sequence[brats.BratsCase],
    crop_shape: Sequence[int],
    crop_start: Sequence[int] | None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score the synthetic T1 of every case (t1, t2, flair needed) and optionally write it.

    Metrics are computed on the crop (without the padding to a multiple of 8), real = the
    min-max-scaled T1, fake = the generator output, both in [0, 1]. With ``out_dir`` the
    synthetic T1 is written as ``<case>_t1_synthetic.nii.gz`` on the ORIGINAL grid of the case
    (shape and affine of its T2; 0 outside the crop).

    Returns:
        One row per case: ``case`` and the metrics of :func:`score_case`.
    """
    from tqdm.auto import tqdm

    rows = []
    for case in tqdm(list(cases), desc="cases", unit="case", disable=not progress, leave=False):
        loaded = brats.load_case(case, brats.MODALITIES, crop_shape, crop_start)
        fake = predict_volume(generator, loaded.inputs)
        inside = tuple(slice(0, size) for size in loaded.geometry.crop_shape)
        real = loaded.volumes["t1"][inside]
        mask = brain_mask({m: loaded.volumes[m][inside] for m in brats.MODALITIES})
        rows.append({"case": case.name, **score_case(real, fake[inside], mask)})
        if out_dir is not None:
            brats.write_on_original_grid(Path(out_dir) / synthetic_name(case), fake, loaded.geometry)
    return rows


def _check_output_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise TfmedganError(f"{folder} is a file, not a folder")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise TfmedganError(f"output folder {folder} exists and is not empty (use --overwrite)")


#: Models whose runs hold a seed-001 generator (and discriminator).
PIX2PIX_MODELS = ("pix2pix3d", "uda")


def open_generator_run(run_dir: str | Path, best: bool = False):
    """The :class:`tfmedgan.api.Run` of a pix2pix3d or uda run and its generator (one-line
    error for any other run)."""
    from tfmedgan.api import load_run
    from tfmedgan.engine.config import read_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise TfmedganError(f"{run_dir} is not a tfmedgan run directory (no config.json)")
    model = read_config(run_dir / "config.json").get("model", "")
    if model not in PIX2PIX_MODELS:
        raise TfmedganError(f"{run_dir} is a {model} run, not a pix2pix3d or uda run")
    run = load_run(run_dir)
    return run, run.network("generator", best=best)


def list_input_cases(path: str | Path, modalities: Sequence[str] = brats.INPUT_MODALITIES) -> list[brats.BratsCase]:
    """One case folder (holding ``*_t2`` and ``*_flair`` files) or a folder of case folders."""
    path = Path(path)
    if not path.is_dir():
        raise TfmedganError(f"{path}: no such case folder or folder of cases")
    if all(brats.find_modality_file(path, m) is not None for m in modalities):
        return [brats.BratsCase(path.name, path, {m: brats.find_modality_file(path, m) for m in modalities})]
    return brats.list_cases(path, modalities)


def translate_cases(run_dir: str | Path, inputs: str | Path, out_dir: str | Path, overwrite: bool = False,
                    progress: bool = True, best: bool = False) -> list[Path]:
    """Synthetic T1 volumes of a pix2pix3d or uda run for one case folder or a folder of cases.

    Each case needs ``*_t2`` and ``*_flair`` NIfTIs; ``OUT_DIR/<case>_t1_synthetic.nii.gz`` is
    written on the case's ORIGINAL grid (its T2's shape and affine; 0 outside the run's crop).

    Args:
        run_dir: A pix2pix3d or uda run directory.
        inputs: A case folder or a folder of case folders (e.g. ``ROOT/domain2_test``).
        out_dir: Output folder (must be empty unless ``overwrite``).
        overwrite: Write into a non-empty folder (existing files of the same name are replaced).
        progress: Show a progress bar.
        best: Use the best validation generator when the run kept one.

    Returns:
        The written paths.
    """
    from tqdm.auto import tqdm

    cases = list_input_cases(inputs)
    out = Path(out_dir)
    _check_output_folder(out, overwrite)
    run, generator = open_generator_run(run_dir, best=best)
    crop_shape, crop_start = run.config.crop()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for case in tqdm(cases, desc="translating", unit="case", disable=not progress, leave=False):
        loaded = brats.load_case(case, brats.INPUT_MODALITIES, crop_shape, crop_start)
        fake = predict_volume(generator, loaded.inputs)
        written.append(brats.write_on_original_grid(out / synthetic_name(case), fake, loaded.geometry))
    return written


SUMMARY_KEYS = ("ssim", "psnr", "mae", "ssim_brain", "psnr_brain", "mae_brain", "psnr_original")


def write_metrics_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Per-case rows plus ``mean`` and ``std`` rows, written atomically."""
    summary = []
    for label, reduce in (("mean", np.nanmean), ("std", np.nanstd)):
        summary.append({"case": label, **{key: float(reduce([row[key] for row in rows])) for key in SUMMARY_KEYS}})
    temporary = path.with_name(f".tmp-{path.name}")
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["case", *SUMMARY_KEYS])
        writer.writeheader()
        for row in [*rows, *summary]:
            writer.writerow({key: (f"{value:.6f}" if isinstance(value, float) else value) for key, value in row.items()})
    temporary.replace(path)
    return path


def score_run(run_dir: str | Path, root: str | Path, dataset_name: str = "domain2", phase: str = "test",
             output: str | Path | None = None, best: bool = False, overwrite: bool = False,
             progress: bool = True) -> tuple[list[dict[str, Any]], Path]:
    """``pix2pix3d-test``: score a run's generator on ``ROOT/<dataset_name>_<phase>`` and write the
    synthetic T1 volumes on the original grids.

    Returns:
        (per-case rows, the folder holding ``metrics.csv`` and the NIfTI files).
    """
    cases = brats.list_split(root, dataset_name, phase, brats.MODALITIES)
    run, generator = open_generator_run(run_dir, best=best)
    out = Path(output) if output else Path(run_dir) / f"test_{dataset_name}_{phase}"
    _check_output_folder(out, overwrite)
    crop_shape, crop_start = run.config.crop()
    brats.validate_cases(cases, brats.MODALITIES, crop_shape, crop_start, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate_cases(generator, cases, crop_shape, crop_start, out_dir=out, progress=progress)
    write_metrics_csv(rows, out / "metrics.csv")
    return rows, out


# ------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------
def _static_networks(filters: int, final_filters: int, d_filters: int, shape: Sequence[int]):
    spatial = tuple(int(size) for size in shape)
    generator = build_sit_generator(spatial + (2,), 1, filters=filters, final_filters=final_filters)
    discriminator = build_conditional_patchgan(spatial + (2,), 1, base_filters=d_filters,
                                               feature_layers=PERCEPTUAL_LAYERS)
    return generator, discriminator


def estimate_step_memory(
    filters: int,
    final_filters: int,
    d_filters: int,
    shape: Sequence[int],
    recompute: bool,
    vae: dict[str, int] | None = None,
    precision: str = "float32",
) -> dict[str, float]:
    """Estimate (bytes) of the peak memory of one training step, as ``--dry-run`` prints it.

    Per-layer accounting of what TensorFlow keeps for the backward pass
    (:func:`tfmedgan.engine.memory.saved_activation_bytes`: ``S_G`` generator, ``S_D``
    discriminator on the whole crop), ``L_D`` the discriminator's largest activation, ``F`` its
    feature outputs (the real pass's, alive during the generator update), float32 bytes::

        weights     = (G + D parameters) x 16 (weights, 2 Adam moments, gradients) + VAE encoder x 4
        data        = 3 x voxels x 5 channels x 4         (the batch and 2 prefetched batches)
        G part      = S_G, or B_G + max_k S_k with --recompute (boundaries + one segment)
        supervised  = G part + D part
        D part      = S_D + 2 F + T_D x L_D                (G update: D's pass on the fake, its
                                                           features and the real ones, D's backward)
                    = S_D - S_1 + 2 (F - F_0) + T_S x (L_1 + L_D / n)   with --recompute: the first stage
                                                           in n slabs (slabs.py); S_1 what it keeps,
                                                           F_0 feature 0, L_1 the largest later output
        kl          = G part + S_E + T_E x L_E + 4 x size^3 x 4
                                                          (adaptation: encoder on the fake slices;
                                                           with --recompute only its input is kept)
        activations = max(supervised, kl) x (1, or b under mixed precision)
        runtime     = 1 GiB                                (TensorFlow, graphs, kernels)

    ``S_E`` is the encoder's saved activations for ``size`` slices, ``L_E`` its largest layer
    output. The constants ``T_D`` (the discriminator's backward transient, in units of its
    largest activation), ``T_S`` (the same for the slab path), ``T_E`` and ``b`` were fitted to the peaks that
    ``bench/bench_pix2pix_uda.py`` measured at 144x192x192 (see :data:`MEMORY_FIT`); the
    bfloat16 factor is far from 0.5 because the instance norms compute in float32 and oneDNN's
    bfloat16 convolutions keep float32 buffers.

    Args:
        filters, final_filters, d_filters: network widths.
        shape: the model grid (the padded crop).
        recompute: gradient checkpointing of the generator, the discriminator's first stage in
            slabs, and the encoder's pass on the fake slices.
        vae: ``{"size", "base_filters", "depth"}`` of the adaptation's encoder, or None.
        precision: the run's ``--precision``.

    Returns:
        Bytes per part (``weights``, ``data``, ``activations``, ``runtime``) and ``total``.
    """
    from tfmedgan.engine import memory
    from tfmedgan.networks.vae2d import build_vae_encoder

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        generator, discriminator = _static_networks(filters, final_filters, d_filters, shape)
        features = sum(memory._tensor_bytes(tensor) for tensor in discriminator.outputs[1:])
        largest = 4 * memory.largest_activation_elements(discriminator)
        if recompute:
            # the first stage in slabs (slabs.py): its full-resolution maps (feature 0, the norm's
            # output) are never kept whole; its transient is that of one slab
            layers = {layer.name: layer for layer in discriminator.layers}
            stage = 4 * (memory._elements(layers["model_1_norm"].output) + memory._elements(layers["model_0_pad"].output))
            names = [layer.name for layer in discriminator.layers]
            largest_rest = 4 * max(memory._elements(layer.output)
                                   for layer in discriminator.layers[names.index("model_3_blurpool"):])
            slab_count = slab_count_for(shape)
            feature_0 = memory._tensor_bytes(discriminator.outputs[1])
            discriminator_part = (memory.saved_activation_bytes(discriminator) - stage + 2 * (features - feature_0)
                                  + MEMORY_D_SLAB_TRANSIENT * (largest_rest + largest / slab_count))
        else:
            discriminator_part = (memory.saved_activation_bytes(discriminator) + 2 * features
                                  + MEMORY_D_BACKWARD_TRANSIENT * largest)
        if recompute:
            allowed = set(memory.articulation_layers(generator))
            cuts = [name for name in SIT_CHECKPOINTS if name in allowed]
            segments = memory.split_model(generator, cuts)
            generator_part = memory.boundary_bytes(generator, cuts) + max(memory.saved_activation_bytes(s) for s in segments)
        else:
            generator_part = memory.saved_activation_bytes(generator)
        supervised = generator_part + discriminator_part
        weights = 16.0 * (generator.count_params() + discriminator.count_params())
        kl = 0.0
        if vae is not None:
            size = int(vae["size"])
            encoder = build_vae_encoder((size, size, 1), vae["base_filters"], vae["depth"])
            transient = MEMORY_E_BACKWARD_TRANSIENT * 4 * memory.largest_activation_elements(encoder)
            encoder_part = size * (transient if recompute else memory.saved_activation_bytes(encoder) + transient)
            kl = generator_part + encoder_part + 4.0 * size**3 * 4
            weights += 4.0 * encoder.count_params()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    voxels = float(np.prod([int(size) for size in shape]))
    factor = 1.0 if precision == "float32" else (
        MEMORY_MIXED_PRECISION_FACTOR_RECOMPUTE if recompute else MEMORY_MIXED_PRECISION_FACTOR)
    estimate = {
        "weights": float(weights),
        "data": 3.0 * voxels * 5 * 4,
        "activations": float(max(supervised, kl)) * factor,
        "runtime": float(MEMORY_RUNTIME_BYTES),
    }
    estimate["total"] = sum(estimate.values())
    return estimate


def memory_report(estimate: dict[str, float]) -> dict[str, Any]:
    return {"memory_estimate_gib": round(estimate["total"] / 2**30, 3),
            "memory_estimate_parts_gib": {k: round(v / 2**30, 3) for k, v in estimate.items() if k != "total"}}
