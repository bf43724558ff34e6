"""From a resolved config to a finished run: validation, seeds, precision, strategy, run directory."""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import tempfile
from typing import Any

import keras

from tfmedgan.engine.checkpoint import latest_valid_checkpoint
from tfmedgan.engine.distribute import is_chief, make_strategy
from tfmedgan.engine.logging import check_neptune_settings
from tfmedgan.engine.precision import set_precision
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.recipe import Recipe
from tfmedgan.engine.trainer import Trainer
from tfmedgan.errors import TfmedganError


def dry_run(recipe: Recipe) -> dict[str, Any]:
    """The resolved configuration plus the parameter count of every network, as printed by --dry-run."""
    config = recipe.config
    config.validate()
    keras.utils.set_random_seed(config.seed)
    recipe.build_networks_only()
    resolved = config.to_dict()
    resolved["parameters"] = recipe.parameter_counts()
    resolved.update(recipe.dry_run_extra())
    return resolved


def launch(
    recipe: Recipe,
    resume: str | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> tuple[RunDirectory, dict[str, Any]]:
    """Validate, check the data, create (or reopen) the run directory and train.

    Every check that can fail on user input (config values, data, run directory) runs before the
    networks are built, so bad input costs seconds, not hours.
    """
    config = recipe.config
    config.validate()
    if config.ema and not recipe.averaged_networks:
        raise TfmedganError(f"--ema: {config.model} has no generator weights to average")
    set_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    if config.neptune:
        check_neptune_settings()
    recipe.prepare_data(strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    with contextlib.ExitStack() as stack:
        if not chief:
            # Other workers of a multi-worker run compute in lockstep but write into a scratch folder;
            # they restore from the chief's (shared) run directory when resuming.
            config.neptune = False
            # The caller still opens the returned run (config.json, summary.json) after launch
            # returns, so the scratch folder is a complete run directory, removed at exit.
            scratch = tempfile.mkdtemp(prefix="tfmedgan-worker-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
            run_dir = RunDirectory.create(scratch, config.name or config.model)
            config.to_json(run_dir.config_path)
            if resume:
                newest = latest_valid_checkpoint(RunDirectory.open(resume).checkpoints)
                if newest is not None:
                    shutil.copy2(newest, run_dir.checkpoints / newest.name)
        elif resume:
            run_dir = RunDirectory.open(resume)
            stack.enter_context(run_dir.lock())  # one process per run: a second --resume is refused
            config.to_json(run_dir.config_path)  # records overrides such as a longer --epochs
        else:
            run_dir = RunDirectory.create(config.output_dir, config.name or RunDirectory.default_name(config.model))
            stack.enter_context(run_dir.lock())
            config.name = run_dir.path.name
            config.to_json(run_dir.config_path)
        if progress and chief:
            print(f"run directory: {run_dir.path} (stop any time; continue with --resume {run_dir.path})")
        trainer = Trainer(recipe, run_dir, resume=bool(resume), strategy=strategy, progress=progress and chief)
        try:
            summary = trainer.fit(stop_after_steps=stop_after_steps)
            recipe.on_train_end(run_dir)  # may still read the recipe's data: close comes after it
        finally:
            recipe.close()
        summary["chief"] = chief  # False: a multi-worker run's other worker (its folder is scratch)
        (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir, summary
