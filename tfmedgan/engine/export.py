"""Networks out of a run and back: the export at the end of training and the loading of a
network from a finished or stopped run."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, Mapping

import keras

from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.config import read_config
from tfmedgan.errors import TfmedganError


def export_networks(networks: Mapping[str, keras.Model], folder: str | Path, prefix: str = "") -> list[Path]:
    """Save each network as ``folder/<prefix><name>.keras`` (temporary file, then atomic rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in networks.items():
        target = folder / f"{prefix}{name}.keras"
        temporary = target.with_name(f".tmp-{prefix}{name}.keras")
        model.save(temporary)
        temporary.replace(target)
        paths.append(target)
    return paths


def register_custom_layers() -> None:
    """Import every module of ``tfmedgan.layers`` so that ``.keras`` files with custom layers load."""
    package = importlib.import_module("tfmedgan.layers")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def load_network(
    run_dir: str | Path,
    name: str,
    build_recipe: Callable[[dict], object] | None = None,
    best: bool = False,
) -> keras.Model:
    """A trained network of a run.

    Args:
        run_dir: the run directory.
        name: network name (``generator``, ``generator_a2b``, ...).
        build_recipe: config.json contents -> an unbuilt recipe; used when the run stopped before
            exporting (the newest checkpoint's weights then go into freshly built networks).
        best: prefer ``models/best_<name>.keras`` (the best validation score) when it exists.

    Returns:
        The exported ``models/<name>.keras`` or, for a run stopped early, the checkpoint's weights.
    """
    run_dir = Path(run_dir)
    values = read_config(run_dir / "config.json")
    register_custom_layers()
    candidates = ([run_dir / "models" / f"best_{name}.keras"] if best else []) + [run_dir / "models" / f"{name}.keras"]
    for exported in candidates:
        if exported.is_file():
            return keras.models.load_model(exported, compile=False)
    if build_recipe is None or not ckpt.list_checkpoints(run_dir / "checkpoints"):
        raise TfmedganError(f"{run_dir} has neither models/{name}.keras nor a checkpoint: nothing trained yet")
    recipe = build_recipe(values)
    recipe.build_networks_only()
    if name not in recipe.networks:
        raise TfmedganError(f"{run_dir} has no network called {name!r} (has {', '.join(recipe.networks)})")
    # with --ema the checkpoint also holds the averaged weights, which the export would have saved
    group = f"ema.{name}" if values.get("ema") and name in getattr(recipe, "averaged_networks", ()) else f"network.{name}"
    ckpt.restore_newest_valid(run_dir / "checkpoints", {group: recipe.networks[name].variables}, quarantine=False)
    return recipe.networks[name]
