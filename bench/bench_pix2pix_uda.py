#!/usr/bin/env python
"""Benchmark of the seed-001 training steps: peak memory and step time of one pretraining step
(pix2pix3d) and one adaptation step (uda), against the ``--dry-run`` estimate.

Every configuration runs in its own subprocess, one at a time, so that the process's peak
resident set size (Linux ``VmHWM``, :mod:`rss`) is that configuration's peak. A worker builds the
original networks (SIT 64 filters, 1-layer PatchGAN 64 filters; for uda also the 256 x 256 slice-VAE
encoder, frozen), runs one step as a warm-up (tracing) and then ``--steps`` timed steps on random
volumes held in memory (batch 1).

* pretraining step: D update (fake and real pass) + G update (LSGAN + L1 + D-feature loss);
* adaptation step: the same supervised step on a source case, then the generator step on a target
  case with the VAE-posterior KL (``--faithful-kl`` off: coronal slices, encoder in inference mode).

    python bench/bench_pix2pix_uda.py                          # 144x192x192, all variants (hours on a CPU)
    python bench/bench_pix2pix_uda.py --shape 32 48 48 --vae-size 64 --variants float32   # a quick check
    python bench/bench_pix2pix_uda.py --table                  # reprint bench/results/pix2pix_uda.json

Variants: float32, mixed_bfloat16 (the original's ``--amp``) and both with ``--recompute``
(gradient checkpointing of the generator). A variant whose estimate does not fit in the available
memory is skipped. The original needed 24 GB of GPU memory for pretraining (12 GB with AMP) and
20 GB for the adaptation; the goal here is under 12 GiB with ``--recompute``.

Columns: stage, variant, peak RSS of the worker process (GiB), the same minus a TF-only process,
the estimate and estimate / measured peak, the step time (s).
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

RESULTS = ROOT / "bench" / "results" / "pix2pix_uda.json"
FULL_SHAPE = (144, 192, 192)
STAGES = ("pretrain", "uda")
VARIANTS = {
    "float32": ("float32", False),
    "mixed_bfloat16": ("mixed_bfloat16", False),
    "float32+recompute": ("float32", True),
    "mixed_bfloat16+recompute": ("mixed_bfloat16", True),
}
GIB = 2**30


# -- workers (each runs in its own process) --------------------------------------------------------
def _estimate_gib(stage: str, shape, recompute: bool, vae_size: int, precision: str = "float32") -> dict:
    import math

    from tfmedgan.models.pix2pix_uda.common import estimate_step_memory

    vae = dict(size=vae_size, base_filters=4, depth=int(round(math.log2(vae_size))) - 1) if stage == "uda" else None
    estimate = estimate_step_memory(64, 8, 64, tuple(shape), recompute, vae=vae, precision=precision)
    return {"estimate_gib": estimate["total"] / GIB,
            "estimate_parts_gib": {k: v / GIB for k, v in estimate.items() if k != "total"}}


def worker_baseline() -> dict:
    """Peak RSS of a process that only imported TensorFlow (and ran one op)."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    return {"baseline_rss_gib": rss.peak_rss_bytes() / GIB}


def _recipe(stage: str, shape, precision: str, recompute: bool, vae_size: int):
    import math

    from tfmedgan.models.pix2pix_uda.common import build_discriminator, build_generator
    from tfmedgan.models.pix2pix_uda.pix2pix3d import Pix2Pix3DConfig, Pix2Pix3DRecipe
    from tfmedgan.models.pix2pix_uda.uda import UDAConfig, UDARecipe
    from tfmedgan.networks.vae2d import build_vae_encoder

    if stage == "pretrain":
        return Pix2Pix3DRecipe(Pix2Pix3DConfig(data_root="unused", crop_shape=list(shape), precision=precision,
                                               recompute=recompute))

    depth = int(round(math.log2(vae_size))) - 1

    class FreshUDA(UDARecipe):
        """The adaptation step on freshly initialised networks (no pretrained runs needed)."""

        def load_sources(self) -> None:
            self._sources = {"vae_encoder": ({"size": vae_size, "base_filters": 4, "depth": depth}, None)}

        def build_networks_only(self) -> None:
            self.load_sources()
            self.networks = {"generator": build_generator(), "discriminator": build_discriminator(),
                             "vae_encoder": build_vae_encoder((vae_size, vae_size, 1), 4, depth, name="vae_encoder")}

    return FreshUDA(UDAConfig(data_root="unused", pretrained="-", vae="-", crop_shape=list(shape),
                              precision=precision, recompute=recompute))


