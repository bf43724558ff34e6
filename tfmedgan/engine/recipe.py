"""The contract between a model's recipe and the shared training engine.

A recipe owns what is particular to one model: its data, networks, optimizers, the losses of one
training step and its per-epoch outputs. The engine (:class:`tfmedgan.engine.trainer.Trainer`)
owns everything else: strategy, precision, the loop, checkpoints, roll-backs, validation history,
logs, plots and exports. The engine calls the hooks below and nothing else; every hook is declared
here with its default, so a recipe overrides only what it needs.

Order of the calls in one run::

    prepare_data -> build (in the strategy scope) -> [restore] ->
    per epoch: on_epoch_begin -> dataset -> train_step ... ->
               (checkpoint epochs: is_checkpoint_epoch) sample_images, epoch_outputs,
               validate (every validate_every) ->
               after_epoch (may request a roll-back -> after_rollback)
    -> export -> on_train_end -> close
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.engine.config import EngineConfig


@dataclasses.dataclass
class EpochDecision:
    """What a recipe's :meth:`Recipe.after_epoch` asks of the engine.

    Attributes:
        rollback_to: restore the newest checkpoint at or before this step, delete the later
            checkpoints and ``losses.csv`` rows, call :meth:`Recipe.after_rollback`, and continue
            from there. ``None``: no roll-back.
        save_checkpoint: write the checkpoint of the current step again (e.g. after the recipe
            changed its state variables), so a resumed run continues with the change.
    """

    rollback_to: int | None = None
    save_checkpoint: bool = False


class Recipe:
    """Base class of every model's recipe.

    Subclasses implement :meth:`prepare_data`, :meth:`dataset`, :meth:`build`,
    :meth:`optimizer_variables` and :meth:`train_step`; the other hooks have working defaults.

    Attributes:
        config: the run's configuration.
        networks: name -> Keras model; every network is checkpointed and exported as
            ``models/<name>.keras``.
        optimizers: name -> optimizer; checkpointed with the networks.
        steps_per_epoch: set by :meth:`prepare_data`.
        validation_metric: ``(name, "max" | "min")``: the metric of :meth:`validate` that decides
            the best model (``models/best_<network>.keras``); ``None`` keeps no best model.
        best_networks: the networks exported as best models (default: all).
        averaged_networks: the networks whose weights ``--ema`` averages (the generators); empty:
            the model refuses ``--ema``.
    """

    validation_metric: tuple[str, str] | None = None
    best_networks: tuple[str, ...] | None = None
    averaged_networks: tuple[str, ...] = ()

    def __init__(self, config: EngineConfig):
        self.config = config
        self.networks: dict[str, keras.Model] = {}
        self.optimizers: dict[str, keras.optimizers.Optimizer] = {}
        self.steps_per_epoch: int = 0

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        """Check the data (raise TfmedganError on bad input) and set ``steps_per_epoch``.

        Runs before anything is built or written, so bad input costs seconds, not hours.
        """
        raise NotImplementedError

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """The batches of ``epoch`` from batch ``skip_batches`` on (a resumed epoch), in an order
        that depends only on (seed, epoch). Skip before decoding where possible."""
        raise NotImplementedError

    # -- networks --------------------------------------------------------------------------------
    def build(self, num_replicas: int = 1) -> None:
        """Create ``self.networks`` and ``self.optimizers`` (called inside the strategy scope)."""
        raise NotImplementedError

    def build_networks_only(self) -> None:
        """Build the networks without training state (``--dry-run``, loading a run)."""
        self.build()

    def optimizer_variables(self) -> dict[str, list]:
        """Optimizer name -> the variables it updates (the engine builds the optimizers)."""
        raise NotImplementedError

    def state_variables(self) -> list[tf.Variable]:
        """Extra variables saved in checkpoints (e.g. a fade-in alpha, an image pool)."""
        return []

    def parameter_counts(self) -> dict[str, int]:
        """Network name -> number of parameters, as ``--dry-run`` prints them."""
        return {name: int(model.count_params()) for name, model in self.networks.items()}

    def dry_run_extra(self) -> dict[str, Any]:
        """More facts for ``--dry-run`` (e.g. a memory estimate, resolved shapes)."""
        return {}

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        """One step on this replica's share of a batch (compiled by the engine); returns losses
        averaged over the GLOBAL batch, so their sum over replicas is the global loss."""
        raise NotImplementedError

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        """Per-epoch state changes; returns per-epoch scalars to log (e.g. ``{'alpha': 0.25}``)."""
        return {}

    def noise_seed(self, step: tf.Tensor, salt: int = 0) -> tf.Tensor:
        """Stateless seed for the random inputs of a step: a function of (seed, step, salt) only."""
        return tf.stack([tf.constant(self.config.seed * 1000 + salt, tf.int64), tf.cast(step, tf.int64)])

    # -- outputs ---------------------------------------------------------------------------------
    def sample_images(self) -> np.ndarray | None:
        """Images [N, H, W, C] in [-1, 1] for the sample grid, from fixed inputs; None for none."""
        return None

    def sample_filename(self, epoch: int) -> str:
        return f"epoch_{epoch:04d}.png"

    def epoch_outputs(self, epoch: int, step: int, run_dir) -> dict[str, np.ndarray]:
        """Extra outputs of a checkpoint epoch written by the recipe (e.g. 3D mid-slice figures);
        returns name -> uint8 image, also logged to Neptune."""
        return {}

    def validate(self, epoch: int, step: int) -> dict[str, float]:
        """Metrics on held-out data after ``epoch`` (every ``validate_every`` epochs); the engine
        appends them to ``validation.csv``, plots and logs them, and keeps the best model by
        :attr:`validation_metric`. Empty: the model has no validation."""
        return {}

    def is_checkpoint_epoch(self, epoch: int) -> bool:
        """Whether the 0-based ``epoch`` ends with a checkpoint and the epoch outputs (the last
        epoch always does). Default: every ``checkpoint``-th epoch counted from 1
        (``(epoch + 1) % checkpoint == 0``); a recipe may count from 0 as its original did."""
        return (epoch + 1) % self.config.checkpoint == 0

    def after_epoch(self, epoch: int, step: int, run_dir) -> EpochDecision | None:
        """Called after the outputs of every checkpoint epoch; may ask for a roll-back."""
        return None

    def after_rollback(self, step: int) -> None:
        """Called after the engine restored the checkpoint of ``step`` for a roll-back request."""

    def on_train_end(self, run_dir) -> None:
        """Final outputs after the networks were exported (e.g. generated images)."""

    def close(self) -> None:
        """Release resources (open files, readers) when training ends or fails."""

    def rollback_steps_needed(self) -> int:
        """How many steps back a roll-back may reach; the engine keeps checkpoints that far."""
        return 0

