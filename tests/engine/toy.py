"""A tiny toy recipe for the engine tests: two small dense networks and two optimizers on random tensors.

It imports nothing from ``tfmedgan.models``, ``tfmedgan.networks`` or ``tfmedgan.data``: the engine
is tested on its own contract (:class:`tfmedgan.engine.recipe.Recipe`).

The task: ``x`` is uniform in [-1, 1]^features, drawn per epoch from the stateless seed
(seed, epoch); the target is ``y = x @ w + 0.5 + noise`` with fixed ``w`` and a small noise drawn
per step from :meth:`Recipe.noise_seed` (so a resumed run must replay the step counter exactly).

- ``regressor`` (Dense-tanh-Dense) predicts ``y`` from ``x`` (mean squared error, Adam);
- ``critic`` (Dense-relu-Dense) predicts the regressor's squared error from ``x`` (SGD).

Both losses fall within a few epochs. Config switches make the recipe misbehave on purpose: a NaN
loss at a given step, a roll-back request after a given epoch, scripted validation scores.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.engine.config import EngineConfig
from tfmedgan.engine.distribute import average_loss, global_batch_size, replica_slice
from tfmedgan.engine.recipe import EpochDecision, Recipe


@dataclasses.dataclass
class ToyConfig(EngineConfig):
    """The toy's options on top of the engine's.

    Args:
        examples: examples per epoch (22 with batch 4: 6 steps, the last one partial).
        features: input features.
        hidden: units of the hidden layer of both networks.
        lr: learning rate of both optimizers.
        noise: standard deviation of the per-step target noise.
        nan_at_step: the reported regressor loss is NaN at this (1-based) step (0: never).
        rollback_after_epoch: after this (0-based) checkpoint epoch, ask once for a roll-back (-1: never).
        rollback_to: the step of that roll-back request.
        rollback_reach: what :meth:`Recipe.rollback_steps_needed` answers.
        mark_after_epoch: after this (0-based) checkpoint epoch, increment the ``marks`` state
            variable and ask the engine to checkpoint again (-1: never).
        validation_scores: scripted values of the ``score`` metric, one per validation in order
            (empty: ``score`` is the held-out mean squared error).
    """

    model: ClassVar[str] = "toy"

    batch: int = 4
    checkpoint_minutes: float = 0.0
    examples: int = 22
    features: int = 4
    hidden: int = 8
    lr: float = 0.05
    noise: float = 0.05
    nan_at_step: int = 0
    rollback_after_epoch: int = -1
    rollback_to: int = 0
    rollback_reach: int = 0
    mark_after_epoch: int = -1
    validation_scores: list[float] = dataclasses.field(default_factory=list)


class ToyRecipe(Recipe):
    """The toy regression recipe; records the hooks the engine called (for assertions)."""

    config: ToyConfig
    validation_metric = ("score", "min")
    best_networks = ("regressor",)

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.calls: list[tuple[Any, ...]] = []
        self.rolled_back = False
        self.validations = 0
        self.seen_at_rollback: dict[str, Any] | None = None  # run directory state when after_rollback ran
        self.drop_remainder = False

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        config = self.config
        self.drop_remainder = num_replicas > 1  # replicas need equal shares
        whole, rest = divmod(config.examples, config.batch)
        self.steps_per_epoch = whole + (1 if rest and not self.drop_remainder else 0)
        self.true_weights = tf.constant(np.linspace(-1.0, 1.0, config.features, dtype=np.float32)[:, None])
        self.calls.append(("prepare_data", num_replicas))

    def epoch_examples(self, epoch: int) -> tuple[tf.Tensor, tf.Tensor]:
        """All (x, y) of an epoch: a function of (seed, epoch) only."""
        config = self.config
        x = tf.random.stateless_uniform((config.examples, config.features), seed=(config.seed, epoch),
                                        minval=-1.0, maxval=1.0)
        return x, tf.matmul(x, self.true_weights) + 0.5

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        self.calls.append(("dataset", epoch, skip_batches))
        batches = tf.data.Dataset.from_tensor_slices(self.epoch_examples(epoch)).batch(
            self.config.batch, drop_remainder=self.drop_remainder)
        return batches.skip(skip_batches)

    # -- networks --------------------------------------------------------------------------------
    def build(self, num_replicas: int = 1) -> None:
        config = self.config
        self.networks = {
            "regressor": keras.Sequential(
                [keras.Input((config.features,)), keras.layers.Dense(config.hidden, activation="tanh"),
                 keras.layers.Dense(1)], name="regressor"),
            "critic": keras.Sequential(
                [keras.Input((config.features,)), keras.layers.Dense(config.hidden, activation="relu"),
                 keras.layers.Dense(1)], name="critic"),
        }
        self.optimizers = {
            "regressor": keras.optimizers.Adam(config.lr),
            "critic": keras.optimizers.SGD(config.lr, momentum=0.5),
        }
        self.rollbacks = tf.Variable(0, dtype=tf.int64, trainable=False, name="rollbacks")
        self.marks = tf.Variable(0, dtype=tf.int64, trainable=False, name="marks")
        self.calls.append(("build", num_replicas))

    def optimizer_variables(self) -> dict[str, list]:
        return {name: self.networks[name].trainable_variables for name in self.optimizers}

    def state_variables(self) -> list[tf.Variable]:
        return [self.rollbacks, self.marks]

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        x, y = batch
        regressor, critic = self.networks["regressor"], self.networks["critic"]
        total = global_batch_size(tf.shape(x)[0])
        noise = tf.random.stateless_normal(tf.stack([total, 1]), seed=self.noise_seed(step)) * self.config.noise
        target = y + replica_slice(noise)
        with tf.GradientTape() as regressor_tape, tf.GradientTape() as critic_tape:
            squared_error = tf.square(regressor(x, training=True) - target)
            regressor_loss = average_loss(squared_error, total)
            critic_loss = average_loss(tf.square(critic(x, training=True) - tf.stop_gradient(squared_error)), total)
        for name, tape, loss in (("regressor", regressor_tape, regressor_loss), ("critic", critic_tape, critic_loss)):
            variables = self.networks[name].trainable_variables
            self.optimizers[name].apply_gradients(zip(tape.gradient(loss, variables), variables))
        if self.config.nan_at_step:
            poisoned = tf.equal(step + 1, self.config.nan_at_step)
            regressor_loss = tf.where(poisoned, tf.constant(math.nan, regressor_loss.dtype), regressor_loss)
        return {"regressor_loss": regressor_loss, "critic_loss": critic_loss}

    # -- outputs ---------------------------------------------------------------------------------
    def sample_images(self) -> np.ndarray:
        grid = np.linspace(-1.0, 1.0, 2 * 16 * self.config.features, dtype=np.float32)
        predictions = self.networks["regressor"](grid.reshape(-1, self.config.features), training=False).numpy()
        return np.tanh(predictions.reshape(2, 4, 4, 1))

    def validate(self, epoch: int, step: int) -> dict[str, float]:
        x, y = self.epoch_examples(10_000)  # held out: an epoch index training never reaches
        mse = float(tf.reduce_mean(tf.square(self.networks["regressor"](x, training=False) - y)))
        scores = self.config.validation_scores
        score = scores[self.validations] if scores else mse
        self.validations += 1
        self.calls.append(("validate", epoch, step))
        return {"score": score, "mse": mse}

    def after_epoch(self, epoch: int, step: int, run_dir) -> EpochDecision | None:
        self.calls.append(("after_epoch", epoch, step))
        if epoch == self.config.rollback_after_epoch and not self.rolled_back:
            self.rolled_back = True
            return EpochDecision(rollback_to=self.config.rollback_to)
        if epoch == self.config.mark_after_epoch:
            self.marks.assign_add(1)
            return EpochDecision(save_checkpoint=True)
        return None

    def after_rollback(self, step: int) -> None:
        self.calls.append(("after_rollback", step))
        run_path = Path(self.config.output_dir) / self.config.name
        self.seen_at_rollback = {
            "checkpoints": sorted(p.name for p in (run_path / "checkpoints").glob("ckpt-*")),
            "last_logged_step": int(float(run_path.joinpath("losses.csv").read_text().split()[-1].split(",")[0])),
        }
        self.rollbacks.assign_add(1)

    def rollback_steps_needed(self) -> int:
        return self.config.rollback_reach

    def on_train_end(self, run_dir) -> None:
        self.calls.append(("on_train_end",))

    def close(self) -> None:
        self.calls.append(("close",))
