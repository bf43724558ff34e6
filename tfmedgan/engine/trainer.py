"""The one training engine shared by every tfmedgan model.

The engine runs a :class:`~tfmedgan.models.base.GANRecipe` under a ``tf.distribute`` strategy with
a compiled (``tf.function``) step, and owns the loop, checkpoints, loss logs, plots, sample grids,
Neptune logging and the export of the trained networks. A run can be stopped at any moment and
continued with ``--resume``: data order and random inputs are pure functions of (seed, epoch, step),
and checkpoints hold every network, optimizer and engine variable, so the resumed run repeats the
uninterrupted one exactly on CPU in float32.
"""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfmedgan.config import EngineConfig
from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.distribute import make_strategy
from tfmedgan.engine.logging import NeptuneLogger
from tfmedgan.engine.rundir import RunDirectory, image_grid, save_png_atomic
from tfmedgan.errors import TfmedganError
from tfmedgan.models.base import GANRecipe


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
        recipe: GANRecipe,
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
        with self.strategy.scope():
            recipe.build(self.strategy.num_replicas_in_sync)
            for name, variables in recipe.optimizer_variables().items():
                recipe.optimizers[name].build(variables)
        self._compiled_step = None

    # -- state -----------------------------------------------------------------------------------
    def variable_groups(self) -> dict[str, list]:
        groups: dict[str, list] = {}
        for name, model in self.recipe.networks.items():
            groups[f"network.{name}"] = list(model.variables)
        for name, optimizer in self.recipe.optimizers.items():
            groups[f"optimizer.{name}"] = list(optimizer.variables)
        groups["state"] = list(self.recipe.state_variables())
        return groups

    def save_checkpoint(self) -> Path:
        self._flush_rows()
        path = ckpt.save_checkpoint(
            self.run_dir.checkpoints,
            self.step,
            self.variable_groups(),
            {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch},
            keep=self.config.keep_checkpoints,
        )
        self._last_checkpoint_time = time.monotonic()
        return path

    def restore_latest(self) -> Path | None:
        ckpt.remove_stale_temporaries(self.run_dir.checkpoints)
        latest = ckpt.latest_checkpoint(self.run_dir.checkpoints)
        if latest is None:
            self.run_dir.truncate_losses(0)
            return None
        counters = ckpt.restore_checkpoint(latest, self.variable_groups())
        self.step = int(counters["step"])
        self.epoch = int(counters["epoch"])
        self.step_in_epoch = int(counters["step_in_epoch"])
        self.run_dir.truncate_losses(self.step)
        return latest

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
                if self.step_in_epoch and "skip_batches" in inspect.signature(recipe.dataset).parameters:
                    dataset = recipe.dataset(self.epoch, skip_batches=self.step_in_epoch)  # skips before decoding
                else:
                    dataset = recipe.dataset(self.epoch)
                    if self.step_in_epoch:
                        dataset = dataset.skip(self.step_in_epoch)
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
                    self.save_checkpoint()
                    self._epoch_outputs(self.epoch, logger)
                    break
                finished_epoch = self.epoch
                self.epoch += 1
                self.step_in_epoch = 0
                last = self.epoch >= config.epochs or done  # done: --max-steps reached at an epoch end
                if self.epoch % config.checkpoint == 0 or last:
                    self.save_checkpoint()
                    self._epoch_outputs(finished_epoch, logger)
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
            latest = ckpt.latest_checkpoint(self.run_dir.checkpoints)
            where = f" (last checkpoint: {latest.name})" if latest else ""
            raise TfmedganError(
                f"training diverged at step {self.step}: {bad} is not finite{where}; resuming would repeat it "
                "exactly, so start a new run with a lower learning rate or another --seed"
            )

    def _flush_rows(self) -> None:
        self.run_dir.append_losses(self._pending_rows)
        self._pending_rows = []

    def _epoch_outputs(self, epoch: int, logger: NeptuneLogger) -> None:
        self.run_dir.plot_losses()
        images = self.recipe.sample_images()
        if images is not None:
            grid = image_grid(images)
            save_png_atomic(grid, self.run_dir.samples / self.recipe.sample_filename(epoch))
            logger.log_image("samples", grid, description=f"epoch {epoch}")
        for name, image in self.recipe.on_epoch_end(epoch, self.run_dir).items():
            logger.log_image(name, image, description=f"epoch {epoch}")

    def export(self) -> list[Path]:
        """Save every network as ``models/<name>.keras`` (atomic rename)."""
        paths = []
        for name, model in self.recipe.networks.items():
            target = self.run_dir.models / f"{name}.keras"
            temporary = target.with_name(f".tmp-{name}.keras")
            model.save(temporary)
            temporary.replace(target)
            paths.append(target)
        return paths


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
