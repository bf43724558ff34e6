#!/usr/bin/env python
"""Whole-brain 3D translation time: one pass vs overlapping windows vs a bare forward pass.

A brain larger than the training shape used to go through overlapping windows of the training
shape (Gaussian blending), which runs the generator over several times the voxels and left
visible window edges. Now it is translated whole in one pass (padded only to a valid shape). This
bench measures, side by side in one process on the same random-initialised generator:

* ``one pass``: ``translate_volume`` (pad to a multiple of 2^downsamplings, scale, one call);
* ``windows``: the same volume through the sliding window (``multiple=None``), the old path;
* ``bare``: one forward pass of the generator on a tensor of the padded size (no I/O, no scaling);

and reports the time ratios, the voxels the generator ran over, and the largest difference at
window seams (one pass vs windows).

    python bench/bench_translation.py [--shape 99 117 95] [--train-shape 88 104 88] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[99, 117, 95],
                        help="brain volume shape (default: a 2 mm MNI brain 10%% larger than the training shape)")
    parser.add_argument("--train-shape", type=int, nargs=3, default=[88, 104, 88], help="model (training) shape")
    parser.add_argument("--filters", type=int, default=32, help="generator base filters (default: 32, the original)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "translation.json"))
    args = parser.parse_args()

    import tensorflow as tf

    from tfmedgan.inference import volumes
    from tfmedgan.networks.resnet_translator import build_resnet_generator

    tf.keras.utils.set_random_seed(0)
    generator = build_resnet_generator((None, None, None, 1), args.filters, 1, 1, norm="channel")
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in args.shape], indexing="ij")
    brain = ((zz**2 + yy**2 + xx**2) < 0.8).astype(np.float32) * rng.uniform(50, 100, args.shape).astype(np.float32)
    model_shape = tuple(args.train_shape)
    padded = volumes.one_pass_shape(generator, args.shape, 2)
    bare_input = tf.constant(rng.uniform(-1, 1, (1, *padded, 1)).astype(np.float32))

    def timed(function) -> tuple[float, object]:
        function()  # warm-up (tracing, allocation)
        times, result = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = function()
            times.append(time.perf_counter() - start)
        return float(np.median(times)), result

    calls = {"windows": 0}
    original_predict = volumes._predict

    def counting_predict(model, batch):
        calls["windows"] += int(batch.shape[0])
        return original_predict(model, batch)

    one_pass_s, whole = timed(lambda: volumes.translate_volume(generator, brain, model_shape, multiple=2))
    volumes._predict = counting_predict
    windows_s, windowed = timed(lambda: volumes.translate_volume(generator, brain, model_shape, multiple=None))
    volumes._predict = original_predict
    bare_s, _ = timed(lambda: generator(bare_input, training=False))
    window_count = calls["windows"] // (args.repeats + 1)
    result = {
        "shape": args.shape, "train_shape": list(model_shape), "padded_one_pass": list(padded),
        "seconds": {"one_pass": one_pass_s, "windows": windows_s, "bare_forward": bare_s},
        "one_pass_over_bare": one_pass_s / bare_s, "windows_over_one_pass": windows_s / one_pass_s,
        "generator_voxels": {"one_pass": int(np.prod(padded)), "windows": int(window_count * np.prod(model_shape))},
        "max_abs_difference_one_pass_vs_windows": float(np.abs(whole - windowed).max()),
    }
    print(f"brain {args.shape}, training shape {list(model_shape)}, {args.filters} filters")
    print(f"  one pass  {one_pass_s:7.2f} s   ({result['one_pass_over_bare']:.2f}x a bare forward pass of "
          f"{list(padded)}: {bare_s:.2f} s)")
    print(f"  windows   {windows_s:7.2f} s   ({result['windows_over_one_pass']:.2f}x one pass; {window_count} windows, "
          f"{result['generator_voxels']['windows'] / result['generator_voxels']['one_pass']:.1f}x the voxels)")
    print(f"  largest difference one pass vs windows: {result['max_abs_difference_one_pass_vs_windows']:.3f} "
          "(on [-1, 1]; the windows' instance norms see other statistics)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
