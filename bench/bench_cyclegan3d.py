#!/usr/bin/env python
"""Benchmark of the seed-000 3D CycleGAN training step: peak memory, step time, data wait.

Every configuration runs in its own subprocess, one at a time, so that the process's peak
resident set size (Linux ``VmHWM``) is that configuration's peak. A worker builds the default
seed-000 networks (32 filters, 1 down-sampling, 1 residual block, 1-layer PatchGAN, pool of 50),
runs one full CycleGAN step as a warm-up (tracing) and then ``--steps`` timed steps. A full step is
the discriminator update through the image pools, 2 generator updates and the identity update
(``identity_every=1``, so every step has it; with the default 10 a step is ~20% shorter).

    python bench/bench_cyclegan3d.py --quick            # 64^3 only (a few minutes)
    python bench/bench_cyclegan3d.py                    # 64^3, 128^3, 156x188x156 (1-2 hours)
    python bench/bench_cyclegan3d.py --table            # reprint bench/results/cyclegan3d.json

Variants: float32, mixed_bfloat16, and both with ``--recompute`` (gradient checkpointing of the
generators). A variant whose ``--dry-run`` estimate does not fit in the available memory is
skipped. 64^3 and 128^3 train on random volumes held in memory; 156x188x156 trains on gzipped
NIfTI pairs (1 mm sample subjects made from the MNI152 template, cropped) read through the real
``tf.data`` pipeline, and reports the time the loop waited for the next batch. ``--networks cpu``
measures ``--preset cpu``'s networks instead (no norm, resize up-sampling, the input's background
mask, which ``--recompute`` carries across every cut) at the same whole shapes; their rows are
named ``cpu:<variant>``, and ``--append`` keeps the other rows.

Columns: peak RSS of the whole worker process (GiB), the same minus the RSS of a process that only
imported TensorFlow, the ``--dry-run`` estimate and estimate / measured peak, the step time (s)
and, for NIfTI input, the data wait as a fraction of the loop time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)

import rss  # noqa: E402  (bench/rss.py: this script's folder is on sys.path)

RESULTS = ROOT / "bench" / "results" / "cyclegan3d.json"
SHAPES = {"64": (64, 64, 64), "128": (128, 128, 128), "full": (156, 188, 156)}
VARIANTS = {
    "float32": ("float32", False),
    "mixed_bfloat16": ("mixed_bfloat16", False),
    "float32+recompute": ("float32", True),
    "mixed_bfloat16+recompute": ("mixed_bfloat16", True),
}
GIB = 2**30


# -- workers (each runs in its own process) --------------------------------------------------------
#: ``--networks``: the original's (instance norm, transposed up-sampling) or ``--preset cpu``'s
#: (no norm, resize up-sampling, the input's background mask, which --recompute carries across
#: every cut), both at the full shape given.
NETWORKS = {"original": {}, "cpu": dict(norm="none", upsample="resize", mask_background=True)}


def _config(shape, precision, recompute, pool_size, data_dir="", networks="original"):
    from tfmedgan.models.cyclegan3d import CycleGAN3DConfig

    return CycleGAN3DConfig(data_dir=data_dir, shape=list(shape), precision=precision, recompute=recompute,
                            pool_size=pool_size, identity_every=1, **NETWORKS[networks])


def worker_baseline() -> dict:
    """Peak RSS of a process that only imported TensorFlow (and ran one op)."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    return {"baseline_rss_gib": rss.peak_rss_bytes() / GIB}


