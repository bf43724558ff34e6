#!/usr/bin/env python
"""Benchmark of the seed-004 StyleGAN2 recipe on this machine (CPU).

1. **Throughput** (images per second) of one training step at 64 and 128 px with the preset
   architectures: the engine's compiled, distributed step (``Trainer.train_step``, one
   ``tf.function``) against the same recipe step run eagerly (``recipe.train_step`` with no
   ``tf.function``, as the original ``train.py`` did). Both run on the same networks, side by
   side, on a random batch; warm-up steps (tracing, first-call allocations) are excluded.
2. **Quality** after a fixed wall-clock budget of CPU training of the 64 px preset on the built-in
   sample slices (:func:`tfmedgan.data.samples.sample_slices_dir`): the seed-003 best-match SSIM of
   16 generated images against the training set (:func:`tfmedgan.metrics.best_match`, data range
   from each fake as in the seed; mean and max over the 16), and diversity as the mean pairwise
   SSIM among 64 generated images against the same among 64 real ones
   (:func:`tfmedgan.metrics.ssim`, data range 2). A lower pairwise SSIM means more diverse; a
   generator that collapsed to one image scores close to 1. The same numbers for the untrained
   generator are reported as a baseline.

Prints a table and writes ``bench/results/stylegan2.json``.

Usage::

    python bench/bench_stylegan2.py              # 10 minutes of training
    python bench/bench_stylegan2.py --quick      # a smoke run of about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmedgan.models.stylegan2 import PRESETS as STYLEGAN2_PRESETS, StyleGAN2Config  # noqa: E402
from tfmedgan.engine.rundir import RunDirectory  # noqa: E402
from tfmedgan.engine.trainer import Trainer  # noqa: E402
from tfmedgan.models.stylegan2 import StyleGAN2Recipe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "stylegan2.json"


def preset_config(resolution: int, workdir: str, **overrides) -> StyleGAN2Config:
    values = {**STYLEGAN2_PRESETS[str(resolution)], "output_dir": workdir, "checkpoint_minutes": 0}
    values.update(overrides)
    config = StyleGAN2Config(**values)
    config.validate()
    return config


def new_trainer(config: StyleGAN2Config, name: str) -> tuple[StyleGAN2Recipe, Trainer]:
    keras.utils.set_random_seed(config.seed)
    recipe = StyleGAN2Recipe(config)
    run_dir = RunDirectory.create(config.output_dir, name)
    return recipe, Trainer(recipe, run_dir, progress=False)


def throughput(resolution: int, batch: int, steps: int, warmup: int, workdir: str) -> dict:
    """Images/s of the compiled engine step and of the eager recipe step (same networks)."""
    config = preset_config(resolution, workdir, batch=batch)
    recipe, trainer = new_trainer(config, f"throughput-{resolution}")
    recipe.on_epoch_begin(0)
    images = tf.random.uniform((batch, resolution, resolution, config.channels), -1.0, 1.0, seed=1)
    result = {"resolution": resolution, "batch": batch, "steps": steps, "warmup": warmup}
    step = 0
    for mode in ("compiled", "eager"):
        def run_one(index: int) -> None:
            if mode == "compiled":
                trainer.train_step(images, index)
            else:
                losses = recipe.train_step(images, tf.constant(index, tf.int64))
                _ = {k: float(v) for k, v in losses.items()}  # wait for the values, as the engine does

        for _ in range(warmup):
            run_one(step)
            step += 1
        started = time.perf_counter()
        for _ in range(steps):
            run_one(step)
            step += 1
        seconds = (time.perf_counter() - started) / steps
        result[f"{mode}_seconds_per_step"] = seconds
        result[f"{mode}_images_per_second"] = batch / seconds
    result["speedup"] = result["compiled_images_per_second"] / result["eager_images_per_second"]
    result["parameters"] = recipe.parameter_counts()
    return result


def pairwise_ssim(images: np.ndarray) -> float:
    """Mean SSIM (data range 2) over all unordered pairs of images [N, H, W]."""
    from tfmedgan.metrics import ssim_many

    scores = [ssim_many(images[i], images[i + 1 :], data_range=2.0) for i in range(len(images) - 1)]
    return float(np.concatenate(scores).mean())


def quality_scores(generator: keras.Model, real: np.ndarray, seed: int) -> dict:
    from tfmedgan.inference.generate import generate_images
    from tfmedgan.metrics import best_match

    fakes = generate_images(generator, 64, seed=seed)[..., 0]
    best = [best_match(fake, real)[0] for fake in fakes[:16]]
    return {
        "best_match_ssim_mean": float(np.mean(best)),
        "best_match_ssim_max": float(np.max(best)),
        "pairwise_ssim_generated": pairwise_ssim(fakes),
        "generated_value_range": [float(fakes.min()), float(fakes.max())],
    }


def quality(minutes: float, batch: int, n_images: int, workdir: str) -> dict:
    """Train the 64 px preset on the sample slices for ``minutes`` and score the generator."""
    try:
        from tfmedgan.data.samples import sample_slices_dir
    except ImportError:
        return {"skipped": "tfmedgan.data.samples is missing"}
    from tfmedgan.data import png

    folder = sample_slices_dir(resolution=64, n_images=n_images)
    config = preset_config(64, workdir, data_dir=str(folder), batch=batch, epochs=10_000)
    recipe, trainer = new_trainer(config, "quality")
    recipe.prepare_data()
    real = png.load_images(recipe.files, 64, 1)[..., 0]
    generator = recipe.networks["generator"]
    before = quality_scores(generator, real, seed=0)

    budget = 60.0 * minutes
    started, cpu_started = time.perf_counter(), time.process_time()
    step = epoch = 0
    last = {}
    while time.perf_counter() - started < budget:
        recipe.on_epoch_begin(epoch)
        for images in recipe.dataset(epoch):
            last = trainer.train_step(images, step)
            step += 1
            if time.perf_counter() - started >= budget:
                break
        else:
            epoch += 1
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    after = quality_scores(generator, real, seed=0)
    rng = np.random.default_rng(0)
    real_pairs = pairwise_ssim(real[rng.choice(len(real), size=min(64, len(real)), replace=False)])
    return {
        "training_images": len(real),
        "batch": batch,
        "budget_minutes": minutes,
        "wall_seconds": seconds,
        "process_cpu_seconds": cpu_seconds,
        "steps": step,
        "epochs_completed": epoch,
        "alpha_at_end": float(recipe.alpha.numpy()),
        "last_losses": last,
        "untrained": before,
        "trained": after,
        "pairwise_ssim_real": real_pairs,
    }


def print_table(results: dict) -> None:
    print("\nStyleGAN2 (seed 004) throughput, images/s (float32, CPU)")
    print(f"{'res':>5} {'batch':>5} {'compiled':>10} {'eager':>10} {'speed-up':>9}")
    for row in results["throughput"]:
        print(f"{row['resolution']:>5} {row['batch']:>5} {row['compiled_images_per_second']:>10.2f} "
              f"{row['eager_images_per_second']:>10.2f} {row['speedup']:>8.2f}x")
    q = results["quality"]
    if "skipped" in q:
        print(f"\nquality: skipped ({q['skipped']})")
        return
    print(f"\nQuality, 64 px preset, batch {q['batch']}, {q['steps']} steps ({q['epochs_completed']} epochs, "
          f"alpha {q['alpha_at_end']:.3f}) in {q['wall_seconds'] / 60:.1f} min wall, "
          f"{q['process_cpu_seconds'] / 60:.1f} CPU min, {q['training_images']} sample slices")
    print(f"{'':>28} {'untrained':>10} {'trained':>10}")
    for key, label in (("best_match_ssim_mean", "best-match SSIM mean (16)"),
                       ("best_match_ssim_max", "best-match SSIM max (16)"),
                       ("pairwise_ssim_generated", "pairwise SSIM generated")):
        print(f"{label:>28} {q['untrained'][key]:>10.4f} {q['trained'][key]:>10.4f}")
    print(f"{'pairwise SSIM real (64)':>28} {q['pairwise_ssim_real']:>10.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the quality run (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 timed steps, 1 minute of training")
    parser.add_argument("--batch", type=int, default=16, help="batch of the throughput runs (default 16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per mode (default 2)")
    parser.add_argument("--quality-batch", type=int, default=32,
                        help="batch of the quality run (default 32; the preset's 128 gives 2 steps per epoch of the sample set)")
    parser.add_argument("--images", type=int, default=256, help="sample slices to train on (default 256)")
    parser.add_argument("--skip-quality", action="store_true", help="only measure throughput")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
        if "--minutes" not in (argv if argv is not None else sys.argv[1:]):
            args.minutes = 1.0

    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                    "keras": keras.__version__},
        "arguments": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="bench-stylegan2-") as workdir:
        results["throughput"] = []
        for resolution in (64, 128):
            print(f"throughput at {resolution} px ...", flush=True)
            results["throughput"].append(throughput(resolution, args.batch, args.steps, args.warmup, workdir))
        if args.skip_quality:
            results["quality"] = {"skipped": "--skip-quality"}
        else:
            print(f"quality: training the 64 px preset for {args.minutes:g} min ...", flush=True)
            results["quality"] = quality(args.minutes, args.quality_batch, args.images, workdir)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
