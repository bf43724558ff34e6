"""A synthetic microCT pair of a fibre-reinforced composite (built-in sample data of seed 002).

The original 3D CycleGAN was trained on tomograms of T700 carbon-fibre composites imaged twice: a
*fast* acquisition (GigaFRoST, short exposure: noisy, coarser voxels) and a *slow* one (pco, long
exposure: clean, fine voxels). Those data are not public, so :func:`write_phantom_dataset` builds
a small look-alike:

* a **clean volume** at the fine resolution: many parallel fibres (cylinders along axis 0,
  radius ~3.5 fine voxels, packed at random without overlap), a minority of tilted fibres, a few
  spherical voids, in a matrix; intensities fibre 1.0, matrix 0.35, void 0.0, each voxel the
  average of 2x2x2 sub-samples (partial-volume edges);
* the **slow** volume = clean + light Gaussian noise (sigma ``slow_noise``);
* the **fast** volume = clean blurred with a Gaussian (sigma ``0.5 * super_resolution`` fine
  voxels, the detector/blur of a coarser scan), block-averaged by ``super_resolution`` on every axis
  (so it is ``super_resolution`` times smaller) + strong Gaussian noise (sigma ``fast_noise``).

Both are standardised (``(x - mean) / std``) and written in the seed-002 layout
(:func:`tfmedgan.data.hdf5.standardize_to_hdf5`): ``fast.h5`` + ``fast.json`` (domain A) and
``slow.h5`` + ``slow.json`` (domain B), each JSON with a ``train`` ROI (first 3/4 of axis 0) and a
``validate`` ROI (last 1/4). Fast voxel ``i`` covers slow voxels ``SR*i .. SR*i + SR - 1``, so an
enhanced fast volume can be compared with the slow one voxel by voxel.

Example::

    python -m tfmedgan.data.samples.phantom data/phantom --shape 128 256 256 --super-resolution 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfmedgan.errors import TfmedganError

FIBRE, MATRIX, VOID = 1.0, 0.35, 0.0


def _fibre_centres(rng: np.random.Generator, height: int, width: int, radius: float, fraction: float) -> np.ndarray:
    """Random non-overlapping fibre centres (2D) covering about ``fraction`` of the cross-section."""
    wanted = int(fraction * height * width / (math.pi * radius * radius))
    minimum = 2.0 * radius + 1.0
    centres: list[tuple[float, float]] = []
    for _ in range(wanted * 30):
        if len(centres) >= wanted:
            break
        candidate = rng.uniform([-radius, -radius], [height + radius, width + radius])
        if centres:
            distance = np.hypot(*(np.asarray(centres) - candidate).T)
            if distance.min() < minimum:
                continue
        centres.append((float(candidate[0]), float(candidate[1])))
    return np.asarray(centres, np.float64).reshape(-1, 2)


def fibre_composite(
    shape: Sequence[int],
    seed: int = 0,
    radius: float = 3.5,
    fibre_fraction: float = 0.45,
    tilted_fraction: float = 0.15,
    max_tilt_degrees: float = 12.0,
    voids: int = 6,
    supersample: int = 2,
) -> np.ndarray:
    """Clean fibre-composite volume (float32, values in [0, 1]) of ``shape`` (depth, height, width).

    Args:
        shape: Output shape; fibres run along axis 0.
        seed: Random seed (the same seed gives the same volume).
        radius: Fibre radius in output voxels.
        fibre_fraction: Approximate area fraction of the parallel fibres.
        tilted_fraction: Number of tilted fibres relative to the parallel ones.
        max_tilt_degrees: Largest tilt of a tilted fibre from axis 0.
        voids: Number of spherical voids (radius 2-4 voxels) in the matrix.
        supersample: Sub-samples per axis and voxel (partial-volume edges).

    Returns:
        The volume.
    """
    depth, height, width = (int(s) for s in shape)
    if min(depth, height, width) < 4:
        raise TfmedganError(f"phantom shape {tuple(shape)} must be at least 4 on every axis")
    rng = np.random.default_rng(seed)
    k = int(supersample)
    offsets = (np.arange(k) + 0.5) / k - 0.5
    # sub-sample coordinates of one z slice (fine grid), shape (H*k, W*k)
    ys = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")

    centres = _fibre_centres(rng, height, width, radius, fibre_fraction)
    # the 2D pattern of the parallel fibres is the same in every slice
    parallel = np.zeros(yy.shape, bool)
    for cy, cx in centres:
        y0, y1 = max(int((cy - radius - 1) * k), 0), min(int((cy + radius + 2) * k), yy.shape[0])
        x0, x1 = max(int((cx - radius - 1) * k), 0), min(int((cx + radius + 2) * k), yy.shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        block = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= radius * radius
        parallel[y0:y1, x0:x1] |= block

    n_tilted = max(1, int(round(tilted_fraction * len(centres))))
    tilted = []
    for _ in range(n_tilted):
        tilt = math.radians(rng.uniform(3.0, max_tilt_degrees))
        azimuth = rng.uniform(0, 2 * math.pi)
        direction = np.array([math.cos(tilt), math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth)])
        point = np.array([depth / 2.0, rng.uniform(0, height), rng.uniform(0, width)])
        tilted.append((point, direction, radius * rng.uniform(0.8, 1.1)))
    void_list = [
        (np.array([rng.uniform(0, depth), rng.uniform(0, height), rng.uniform(0, width)]), rng.uniform(2.0, 4.0))
        for _ in range(int(voids))
    ]

    volume = np.empty((depth, height, width), np.float32)
    for z in range(depth):
        slab = np.zeros((k,) + yy.shape, np.float32)
        for sub, dz in enumerate(offsets):
            zz = z + dz
            image = np.where(parallel, FIBRE, MATRIX).astype(np.float32)
            for point, direction, r in tilted:
                # centre of the fibre in this plane, and the in-plane distance scaled to 3D
                t = (zz - point[0]) / direction[0]
                cy, cx = point[1] + t * direction[1], point[2] + t * direction[2]
                reach = r / direction[0] + 1
                y0, y1 = max(int((cy - reach) * k), 0), min(int((cy + reach + 1) * k), yy.shape[0])
                x0, x1 = max(int((cx - reach) * k), 0), min(int((cx + reach + 1) * k), yy.shape[1])
                if y0 >= y1 or x0 >= x1:
                    continue
                vy, vx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
                along = vy * direction[1] + vx * direction[2]
                inside = vy * vy + vx * vx - along * along <= r * r
                image[y0:y1, x0:x1][inside] = FIBRE
            for centre, r in void_list:
                dzc = zz - centre[0]
                if abs(dzc) >= r:
                    continue
                rr = r * r - dzc * dzc
                y0, y1 = max(int((centre[1] - r) * k), 0), min(int((centre[1] + r + 1) * k), yy.shape[0])
                x0, x1 = max(int((centre[2] - r) * k), 0), min(int((centre[2] + r + 1) * k), yy.shape[1])
                if y0 >= y1 or x0 >= x1:
                    continue
                inside = (yy[y0:y1, x0:x1] - centre[1]) ** 2 + (xx[y0:y1, x0:x1] - centre[2]) ** 2 <= rr
                image[y0:y1, x0:x1][inside] = VOID
            slab[sub] = image
        volume[z] = slab.mean(axis=0).reshape(height, k, width, k).mean(axis=(1, 3))
    return volume


def block_downsample(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping ``factor``^3 blocks (every axis must be divisible by ``factor``)."""
    factor = int(factor)
    if factor == 1:
        return np.asarray(volume, np.float32)
    d, h, w = volume.shape
    if d % factor or h % factor or w % factor:
        raise TfmedganError(f"volume shape {volume.shape} is not divisible by {factor}")
    return volume.reshape(d // factor, factor, h // factor, factor, w // factor, factor).mean(axis=(1, 3, 5)).astype(np.float32)


def microct_pair(
    shape: Sequence[int] = (64, 128, 128),
    super_resolution: int = 2,
    seed: int = 0,
    fast_noise: float = 0.12,
    slow_noise: float = 0.03,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (fast, slow, clean) volumes of the phantom, un-standardised.

    Args:
        shape: Shape of the slow (fine) volume; every side divisible by ``super_resolution``.
        super_resolution: Fine / coarse voxel size ratio (1, 2 or 4).
        seed: Random seed (structure and noise).
        fast_noise, slow_noise: Gaussian noise sigma (fibre - void contrast is 1).

    Returns:
        ``(fast, slow, clean)``; ``fast`` is ``shape / super_resolution``.
    """
    from scipy.ndimage import gaussian_filter

    shape = tuple(int(s) for s in shape)
    sr = int(super_resolution)
    if len(shape) != 3 or any(s % sr for s in shape):
        raise TfmedganError(f"phantom shape {shape} must be 3 sides divisible by the super-resolution {sr}")
    clean = fibre_composite(shape, seed=seed)
    rng = np.random.default_rng([seed, 1])
    slow = clean + rng.normal(0.0, slow_noise, clean.shape).astype(np.float32)
    blurred = gaussian_filter(clean, sigma=0.5 * sr, mode="reflect") if sr > 1 else clean
    fast = block_downsample(blurred, sr)
    fast = fast + rng.normal(0.0, fast_noise, fast.shape).astype(np.float32)
    return fast.astype(np.float32), slow.astype(np.float32), clean


def write_phantom_dataset(
    out_dir: str | Path,
    shape: Sequence[int] = (64, 128, 128),
    super_resolution: int = 2,
    seed: int = 0,
    validate_fraction: float = 0.25,
    fast_noise: float = 0.12,
    slow_noise: float = 0.03,
) -> dict[str, Path]:
    """Write the phantom pair in the seed-002 HDF5 + JSON layout.

    Files in ``out_dir``: ``fast.h5``/``fast.json`` (domain A), ``slow.h5``/``slow.json`` (domain B),
    ``clean.h5`` (noise-free fine volume, standardised with the slow volume's mean/std, for
    reference) and ``phantom.json`` (the parameters). Existing files with the same parameters are
    reused.

    Returns:
        ``{"fast": ..., "slow": ..., "fast_json": ..., "slow_json": ..., "clean": ...}``.
    """
    import h5py

    from tfmedgan.data.hdf5 import standardize_to_hdf5

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"shape": [int(s) for s in shape], "super_resolution": int(super_resolution), "seed": int(seed),
              "validate_fraction": float(validate_fraction), "fast_noise": float(fast_noise), "slow_noise": float(slow_noise)}
    paths = {"fast": out / "fast.h5", "slow": out / "slow.h5", "fast_json": out / "fast.json",
             "slow_json": out / "slow.json", "clean": out / "clean.h5"}
    record = out / "phantom.json"
    if record.is_file() and all(p.is_file() for p in paths.values()):
        try:
            if json.loads(record.read_text()) == params:
                return paths
        except json.JSONDecodeError:
            pass
    fast, slow, clean = microct_pair(shape, super_resolution, seed, fast_noise, slow_noise)
    standardize_to_hdf5(fast, paths["fast"], paths["fast_json"], validate_fraction=validate_fraction)
    mean, std = standardize_to_hdf5(slow, paths["slow"], paths["slow_json"], validate_fraction=validate_fraction)
    with h5py.File(paths["clean"], "w") as handle:
        handle.create_dataset("data", data=((clean - mean) / std).astype(np.float32))
    record.write_text(json.dumps(params, indent=2) + "\n")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic fibre-composite microCT pair (seed-002 sample data).")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], metavar=("D", "H", "W"),
                        help="shape of the slow (high-resolution) volume (default: 64 128 128)")
    parser.add_argument("--super-resolution", type=int, default=2, choices=(1, 2, 4), help="default: 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-noise", type=float, default=0.12)
    parser.add_argument("--slow-noise", type=float, default=0.03)
    args = parser.parse_args(argv)
    try:
        paths = write_phantom_dataset(args.out_dir, args.shape, args.super_resolution, args.seed,
                                      fast_noise=args.fast_noise, slow_noise=args.slow_noise)
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