def worker_step(shape, precision, recompute, pool_size, steps, data_dir="", networks="original") -> dict:
    """Peak RSS and time of full CycleGAN steps (random volumes, or NIfTI files from ``data_dir``)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmedgan.engine.precision import set_precision
    from tfmedgan.engine.rundir import RunDirectory
    from tfmedgan.engine.trainer import Trainer
    from tfmedgan.models.cyclegan3d import CycleGAN3DRecipe, estimate_training_memory

    config = _config(shape, precision, recompute, pool_size, data_dir, networks)
    set_precision(precision)
    keras.utils.set_random_seed(0)
    recipe = CycleGAN3DRecipe(config)
    if data_dir:
        recipe.prepare_data()
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(recipe, RunDirectory.create(folder, "bench"), strategy=tf.distribute.get_strategy(), progress=False)
        recipe.on_epoch_begin(0)
        if data_dir:
            batches = iter(recipe.dataset(0))
        else:
            rng = np.random.default_rng(0)
            fixed = tuple(tf.constant(rng.uniform(-1, 1, (1, *shape, 1)).astype("float32")) for _ in range(2))
            batches = iter([fixed] * (steps + 1))
        waits, times, finite = [], [], True
        for step in range(steps + 1):
            if step == 1:
                warm_peak = rss.peak_rss_bytes()
                rss.reset_peak_rss()
                rss_before = rss.current_rss_bytes()
            started = time.perf_counter()
            batch = next(batches)
            fetched = time.perf_counter()
            losses = trainer.train_step(batch, step)
            finite = finite and all(np.isfinite(value) for value in losses.values())
            waits.append(fetched - started)
            times.append(time.perf_counter() - fetched)
        step_peak = rss.peak_rss_bytes()
        load_seconds = None
        if data_dir:
            from tfmedgan.data.nifti import load_model_input

            started = time.perf_counter()
            for path in recipe._train_pairs()[0]:
                load_model_input(path, shape)
            load_seconds = time.perf_counter() - started
    estimate = estimate_training_memory(config, tuple(shape))
    result = {
        "shape": list(shape), "precision": precision, "recompute": recompute, "pool_size": pool_size,
        "networks": networks, "input": "gzipped NIfTI" if data_dir else "random, in memory",
        "peak_rss_gib": max(warm_peak, step_peak) / GIB, "warmup_peak_rss_gib": warm_peak / GIB,
        "step_peak_rss_gib": step_peak / GIB, "rss_before_step_gib": rss_before / GIB,
        "step_seconds": float(np.median(times[1:])), "first_step_seconds": times[0],
        "estimate_gib": estimate["total"] / GIB, "estimate_parts_gib": {k: v / GIB for k, v in estimate.items() if k != "total"},
        "losses_finite": bool(finite),
    }
    if data_dir:
        result.update(data_wait_seconds=float(np.mean(waits[1:])), first_batch_wait_seconds=waits[0],
                      load_pair_seconds=load_seconds,
                      data_wait_fraction=float(sum(waits[1:]) / (sum(waits[1:]) + sum(times[1:]))))
    return result


def worker_make_data(shape, folder, pairs) -> dict:
    """Gzipped NIfTI pairs: 1 mm MNI152 sample subjects, cropped to their brain box and to ``shape``."""
    import nibabel as nib
    import numpy as np

    from tfmedgan.data.samples import make_paired_subjects

    raw = Path(folder) / "raw"
    make_paired_subjects(raw, n_subjects=pairs, resolution_mm=1)
    out = Path(folder) / "data"
    shapes = []
    for path_a, path_b in zip(sorted((raw / "trainA").iterdir()), sorted((raw / "trainB").iterdir())):
        image_a, image_b = nib.load(path_a), nib.load(path_b)
        a, b = np.asarray(image_a.dataobj, np.float32), np.asarray(image_b.dataobj, np.float32)
        voxels = np.argwhere((a != 0) | (b != 0))
        low, high = voxels.min(axis=0), voxels.max(axis=0) + 1
        extra = np.maximum(high - low - np.array(shape), 0)
        low, high = low + extra // 2, high - (extra - extra // 2)
        box = tuple(slice(int(start), int(stop)) for start, stop in zip(low, high))
        for data, source, domain in ((a, path_a, "A"), (b, path_b, "B")):
            (out / f"train{domain}").mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data[box], image_a.affine), out / f"train{domain}" / source.name)
        shapes.append([int(stop - start) for start, stop in zip(low, high)])
    sizes = [p.stat().st_size for p in (out / "trainA").iterdir()]
    return {"data_dir": str(out), "volume_shapes": shapes, "mean_file_mib": float(np.mean(sizes)) / 2**20}


# -- driver ----------------------------------------------------------------------------------------


def _estimate_gib(shape, precision, recompute, pool_size, networks="original") -> float:
    from tfmedgan.models.cyclegan3d import estimate_training_memory

    config = _config(shape, precision, recompute, pool_size, networks=networks)
    return estimate_training_memory(config, tuple(shape))["total"] / GIB


def _variant(row: dict) -> str:
    """The row's variant name, with ``cpu:`` before it for the --preset cpu networks."""
    networks = row.get("networks", "original")
    return rss.variant_name(row) if networks == "original" else f"{networks}:{rss.variant_name(row)}"


