"""Parts shared by the CycleGANs (the 3D T1w <-> T2w translator and the microCT SR model).

* :class:`CycleGANBase`: the four networks (``generator_a2b``, ``generator_b2a``,
  ``discriminator_a``, ``discriminator_b``) built from two builder hooks, the two optimizers'
  variables, the translation of a sample pair (real, synthetic and reconstructed volumes of both
  domains) and its per-epoch figure;
* :class:`ImagePool`: the history of generated volumes shown to the discriminators;
* :func:`decayed_learning_rate`: constant, then linear decay to 0;
* :func:`mid_slice_figure`: orthogonal mid-slices of several volumes.

A CycleGAN recipe subclasses :class:`CycleGANBase`, implements the builders, the data and its
train step, and uses the pool and the decay where its original did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.engine.recipe import Recipe
from tfmedgan.engine.rundir import figure_to_rgb, save_png_atomic

NETWORK_NAMES = ("generator_a2b", "generator_b2a", "discriminator_a", "discriminator_b")


def decayed_learning_rate(lr: float, epoch: int, epochs: int, decay_epoch: int) -> float:
    """Learning rate of a (0-based) epoch: constant until ``decay_epoch``, then linear towards 0.

    ``lr * (1 - max(0, epoch - decay_epoch) / (epochs - decay_epoch))``; no decay when
    ``epochs <= decay_epoch``.

    Example:
        >>> decayed_learning_rate(2e-4, 100, 150, 75)
        0.00013333333333333334
    """
    if epochs <= decay_epoch:
        return float(lr)
    return float(lr) * (1.0 - max(0, epoch - decay_epoch) / (epochs - decay_epoch))


class ImagePool:
    """History of generated volumes shown to a discriminator (Shrivastava et al. 2017, CycleGAN).

    The fakes of a batch are taken one after the other. Until the pool is full every new fake is
    stored and returned. Afterwards each new fake is, with probability 1/2, swapped for a
    uniformly chosen stored one (the stored one is returned, the new one takes its place; a slot
    written earlier in the same batch returns that fake), else returned as it is. Unlike the
    original ``ImagePool``, which returned a view of the slot it had just overwritten (so always
    the new fake), older fakes are really returned. The buffer and fill counter are
    ``tf.Variable`` s, checkpointed with the run; random draws are stateless functions of the
    step seed. The rule is evaluated for the whole batch at once (no loop over its fakes).

    Under a ``tf.distribute`` strategy with several replicas there is ONE pool for the global
    batch, as on one device: each replica all-gathers the fakes of every replica, draws the same
    (stateless) coins and slots, updates its own copy of the mirrored buffer with the same
    writes, and returns its own share of the result. A mirrored run therefore shows the
    discriminators exactly the volumes a single-device run with the same global batch shows
    them (one pool per replica would split the history and change which fakes come back). The
    cost is one all-gather of the batch's fakes per query; the buffer is held on every device.

    Args:
        size: Number of stored volumes (0 = no pool).
        shape: Shape of one volume, e.g. ``(x, y, z, 1)``.
        name: Variable name prefix.

    Example:
        >>> pool = ImagePool(2, (4, 4, 4, 1))
        >>> fakes = tf.ones((1, 4, 4, 4, 1))
        >>> pool.query(fakes, tf.constant([0, 1], tf.int64)).shape  # filling: the fake comes back
        TensorShape([1, 4, 4, 4, 1])

    Reference:
        Shrivastava et al., "Learning from Simulated and Unsupervised Images through Adversarial
        Training", CVPR 2017 (history of refined images); Zhu et al., "Unpaired Image-to-Image
        Translation using Cycle-Consistent Adversarial Networks", ICCV 2017, section 4.
    """

    def __init__(self, size: int, shape: tuple[int, ...], name: str = "pool"):
        self.size = int(size)
        self.images = tf.Variable(tf.zeros((max(self.size, 1), *shape), tf.float32), trainable=False, name=f"{name}_images")
        self.count = tf.Variable(tf.constant(0, tf.int32), trainable=False, name=f"{name}_count")

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.images, self.count] if self.size else []

    def query(self, fakes: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Return the volumes to show the discriminator for a batch of new ``fakes`` (this
        replica's share of the global batch under a strategy)."""
        if self.size == 0:
            return fakes
        fakes = tf.cast(fakes, tf.float32)
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        everything = context.all_gather(fakes, axis=0) if replicas > 1 else fakes
        outputs, slots, images, count = self._draw(everything, tf.cast(seed, tf.int64))
        with tf.control_dependencies([outputs]):
            if replicas > 1:
                context.merge_call(self._store_on_every_replica, args=(slots, images, count))
            else:
                self.images.scatter_nd_update(slots, images)
                self.count.assign(count)
        if replicas == 1:
            return tf.identity(outputs)
        share = tf.shape(fakes)[0]
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * share
        return tf.identity(outputs[start : start + share])

    def _draw(self, fakes: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """The pool rule for a batch, vectorised: (returned volumes, slots to write [k, 1], the
        volumes written there [k, ...], the new fill count). Fake ``i`` writes slot ``target[i]``
        (-1: none); a swap returns the last earlier fake of the batch written to its slot, else
        the stored volume; of several writes to one slot the last one stays."""
        count = tf.shape(fakes)[0]
        filled = self.count.read_value()
        coins = tf.random.stateless_uniform([count], seed=seed)
        drawn = tf.random.stateless_uniform([count], seed=seed + tf.constant([0, 1 << 40], tf.int64), minval=0,
                                            maxval=self.size, dtype=tf.int32)
        index = tf.range(count)
        fill = index < self.size - filled
        swap = tf.logical_and(tf.logical_not(fill), coins > 0.5)
        target = tf.where(fill, filled + index, tf.where(swap, drawn, -1))
        earlier = index[None, :] < index[:, None]  # [i, j]: j comes before i
        same_slot = tf.logical_and(tf.equal(target[None, :], drawn[:, None]), earlier)
        last_writer = tf.reduce_max(tf.where(same_slot, index[None, :], -1), axis=1)
        stored = tf.gather(self.images, tf.where(swap, drawn, 0))
        from_batch = tf.gather(fakes, tf.maximum(last_writer, 0))
        shape = tf.concat([[count], tf.ones([tf.rank(fakes) - 1], tf.int32)], 0)
        older = tf.where(tf.reshape(last_writer >= 0, shape), from_batch, stored)
        outputs = tf.where(tf.reshape(swap, shape), older, fakes)
        later = tf.logical_and(tf.equal(target[None, :], target[:, None]), index[None, :] > index[:, None])
        keep = tf.logical_and(target >= 0, tf.logical_not(tf.reduce_any(later, axis=1)))
        slots = tf.boolean_mask(target, keep)[:, None]
        images = tf.boolean_mask(fakes, keep)
        return outputs, slots, images, tf.minimum(filled + count, self.size)

    def _store_on_every_replica(self, strategy, slots, images, count) -> None:
        """Apply each replica's (identical) writes to its own copy of the mirrored variables."""
        strategy.extended.update(self.images, lambda variable, s, v: variable.scatter_nd_update(s, v),
                                 args=(slots, images), group=False)
        strategy.extended.update(self.count, lambda variable, c: variable.assign(c), args=(count,), group=False)


class CycleGANBase(Recipe):
    """The four networks of a CycleGAN, their optimizers' variables and the sample figure.

    Subclasses implement :meth:`build_generator`, :meth:`build_discriminator`, :meth:`model_shape`,
    :meth:`sample_pair`, the data hooks and :meth:`train_step`; ``self.optimizers`` holds
    ``generators`` (both generators) and ``discriminators`` (both discriminators), as both
    originals had it.
    """

    #: Axes of the figure's mid-slices, its value range and whether slices are rotated for display.
    figure_axes: tuple[int, ...] = (0, 1, 2)
    figure_range: tuple[float, float] = (-1.0, 1.0)

    # -- hooks for subclasses --------------------------------------------------------------------
    def build_generator(self, name: str) -> keras.Model:
        raise NotImplementedError

    def build_discriminator(self, name: str) -> keras.Model:
        raise NotImplementedError

    def model_shape(self) -> tuple[int, ...]:
        """Spatial input shape of the networks during training."""
        raise NotImplementedError

    def sample_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed (A, B) pair [x, y, z, 1] for the per-epoch figure."""
        raise NotImplementedError

    # -- networks --------------------------------------------------------------------------------
    def build_networks_only(self) -> None:
        self.networks = {
            "generator_a2b": self.build_generator("generator_a2b"),
            "generator_b2a": self.build_generator("generator_b2a"),
            "discriminator_a": self.build_discriminator("discriminator_a"),
            "discriminator_b": self.build_discriminator("discriminator_b"),
        }

    def optimizer_variables(self) -> dict[str, list]:
        n = self.networks
        return {
            "generators": n["generator_a2b"].trainable_variables + n["generator_b2a"].trainable_variables,
            "discriminators": n["discriminator_a"].trainable_variables + n["discriminator_b"].trainable_variables,
        }

    # -- outputs ---------------------------------------------------------------------------------
    def translate_batch(self, real_a: np.ndarray, real_b: np.ndarray) -> dict[str, np.ndarray]:
        """Real, synthetic and reconstructed volumes [N, x, y, z, 1] of both domains (inference)."""
        n = self.networks
        a, b = tf.constant(real_a), tf.constant(real_b)
        fake_b = n["generator_a2b"](a, training=False)
        fake_a = n["generator_b2a"](b, training=False)
        return {
            "real A": np.asarray(real_a), "synthetic B": np.asarray(fake_b),
            "reconstructed A": np.asarray(n["generator_b2a"](fake_b, training=False)),
            "real B": np.asarray(real_b), "synthetic A": np.asarray(fake_a),
            "reconstructed B": np.asarray(n["generator_a2b"](fake_a, training=False)),
        }

    def translate_sample(self) -> dict[str, np.ndarray]:
        """:meth:`translate_batch` of the sample pair, each volume [x, y, z]."""
        real_a, real_b = self.sample_pair()
        return {k: v[0, ..., 0] for k, v in self.translate_batch(real_a[None], real_b[None]).items()}

    def sample_figure(self, title: str) -> np.ndarray:
        return mid_slice_figure(self.translate_sample(), title=title, axes=self.figure_axes,
                                value_range=self.figure_range, rotate=self.figure_axes == (0, 1, 2))

    def epoch_outputs(self, epoch: int, step: int, run_dir) -> dict[str, np.ndarray]:
        image = self.sample_figure(f"epoch {epoch}")
        save_png_atomic(image, Path(run_dir.samples) / self.sample_filename(epoch))
        return {"mid_slices": image}


def mid_slice_figure(volumes: dict[str, np.ndarray], title: str = "", axes: Sequence[int] = (0, 1, 2),
                     value_range: tuple[float, float] = (-1.0, 1.0), rotate: bool = True) -> np.ndarray:
    """Mid-slices of several volumes, one per axis in ``axes``.

    Args:
        volumes: label -> 3D array; six of them are laid out as 2 rows (A then B) of 3 volumes.
        title: Figure title.
        axes: the axes cut at their middle (default all three: orthogonal views).
        value_range: gray-scale range (vmin, vmax).
        rotate: rotate each slice by 90 degrees for display (orthogonal views).

    Returns:
        The figure as a uint8 RGB array [H, W, 3].
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(volumes)
    rows = 2 if len(names) == 6 else len(names)
    per_row = len(names) // rows
    views_per_volume = len(axes)
    size = (2.0 * views_per_volume, 2.2) if views_per_volume > 1 else (3.0, 3.2)  # inches per volume
    figure, grid = plt.subplots(rows, views_per_volume * per_row, figsize=(size[0] * per_row, size[1] * rows), squeeze=False)
    for index, name in enumerate(names):
        volume = volumes[name]
        row, group = divmod(index, per_row)
        for view_index, axis_index in enumerate(axes):
            view = np.take(volume, volume.shape[axis_index] // 2, axis=axis_index)
            axis = grid[row][views_per_volume * group + view_index]
            axis.imshow(np.rot90(view) if rotate else view, cmap="gray", vmin=value_range[0], vmax=value_range[1])
            axis.set_axis_off()
            if view_index == views_per_volume // 2:
                axis.set_title(name if rotate else f"{name} {list(volume.shape)}", fontsize=9)
    return figure_to_rgb(figure, title)
