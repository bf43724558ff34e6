"""Benchmark: seed-003 SSIM search (one fake against every training slice), ours vs a skimage loop.

The seed scores one generated 256x256 image against all 11,328 OASIS slices with
``skimage.metrics.structural_similarity`` in a Python loop. This script builds a stack of the
same size, times :func:`tfmedgan.metrics.best_match` on it, times the skimage loop on a subset and
extrapolates, and checks that both give the same scores on that subset.

Images: 8-bit brain slices from :func:`tfmedgan.data.samples.make_png_slices` (a few unique ones,
repeated with small shifts and flips), scaled to [-1, 1] float32 as the seed does; if that module
cannot be imported, random smooth images are used instead.

Usage::

    python bench/bench_ssim.py                      # full size, writes bench/results/ssim.json
    python bench/bench_ssim.py --n-images 2000 --loop-subset 100
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

import numpy as np

try:
    import tfmedgan  # noqa: F401
except ImportError:  # run as `python bench/bench_ssim.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfmedgan import metrics  # noqa: E402

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "ssim.json"
GOAL_SECONDS = 10.0
GOAL_SPEEDUP = 20.0


def _unique_images(count: int, size: int, seed: int) -> tuple[np.ndarray, str]:
    """``count`` distinct float32 images in [-1, 1] and a description of their source."""
    try:
        from PIL import Image

        from tfmedgan.data.samples import make_png_slices

        with tempfile.TemporaryDirectory(prefix="bench_ssim_") as folder:
            make_png_slices(folder, n_images=count, resolution=size, seed=seed)
            files = sorted(Path(folder).glob("*.png"))
            pixels = np.stack([np.array(Image.open(path), dtype="float32") for path in files])
        description = "tfmedgan.data.samples.make_png_slices (scaled to [-1, 1] like the seed)"
        return (pixels - 127.5) / 127.5, description
    except Exception as error:  # the sample module may be missing or still being written
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((count, size, size)).astype(np.float32)
        smooth = ndimage.gaussian_filter(noise, (0, 3, 3))
        smooth /= np.abs(smooth).max(axis=(1, 2), keepdims=True)
        return smooth, f"random smooth images (make_png_slices unavailable: {type(error).__name__})"


def build_stack(
    n_images: int, size: int, unique: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """A float32 stack ``[n_images, size, size]`` and one fake image ``[size, size]``.

    The stack repeats ``unique`` base images, each copy rolled by a few pixels and possibly
    flipped, so that neighbouring scores differ. The fake mixes two base images with noise (an
    unbounded "generator output"), so its data range is not exactly 2.
    """
    base, source = _unique_images(unique + 2, size, seed)
    stack = np.empty((n_images, size, size), np.float32)
    for index in range(n_images):
        image = base[index % unique]
        copy = index // unique
        shift_rows, shift_cols = copy % 7 - 3, (copy // 7) % 7 - 3
        image = np.roll(image, (shift_rows, shift_cols), axis=(0, 1))
        stack[index] = image[:, ::-1] if (copy // 49) % 2 else image
    rng = np.random.default_rng(seed + 1)
    fake = 0.8 * base[unique] + 0.2 * base[unique + 1] + 0.05 * rng.standard_normal((size, size))
    return stack, fake.astype(np.float32), source


def run(n_images: int = 11328, size: int = 256, loop_subset: int = 200) -> dict:
    """Time ``metrics.best_match`` against the seed's skimage loop.

    Args:
        n_images: Stack size (the seed's OASIS train+test+validate total is 11,328).
        size: Image side in pixels (256 in the seed).
        loop_subset: Number of images (evenly spread over the stack) scored with the skimage loop;
            its time is extrapolated to ``n_images`` and its scores are compared with ours. Half
            of it runs before and half after the timed search (shared machines change load).

    Returns:
        A dict of timings, the speedup, the agreement on the subset and the machine context.
    """
    from skimage.metrics import structural_similarity

    started = time.perf_counter()
    stack, fake, source = build_stack(n_images, size)
    build_seconds = time.perf_counter() - started
    data_range = float(fake.max() - fake.min())  # the seed's choice

    metrics.best_match(fake, stack[: min(64, n_images)])  # warm-up (thread pool, buffers)

    # The skimage subset is timed in two halves, before and after ours, so that a change in the
    # load of a shared machine affects both sides alike.
    subset = np.unique(np.linspace(0, n_images - 1, min(loop_subset, n_images)).round().astype(int))
    halves = (subset[::2], subset[1::2])
    loop_seconds = 0.0
    loop_scores: dict[int, float] = {}

    def skimage_loop(indices: np.ndarray) -> float:
        started = time.perf_counter()
        for index in indices:
            loop_scores[int(index)] = structural_similarity(stack[index], fake, data_range=data_range)
        return time.perf_counter() - started

    loop_seconds += skimage_loop(halves[0])

    started = time.perf_counter()
    best_ssim, best_index, scores = metrics.best_match(fake, stack)
    ours_seconds = time.perf_counter() - started

    loop_seconds += skimage_loop(halves[1])

    started = time.perf_counter()
    metrics.best_match(fake, stack, workers=1)
    ours_one_thread_seconds = time.perf_counter() - started

    chunks = (stack[start : start + 512] for start in range(0, n_images, 512))
    started = time.perf_counter()
    streamed = metrics.best_match(fake, chunks)
    ours_streamed_seconds = time.perf_counter() - started

    loop_values = np.array([loop_scores[int(index)] for index in subset])
    loop_per_image = loop_seconds / len(subset)
    loop_extrapolated = loop_per_image * n_images
    difference = float(np.max(np.abs(loop_values - scores[subset])))

    return {
        "n_images": n_images,
        "size": size,
        "dtype": str(stack.dtype),
        "stack_gigabytes": stack.nbytes / 1e9,
        "image_source": source,
        "build_stack_seconds": build_seconds,
        "data_range": data_range,
        "best_ssim": best_ssim,
        "best_index": best_index,
        "ours_seconds": ours_seconds,
        "ours_one_thread_seconds": ours_one_thread_seconds,
        "ours_streamed_chunks_of_512_seconds": ours_streamed_seconds,
        "ours_microseconds_per_image": ours_seconds / n_images * 1e6,
        "streamed_equals_array": bool(streamed[1] == best_index and np.array_equal(streamed[2], scores)),
        "skimage_loop_subset": int(len(subset)),
        "skimage_loop_subset_seconds": loop_seconds,
        "skimage_microseconds_per_image": loop_per_image * 1e6,
        "skimage_loop_extrapolated_seconds": loop_extrapolated,
        "speedup": loop_extrapolated / ours_seconds,
        "max_abs_difference_on_subset": difference,
        "scores_match_1e-4": difference <= 1e-4,
        "goal_under_10_s": ours_seconds < GOAL_SECONDS,
        "goal_speedup_20x": loop_extrapolated / ours_seconds >= GOAL_SPEEDUP,
        "threads": metrics._default_workers(),
        "load_average_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _print_table(result: dict) -> None:
    n_images = result["n_images"]
    rows = [
        (f"tfmedgan best_match ({result['threads']} threads)", result["ours_seconds"], "measured"),
        ("tfmedgan best_match (1 thread)", result["ours_one_thread_seconds"], "measured"),
        ("tfmedgan best_match (chunks of 512)", result["ours_streamed_chunks_of_512_seconds"], "measured"),
        (
            "skimage loop (seed)",
            result["skimage_loop_extrapolated_seconds"],
            f"extrapolated from {result['skimage_loop_subset']} images",
        ),
    ]
    size = result["size"]
    print(f"SSIM search: 1 fake vs {n_images} images of {size}x{size} ({result['dtype']})")
    print(f"images: {result['image_source']}")
    print(f"{'method':42s} {'seconds':>9s} {'us/image':>9s}  note")
    for name, seconds, note in rows:
        print(f"{name:42s} {seconds:9.2f} {seconds / n_images * 1e6:9.1f}  {note}")
    print(
        f"speedup {result['speedup']:.1f}x "
        f"(goal >= {GOAL_SPEEDUP:.0f}x: {'yes' if result['goal_speedup_20x'] else 'no'}); "
        f"full search under {GOAL_SECONDS:.0f} s: {'yes' if result['goal_under_10_s'] else 'no'}"
    )
    print(
        f"max |ours - skimage| on the subset: {result['max_abs_difference_on_subset']:.2e} "
        f"(<= 1e-4: {'yes' if result['scores_match_1e-4'] else 'no'}); "
        f"best SSIM {result['best_ssim']:.4f} at index {result['best_index']}; "
        f"load average {result['load_average_1min_at_end']}"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=11328)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--loop-subset", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    arguments = parser.parse_args(argv)
    result = run(arguments.n_images, arguments.size, arguments.loop_subset)
    _print_table(result)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {arguments.output}")
    return result


if __name__ == "__main__":
    main()
