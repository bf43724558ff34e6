"""The one training engine shared by every tfmedgan model.

The engine runs a :class:`~tfmedgan.engine.recipe.Recipe` under a ``tf.distribute`` strategy with
a compiled (``tf.function``) step, and owns the loop, checkpoints, loss logs, plots, sample grids,
Neptune logging and the export of the trained networks. A run can be stopped at any moment and
continued with ``--resume``: data order and random inputs are pure functions of (seed, epoch, step),
and checkpoints hold every network, optimizer and engine variable, so the resumed run repeats the
uninterrupted one exactly on CPU in float32.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.averaging import WeightAverage
from tfmedgan.engine.config import EngineConfig
from tfmedgan.engine.distribute import make_strategy
from tfmedgan.engine.export import export_networks
from tfmedgan.engine.logging import NeptuneLogger
from tfmedgan.engine.recipe import EpochDecision, Recipe
from tfmedgan.engine.rundir import RunDirectory, image_grid, save_png_atomic
from tfmedgan.engine.validation import ValidationHistory
from tfmedgan.errors import TfmedganError


class Interrupted(Exception):
    """Raised by ``stop_after_steps`` to simulate a crash (used by tests)."""


class Trainer:
    """Runs one recipe in one run directory.

    Args:
        recipe: the GAN recipe (data, networks, optimizers, step).
        run_dir: the run directory (new, or opened for resuming).
        resume: continue from the newest checkpoint in ``run_dir``.
        strategy: a ``tf.distribute.Strategy``; default from ``recipe.config.strategy``.
        progress: show the tqdm progress bar.
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: RunDirectory,
        resume: bool = False,
        strategy: tf.distribute.Strategy | None = None,
        progress: bool = True,
    ):
        self.recipe = recipe
        self.config: EngineConfig = recipe.config
        self.run_dir = run_dir
        self.resume = resume
        self.strategy = strategy or make_strategy(self.config.strategy)
        self.progress = progress
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self._last_checkpoint_time = time.monotonic()
        self._pending_rows: list[dict[str, float]] = []
        self.step_end_times: list[float] = []  # perf_counter() after each step, for benchmarks
        self.validation = ValidationHistory(run_dir, recipe.validation_metric)
        with self.strategy.scope():
            recipe.build(self.strategy.num_replicas_in_sync)
            for name, variables in recipe.optimizer_variables().items():
                recipe.optimizers[name].build(variables)
            # --ema: the averaged generator weights (checkpointed; swapped in for exports, samples, validation)
            self.averages = (WeightAverage({name: recipe.networks[name] for name in recipe.averaged_networks},
                                           self.config.ema) if self.config.ema else None)
        self._compiled_step = None

    # -- state -----------------------------------------------------------------------------------
    def variable_groups(self) -> dict[str, list]:
        groups: dict[str, list] = {}
        for name, model in self.recipe.networks.items():
            groups[f"network.{name}"] = list(model.variables)
        for name, optimizer in self.recipe.optimizers.items():
            groups[f"optimizer.{name}"] = list(optimizer.variables)
        groups["state"] = list(self.recipe.state_variables())
        if self.averages is not None:
            groups.update(self.averages.variable_groups())
        return groups

    def averaged_weights(self) -> contextlib.AbstractContextManager:
        """Within the block the averaged networks hold their ``--ema`` weights (no-op without it)."""
        return self.averages.applied() if self.averages is not None else contextlib.nullcontext()

    def save_checkpoint(self) -> Path:
        self._flush_rows()
        path = ckpt.save_checkpoint(
            self.run_dir.checkpoints,
            self.step,
            self.variable_groups(),
            {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch},
            keep=len(ckpt.list_checkpoints(self.run_dir.checkpoints)) + 1,
        )
        self._prune_checkpoints()
        self._last_checkpoint_time = time.monotonic()
        return path

    def _prune_checkpoints(self) -> None:
        """Keep the newest ``keep_checkpoints`` plus every checkpoint a roll-back may still need:
        a roll-back to any step in ``[step - reach, step]`` restores the newest checkpoint at or
        before it, so the newest one at or before ``step - reach`` stays as well."""
        found = ckpt.list_checkpoints(self.run_dir.checkpoints)
        kept = set(found[-self.config.keep_checkpoints :])
        reach = self.recipe.rollback_steps_needed()
        if reach:
            horizon = self.step - reach
            kept.update(p for p in found if ckpt.checkpoint_step(p) >= horizon)
            reachable = [p for p in found if ckpt.checkpoint_step(p) <= horizon]
            kept.update(reachable[-1:])
        for path in found:
            if path not in kept:
                path.unlink(missing_ok=True)

    def restore_latest(self) -> Path | None:
        """Restore the newest checkpoint that verifies (falling back past damaged ones, with a
        warning); None when the run has none."""
        ckpt.remove_stale_temporaries(self.run_dir.checkpoints)
        restored = ckpt.restore_newest_valid(self.run_dir.checkpoints, self.variable_groups())
        if restored is None:
            self.run_dir.truncate_losses(0)
            self.validation.truncate(0)
            return None
        latest, counters = restored
        self.step = int(counters["step"])
        self.epoch = int(counters["epoch"])
        self.step_in_epoch = int(counters["step_in_epoch"])
        self.run_dir.truncate_losses(self.step)
        self.validation.truncate(self.step)
        return latest

    def rollback(self, target_step: int) -> int | None:
        """Restore the newest checkpoint at or before ``target_step``; later checkpoints and log
        rows are deleted. Returns the restored step, or None (with a message) when no checkpoint
        that old is left."""
        found = ckpt.list_checkpoints(self.run_dir.checkpoints)
        eligible = [p for p in found if ckpt.checkpoint_step(p) <= target_step]
        if not eligible:
            print(f"roll-back to step {target_step} refused: the oldest checkpoint left is "
                  f"{found[0].name if found else 'none'}", file=sys.stderr)
            return None
        counters = ckpt.restore_checkpoint(eligible[-1], self.variable_groups())
        self.step = int(counters["step"])
        self.epoch = int(counters["epoch"])
        self.step_in_epoch = int(counters["step_in_epoch"])
        for path in found:
            if ckpt.checkpoint_step(path) > self.step:
                path.unlink(missing_ok=True)
        self.run_dir.truncate_losses(self.step)
        self.validation.truncate(self.step)
        self.recipe.after_rollback(self.step)
        self.save_checkpoint()
        return self.step

    # -- compiled step ---------------------------------------------------------------------------
    def _build_step(self, element_spec=None):
        """The compiled, distributed step. With the dataset's ``element_spec`` (batch dimension
        None) it is traced once, so the last partial batch of an epoch does not retrace it."""
        strategy, recipe = self.strategy, self.recipe

        def distributed_step(batch, step):
            per_replica = strategy.run(recipe.train_step, args=(batch, step))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        signature = None if element_spec is None else [element_spec, tf.TensorSpec([], tf.int64)]
        return tf.function(
            distributed_step, input_signature=signature, jit_compile=self.config.jit_compile or None,
            reduce_retracing=signature is None,
        )

    def train_step(self, batch, step: int) -> dict[str, float]:
        """Run one compiled, distributed step; returns the global-batch losses as floats."""
        if self._compiled_step is None:
            self._compiled_step = self._build_step()
        losses = self._compiled_step(batch, tf.constant(step, tf.int64))
        return {k: float(v.numpy()) for k, v in losses.items()}

    # -- loop ------------------------------------------------------------------------------------
    def fit(self, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train to ``config.epochs`` (or ``max_steps``); returns a summary dict."""
        config, recipe = self.config, self.recipe
        logger = NeptuneLogger(config.neptune, config.to_dict(), str(self.run_dir.path))
        started = time.monotonic()
        steps_run = 0
        try:
            if self.resume:
                restored = self.restore_latest()
                if restored is not None:
                    print(f"resumed from {restored} (epoch {self.epoch + 1}, step {self.step})")
                else:
                    print(f"no checkpoint in {self.run_dir.checkpoints}: starting from step 0")
            done = self._max_steps_reached()
            while self.epoch < config.epochs and not done:
                scalars = recipe.on_epoch_begin(self.epoch)
                for name, value in scalars.items():
                    logger.log_scalar(f"train/{name}", value, self.step)
                dataset = recipe.dataset(self.epoch, skip_batches=self.step_in_epoch)
                distributed = self.strategy.experimental_distribute_dataset(dataset)
                if self._compiled_step is None:
                    self._compiled_step = self._build_step(distributed.element_spec)
                bar = tqdm(
                    total=recipe.steps_per_epoch,
                    initial=self.step_in_epoch,
                    desc=f"epoch {self.epoch + 1}/{config.epochs}",
                    disable=not self.progress,
                    dynamic_ncols=True,
                )
                for batch in distributed:
                    losses = self.train_step(batch, self.step)
                    if self.averages is not None:
                        self.averages.update()
                    self.step += 1
                    self.step_in_epoch += 1
                    self.step_end_times.append(time.perf_counter())
                    steps_run += 1
                    self._check_finite(losses)
                    if self.step % config.log_every == 0:
                        row = {"step": self.step, "epoch": self.epoch, **losses, **scalars}
                        self._pending_rows.append(row)
                        logger.log_losses(self.step, losses)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                    bar.update(1)
                    if self._checkpoint_due():
                        self.save_checkpoint()
                    if stop_after_steps is not None and steps_run >= stop_after_steps:
                        bar.close()
                        self._flush_rows()
                        raise Interrupted(f"stopped after {steps_run} steps")
                    if self._max_steps_reached():
                        done = True
                        break
                bar.close()
                if done and self.step_in_epoch < recipe.steps_per_epoch:
                    # same order as at an epoch end: the loss plot shows this validation too
                    self.run_validation(self.epoch, logger, final=True)
                    self.save_checkpoint()
                    self.epoch_outputs(self.epoch, logger)
                    break
                finished_epoch = self.epoch
                self.epoch += 1
                self.step_in_epoch = 0
                last = self.epoch >= config.epochs or done  # done: --max-steps reached at an epoch end
                self.run_validation(finished_epoch, logger, final=last)
                if recipe.is_checkpoint_epoch(finished_epoch) or last:
                    self.save_checkpoint()
                    self.epoch_outputs(finished_epoch, logger)
                    if not done:
                        done = self._after_epoch(finished_epoch)
                else:
                    self._flush_rows()
            self._flush_rows()
            exported = self.export()
        finally:
            logger.stop()
        elapsed = time.monotonic() - started
        return {"steps": self.step, "epochs": self.epoch, "seconds": elapsed, "exported": [str(p) for p in exported]}

    def _checkpoint_due(self) -> bool:
        config = self.config
        if config.checkpoint_steps and self.step % config.checkpoint_steps == 0:
            return True
        return config.checkpoint_minutes > 0 and time.monotonic() - self._last_checkpoint_time > 60 * config.checkpoint_minutes

    def _max_steps_reached(self) -> bool:
        return bool(self.config.max_steps) and self.step >= self.config.max_steps

    def _check_finite(self, losses: dict[str, float]) -> None:
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            self._flush_rows()
            latest = ckpt.latest_valid_checkpoint(self.run_dir.checkpoints)
            where = f" (last checkpoint: {latest.name})" if latest else ""
            raise TfmedganError(
                f"training diverged at step {self.step}: {bad} is not finite{where}; resuming would repeat it "
                "exactly, so start a new run with a lower learning rate or another --seed"
            )

    def _flush_rows(self) -> None:
        self.run_dir.append_losses(self._pending_rows)
        self._pending_rows = []

    def epoch_outputs(self, epoch: int, logger: NeptuneLogger) -> None:
        """Loss plot, sample grid and the recipe's own outputs of a checkpoint epoch."""
        self.run_dir.plot_losses(self.validation.rows())
        with self.averaged_weights():
            images = self.recipe.sample_images()
            outputs = self.recipe.epoch_outputs(epoch, self.step, self.run_dir)
        if images is not None:
            grid = image_grid(images)
            save_png_atomic(grid, self.run_dir.samples / self.recipe.sample_filename(epoch))
            logger.log_image("samples", grid, description=f"epoch {epoch}")
        for name, image in outputs.items():
            logger.log_image(name, image, description=f"epoch {epoch}")

    def run_validation(self, epoch: int, logger: NeptuneLogger, final: bool = False) -> dict[str, float]:
        """The recipe's validation every ``validate_every`` epochs (and at the end of training);
        appended to validation.csv, logged, and the best model kept."""
        every = self.config.validate_every
        if not every or not ((epoch + 1) % every == 0 or final):
            return {}
        if self.validation.has_step(self.step):
            return {}
        with self.averaged_weights():
            metrics = self.recipe.validate(epoch, self.step)
            if not metrics:
                return {}
            improved = self.validation.append(self.step, epoch, metrics)
            for name, value in metrics.items():
                logger.log_scalar(f"validation/{name}", value, self.step)
            if improved:
                names = self.recipe.best_networks or tuple(self.recipe.networks)
                export_networks({n: self.recipe.networks[n] for n in names}, self.run_dir.models, prefix="best_")
        return metrics

    def _after_epoch(self, epoch: int) -> bool:
        """Apply the recipe's after-epoch decision; True when training should stop."""
        decision: EpochDecision | None = self.recipe.after_epoch(epoch, self.step, self.run_dir)
        if decision is None:
            return False
        if decision.rollback_to is not None:
            self.rollback(decision.rollback_to)
        elif decision.save_checkpoint:
            self.save_checkpoint()
        return self._max_steps_reached()

    def export(self) -> list[Path]:
        """Save every network as ``models/<name>.keras`` (atomic rename); with ``--ema`` the
        averaged networks are saved with their averaged weights."""
        with self.averaged_weights():
            return export_networks(self.recipe.networks, self.run_dir.models)


def save_generated(images: np.ndarray, folder: str | Path, prefix: str = "generated") -> list[Path]:
    """Write images [N, H, W, C] in [-1, 1] as individual PNGs plus ``grid.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        pixels = np.clip((image + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
        paths.append(save_png_atomic(pixels, folder / f"{prefix}_{index:05d}.png"))
    save_png_atomic(image_grid(images), folder / "grid.png")
    return paths
