#!/usr/bin/env python
"""Probe: how well does the 3D CycleGAN's generator translate T1w -> T2w when it is trained on
the PAIRED volumes with an L1 loss only (no discriminator, no cycle)?

The CycleGAN learns from unpaired volumes; the quality bench (``bench/quality.py --models
cyclegan3d-cpu``) found it below a plain intensity look-up table fitted on the training pairs.
This probe trains the same generator (``cyclegan3d --preset cpu``: 32 filters, resize
up-sampling, random 48^3 crops, Adam 2e-4 / 0.5, bf16) with supervision instead, on the same 8
training subjects, and scores it on the same held-out subjects with the same metrics (brain mask,
least-squares fit of the prediction onto the truth) at the same CPU-minute points. If supervision
cannot beat the table either, the limit is the generator and the data at this scale, not the
CycleGAN's objective.

    nice python bench/probe_supervised_translation.py --budget-minutes 20 --points 4

The CPU time is this process's (all TensorFlow threads), counted during training only.
Results: bench/results/quality/supervised_probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)

import numpy as np  # noqa: E402

import quality_protocols  # noqa: E402  (bench/quality_protocols.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="training CPU-minutes (default: 20)")
    parser.add_argument("--points", type=int, default=4, help="evaluation points (default: 4)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "quality" / "work",
                        help="the quality bench's work folder (its data are reused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--filters", type=int, default=None, help="generator base filters (default: the preset's)")
    parser.add_argument("--blocks", type=int, default=None, help="residual blocks (default: the preset's)")
    parser.add_argument("--downsamplings", type=int, default=None, help="down-sampling stages (default: the preset's)")
    parser.add_argument("--norm", choices=("channel", "none"), default="channel",
                        help="generator normalisation: instance norm per channel (the original's; the default "
                             "here, as in the earlier probes) or none (--preset cpu since session 8)")
    parser.add_argument("--scale", choices=("minmax", "median"), default="minmax",
                        help="volume scaling to [-1, 1]: min-max (the original) or x / (4 x brain median), clipped")
    parser.add_argument("--precision", default="mixed_bfloat16", help="float32 or mixed_bfloat16 (default)")
    parser.add_argument("--composite", action="store_true",
                        help="force the output to the background (-1) wherever the input is background (-1): "
                             "cyclegan3d --mask-background")
    parser.add_argument("--skip", choices=("add", "concat"), default=None,
                        help="full-resolution skip from the stem to the head: cyclegan3d --skip")
    parser.add_argument("--edge-weight", type=float, default=1.0,
                        help="L1 weight of the foreground voxels next to the background (26-neighbourhood); 1 = plain L1")
    parser.add_argument("--loss", choices=("l1", "l2"), default="l1",
                        help="supervised distance: l1 (default) or l2, squared error (cyclegan3d --supervised-loss)")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from tfmedgan import api
    from tfmedgan import losses as loss_functions
    from tfmedgan.data.nifti import scale_to_unit_range
    from tfmedgan.engine.precision import set_precision
    from tfmedgan.inference.volumes import translate_volume
    from tfmedgan.io.nifti import pad_or_crop_center
    from tfmedgan.networks.resnet_translator import build_resnet_generator

    protocol = quality_protocols.protocols()["cyclegan3d-cpu"]
    protocol.prepare(args.work)
    overrides = {key: value for key, value in (("lr", args.lr), ("base_filters", args.filters),
                 ("n_residual_blocks", args.blocks), ("n_downsamplings", args.downsamplings)) if value is not None}
    config = api.configure("cyclegan3d", preset="cpu", data_dir=str(protocol.train_dir), output_dir="unused", **overrides)
    set_precision(args.precision)
    keras.utils.set_random_seed(args.seed)
    multiple = 2 ** int(config.n_downsamplings)
    shape = tuple(-(-max(t1.shape[axis] for t1, _ in protocol.train_pairs) // multiple) * multiple for axis in range(3))
    crop = tuple(int(size) for size in config.patch)
    generator = build_resnet_generator((None, None, None, 1), config.base_filters, config.n_downsamplings,
                                       config.n_residual_blocks, norm=None if args.norm == "none" else config.norm,
                                       upsample=config.upsample, mask_background=args.composite,
                                       skip=args.skip)
    optimizer = keras.optimizers.Adam(config.lr, beta_1=config.beta_1)
    if args.scale == "median":
        def scale_to_unit_range(volume):  # noqa: F811  (the probe's alternative scaling)
            median = float(np.median(volume[volume > 0]))
            return (2.0 * np.clip(volume / (4.0 * median), 0.0, 1.0) - 1.0).astype(np.float32)
        import tfmedgan.inference.volumes as volumes
        volumes.scale_to_unit_range = scale_to_unit_range
    pairs = [(scale_to_unit_range(pad_or_crop_center(t1, shape)[0]), scale_to_unit_range(pad_or_crop_center(t2, shape)[0]))
             for t1, t2 in protocol.train_pairs]
    rng = np.random.default_rng(args.seed)

    @tf.function
    def step(a, b):
        with tf.GradientTape() as tape:
            translation = generator(a, training=True)
            if args.loss == "l2":  # cyclegan3d --supervised-loss l2
                weights = None if args.edge_weight == 1.0 else loss_functions.boundary_weights(a, args.edge_weight)
                loss = tf.reduce_mean(loss_functions.squared_error(translation, b, weights))
            elif args.edge_weight == 1.0:
                loss = tf.reduce_mean(loss_functions.l1(translation, b))
            else:  # cyclegan3d --edge-weight
                weights = loss_functions.boundary_weights(a, args.edge_weight)
                loss = tf.reduce_mean(loss_functions.weighted_l1(translation, b, weights))
        optimizer.apply_gradients(zip(tape.gradient(loss, generator.trainable_variables), generator.trainable_variables))
        return loss

    def batch():
        t1, t2 = pairs[rng.integers(len(pairs))]
        start = [rng.integers(0, size - c + 1) for size, c in zip(shape, crop)]
        window = tuple(slice(s, s + c) for s, c in zip(start, crop))
        return t1[window][None, ..., None], t2[window][None, ..., None]

    points = [args.budget_minutes * (index + 1) / args.points for index in range(args.points)]
    rows, steps, cpu_seconds, losses = [], 0, 0.0, []
    for minutes in points:
        while cpu_seconds < 60.0 * minutes:
            a, b = batch()
            started = time.process_time()
            losses.append(float(step(tf.constant(a), tf.constant(b))))
            cpu_seconds += time.process_time() - started
            steps += 1
        predictions = {path.name: translate_volume(generator, t1, shape, multiple, window=crop) for path, t1, _ in protocol.heldout}
        scores = protocol._average(predictions)
        row = {"steps": steps, "cpu_minutes": round(cpu_seconds / 60.0, 2),
               "train_loss_last50": round(float(np.mean(losses[-50:])), 4), **scores}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = args.work.parent / f"supervised_probe{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"model": "cyclegan3d --preset cpu generator, L1 on paired crops",
                               "options": {**overrides, "precision": args.precision, "norm": args.norm, "scale": args.scale,
                                                           "composite": args.composite, "skip": args.skip,
                                                           "edge_weight": args.edge_weight, "loss": args.loss}, "shape": list(shape),
                               "crop": list(crop), "points": rows, "baselines": protocol.baselines(args.work)},
                              indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
