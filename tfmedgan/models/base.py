"""The contract between a GAN recipe and the shared training engine.

A recipe owns what is particular to one GAN: its data, networks, optimizers and the losses of one
training step. The engine (:mod:`tfmedgan.engine.trainer`) owns everything else: strategy, precision,
the loop, checkpoints, logs, plots and exports.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.config import EngineConfig


class GANRecipe:
    """Base class of the per-model recipes (DCGAN, StyleGAN2, CycleGAN, ...).

    Subclasses implement :meth:`prepare_data`, :meth:`dataset`, :meth:`build` and
    :meth:`train_step`, and may override the hooks.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.networks: dict[str, keras.Model] = {}
        self.optimizers: dict[str, keras.optimizers.Optimizer] = {}
        self.steps_per_epoch: int = 0

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        """Check the data (raise TfmedganError on bad input) and set ``steps_per_epoch``."""
        raise NotImplementedError

    def dataset(self, epoch: int) -> tf.data.Dataset:
        """Batches of one epoch, in an order that depends only on (seed, epoch)."""
        raise NotImplementedError

    # -- networks --------------------------------------------------------------------------------
    def build(self, num_replicas: int = 1) -> None:
        """Create ``self.networks`` and ``self.optimizers`` (called inside the strategy scope)."""
        raise NotImplementedError

    def build_networks_only(self) -> None:
        """Build the networks without optimizers (used by --dry-run)."""
        self.build()

    def optimizer_variables(self) -> dict[str, list]:
        """Optimizer name -> the variables it updates (the engine pre-builds the optimizers)."""
        raise NotImplementedError

    def state_variables(self) -> list[tf.Variable]:
        """Extra variables saved in checkpoints (e.g. the StyleGAN2 fade-in alpha)."""
        return []

    def parameter_counts(self) -> dict[str, int]:
        return {name: int(model.count_params()) for name, model in self.networks.items()}

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        """One step on this replica's share of a batch; returns losses averaged over the GLOBAL batch."""
        raise NotImplementedError

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        """Per-epoch state changes; returns scalars to log (e.g. {'alpha': 0.25})."""
        return {}

    # -- outputs ---------------------------------------------------------------------------------
    def sample_images(self) -> np.ndarray | None:
        """Images [N, H, W, C] in [-1, 1] for the sample grid, from fixed inputs; None for none."""
        return None

    def on_epoch_end(self, epoch: int, run_dir) -> dict[str, np.ndarray]:
        """Extra per-checkpoint-epoch outputs written by the recipe itself (e.g. 3D mid-slice
        figures); returns name -> uint8 image to log to Neptune as well."""
        return {}

    def close(self) -> None:
        """Release resources (open files, readers) when training ends or fails."""

    def sample_filename(self, epoch: int) -> str:
        return f"epoch_{epoch:04d}.png"

    def noise_seed(self, step: tf.Tensor, salt: int = 0) -> tf.Tensor:
        """Stateless seed for the random inputs of a step: a function of (seed, step, salt) only."""
        return tf.stack([tf.constant(self.config.seed * 1000 + salt, tf.int64), tf.cast(step, tf.int64)])


class SliceGANRecipe(GANRecipe):
    """A recipe trained on folders of 2D PNG/JPEG slices (DCGAN, StyleGAN2).

    Subclasses set ``self.files`` through :meth:`plan_slices` in ``prepare_data`` and inherit the
    streaming :meth:`dataset`.
    """

    def plan_slices(self, folders, num_replicas: int, drop_partial: bool = False) -> None:
        """List and check the images and decide the batches of an epoch.

        The last partial batch is dropped when ``drop_partial`` (a network that cannot take it) or
        with several replicas (each replica then gets an equal share).
        """
        from tfmedgan.data import png
        from tfmedgan.errors import TfmedganError

        self.files = png.list_images(folders)
        self.bits = png.check_images(self.files)[2]
        count, batch = len(self.files), self.config.batch
        if num_replicas > 1 and batch % num_replicas:
            raise TfmedganError(f"--batch {batch} is not divisible by the {num_replicas} replicas")
        self.drop_remainder = num_replicas > 1 or (drop_partial and count % batch > 0)
        if self.drop_remainder and count < batch:
            raise TfmedganError(f"{count} images are fewer than one batch of {batch}")
        self.steps_per_epoch = count // batch if self.drop_remainder else -(-count // batch)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        from tfmedgan.data import png

        config = self.config
        return png.image_dataset(
            self.files, config.resolution, config.channels, config.batch, config.seed, epoch,
            drop_remainder=self.drop_remainder, bits=self.bits, skip_batches=skip_batches,
        )
