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

    def sample_filename(self, epoch: int) -> str:
        return f"epoch_{epoch:04d}.png"

    def noise_seed(self, step: tf.Tensor, salt: int = 0) -> tf.Tensor:
        """Stateless seed for the random inputs of a step: a function of (seed, step, salt) only."""
        return tf.stack([tf.constant(self.config.seed * 1000 + salt, tf.int64), tf.cast(step, tf.int64)])