def print_table(results: dict) -> None:
    baseline = results.get("baseline", {}).get("baseline_rss_gib", float("nan"))
    print(f"TF-only process peak RSS: {baseline:.2f} GiB")
    header = (f"{'shape':>12} {'variant':>28} {'pool':>4} {'peak GiB':>9} {'-TF GiB':>8} {'estimate':>9} "
              f"{'est/meas':>8} {'step s':>7} {'data wait':>9}")
    print(header)
    print("-" * len(header))
    for row in results["rows"]:
        shape = "x".join(map(str, row["shape"]))
        if "skipped" in row or "error" in row:
            why = (f"not run: estimate {row['estimate_gib']:.1f} GiB > {row['available_gib']:.1f} GiB available - 1"
                   if row.get("skipped") else f"failed: {row['error']}")
            print(f"{shape:>12} {_variant(row):>28} {row['pool_size']:>4} {why}")
            continue
        wait = f"{100 * row['data_wait_fraction']:.2f}%" if "data_wait_fraction" in row else "-"
        print(f"{shape:>12} {_variant(row):>28} {row['pool_size']:>4} {row['peak_rss_gib']:>9.2f} "
              f"{row['peak_rss_gib'] - baseline:>8.2f} {row['estimate_gib']:>9.2f} {row['estimate_gib'] / row['peak_rss_gib']:>8.2f} "
              f"{row['step_seconds']:>7.1f} {wait:>9}")


def _refresh_estimates(results: dict) -> None:
    for row in results["rows"]:
        row["estimate_gib"] = _estimate_gib(row["shape"], row["precision"], row["recompute"], row["pool_size"],
                                            row.get("networks", "original"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64^3 only")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="shapes to run (default: all)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="variants to run")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step (default: 1)")
    parser.add_argument("--pool-size", type=int, default=50, help="image pool size (default: 50, the original)")
    parser.add_argument("--small-pool", type=int, default=10,
                        help="at 156x188x156 also run mixed_bfloat16+recompute with this pool size (0: no; default: 10)")
    parser.add_argument("--append", action="store_true",
                        help="add the rows to --output (replacing rows of the same configuration) instead of a new file")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results JSON (default: {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="only reprint the table of --output (estimates refreshed)")
    parser.add_argument("--networks", choices=list(NETWORKS), default="original",
                        help="the original's networks (default) or --preset cpu's (no norm, resize up-sampling, mask)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = json.loads(args.worker)
        if kind == "baseline":
            result = worker_baseline()
        elif kind == "data":
            result = worker_make_data(*rest)
        else:
            result = worker_step(*rest)
        print(json.dumps(result))
        return 0
    if args.table:
        results = json.loads(args.output.read_text())
        _refresh_estimates(results)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print_table(results)
        return 0

    names = ["64"] if args.quick else (args.shapes or list(SHAPES))
    results: dict = {"machine": f"{os.cpu_count()} CPU cores, {rss.available_gib():.1f} GiB available at start",
                     "steps_timed": args.steps, "rows": []}
    if args.append and args.output.exists():
        results = json.loads(args.output.read_text())
    else:
        results["baseline"] = rss.run_worker(__file__, ["baseline"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            shape = SHAPES[name]
            data_dir = ""
            if name == "full":
                made = rss.run_worker(__file__, ["data", list(shape), scratch, args.steps + 1])
                results["nifti_data"] = made
                data_dir = made.get("data_dir", "")
            runs = [(variant, args.pool_size) for variant in args.variants]
            if name == "full" and args.small_pool and "mixed_bfloat16+recompute" in args.variants:
                runs.append(("mixed_bfloat16+recompute", args.small_pool))
            for variant, pool_size in runs:
                precision, recompute = VARIANTS[variant]
                estimate = _estimate_gib(shape, precision, recompute, pool_size, args.networks)
                available = rss.available_gib()
                row = {"shape": list(shape), "precision": precision, "recompute": recompute, "pool_size": pool_size,
                       "networks": args.networks}
                key = (row["shape"], precision, recompute, pool_size, args.networks)
                results["rows"] = [r for r in results["rows"] if (r["shape"], r["precision"], r["recompute"],
                                                                  r["pool_size"], r.get("networks", "original")) != key]
                if estimate > available - 1.0:
                    row.update(estimate_gib=estimate, available_gib=available, skipped=True)
                else:
                    print(f"... {'x'.join(map(str, shape))} {variant} pool {pool_size} (estimate {estimate:.1f} GiB)", flush=True)
                    row.update(rss.run_worker(__file__, ["step", list(shape), precision, recompute, pool_size, args.steps,
                                                         data_dir, args.networks]))
                results["rows"].append(row)
                args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
