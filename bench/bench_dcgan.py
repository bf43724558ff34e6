"""DCGAN training throughput: the full engine (PNG files -> tf.data -> compiled step, logging,
checkpoints, sample grids) against the bare compiled train step on an in-memory batch.

Both are measured side by side in one process on the same networks and batch size. The engine
figure is the wall time of N steps after W warm-up steps of one real run: 1,024 PNGs, so 103 steps
per epoch at batch 10, and the window holds an epoch end with its checkpoint, sample grid and loss
plot. It includes data loading and the losses.csv rows. The bare figure is N calls of the same
compiled step on one in-memory batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmedgan.models.dcgan import DCGANConfig  # noqa: E402
from tfmedgan.data.samples import sample_slices_dir  # noqa: E402
from tfmedgan.engine.rundir import RunDirectory  # noqa: E402
from tfmedgan.engine.trainer import Trainer  # noqa: E402
from tfmedgan.models.dcgan import DCGANRecipe  # noqa: E402


def _engine_seconds(config: DCGANConfig, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` engine steps after ``warmup`` (includes data, logs, epoch-end work)."""
    config.max_steps = warmup + steps
    config.name = f"bench-{config.resolution}"
    config.validate()
    keras.utils.set_random_seed(0)
    recipe = DCGANRecipe(config)
    recipe.prepare_data()
    run_dir = RunDirectory.create(config.output_dir, config.name)
    trainer = Trainer(recipe, run_dir, progress=False)
    trainer.fit()
    times = trainer.step_end_times
    return times[warmup + steps - 1] - times[warmup - 1]


def _bare_seconds(config: DCGANConfig, steps: int, warmup: int) -> float:
    keras.utils.set_random_seed(0)
    recipe = DCGANRecipe(config)
    recipe.build()
    for name, variables in recipe.optimizer_variables().items():
        recipe.optimizers[name].build(variables)
    step = tf.function(recipe.train_step)
    batch = tf.random.uniform((config.batch, config.resolution, config.resolution, 1), -1, 1)
    for index in range(warmup):
        step(batch, tf.constant(index, tf.int64))["d_loss"].numpy()
    started = time.perf_counter()
    for index in range(steps):
        step(batch, tf.constant(index, tf.int64))["d_loss"].numpy()
    return time.perf_counter() - started


def run(resolutions=(64, 128), batch: int = 10, steps: int = 120, warmup: int = 10, images: int = 1024) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for resolution in resolutions:
            data = sample_slices_dir(resolution=resolution, n_images=images)
            config = DCGANConfig(data_dirs=[str(data)], resolution=resolution, batch=batch, epochs=1000,
                                 output_dir=scratch, checkpoint_minutes=0)
            # bare step measured before and after the engine run: the machine is shared and noisy
            bare_before = _bare_seconds(config, steps, warmup)
            engine = _engine_seconds(config, steps, warmup)
            bare_after = _bare_seconds(config, steps, warmup)
            bare = (bare_before + bare_after) / 2
            results[resolution] = {
                "steps_per_epoch": -(-images // batch),
                "bare_images_per_s": steps * batch / bare,
                "bare_images_per_s_before_after": [steps * batch / bare_before, steps * batch / bare_after],
                "engine_images_per_s": steps * batch / engine,
                "engine_over_bare": bare / engine,
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    results = run(tuple(args.resolutions), steps=args.steps)
    print(f"{'res':>5} {'bare img/s':>11} {'engine img/s':>13} {'engine/bare':>12}")
    for resolution, row in results.items():
        print(f"{resolution:>5} {row['bare_images_per_s']:>11.1f} {row['engine_images_per_s']:>13.1f} "
              f"{row['engine_over_bare']:>12.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "dcgan.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
