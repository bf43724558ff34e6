#!/usr/bin/env python
"""Seed-002 benchmarks: sliding-window enhancement speed, and enhancement quality on the phantom.

``stitching``: enhance a 256^3 input with UNetSim3dSRx2 (num_filters 32, the original network,
random N(0, 0.02) weights: speed does not depend on the values) with windows of the original 2x
patch 64x128x128 (stride patch - 24, border 20). In one run it measures (a) the whole
``sliding_window_inference`` (window extraction, network calls, blending, normalisation), (b) the
time spent inside the network calls of (a), and (c) a bare loop of the network over the same
windows. Overhead = (a - c) / c (and (a - b) / b).

``quality``: write the phantom pair (slow 192x128x128, SR 2), train the 2x CycleGAN on it for a
fixed wall-clock budget on CPU, enhance the validation part of the fast volume (last quarter of
axis 0) and score it against the slow volume (PSNR, 3D SSIM, data range of the slow region), next
to cubic upsampling of the fast volume (raw, and with a least-squares intensity match to the slow
volume, which the cubic baseline cannot know but gets for free here).

Usage::

    python bench/bench_cyclegan_sr.py stitching [--size 256] [--patch 64 128 128] [--blend mean]
    python bench/bench_cyclegan_sr.py quality [--minutes 10] [--preset faithful|cpu-demo]

Results are merged into ``bench/results/cyclegan_sr.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cyclegan_sr.json"


def _save(key: str, value: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data[key] = value
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def stitching(size: int, patch: list[int], blend: str, batch: int, precision: str) -> dict:
    import keras
    import tensorflow as tf

    from tfmedgan.inference.sliding_window import _Plan, sliding_window_inference
    from tfmedgan.networks.unet3d import build_unet

    keras.mixed_precision.set_global_policy(precision)
    model = build_unet("UNetSim3dSRx2")
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    volume = np.random.default_rng(0).standard_normal((size, size, size)).astype(np.float32)
    forward(np.zeros((batch, *patch, 1), np.float32))  # trace
    inside = []

    def predict(x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = np.asarray(forward(x), np.float32)
        inside.append(time.perf_counter() - start)
        return out

    start = time.perf_counter()
    output = sliding_window_inference(volume, predict, patch, scale=2, blend=blend, batch_size=batch)
    total = time.perf_counter() - start
    plan = _Plan(volume.shape, patch, 2, None, None, blend)
    windows = plan.windows()
    raw_times = []
    for first in range(0, len(windows), batch):
        chunk = windows[first : first + batch]
        x = np.stack([volume[tuple(slice(plan.starts[a][i], plan.starts[a][i] + patch[a]) for a, i in enumerate(w))]
                      for w in chunk])[..., None]
        begin = time.perf_counter()
        np.asarray(forward(x), np.float32)
        raw_times.append(time.perf_counter() - begin)
    raw = sum(raw_times)
    result = {
        "input_shape": [size] * 3, "output_shape": list(output.shape), "patch": patch, "blend": blend,
        "batch": batch, "precision": precision, "windows": len(windows),
        "stride": list(plan.stride), "border": plan.borders,
        "seconds_total": round(total, 2), "seconds_network_inside": round(sum(inside), 2),
        "seconds_network_bare_loop": round(raw, 2),
        "input_voxels_per_second": round(size**3 / total),
        "output_voxels_per_second": round(int(np.prod(output.shape)) / total),
        "overhead_vs_bare_network": round((total - raw) / raw, 4),
        "overhead_vs_network_inside": round((total - sum(inside)) / sum(inside), 4),
        "network_voxels_per_window_per_second": round(len(windows) * int(np.prod(patch)) / raw),
        "cpu_count": os.cpu_count(),
    }
    return result


#: Training settings of the ``quality`` bench on top of the common ones. ``faithful``: the original's
#: defaults (lr_g 2e-4, 150 kickstart steps, G weight 10, eval-mode BatchNorm). ``cpu-demo``: settings
#: that learn within minutes on a CPU (see docs/cyclegan_sr.md): the original's 4x-preset lr_g 1e-3,
#: kickstart for the whole run, adversarial generator weight 2 instead of 10 (before the rescaling
#: to 200), batch-statistics BatchNorm in the discriminators.
PRESETS = {
    "faithful": {},
    "cpu-demo": {"lr_g": 1e-3, "kickstart_steps": 1_000_000, "use_batch_statistics": True,
                 "losses": {"G_A": [["bce", 2.0]], "G_B": [["bce", 2.0]]}},
}


def quality(minutes: float, work: Path, preset: str = "faithful") -> dict:
    import h5py
    from scipy.ndimage import zoom

    from tfmedgan import metrics
    from tfmedgan.models.cyclegan_sr import CycleGANSRConfig
    from tfmedgan.data.samples import write_phantom_dataset
    from tfmedgan.inference.tomogram import enhance_volume, load_enhancer
    from tfmedgan.models.cyclegan_sr import train

    paths = write_phantom_dataset(work / "phantom", shape=(192, 128, 128), super_resolution=2, seed=0)
    settings = dict(
        data_a=str(paths["fast_json"]), data_b=str(paths["slow_json"]), output_dir=str(work), name="run",
        net_a="UNetSim3dSRx2", net_b="UNetSim3dSRd2", super_resolution=2, patch=[24, 32, 32], num_filters=8,
        d_filters=16, batch=4, steps_per_epoch=100, validate_every=5, validate_batches=2, checkpoint_minutes=0,
        kickstart=True,
    )
    settings.update(PRESETS[preset])
    started = time.monotonic()
    steps = 0
    run_dir = None
    while time.monotonic() - started < 60 * minutes:
        steps += 100
        config = CycleGANSRConfig(**settings, num_iters=steps)
        train(config, run_dir=run_dir, progress=False)
        run_dir = str(work / "run")
    train_seconds = time.monotonic() - started
    with h5py.File(paths["fast"]) as handle:
        fast = handle["data"][()]
    with h5py.File(paths["slow"]) as handle:
        slow = handle["data"][()]
    fast_val, slow_val = fast[fast.shape[0] * 3 // 4 :], slow[slow.shape[0] * 3 // 4 :]
    model, info = load_enhancer(run_dir)
    data_range = float(slow_val.max() - slow_val.min())
    result = {"preset": preset, "train_steps": steps, "train_seconds": round(train_seconds), "settings": settings,
              "region": {"fast": list(fast_val.shape), "slow": list(slow_val.shape)}, "data_range": data_range}
    candidates = {}
    for blend in ("gaussian", "mean"):
        candidates[f"cyclegan_{blend}"] = enhance_volume(model, fast_val, info["patch"], 2, blend=blend, batch_size=4,
                                                         stride=[12, 16, 16], standardize=False)
    cubic = zoom(fast_val, 2, order=3, grid_mode=True, mode="grid-mirror").astype(np.float32)
    candidates["cubic"] = cubic
    slope, intercept = np.polyfit(cubic.ravel(), slow_val.ravel(), 1)
    candidates["cubic_intensity_matched"] = (slope * cubic + intercept).astype(np.float32)
    gan = candidates["cyclegan_gaussian"]
    slope, intercept = np.polyfit(gan.ravel(), slow_val.ravel(), 1)
    candidates["cyclegan_gaussian_intensity_matched"] = (slope * gan + intercept).astype(np.float32)
    for name, volume in candidates.items():
        result[name] = {"psnr": round(metrics.psnr(slow_val, volume, data_range=data_range), 3),
                        "ssim": round(metrics.ssim(volume, slow_val, data_range=data_range), 4)}
        print(name, result[name], flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("stitching", "quality"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--blend", choices=("mean", "gaussian"), default="gaussian")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="faithful",
                        help="quality training settings (default: faithful; cpu-demo learns within minutes)")
    parser.add_argument("--work", help="work folder for the quality run (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.what == "stitching":
        result = stitching(args.size, args.patch, args.blend, args.batch, args.precision)
        _save(f"stitching_{args.blend}_{args.precision}", result)
    else:
        work = Path(args.work or tempfile.mkdtemp(prefix="bench-cyclegan-sr-"))
        result = quality(args.minutes, work, args.preset)
        _save("quality" if args.preset == "faithful" else f"quality_{args.preset.replace('-', '_')}", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
