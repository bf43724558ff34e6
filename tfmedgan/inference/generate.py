"""Image generation from a trained run directory (2D latent-to-image GANs)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.errors import TfmedganError


def load_network(run_dir: str | Path, name: str = "generator", best: bool = False) -> keras.Model:
    """A trained network of a run (see :meth:`tfmedgan.api.Run.network`): the exported
    ``models/<name>.keras`` (``best``: ``models/best_<name>.keras`` if any) or, for a run stopped
    before the end, the newest checkpoint's weights in a freshly built network."""
    from tfmedgan.api import load_run

    return load_run(run_dir).network(name, best=best)


def generate_images(generator: keras.Model, n: int, seed: int = 0, batch: int = 32) -> np.ndarray:
    """``n`` images [n, H, W, C] (values as the generator makes them, ~[-1, 1]) from N(0, 1) latents."""
    if n < 1 or batch < 1:
        raise TfmedganError(f"--n and --batch must be at least 1, got {n} and {batch}")
    latent_dim = generator.inputs[0].shape[-1]
    latents = tf.random.stateless_normal((n, latent_dim), seed=(seed, 11))
    chunks = [generator(latents[i : i + batch], training=False) for i in range(0, n, batch)]
    return np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks], axis=0)
