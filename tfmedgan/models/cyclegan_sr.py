"""Seed 002 recipe: the 3D CycleGAN for microCT denoising and 2x/4x super-resolution (pvilla/3DCycleGaN).

Domain A is the fast (noisy, coarse) acquisition, domain B the slow (clean, fine) one; a B patch
is ``super_resolution`` times an A patch on every axis. Networks (spec B2): the simplified U-Nets
of :mod:`tfmedgan.networks.unet3d` (``net_a``: A->B, ``net_b``: B->A) and two PatchGANs with
eval-mode BatchNorm and sigmoid output (:mod:`tfmedgan.networks.patchgan_bn`).

Loss terms keep the original names: ``G_A`` is the adversarial loss of the A->B generator against
the discriminator judging domain B, ``D_A`` the loss of that discriminator, ``C_A`` the cycle
A->B->A; ``G_B``/``D_B``/``C_B`` the same for B. Each term is a list of ``[function, weight]``::

    {"G_A": [["bce", 10]], "G_B": [["bce", 10]], "D_A": [["bce", 1]], "D_B": [["bce", 1]],
     "C_A": [["l1", 100]], "C_B": [["l1", 100]]}

(the defaults; adversarial functions ``bce`` or ``mse``, cycle functions ``l1`` or ``mse``; a
term given as a plain number uses its default function; an empty list disables the term; terms
that are not given keep their defaults). All weights are rescaled so they sum to 200 (defaults:
C 90.09, G 9.009, D 0.9009 each).

One training step (original ``trainer.py``)::

    fake_B = G_A(A), fake_A = G_B(B)
    D step:  D_A * [f(D_b(B), 1) + f(D_b(fake_B), 0)] + D_B * [f(D_a(A), 1) + f(D_a(fake_A), 0)]
    G step (with the just-updated discriminators):
        G_A * f(D_b(fake_B), 1) + G_B * f(D_a(fake_A), 1)
        + C_A * |G_B(fake_B) - A| + C_B * |G_A(fake_A) - B|
    generator gradients clipped jointly to norm ``clip_max``; one Adam for both generators
    (2e-4), one for both discriminators (1e-4), beta_1 0.5.

With ``kickstart`` (first 150 steps, probability 0.7 per step) the reconstructions are made from
nearest-resampled real volumes instead: ``G_B(up(A))`` and ``G_A(down(B))``.

The original counts iterations. Here an epoch is ``steps_per_epoch`` (100) steps, the original's
checkpoint / log period: every epoch ends with a checkpoint (last ``keep_checkpoints`` kept), a
cycle plot ``samples/cycle_plot_step<step>.png`` and, with ``--hp-optimizer``, the original's
health checks (see :class:`HPOptimizer`). Per-step raw losses (``loss_<term>_<function>``),
weights (``w_...``), learning rates and truth tables (``tt_<D term>_{tp,tn,fp,fn}`` as fractions
of the judged voxels) are rows of ``losses.csv``; validation rows go to ``validation.csv``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmedgan import losses as loss_library
from tfmedgan.config import CYCLEGAN_SR_TERMS, CycleGANSRConfig, _default_sr_losses
from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.distribute import average_loss, global_batch_size
from tfmedgan.engine.precision import apply_gradients, scale_loss, wrap_optimizer
from tfmedgan.engine.rundir import RunDirectory, figure_to_rgb, save_png_atomic
from tfmedgan.engine.trainer import Trainer
from tfmedgan.engine.launch import launch
from tfmedgan.errors import TfmedganError
from tfmedgan.models.cyclegan import CycleGANRecipe

ADVERSARIAL_FUNCTIONS = ("bce", "mse")
#: The HP optimizer checks at the ends of epochs after this step (the original: step > 250).
HP_START_STEP = 250
CYCLE_FUNCTIONS = ("l1", "mse")
_SALT_KICKSTART = 31


# ------------------------------------------------------------------------------------------------
# loss specification
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossEntry:
    """One weighted loss function of one term (e.g. ``G_A`` / ``bce`` / 10)."""

    term: str
    function: str
    weight: float

    @property
    def name(self) -> str:
        return f"{self.term}_{self.function}"


def parse_loss_spec(spec: Any) -> list[LossEntry]:
    """Validate a loss specification (dict, JSON text or path of a JSON file) and list its entries.

    Terms missing from ``spec`` keep their defaults (:data:`CYCLEGAN_SR_TERMS`); a plain number
    means the term's default function with that weight.

    Example:
        >>> [e.name for e in parse_loss_spec({"C_A": [["l1", 50], ["mse", 5]]})][:3]
        ['G_A_bce', 'G_B_bce', 'D_A_bce']
    """
    if isinstance(spec, (str, Path)):
        text = str(spec)
        path = Path(text)
        try:
            if not text.lstrip().startswith("{") and path.is_file():
                text = path.read_text()
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise TfmedganError(f"--losses is neither a JSON file nor valid JSON: {error}") from None
        except OSError as error:
            raise TfmedganError(f"cannot read --losses file {path}: {error}") from None
    if not isinstance(spec, dict):
        raise TfmedganError(f"--losses must be a JSON object of terms {', '.join(CYCLEGAN_SR_TERMS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(CYCLEGAN_SR_TERMS))
    if unknown:
        raise TfmedganError(f"unknown loss term(s) {unknown}; use {', '.join(CYCLEGAN_SR_TERMS)}")
    merged = {**_default_sr_losses(), **spec}
    entries = []
    for term in CYCLEGAN_SR_TERMS:
        allowed = CYCLE_FUNCTIONS if term.startswith("C") else ADVERSARIAL_FUNCTIONS
        value = merged[term]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [[allowed[0], value]]
        if not isinstance(value, list):
            raise TfmedganError(f"loss term {term} must be a list of [function, weight] pairs, got {value!r}")
        seen = set()
        for item in value:
            if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], (int, float))):
                raise TfmedganError(f"loss term {term}: {item!r} is not a [function, weight] pair")
            function, weight = item[0].lower(), float(item[1])
            if function not in allowed:
                raise TfmedganError(f"loss term {term}: unknown function {item[0]!r}; use {' or '.join(allowed)}")
            if function in seen:
                raise TfmedganError(f"loss term {term} lists {function} twice")
            if not (weight >= 0 and math.isfinite(weight)):
                raise TfmedganError(f"loss term {term}: weight {item[1]!r} must be a finite number >= 0")
            seen.add(function)
            entries.append(LossEntry(term, function, weight))
    if not sum(e.weight for e in entries) > 0:
        raise TfmedganError("--losses: all loss weights are 0")
    return entries


def normalize_weights(weights: np.ndarray | list[float], total: float = 200.0) -> np.ndarray:
    """Rescale weights to sum to ``total`` (the original's ``normalizeLambdas``).

    Example:
        >>> normalize_weights([10, 10, 1, 1, 100, 100]).round(4).tolist()
        [9.009, 9.009, 0.9009, 0.9009, 90.0901, 90.0901]
    """
    array = np.asarray(weights, np.float64)
    return array * (float(total) / array.sum())


def torch_bce_elementwise(probabilities: tf.Tensor, target: float) -> tf.Tensor:
    """Element-wise binary cross-entropy of probabilities exactly as PyTorch ``nn.BCELoss``.

    Forward: ``-(y log p + (1 - y) log(1 - p))`` with each log clamped at -100. Backward:
    ``(p - y) / max(p (1 - p), 1e-12)`` (PyTorch's ``binary_cross_entropy_backward``). Through
    a sigmoid this gives the non-saturating logit gradient ``p - y`` down to ``p ~ 1e-12`` (logit
    ~ -27.6). Clipping ``p`` to ``[1e-7, 1 - 1e-7]`` instead (``tf.clip_by_value``) has a zero
    gradient beyond logit +-16.1, so a generator whose fakes a confident discriminator rejects gets
    no adversarial gradient at all and its BCE sticks at 16.12.

    Args:
        probabilities: sigmoid outputs in [0, 1].
        target: 1.0 (real) or 0.0 (fake).

    Returns:
        The float32 loss per element (same shape as ``probabilities``).
    """
    y = float(target)

    @tf.custom_gradient
    def bce(p):
        log_p = tf.maximum(tf.math.log(p), -100.0)
        log_q = tf.maximum(tf.math.log(1.0 - p), -100.0)
        values = -(y * log_p + (1.0 - y) * log_q)

        def gradient(upstream):
            return upstream * (p - y) / tf.maximum(p * (1.0 - p), 1e-12)

        return values, gradient

    return bce(tf.cast(probabilities, tf.float32))


def _probability_bce(probabilities: tf.Tensor, target: float) -> tf.Tensor:
    """Per-example mean of :func:`torch_bce_elementwise` (PyTorch ``BCELoss``)."""
    values = torch_bce_elementwise(probabilities, target)
    return tf.reduce_mean(tf.reshape(values, (tf.shape(values)[0], -1)), axis=1)


def adversarial_function(name: str, outputs: tf.Tensor, target: float) -> tf.Tensor:
    if name == "bce":
        return _probability_bce(outputs, target)
    return loss_library.least_squares(outputs, target)


def cycle_function(name: str, reconstructed: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    if name == "l1":
        return loss_library.l1(reconstructed, real)
    difference = tf.cast(reconstructed, tf.float32) - tf.cast(real, tf.float32)
    return tf.reduce_mean(tf.reshape(difference * difference, (tf.shape(difference)[0], -1)), axis=1)


def nearest_upsample(volumes: tf.Tensor, factor: int) -> tf.Tensor:
    """Nearest-neighbour upsampling of [N, D, H, W, C] by ``factor`` on the three spatial axes."""
    for axis in (1, 2, 3):
        volumes = tf.repeat(volumes, factor, axis=axis)
    return volumes


def nearest_downsample(volumes: tf.Tensor, factor: int) -> tf.Tensor:
    """PyTorch ``interpolate(scale_factor=1/factor, mode='nearest')``: every ``factor``-th voxel."""
    return volumes[:, ::factor, ::factor, ::factor, :]


# ------------------------------------------------------------------------------------------------
# recipe
# ------------------------------------------------------------------------------------------------
class CycleGANSRRecipe(CycleGANRecipe):
    """Seed 002: U-Net generators, BN PatchGANs, BCE + L1 cycle, lazy HDF5 patches.

    Example:
        >>> config = CycleGANSRConfig(data_a="fast.json", data_b="slow.json", net_a="UNetSim3dSRx2",
        ...                           net_b="UNetSim3dSRd2", super_resolution=2, patch=[64, 128, 128])
        >>> run_dir, summary = train(config)  # doctest: +SKIP
    """

    config: CycleGANSRConfig

    def __init__(self, config: CycleGANSRConfig):
        super().__init__(config)
        self.entries = parse_loss_spec(config.losses)
        config.max_steps = int(config.max_steps or config.num_iters)
        config.epochs = max(1, math.ceil(config.max_steps / config.steps_per_epoch))
        if config.hp_optimizer and config.keep_checkpoints < 5:
            # roll-backs go ~200 steps (2 epochs) back, possibly 100 more after 10 failures
            config.keep_checkpoints = 5
        self.current_step = 0
        self._samplers: list = []

    # -- geometry --------------------------------------------------------------------------------
    @property
    def patch_a(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.config.patch)  # type: ignore[return-value]

    @property
    def patch_b(self) -> tuple[int, int, int]:
        return tuple(int(p) * int(self.config.super_resolution) for p in self.config.patch)  # type: ignore[return-value]

    def model_shape(self) -> tuple[int, int, int]:
        return self.patch_a

    # -- data ------------------------------------------------------------------------------------
    def _specs(self):
        from tfmedgan.data.hdf5 import load_dataset_spec

        if not hasattr(self, "_spec_pair"):
            config = self.config
            if not config.data_a or not config.data_b:
                raise TfmedganError("give DATA_A DATA_B (dataset JSON files or .h5 volumes) and OUTPUT_DIR")
            self._spec_pair = (load_dataset_spec(config.data_a), load_dataset_spec(config.data_b))
        return self._spec_pair

    def prepare_data(self, num_replicas: int = 1) -> None:
        from tfmedgan.data import hdf5

        config = self.config
        spec_a, spec_b = self._specs()
        hdf5.check_patch(spec_a, self.patch_a)
        hdf5.check_patch(spec_b, self.patch_b)
        if config.batch % num_replicas:
            raise TfmedganError(f"--batch-size {config.batch} is not divisible by the {num_replicas} replicas")
        if config.check_finite:
            seen = set()
            for ref in spec_a.train + spec_a.validate + spec_b.train + spec_b.validate:
                key = (ref.path, ref.dset, ref.roi)
                if key not in seen:
                    seen.add(key)
                    check_finite_volume(ref)
        self.steps_per_epoch = int(config.steps_per_epoch)

    def _close_samplers(self) -> None:
        for sampler in self._samplers:
            sampler.close()
        self._samplers = []

    def dataset(self, epoch: int) -> tf.data.Dataset:
        """``steps_per_epoch`` batches of (A patches, B patches), sampled independently per domain
        with random flips, from samplers seeded by (seed, epoch, domain, number of roll-backs)."""
        from tfmedgan.data.hdf5 import PatchSampler, tf_dataset

        config = self.config
        spec_a, spec_b = self._specs()
        rollbacks = int(self.hp_state["rollbacks"].numpy()) if hasattr(self, "hp_state") else 0
        self._close_samplers()
        sampler_a = PatchSampler(spec_a.train, self.patch_a, seed=[config.seed, epoch, 0, rollbacks])
        sampler_b = PatchSampler(spec_b.train, self.patch_b, seed=[config.seed, epoch, 1, rollbacks])
        self._samplers = [sampler_a, sampler_b]
        return tf.data.Dataset.zip((
            tf_dataset(sampler_a, config.batch, self.steps_per_epoch),
            tf_dataset(sampler_b, config.batch, self.steps_per_epoch),
        ))

    def validation_batches(self, count: int, seed_salt: int = 777) -> list[tuple[np.ndarray, np.ndarray]]:
        """``count`` fixed (A, B) batches from the ``validate`` volumes (same patches every call)."""
        from tfmedgan.data.hdf5 import PatchSampler

        spec_a, spec_b = self._specs()
        seed = self.config.seed
        with PatchSampler(spec_a.validate, self.patch_a, seed=[seed, seed_salt, 0], flips=False) as sampler_a, \
                PatchSampler(spec_b.validate, self.patch_b, seed=[seed, seed_salt, 1], flips=False) as sampler_b:
            return [(sampler_a.sample(self.config.batch), sampler_b.sample(self.config.batch)) for _ in range(count)]

    def sample_pair(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_sample"):
            a, b = self.validation_batches(1, seed_salt=12345)[0]
            self._sample = (a[0], b[0])
        return self._sample

    # -- networks --------------------------------------------------------------------------------
    def build_generator(self, name: str) -> keras.Model:
        from tfmedgan.networks.unet3d import build_unet

        config = self.config
        net = config.net_a if name == "generator_a2b" else config.net_b
        model = build_unet(net, num_filters=config.num_filters, initializer=config.initializer)
        return keras.Model(model.input, model.output, name=name)

    def build_discriminator(self, name: str) -> keras.Model:
        from tfmedgan.networks.patchgan_bn import build_patchgan_bn_discriminator

        config = self.config
        return build_patchgan_bn_discriminator(
            base_filters=config.d_filters, n_layers=config.d_layers,
            use_batch_statistics=config.use_batch_statistics, name=name,
        )

    def make_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        config = self.config
        clip = float(config.clip_max) if config.clip_max > 0 else None
        return {
            "generators": wrap_optimizer(keras.optimizers.Adam(
                config.lr_g, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=1e-8, global_clipnorm=clip), config.precision),
            "discriminators": wrap_optimizer(keras.optimizers.Adam(
                config.lr_d, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=1e-8), config.precision),
        }

    def initial_weights(self) -> np.ndarray:
        return normalize_weights([e.weight for e in self.entries], self.config.lambda_total)

    def build(self, num_replicas: int = 1) -> None:
        self.build_networks_only()
        self.optimizers = self.make_optimizers()
        self.loss_weights = tf.Variable(self.initial_weights().astype(np.float32), trainable=False, name="loss_weights")
        self.hp_state = {
            "fallbacks": tf.Variable(0, dtype=tf.int64, trainable=False, name="hp_fallbacks"),
            "max_step": tf.Variable(0, dtype=tf.int64, trainable=False, name="hp_max_step"),
            "rollbacks": tf.Variable(0, dtype=tf.int64, trainable=False, name="hp_rollbacks"),
        }

    def state_variables(self) -> list[tf.Variable]:
        return [self.loss_weights, *self.hp_state.values()]

    # -- HP state (survives a roll-back) ---------------------------------------------------------
    def learning_rates(self) -> dict[str, float]:
        return {name: float(_inner(optimizer).learning_rate.numpy()) for name, optimizer in self.optimizers.items()}

    def hyperparameter_snapshot(self) -> dict[str, Any]:
        return {"weights": self.loss_weights.numpy().copy(), "lrs": self.learning_rates(),
                **{k: int(v.numpy()) for k, v in self.hp_state.items()}}

    def apply_hyperparameters(self, snapshot: dict[str, Any]) -> None:
        self.loss_weights.assign(np.asarray(snapshot["weights"], np.float32))
        for name, rate in snapshot["lrs"].items():
            _inner(self.optimizers[name]).learning_rate.assign(rate)
        for key in self.hp_state:
            self.hp_state[key].assign(int(snapshot[key]))

    def on_epoch_begin(self, epoch: int) -> dict[str, float]:
        """Weights and learning rates of this epoch (logged with every step); no LR schedule."""
        weights = self.loss_weights.numpy()
        scalars = {f"w_{entry.name}": float(w) for entry, w in zip(self.entries, weights)}
        rates = self.learning_rates()
        scalars.update(lr_g=rates["generators"], lr_d=rates["discriminators"])
        return scalars

    # -- training --------------------------------------------------------------------------------
    def _term(self, term: str) -> list[tuple[int, LossEntry]]:
        return [(i, e) for i, e in enumerate(self.entries) if e.term == term]

    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        real_a, real_b = batch
        config = self.config
        n = self.networks
        g_a2b, g_b2a, d_a, d_b = n["generator_a2b"], n["generator_b2a"], n["discriminator_a"], n["discriminator_b"]
        g_opt, d_opt = self.optimizers["generators"], self.optimizers["discriminators"]
        weights = tf.unstack(self.loss_weights.read_value())
        total = global_batch_size(tf.shape(real_a)[0])
        g_vars = g_a2b.trainable_variables + g_b2a.trainable_variables
        d_vars = d_a.trainable_variables + d_b.trainable_variables
        result: dict[str, tf.Tensor] = {}

        with tf.GradientTape() as g_tape:
            fake_b = g_a2b(real_a, training=True)
            fake_a = g_b2a(real_b, training=True)
            # (1) discriminators on the detached fakes: D_A judges domain B, D_B judges domain A
            with g_tape.stop_recording():
                with tf.GradientTape() as d_tape:
                    d_loss = tf.constant(0.0)
                    judged = {}
                    for term, disc, real, fake in (("D_A", d_b, real_b, fake_b), ("D_B", d_a, real_a, fake_a)):
                        on_real = disc(real, training=True)
                        on_fake = disc(tf.stop_gradient(fake), training=True)
                        judged[term] = (on_real, on_fake)
                        for index, entry in self._term(term):
                            raw = average_loss(adversarial_function(entry.function, on_real, 1.0), total) + average_loss(
                                adversarial_function(entry.function, on_fake, 0.0), total)
                            result[f"loss_{entry.name}"] = raw
                            d_loss += weights[index] * raw
                    d_scaled = scale_loss(d_opt, d_loss)
                apply_gradients(d_opt, d_tape, d_scaled, d_vars)
                for term, (on_real, on_fake) in judged.items():
                    result.update(_truth_table(term, on_real, on_fake, total))
            # (2) generators against the just-updated discriminators
            source_a, source_b = fake_b, fake_a
            if config.kickstart and config.kickstart_steps > 0:
                draw = tf.random.stateless_uniform([], seed=self.noise_seed(step, _SALT_KICKSTART))
                kick = tf.logical_and(tf.cast(step, tf.int64) < config.kickstart_steps, draw < config.kickstart_probability)
                factor = int(config.super_resolution)
                source_a = tf.cond(kick, lambda: nearest_upsample(real_a, factor), lambda: fake_b)
                source_b = tf.cond(kick, lambda: nearest_downsample(real_b, factor), lambda: fake_a)
                result["kickstart"] = tf.cast(kick, tf.float32) / tf.cast(
                    tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
            rec_a = g_b2a(source_a, training=True)
            rec_b = g_a2b(source_b, training=True)
            g_loss = tf.constant(0.0)
            for term, disc, fake in (("G_A", d_b, fake_b), ("G_B", d_a, fake_a)):
                entries = self._term(term)
                if entries:
                    outputs = disc(fake, training=True)
                for index, entry in entries:
                    raw = average_loss(adversarial_function(entry.function, outputs, 1.0), total)
                    result[f"loss_{entry.name}"] = raw
                    g_loss += weights[index] * raw
            for term, rec, real in (("C_A", rec_a, real_a), ("C_B", rec_b, real_b)):
                for index, entry in self._term(term):
                    raw = average_loss(cycle_function(entry.function, rec, real), total)
                    result[f"loss_{entry.name}"] = raw
                    g_loss += weights[index] * raw
            g_scaled = scale_loss(g_opt, g_loss)
        apply_gradients(g_opt, g_tape, g_scaled, g_vars)
        result["loss_g_total"] = g_loss
        result["loss_d_total"] = d_loss
        return result

    # -- outputs ---------------------------------------------------------------------------------
    def translate_batch(self, real_a: np.ndarray, real_b: np.ndarray) -> dict[str, np.ndarray]:
        n = self.networks
        a, b = tf.constant(real_a), tf.constant(real_b)
        fake_b = n["generator_a2b"](a, training=False)
        fake_a = n["generator_b2a"](b, training=False)
        return {
            "real A": real_a, "fake B": np.asarray(fake_b), "reconstructed A": np.asarray(n["generator_b2a"](fake_b, training=False)),
            "real B": real_b, "fake A": np.asarray(fake_a), "reconstructed B": np.asarray(n["generator_a2b"](fake_a, training=False)),
        }

    def on_epoch_end(self, epoch: int, run_dir) -> dict[str, np.ndarray]:
        step = int(self.current_step or (epoch + 1) * self.steps_per_epoch)
        real_a, real_b = self.sample_pair()
        volumes = {k: v[0, ..., 0] for k, v in self.translate_batch(real_a[None], real_b[None]).items()}
        image = cycle_plot(volumes, title=f"step {step}")
        save_png_atomic(image, Path(run_dir.samples) / f"cycle_plot_step{step:07d}.png")
        every = int(self.config.validate_every)
        if every and (epoch + 1) % every == 0:
            self.validate(step, run_dir)
        return {"cycle_plot": image}

    def validate(self, step: int, run_dir) -> dict[str, float]:
        """Cycle L1 and discriminator accuracies on ``validate_batches`` fixed validation batches;
        appended to ``validation.csv``."""
        sums: dict[str, float] = {}
        batches = self.validation_batches(int(self.config.validate_batches))
        d_a, d_b = self.networks["discriminator_a"], self.networks["discriminator_b"]
        for real_a, real_b in batches:
            out = self.translate_batch(real_a, real_b)
            values = {
                "cycle_a_l1": float(np.mean(np.abs(out["reconstructed A"] - real_a))),
                "cycle_b_l1": float(np.mean(np.abs(out["reconstructed B"] - real_b))),
                "d_b_real_accuracy": float(np.mean(np.asarray(d_b(real_b, training=False)) > 0.5)),
                "d_b_fake_accuracy": float(np.mean(np.asarray(d_b(out["fake B"], training=False)) <= 0.5)),
                "d_a_real_accuracy": float(np.mean(np.asarray(d_a(real_a, training=False)) > 0.5)),
                "d_a_fake_accuracy": float(np.mean(np.asarray(d_a(out["fake A"], training=False)) <= 0.5)),
            }
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / len(batches)
        path = Path(run_dir.path) / "validation.csv"
        import csv

        rows = []
        if path.is_file():
            with path.open(newline="") as stream:
                rows = [r for r in csv.DictReader(stream) if int(r["step"]) < step]
        rows.append({"step": step, **{k: f"{v:.6g}" for k, v in sums.items()}})
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[-1]))
            writer.writeheader()
            writer.writerows(rows)
        return sums

    def dry_run_extra(self) -> dict[str, Any]:
        from tfmedgan.networks.patchgan_bn import patchgan_bn_output_shape

        return {
            "patch_b": list(self.patch_b),
            "loss_weights": {e.name: round(float(w), 4) for e, w in zip(self.entries, self.initial_weights())},
            "discriminator_output": {"A": list(patchgan_bn_output_shape(self.patch_a, self.config.d_layers)),
                                     "B": list(patchgan_bn_output_shape(self.patch_b, self.config.d_layers))},
        }

    def close(self) -> None:
        self._close_samplers()


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def _truth_table(term: str, on_real: tf.Tensor, on_fake: tf.Tensor, total: tf.Tensor) -> dict[str, tf.Tensor]:
    """TP/TN/FP/FN of a discriminator (threshold 0.5) as fractions of all judged voxels (global)."""
    voxels = tf.cast(tf.reduce_prod(tf.shape(on_real)[1:]), tf.float32)
    scale = 2.0 * tf.cast(total, tf.float32) * voxels
    real_yes = tf.cast(on_real > 0.5, tf.float32)
    fake_yes = tf.cast(on_fake > 0.5, tf.float32)
    return {
        f"tt_{term}_tp": tf.reduce_sum(real_yes) / scale,
        f"tt_{term}_fn": tf.reduce_sum(1.0 - real_yes) / scale,
        f"tt_{term}_fp": tf.reduce_sum(fake_yes) / scale,
        f"tt_{term}_tn": tf.reduce_sum(1.0 - fake_yes) / scale,
    }


def check_finite_volume(ref, slab_voxels: int = 1 << 24) -> None:
    """Raise if the ROI of ``ref`` holds NaN or infinite values (read slab by slab, never whole)."""
    import h5py

    (z0, z1), (y0, y1), (x0, x1) = ref.roi
    with h5py.File(ref.path, "r") as handle:
        data = handle[ref.dset]
        step = max(1, slab_voxels // max(1, (y1 - y0) * (x1 - x0)))
        for first in range(z0, z1, step):
            slab = np.asarray(data[first : min(first + step, z1), y0:y1, x0:x1])
            if not np.isfinite(slab).all():
                bad = np.argwhere(~np.isfinite(slab))[0] + [first, y0, x0]
                raise TfmedganError(
                    f"non-finite values (NaN/inf) in {ref.describe()}, first at voxel {bad.tolist()}; clean the volume "
                    "or exclude it with ROI0..2"
                )


def cycle_plot(volumes: dict[str, np.ndarray], title: str = "") -> np.ndarray:
    """The original's 2x3 cycle figure (real A, fake B, reconstructed A / real B, fake A,
    reconstructed B): the middle slice of axis 0 of each volume, gray, vmin -3, vmax 3.

    Returns:
        The figure as a uint8 RGB array.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(9, 6.4))
    for axis, (name, volume) in zip(axes.ravel(), volumes.items()):
        axis.imshow(volume[volume.shape[0] // 2], cmap="gray", vmin=-3, vmax=3)
        axis.set_title(f"{name} {list(volume.shape)}", fontsize=9)
        axis.set_axis_off()
    return figure_to_rgb(figure, title)


# ------------------------------------------------------------------------------------------------
# HP optimizer (original trainer.py failtest / rand_lambdas / fix_lambdas / fix_lrs)
# ------------------------------------------------------------------------------------------------
def _rolling_mean(values: np.ndarray, window: int = 20) -> np.ndarray:
    if len(values) < window:
        return np.array([values.mean()]) if len(values) else np.array([0.0])
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _linear_slope(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values), dtype=np.float64), values, 1)[0])


