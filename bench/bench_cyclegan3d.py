#!/usr/bin/env python
"""Benchmark of the seed-000 3D CycleGAN training step: peak memory, step time, data wait.

Each configuration runs in its own subprocess (so ``ru_maxrss`` is that configuration's peak):
one full CycleGAN step (pools, D update, 2 G updates, identity update) on random volumes, timed
after two warm-up steps, next to the ``--dry-run`` memory estimate. A last measurement trains on
gzipped NIfTI files through the real ``tf.data`` pipeline and reports the fraction of time the
loop waited for data.

    python bench/bench_cyclegan3d.py --quick          # 64^3 only
    python bench/bench_cyclegan3d.py                  # 64^3, 128^3, 156x188x156

Columns: shape, precision, peak RSS (GiB), estimate (GiB), step time (s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _recipe(shape, precision, pool_size, data_dir=""):
    import keras

    from tfmedgan.config import CycleGAN3DConfig
    from tfmedgan.engine.precision import set_precision
    from tfmedgan.models.cyclegan import CycleGAN3DRecipe

    config = CycleGAN3DConfig(data_dir=data_dir, shape=list(shape), precision=precision, pool_size=pool_size, identity_every=1)
    set_precision(precision)
    keras.utils.set_random_seed(0)
    return CycleGAN3DRecipe(config)


def _trainer(recipe, folder):
    import tensorflow as tf

    from tfmedgan.engine.rundir import RunDirectory
    from tfmedgan.engine.trainer import Trainer

    run_dir = RunDirectory.create(folder, "bench")
    return Trainer(recipe, run_dir, strategy=tf.distribute.get_strategy(), progress=False)


def worker_step(shape, precision, pool_size, steps) -> dict:
    """Peak RSS and time of full CycleGAN steps on random volumes (in this process)."""
    import numpy as np
    import tensorflow as tf

    from tfmedgan.models.cyclegan import estimate_training_memory

    recipe = _recipe(shape, precision, pool_size)
    with tempfile.TemporaryDirectory() as folder:
        trainer = _trainer(recipe, folder)
        recipe.on_epoch_begin(0)
        rng = np.random.default_rng(0)
        batch = tuple(tf.constant(rng.uniform(-1, 1, (1, *shape, 1)).astype("float32")) for _ in range(2))
        times = []
        for step in range(steps + 2):
            started = time.perf_counter()
            trainer.train_step(batch, step)
            times.append(time.perf_counter() - started)
    estimate = estimate_training_memory(recipe.config, tuple(shape))
    return {
        "shape": list(shape), "precision": precision, "pool_size": pool_size,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "estimate_gib": estimate["total"] / 2**30,
        "step_seconds": float(np.median(times[2:])), "first_step_seconds": times[0],
    }


def worker_data(shape, steps) -> dict:
    """Fraction of the training loop spent waiting for the next batch of gzipped NIfTI pairs."""
    import nibabel as nib
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        rng = np.random.default_rng(0)
        for domain in "AB":
            (data / f"train{domain}").mkdir(parents=True)
            for index in range(steps + 2):
                volume = rng.uniform(0, 1000, shape).astype(np.float32)
                nib.save(nib.Nifti1Image(volume, np.eye(4)), data / f"train{domain}" / f"s{index:03d}.nii.gz")
        recipe = _recipe(shape, "float32", 0, str(data))
        recipe.prepare_data()
        trainer = _trainer(recipe, folder)
        recipe.on_epoch_begin(0)
        iterator = iter(recipe.dataset(0))
        trainer.train_step(next(iterator), 0)  # trace
        waited = stepped = 0.0
        for step in range(1, steps + 2):
            started = time.perf_counter()
            batch = next(iterator)
            fetched = time.perf_counter()
            trainer.train_step(batch, step)
            waited += fetched - started
            stepped += time.perf_counter() - fetched
        load_started = time.perf_counter()
        from tfmedgan.data.nifti import load_model_input

        load_model_input(data / "trainA" / "s000.nii.gz", shape)
        load_seconds = time.perf_counter() - load_started
    return {"shape": list(shape), "data_wait_fraction": waited / (waited + stepped),
            "load_one_volume_seconds": load_seconds, "step_seconds": stepped / (steps + 1)}


def _run_worker(arguments: list[str]) -> dict:
    process = subprocess.run([sys.executable, __file__, "--worker", *arguments], capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        return {"error": (process.stderr.strip().splitlines() or ["failed"])[-1], "arguments": arguments}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64^3 only")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (default: 3)")
    parser.add_argument("--pool-size", type=int, default=50, help="image pool size (default: 50, the original)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "step":
            x, y, z, precision, pool = rest
            result = worker_step((int(x), int(y), int(z)), precision, int(pool), args.steps)
        else:
            x, y, z = rest
            result = worker_data((int(x), int(y), int(z)), args.steps)
        print(json.dumps(result))
        return 0
    shapes = [(64, 64, 64)] if args.quick else [(64, 64, 64), (128, 128, 128), (156, 188, 156)]
    print(f"{'shape':>14} {'precision':>15} {'pool':>5} {'peak GiB':>9} {'estimate GiB':>13} {'step s':>8}")
    results = []
    for shape in shapes:
        for precision in ("float32", "mixed_bfloat16"):
            result = _run_worker(["step", *map(str, shape), precision, str(args.pool_size), "--steps", str(args.steps)])
            results.append(result)
            if "error" in result:
                print(f"{'x'.join(map(str, shape)):>14} {precision:>15} failed: {result['error']}")
                continue
            print(f"{'x'.join(map(str, shape)):>14} {precision:>15} {args.pool_size:>5} {result['peak_rss_gib']:>9.2f} "
                  f"{result['estimate_gib']:>13.2f} {result['step_seconds']:>8.2f}")
    data = _run_worker(["data", *map(str, shapes[0]), "--steps", str(args.steps)])
    results.append(data)
    if "error" in data:
        print(f"data pipeline benchmark failed: {data['error']}")
    else:
        print(f"gzipped NIfTI at {'x'.join(map(str, shapes[0]))}: data wait {100 * data['data_wait_fraction']:.1f}% of the loop "
              f"(one volume load {data['load_one_volume_seconds']:.3f} s, step {data['step_seconds']:.2f} s)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
