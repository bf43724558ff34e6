"""TensorFlow's oneDNN CPU kernels off and on: CPU-seconds of one compiled training step.

TensorFlow 2.21 turns oneDNN on by itself only on x86 CPUs with AVX-512 or AMX; ``tfmedgan`` turns
it on everywhere on x86-64 unless the user set ``TF_ENABLE_ONEDNN_OPTS``
(``tfmedgan.engine.cpu_features.use_onednn_by_default``). This bench shows what that buys on the
machine it runs on. Each (workload, setting) runs in its own process, since TensorFlow reads the
variable once at start-up; the processes run one after another, interleaved over repeats, and the
table reports medians and the off/on ratio.

Workloads (float32, one in-memory batch, the model's own recipe and compiled step):
  - ``cyclegan3d``: ``--preset cpu --mask-background`` on a 48^3 crop (the quality bench's recipe);
  - ``cyclegan3d-nocycle``: the same with ``--lambda-cycle 0``;
  - ``dcgan``: ``--preset demo`` at 64 px, batch 10 (the README demo);
  - ``conv3d``: a bare 3D encoder-decoder (seven Conv3D, two Conv3DTranspose) on 48^3.

Usage:
    nice -n 19 python bench/bench_onednn.py [--workloads cyclegan3d dcgan] [--repeats 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("cyclegan3d", "cyclegan3d-nocycle", "dcgan", "conv3d")


def _step_function(workload: str):
    """(compiled step, its arguments) of ``workload``; TensorFlow is imported here."""
    import numpy as np
    import tensorflow as tf

    from tfmedgan.models import get_model

    rng = np.random.default_rng(0)
    if workload.startswith("cyclegan3d"):
        spec = get_model("cyclegan3d")
        config = spec.config(preset="cpu", data_dir="unused", shape=[48, 48, 48], mask_background=True,
                             lambda_cycle=0.0 if workload.endswith("nocycle") else 10.0, precision="float32")
        batch = tuple(tf.constant(rng.uniform(-1, 1, (1, 48, 48, 48, 1)).astype("float32")) for _ in range(2))
    elif workload == "dcgan":
        spec = get_model("dcgan")
        config = spec.config(preset="demo", data_dirs=["unused"], resolution=64, batch=10, precision="float32")
        batch = tf.constant(rng.uniform(-1, 1, (10, 64, 64, 1)).astype("float32"))
    elif workload == "conv3d":
        import keras
        from keras import layers

        inputs = keras.Input((48, 48, 48, 1))
        x = layers.Conv3D(16, 7, padding="same")(inputs)
        x = layers.Conv3D(32, 3, strides=2, padding="same")(x)
        x = layers.Conv3D(64, 3, strides=2, padding="same")(x)
        for _ in range(4):
            x = layers.Conv3D(64, 3, padding="same")(x)
        x = layers.Conv3DTranspose(32, 3, strides=2, padding="same")(x)
        x = layers.Conv3DTranspose(16, 3, strides=2, padding="same")(x)
        model = keras.Model(inputs, layers.Conv3D(1, 7, padding="same")(x))

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True)))
            return tf.reduce_sum(tape.gradient(loss, model.trainable_variables)[0])

        return step, (tf.constant(rng.uniform(-1, 1, (1, 48, 48, 48, 1)).astype("float32")),)
    else:
        raise SystemExit(f"unknown workload {workload!r} (known: {', '.join(WORKLOADS)})")
    recipe = spec.build_recipe(config)
    recipe.build()
    for name, variables in recipe.optimizer_variables().items():
        recipe.optimizers[name].build(variables)
    compiled = tf.function(recipe.train_step)
    return (lambda b, s: tf.reduce_sum(next(iter(compiled(b, s).values())))), (batch, tf.constant(1, tf.int64))


def child(workload: str, steps: int) -> dict:
    """CPU-seconds per step of ``workload`` in this process (after one warm-up step)."""
    step, arguments = _step_function(workload)
    float(step(*arguments))
    started = time.process_time()
    for _ in range(steps):
        float(step(*arguments))
    return {"cpu_seconds_per_step": (time.process_time() - started) / steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--repeats", type=int, default=2, help="processes per (workload, setting)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "onednn.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(args.child, args.steps)))
        return 0
    results: dict[str, dict[str, list[float]]] = {w: {"0": [], "1": []} for w in args.workloads}
    for repeat in range(args.repeats):
        for workload in args.workloads:
            for setting in ("0", "1"):
                environment = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="2",
                                   CUDA_VISIBLE_DEVICES="")
                done = subprocess.run([sys.executable, __file__, "--child", workload, "--steps", str(args.steps)],
                                      env=environment, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{workload} with TF_ENABLE_ONEDNN_OPTS={setting} failed:\n{done.stderr[-2000:]}")
                seconds = json.loads(done.stdout.strip().splitlines()[-1])["cpu_seconds_per_step"]
                results[workload][setting].append(seconds)
                print(f"[{repeat + 1}/{args.repeats}] {workload:20s} oneDNN {'on ' if setting == '1' else 'off'} "
                      f"{seconds:7.2f} CPU-s/step", flush=True)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    summary = {"cpu": model or platform.processor(), "machine": platform.machine(), "workloads": {}}
    print(f"\n{'workload':20s} {'off':>8s} {'on':>8s} {'off/on':>7s}   (median CPU-s per step, {model})")
    for workload, settings in results.items():
        off, on = statistics.median(settings["0"]), statistics.median(settings["1"])
        summary["workloads"][workload] = {"off": settings["0"], "on": settings["1"], "off_over_on": off / on}
        print(f"{workload:20s} {off:8.2f} {on:8.2f} {off / on:7.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
