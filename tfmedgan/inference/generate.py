"""Image generation from a trained run directory (2D latent-to-image GANs)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.config import read_config
from tfmedgan.errors import TfmedganError


def _register_custom_layers() -> None:
    """Import every module that registers custom layers so ``.keras`` files load."""
    import importlib
    import pkgutil

    import tfmedgan.layers as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"tfmedgan.layers.{module.name}")


def load_network(run_dir: str | Path, name: str = "generator") -> keras.Model:
    """A trained network of a run: the exported ``models/<name>.keras`` or, for a run that was
    stopped before the end, the newest checkpoint's weights in a freshly built network."""
    run_dir = Path(run_dir)
    values = read_config(run_dir / "config.json")
    _register_custom_layers()
    exported = run_dir / "models" / f"{name}.keras"
    if exported.is_file():
        return keras.models.load_model(exported, compile=False)
    from tfmedgan.engine import checkpoint as ckpt
    from tfmedgan.models import recipe_from_config

    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise TfmedganError(f"{run_dir} has neither models/{name}.keras nor a checkpoint: nothing trained yet")
    recipe = recipe_from_config(values)
    recipe.build_networks_only()
    if name not in recipe.networks:
        raise TfmedganError(f"{run_dir} has no network called {name!r} (has {', '.join(recipe.networks)})")
    import numpy as np_

    with np_.load(latest) as stored:
        keys = sorted(k for k in stored.files if k.startswith(f"network.{name}/"))
        variables = recipe.networks[name].variables
        if len(keys) != len(variables):
            raise TfmedganError(f"checkpoint {latest} does not match the network {name!r}")
        for key, variable in zip(keys, variables):
            variable.assign(stored[key])
    return recipe.networks[name]


def generate_images(generator: keras.Model, n: int, seed: int = 0, batch: int = 32) -> np.ndarray:
    """``n`` images [n, H, W, C] (values as the generator makes them, ~[-1, 1]) from N(0, 1) latents."""
    if n < 1 or batch < 1:
        raise TfmedganError(f"--n and --batch must be at least 1, got {n} and {batch}")
    latent_dim = generator.inputs[0].shape[-1]
    latents = tf.random.stateless_normal((n, latent_dim), seed=(seed, 11))
    chunks = [generator(latents[i : i + batch], training=False) for i in range(0, n, batch)]
    return np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks], axis=0)