class HPOptimizer:
    """The original's experimental hyper-parameter optimizer, acting on a :class:`CycleGANSRRecipe`.

    At every check (every ``steps_per_epoch`` steps after step 250) ``failcondition`` is the sum
    of three tests on the loss history (``losses.csv``) and the fixed sample pair:

    Checks run at the ends of epochs after step :data:`HP_START_STEP`; with ``steps_per_epoch``
    other than 100 the roll-back distance (200) and the 10-failure shift (100) scale with it.

    * flip test: fake B (block-averaged to A size) closer to ``-A`` than to ``A`` (and the B->A
      analogue): both directions 20, one direction 0.5;
    * explosion / rising test per raw loss over the last 200 steps: ``R`` = max of the rolling
      mean (20); ``R > 4 m0`` adds ``R / (3 m0) - 1``; ``m1 > m0`` adds ``m1 / m0 - 1``; ``m1 > 20``
      adds 20 (``m0``, ``m1`` = means of the older and the newer 100 values);
    * cycle drift: mean of the last 100 values of a cycle loss above ``1.4 (min rolling mean + 0.1)``
      adds 20.

    ``failcondition > 1`` is a failure: weights randomised (x U(0.5, 1.5)) and steered by slopes
    and truth tables (x0.7 / x1.3), learning rates moved (``fix_lrs`` with a random skew; the
    original only logged them, here they are applied), on the second consecutive failure reset to
    the initial values, and training rolls back to the checkpoint ``round(max_step - 200, -2)``.
    Otherwise the weights get a milder update (x U(0.7, 1.7), x0.8 / x1.2) and the learning rates
    ``fix_lrs`` with skew = mean discriminator accuracy.
    """

    def __init__(self, recipe: CycleGANSRRecipe):
        self.recipe = recipe

    # -- tests -----------------------------------------------------------------------------------
    def flip_test(self) -> tuple[float, dict[str, Any]]:
        recipe = self.recipe
        factor = int(recipe.config.super_resolution)
        real_a, real_b = recipe.sample_pair()
        out = recipe.translate_batch(real_a[None], real_b[None])
        fake_b_small = _block_mean(out["fake B"][0, ..., 0], factor)
        real_b_small = _block_mean(real_b[..., 0], factor)
        flips, flat = 0, []
        details = {}
        for name, real, fake in (("A2B", real_a[..., 0], fake_b_small), ("B2A", real_b_small, out["fake A"][0, ..., 0])):
            mse_same = float(np.mean((real - fake) ** 2))
            mse_flip = float(np.mean((-real - fake) ** 2))
            mse_flat = float(np.var(fake))
            details[name] = {"mse": mse_same, "mse_negated": mse_flip, "variance": mse_flat}
            flips += mse_flip < mse_same
            if mse_same > mse_flat:
                flat.append(name)
        details["partial_flat"] = flat  # reported only, as the original
        return (20.0 if flips == 2 else 0.5 if flips == 1 else 0.0), details

    @staticmethod
    def loss_test(histories: dict[str, np.ndarray]) -> float:
        value = 0.0
        for values in histories.values():
            if len(values) < 200:
                continue
            last = values[-200:]
            peak = float(_rolling_mean(last).max())
            mean0, mean1 = float(last[:100].mean()), float(last[100:].mean())
            if mean0 > 0:
                if peak > 4 * mean0:
                    value += peak / (3 * mean0) - 1
                if mean1 > mean0:
                    value += mean1 / mean0 - 1
            if mean1 > 20:
                value += 20
        return value

    @staticmethod
    def cycle_test(histories: dict[str, np.ndarray]) -> float:
        value = 0.0
        for name, values in histories.items():
            if not name.startswith("loss_C_") or len(values) < 100:
                continue
            lowest = float(_rolling_mean(values).min())
            if values[-100:].mean() > 1.4 * (lowest + 0.1):
                value += 20
        return value

    # -- changes ---------------------------------------------------------------------------------
    def rand_weights(self, weights: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
        factors = 1.0 + rng.uniform(0, 1, len(weights)) - spread
        return np.clip((weights + 0.1) * factors, 0.1, 100.0)

    def fix_weights(self, weights: np.ndarray, rate: float, histories: dict[str, np.ndarray], rows: list[dict]) -> np.ndarray:
        recipe = self.recipe
        weights = weights.copy()
        cycles = [(i, e) for i, e in enumerate(recipe.entries) if e.term.startswith("C")]
        slopes = {i: _linear_slope(histories.get(f"loss_{e.name}", np.zeros(0))[-200:]) for i, e in cycles}
        target = -float(np.mean([abs(s) for s in slopes.values()])) if slopes else 0.0
        recent = rows[-100:]

        def mean_of(column: str) -> float:
            return float(np.mean([r.get(column, 0.0) for r in recent])) if recent else 0.0

        for index, entry in enumerate(recipe.entries):
            if entry.term.startswith("C"):
                up = slopes[index] - target >= 0
            elif entry.term.startswith("G"):
                d_term = "D_" + entry.term[-1]
                fake_as_real = 2.0 * mean_of(f"tt_{d_term}_fp")
                up = fake_as_real < 0.4
            else:
                accuracy = mean_of(f"tt_{entry.term}_tp") + mean_of(f"tt_{entry.term}_tn")
                up = accuracy < 0.6
            weights[index] = (weights[index] + 0.1) * ((1 + rate) if up else (1 - rate))
        return np.clip(weights, 0.1, 100.0)

    def fix_lrs(self, skew: float, step: int) -> dict[str, float]:
        config = self.recipe.config
        rates = self.recipe.learning_rates()
        decay = 0.99998 ** step
        lr_d = 0.5 * (rates["discriminators"] + config.lr_d * (1 - skew) ** 2 * decay)
        lr_g = 0.5 * (rates["generators"] + config.lr_g * skew ** 2 * decay)
        return {"generators": float(lr_g), "discriminators": float(lr_d)}

    # -- one check -------------------------------------------------------------------------------
    def check(self, step: int, run_dir: RunDirectory) -> dict[str, Any]:
        """Run the checks at ``step``, change the recipe's weights / learning rates, and return a
        report; ``report["rollback_to"]`` is the target step on failure (else None)."""
        recipe = self.recipe
        config = recipe.config
        rows = [r for r in run_dir.read_losses() if r["step"] <= step]
        columns = [k for k in (rows[0] if rows else {}) if k.startswith("loss_") and not k.endswith("_total")]
        histories = {k: np.array([r[k] for r in rows], np.float64) for k in columns}
        state = recipe.hyperparameter_snapshot()
        rng = np.random.default_rng([config.seed, step, state["fallbacks"], state["rollbacks"]])
        flip, flip_details = self.flip_test()
        loss_value, cycle_value = self.loss_test(histories), self.cycle_test(histories)
        failcondition = flip + loss_value + cycle_value
        weights = np.asarray(state["weights"], np.float64)
        max_step = max(state["max_step"], step - 1)
        report: dict[str, Any] = {"step": step, "flip": flip, "flip_details": flip_details, "losses": loss_value,
                                  "cycle": cycle_value, "failcondition": failcondition, "rollback_to": None}

        def accuracy(term: str) -> float:
            recent = rows[-100:]
            return float(np.mean([r.get(f"tt_{term}_tp", 0) + r.get(f"tt_{term}_tn", 0) for r in recent])) if recent else 0.5

        if failcondition > 1:
            weights = self.rand_weights(weights, 0.5, rng)
            weights = normalize_weights(self.fix_weights(weights, 0.3, histories, rows), config.lambda_total)
            lrs = self.fix_lrs(float(rng.uniform()), step)
            fallbacks = state["fallbacks"]
            period = int(config.steps_per_epoch)  # 100 in the original
            if fallbacks > 10:
                fallbacks = 0
                max_step = max(max_step - period, 0)
            if fallbacks == 1:
                weights = recipe.initial_weights()
                lrs = {"generators": float(config.lr_g), "discriminators": float(config.lr_d)}
            target = int(math.floor(max(max_step - 2 * period, 0) / period + 0.5) * period)
            report.update(rollback_to=target, fallbacks=fallbacks + 1)
            new_state = {"weights": weights, "lrs": lrs, "fallbacks": fallbacks + 1, "max_step": max_step,
                         "rollbacks": state["rollbacks"] + 1}
        else:
            weights = normalize_weights(self.rand_weights(weights, 0.3, rng), config.lambda_total)
            weights = normalize_weights(self.fix_weights(weights, 0.2, histories, rows), config.lambda_total)
            lrs = self.fix_lrs(0.5 * (accuracy("D_A") + accuracy("D_B")), step)
            new_state = {"weights": weights, "lrs": lrs, "fallbacks": 0, "max_step": max(max_step, step),
                         "rollbacks": state["rollbacks"]}
        recipe.apply_hyperparameters(new_state)
        report["weights"] = {e.name: round(float(w), 5) for e, w in zip(recipe.entries, weights)}
        report["lrs"] = {k: float(v) for k, v in lrs.items()}
        with open(Path(run_dir.path) / "hp_optimizer.jsonl", "a") as stream:
            stream.write(json.dumps(report) + "\n")
        return report


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return volume
    d, h, w = (s // factor for s in volume.shape)
    cropped = volume[: d * factor, : h * factor, : w * factor]
    return cropped.reshape(d, factor, h, factor, w, factor).mean(axis=(1, 3, 5))


# ------------------------------------------------------------------------------------------------
# trainer and launch
# ------------------------------------------------------------------------------------------------
class CycleGANSRTrainer(Trainer):
    """The engine's trainer plus the seed-002 per-epoch outputs and the HP optimizer's roll-back.

    After the engine's epoch outputs (checkpoint, cycle plot, validation), with ``hp_optimizer``
    and ``step > 250`` the checks run; changed weights / learning rates are written into the
    checkpoint of this step (so a resumed run repeats them), and on failure the newest checkpoint
    at or before the target step is restored, later checkpoints and ``losses.csv`` rows deleted, and
    the new hyper-parameters applied on top.
    """

    recipe: CycleGANSRRecipe

    def _epoch_outputs(self, epoch: int, logger) -> None:
        self.recipe.current_step = self.step
        super()._epoch_outputs(epoch, logger)
        config = self.recipe.config
        if not config.hp_optimizer or self.step <= HP_START_STEP or self.step % config.steps_per_epoch:
            return
        if self._max_steps_reached():
            return
        report = HPOptimizer(self.recipe).check(self.step, self.run_dir)
        target = report["rollback_to"]
        print(f"hp-optimizer step {self.step}: failcondition {report['failcondition']:.3g}"
              + (f", rolling back to step {target}" if target is not None else ""), file=sys.stderr)
        if target is None:
            self.save_checkpoint()  # same step, new hyper-parameters
            return
        self.rollback(target)

    def rollback(self, target_step: int) -> int:
        """Restore the newest checkpoint at or before ``target_step`` keeping the current HPs."""
        snapshot = self.recipe.hyperparameter_snapshot()
        found = ckpt.list_checkpoints(self.run_dir.checkpoints)
        steps = [int(p.name[5:14]) for p in found]
        eligible = [p for p, s in zip(found, steps) if s <= target_step]
        chosen = eligible[-1] if eligible else found[0]
        counters = ckpt.restore_checkpoint(chosen, self.variable_groups())
        self.step = int(counters["step"])
        self.epoch = int(counters["epoch"])
        self.step_in_epoch = int(counters["step_in_epoch"])
        for path, step in zip(found, steps):
            if step > self.step:
                path.unlink(missing_ok=True)
        self.run_dir.truncate_losses(self.step)
        self.recipe.apply_hyperparameters(snapshot)
        self.save_checkpoint()
        return self.step


def train(
    config: CycleGANSRConfig,
    run_dir: str | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> tuple[RunDirectory, dict]:
    """Train the seed-002 CycleGAN (``run_dir`` resumes an existing run).

    Runs :func:`tfmedgan.engine.launch.launch` with :class:`CycleGANSRTrainer` (roll-backs of the
    hyper-parameter optimizer).
    """
    return launch(CycleGANSRRecipe(config), resume=run_dir, progress=progress, stop_after_steps=stop_after_steps,
                  trainer_class=CycleGANSRTrainer)
