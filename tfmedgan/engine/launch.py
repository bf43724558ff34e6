"""From a resolved config to a finished run: validation, seeds, precision, strategy, run directory."""

from __future__ import annotations

import json
from typing import Any

import keras

from tfmedgan.engine.distribute import make_strategy
from tfmedgan.engine.precision import set_precision
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import Trainer
from tfmedgan.models.base import GANRecipe


def dry_run(recipe: GANRecipe) -> dict[str, Any]:
    """The resolved configuration plus the parameter count of every network, as printed by --dry-run."""
    config = recipe.config
    config.validate()
    keras.utils.set_random_seed(config.seed)
    recipe.build_networks_only()
    resolved = config.to_dict()
    resolved["parameters"] = recipe.parameter_counts()
    resolved.update(recipe.dry_run_extra() if hasattr(recipe, "dry_run_extra") else {})
    return resolved


def launch(
    recipe: GANRecipe,
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
    set_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    recipe.prepare_data(strategy.num_replicas_in_sync)
    if resume:
        run_dir = RunDirectory.open(resume)
        config.to_json(run_dir.config_path)  # records overrides such as a longer --epochs
    else:
        run_dir = RunDirectory.create(config.output_dir, config.name or RunDirectory.default_name(config.model))
        config.name = run_dir.path.name
        config.to_json(run_dir.config_path)
    trainer = Trainer(recipe, run_dir, resume=bool(resume), strategy=strategy, progress=progress)
    summary = trainer.fit(stop_after_steps=stop_after_steps)
    if hasattr(recipe, "on_train_end"):
        recipe.on_train_end(run_dir)
    (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir, summary