def worker_step(stage: str, shape, precision: str, recompute: bool, vae_size: int, steps: int) -> dict:
    """Peak RSS and time of one warm-up step and ``steps`` timed steps of ``stage``."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmedgan.engine.precision import set_precision
    from tfmedgan.engine.rundir import RunDirectory
    from tfmedgan.engine.trainer import Trainer

    set_precision(precision)
    keras.utils.set_random_seed(0)
    recipe = _recipe(stage, shape, precision, recompute, vae_size)
    rng = np.random.default_rng(0)

    def volume(channels):
        return tf.constant(rng.uniform(0, 1, (1, *shape, channels)).astype("float32"))

    batch = (volume(2), volume(1)) if stage == "pretrain" else (volume(2), volume(1), volume(2))
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(recipe, RunDirectory.create(folder, "bench"), strategy=tf.distribute.get_strategy(),
                          progress=False)
        recipe.on_epoch_begin(0)
        times, finite = [], True
        for step in range(steps + 1):
            if step == 1:
                warm_peak = rss.peak_rss_bytes()
                rss.reset_peak_rss()
                rss_before = rss.current_rss_bytes()
            started = time.perf_counter()
            losses = trainer.train_step(batch, step)
            times.append(time.perf_counter() - started)
            finite = finite and all(np.isfinite(value) for value in losses.values())
        step_peak = rss.peak_rss_bytes()
    return {
        "stage": stage, "shape": list(shape), "precision": precision, "recompute": recompute, "vae_size": vae_size,
        "peak_rss_gib": max(warm_peak, step_peak) / GIB, "warmup_peak_rss_gib": warm_peak / GIB,
        "step_peak_rss_gib": step_peak / GIB, "rss_before_step_gib": rss_before / GIB,
        "step_seconds": float(np.median(times[1:])) if steps else None, "first_step_seconds": times[0],
        "losses_finite": bool(finite), **_estimate_gib(stage, shape, recompute, vae_size, precision),
    }


# -- driver ----------------------------------------------------------------------------------------


def print_table(results: dict) -> None:
    baseline = results.get("baseline", {}).get("baseline_rss_gib", float("nan"))
    print(f"TF-only process peak RSS: {baseline:.2f} GiB")
    header = (f"{'stage':>8} {'shape':>12} {'variant':>25} {'peak GiB':>9} {'-TF GiB':>8} {'estimate':>9} "
              f"{'est/meas':>8} {'step s':>8}")
    print(header)
    print("-" * len(header))
    for row in results["rows"]:
        shape = "x".join(map(str, row["shape"]))
        if "skipped" in row or "error" in row:
            why = (f"not run: estimate {row['estimate_gib']:.1f} GiB > {row['available_gib']:.1f} GiB available - 1"
                   if row.get("skipped") else f"failed: {row['error']}")
            print(f"{row['stage']:>8} {shape:>12} {rss.variant_name(row):>25} {why}")
            continue
        step = f"{row['step_seconds']:.1f}" if row.get("step_seconds") is not None else "-"
        print(f"{row['stage']:>8} {shape:>12} {rss.variant_name(row):>25} {row['peak_rss_gib']:>9.2f} "
              f"{row['peak_rss_gib'] - baseline:>8.2f} {row['estimate_gib']:>9.2f} "
              f"{row['estimate_gib'] / row['peak_rss_gib']:>8.2f} {step:>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=list(FULL_SHAPE),
                        help="crop shape, multiples of 8 (default: the original 144 192 192)")
    parser.add_argument("--vae-size", type=int, default=256, help="VAE slice size of the uda step (default: 256)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="steps to measure")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="variants to run")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step (default: 1)")
    parser.add_argument("--append", action="store_true",
                        help="add the rows to --output (replacing rows of the same configuration) instead of a new file")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results JSON (default: {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true",
                        help="only reprint the table of --output (estimates recomputed by the current code)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = json.loads(args.worker)
        print(json.dumps(worker_baseline() if kind == "baseline" else worker_step(*rest)))
        return 0
    if args.table:
        results = json.loads(args.output.read_text())
        for row in results["rows"]:  # the estimates of the current code
            row.update(_estimate_gib(row["stage"], row["shape"], row["recompute"], row.get("vae_size", args.vae_size),
                                     row["precision"]))
        print_table(results)
        return 0
    if any(size % 8 for size in args.shape):
        parser.error(f"--shape sizes must be multiples of 8, got {args.shape}")

    results: dict = {"machine": f"{os.cpu_count()} CPU cores, {rss.available_gib():.1f} GiB available at start",
                     "steps_timed": args.steps, "rows": []}
    if args.append and args.output.exists():
        results = json.loads(args.output.read_text())
    else:
        results["baseline"] = rss.run_worker(__file__, ["baseline"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    shape = list(args.shape)
    for stage in args.stages:
        for variant in args.variants:
            precision, recompute = VARIANTS[variant]
            estimate = _estimate_gib(stage, shape, recompute, args.vae_size, precision)
            available = rss.available_gib()
            row = {"stage": stage, "shape": shape, "precision": precision, "recompute": recompute,
                   "vae_size": args.vae_size}
            key = (stage, shape, precision, recompute, args.vae_size)
            results["rows"] = [r for r in results["rows"] if (r["stage"], r["shape"], r["precision"], r["recompute"],
                                                              r.get("vae_size")) != key]
            if estimate["estimate_gib"] > available - 1.0:
                row.update(estimate, available_gib=available, skipped=True)
            else:
                print(f"... {stage} {'x'.join(map(str, shape))} {variant} (estimate {estimate['estimate_gib']:.1f} GiB)",
                      flush=True)
                row.update(rss.run_worker(__file__, ["step", stage, shape, precision, recompute, args.vae_size, args.steps]))
            results["rows"].append(row)
            args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
