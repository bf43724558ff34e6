"""An exponential moving average of networks' weights (``--ema``), kept by the engine.

A GAN's generator weights oscillate from step to step; their running average is usually a better
and far steadier network than the last weights (Polyak averaging; progressive GANs and StyleGAN
export the averaged generator). The engine keeps one shadow variable per variable of each averaged
network, updates it after every training step, checkpoints it with the run, and swaps it in for
the exported models, the sample grids and the validation.

The decay of update ``n`` (1-based) is ``min(decay, (1 + n) / (10 + n))``, the rule of
``tf.train.ExponentialMovingAverage`` with ``num_updates``: early on the average follows the
weights closely, so a short run is not dominated by its random initialisation.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.errors import TfmedganError


def effective_decay(decay: float, update: int) -> float:
    """The decay applied at the ``update``-th update (1-based).

    Example:
        >>> effective_decay(0.999, 1), effective_decay(0.9, 1000)
        (0.18181818181818182, 0.9)
    """
    return min(float(decay), (1.0 + update) / (10.0 + update))


class WeightAverage:
    """Shadow copies of some networks' variables that follow them as an exponential moving average.

    Create it inside the distribution strategy's scope (the shadows are then mirrored like the
    weights they follow).

    Args:
        networks: name -> Keras model whose variables are averaged (every variable; integer ones,
            such as seed states, are copied).
        decay: the largest per-update decay, in (0, 1).

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> average = WeightAverage({"generator": model}, decay=0.999)
        >>> average.update()  # after each optimizer step
        >>> with average.applied():  # the averaged weights inside the block
        ...     prediction = model(np.zeros((1, 2), np.float32))
    """

    def __init__(self, networks: Mapping[str, keras.Model], decay: float):
        if not 0.0 < float(decay) < 1.0:
            raise TfmedganError(f"--ema must be in (0, 1), got {decay}")
        if not networks:
            raise TfmedganError("--ema: the model declares no networks to average")
        self.decay = float(decay)
        self.networks = dict(networks)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")
        self.shadows: dict[str, list[tf.Variable]] = {
            name: [tf.Variable(variable.numpy(), trainable=False, name=f"ema_{index}")
                   for index, variable in enumerate(model.variables)]
            for name, model in self.networks.items()
        }
        self._update = None

    def _pairs(self) -> Iterator[tuple[tf.Variable, tf.Variable]]:
        for name, model in self.networks.items():
            yield from zip(model.variables, self.shadows[name], strict=True)

    def variable_groups(self) -> dict[str, list]:
        """Checkpoint groups: ``ema`` (the update counter) and ``ema.<network>`` (its shadows,
        in the order of ``network.<network>``)."""
        return {"ema": [self.updates], **{f"ema.{name}": list(shadows) for name, shadows in self.shadows.items()}}

    def update(self) -> None:
        """Move every shadow towards its variable by one update (a compiled function)."""
        if self._update is None:
            self._update = tf.function(self._update_step, input_signature=[tf.TensorSpec([], tf.float64)])
        self._update(tf.constant(effective_decay(self.decay, int(self.updates.numpy()) + 1), tf.float64))

    def _update_step(self, decay: tf.Tensor) -> None:
        self.updates.assign_add(1)
        for variable, shadow in self._pairs():
            if shadow.dtype.is_floating:
                keep = tf.cast(decay, shadow.dtype)
                shadow.assign(keep * shadow + (1.0 - keep) * tf.cast(variable, shadow.dtype))
            else:
                shadow.assign(tf.convert_to_tensor(variable))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the networks hold the averaged weights; their own come back after."""
        pairs = list(self._pairs())
        saved = [variable.numpy() for variable, _ in pairs]
        for variable, shadow in pairs:
            variable.assign(shadow.numpy())
        try:
            yield
        finally:
            for (variable, _), value in zip(pairs, saved):
                variable.assign(value)
