"""The original's experimental hyper-parameter optimizer of the microCT SR CycleGAN (trainer.py
failtest / rand_lambdas / fix_lambdas / fix_lrs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tfmedgan.models.cyclegan_sr.config import normalize_weights

#: The HP optimizer checks at the ends of epochs after this step (the original: step > 250).
HP_START_STEP = 250


def _rolling_mean(values: np.ndarray, window: int = 20) -> np.ndarray:
    if len(values) < window:
        return np.array([values.mean()]) if len(values) else np.array([0.0])
    return np.convolve(values, np.ones(window) / window, mode="valid")


def per_step_history(rows: list[dict[str, float]], column: str) -> np.ndarray:
    """One value per training step from ``losses.csv`` rows, whatever ``--log-every`` was.

    A row logged at step ``s`` stands for every step since the previous row (``s - s_prev``
    steps; the first row for steps 1..s), so windows of the original's 100 or 200 values count
    steps, not rows. With ``--log-every 1`` this is the logged column itself.

    Example:
        >>> per_step_history([{"step": 2.0, "x": 1.0}, {"step": 4.0, "x": 3.0}], "x").tolist()
        [1.0, 1.0, 3.0, 3.0]
    """
    if not rows:
        return np.zeros(0)
    steps = np.array([r["step"] for r in rows], np.int64)
    lengths = np.diff(np.concatenate([[0], steps]))
    values = np.array([r.get(column, 0.0) for r in rows], np.float64)
    return np.repeat(values, np.maximum(lengths, 0))


def _linear_slope(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values), dtype=np.float64), values, 1)[0])


class HPOptimizer:
    """The original's experimental hyper-parameter optimizer, acting on a :class:`CycleGANSRRecipe`.

    At every check (every ``steps_per_epoch`` steps after step 250) ``failcondition`` is the sum
    of three tests on the loss history (``losses.csv``, one value per step: see
    :func:`per_step_history`, so the windows count steps with any ``--log-every``) and the fixed
    sample pair:

    Checks run at the ends of epochs after step :data:`HP_START_STEP`; with ``steps_per_epoch``
    other than 100 the roll-back distance (200) and the 10-failure shift (100) scale with it.

    * flip test: fake B (block-averaged to A size) closer to ``-A`` than to ``A`` (and the B->A
      analogue): both directions 20, one direction 0.5;
    * explosion / rising test per raw loss over the last 200 steps: ``R`` = max of the rolling
      mean (20); ``R > 4 m0`` adds ``R / (3 m0) - 1``; ``m1 > m0`` adds ``m1 / m0 - 1``; ``m1 > 20``
      adds 20 (``m0``, ``m1`` = means of the older and the newer 100 values);
    * cycle drift: mean of the last 100 values of a cycle loss above ``1.4 (min rolling mean + 0.1)``
      adds 20.

    ``failcondition > 1`` is a failure: weights randomised (x U(0.5, 1.5), rescaled to sum
    ``lambda_total``) and steered by slopes
    and truth tables (x0.7 / x1.3), learning rates moved (``fix_lrs`` with a random skew; the
    original only logged them, here they are applied), on the second consecutive failure reset to
    the initial values, and training rolls back to the checkpoint ``round(max_step - 200, -2)``.
    Otherwise the weights get a milder update (x U(0.7, 1.7), x0.8 / x1.2) and the learning rates
    ``fix_lrs`` with skew = mean discriminator accuracy.
    """

    def __init__(self, recipe):
        self.recipe = recipe

    # -- tests -----------------------------------------------------------------------------------
    def flip_test(self) -> tuple[float, dict[str, Any]]:
        recipe = self.recipe
        factor = int(recipe.config.super_resolution)
        real_a, real_b = recipe.sample_pair()
        out = recipe.translate_batch(real_a[None], real_b[None])
        fake_b_small = _block_mean(out["synthetic B"][0, ..., 0], factor)
        real_b_small = _block_mean(real_b[..., 0], factor)
        flips, flat = 0, []
        details = {}
        for name, real, fake in (("A2B", real_a[..., 0], fake_b_small), ("B2A", real_b_small, out["synthetic A"][0, ..., 0])):
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

    def fix_weights(self, weights: np.ndarray, rate: float, histories: dict[str, np.ndarray]) -> np.ndarray:
        """The original's ``fix_lambdas``; ``histories`` holds one value per step of every loss and
        truth-table column (:func:`per_step_history`)."""
        recipe = self.recipe
        weights = weights.copy()
        cycles = [(i, e) for i, e in enumerate(recipe.entries) if e.term.startswith("C")]
        slopes = {i: _linear_slope(histories.get(f"loss_{e.name}", np.zeros(0))[-200:]) for i, e in cycles}
        target = -float(np.mean([abs(s) for s in slopes.values()])) if slopes else 0.0

        def mean_of(column: str) -> float:
            recent = histories.get(column, np.zeros(0))[-100:]
            return float(recent.mean()) if len(recent) else 0.0

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
    def check(self, step: int, run_dir) -> dict[str, Any]:
        """Run the checks at ``step``, change the recipe's weights / learning rates, and return a
        report; ``report["rollback_to"]`` is the target step on failure (else None)."""
        recipe = self.recipe
        config = recipe.config
        rows = [r for r in run_dir.read_losses() if r["step"] <= step]
        columns = [k for k in (rows[0] if rows else {}) if k.startswith("loss_") and not k.endswith("_total")]
        histories = {k: per_step_history(rows, k) for k in columns}
        truth_tables = {k: per_step_history(rows, k) for k in (rows[0] if rows else {}) if k.startswith("tt_")}
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
            parts = [truth_tables.get(f"tt_{term}_{kind}", np.zeros(0))[-100:] for kind in ("tp", "tn")]
            return float(parts[0].mean() + parts[1].mean()) if len(parts[0]) and len(parts[1]) else 0.5

        if failcondition > 1:
            weights = normalize_weights(self.rand_weights(weights, 0.5, rng), config.lambda_total)
            weights = normalize_weights(self.fix_weights(weights, 0.3, {**histories, **truth_tables}), config.lambda_total)
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
            weights = normalize_weights(self.fix_weights(weights, 0.2, {**histories, **truth_tables}), config.lambda_total)
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


