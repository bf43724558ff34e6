"""Evaluation of trained 2D GANs as the seed-003 author did: nearest training image by SSIM."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tfmedgan.engine.config import read_config
from tfmedgan.data import png
from tfmedgan.engine.rundir import save_figure_atomic
from tfmedgan.errors import TfmedganError
from tfmedgan.inference.generate import generate_images, load_network
from tfmedgan import metrics


def _chunks(files: Sequence[Path], resolution: int, channels: int, bits: int, size: int = 512) -> Iterator[np.ndarray]:
    """Training images [n, H, W] in [-1, 1] (first channel), streamed in chunks from disk."""
    for start in range(0, len(files), size):
        yield png.load_images(files[start : start + size], resolution, channels, bits)[..., 0]


def best_match_report(
    run_dir: str | Path,
    data_dirs: Sequence[str] | None = None,
    n: int = 1,
    seed: int = 0,
    output: str | Path | None = None,
) -> list[dict]:
    """Score ``n`` generated images against every training image.

    For each generated image: max SSIM over the training set (skimage defaults, data_range = fake
    max - fake min as in the seed) and the index and file of the best match. Writes a CSV and, per
    image, a figure ``ssim_match_<i>.png`` of the fake next to its closest training image.

    Args:
        run_dir: trained run directory (config.json and the exported generator).
        data_dirs: training folders; default those stored in the run's config.
        n: number of generated images to score.
        seed: seed of the latents.
        output: where everything goes. A CSV file path puts the figures beside it; an existing
            folder or a name without a suffix is a folder receiving ``ssim.csv`` and the figures.
            Default: the run directory.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir / "config.json")
    data_dirs = list(data_dirs or config.get("data_dirs") or ([config["data_dir"]] if config.get("data_dir") else []))
    if not data_dirs:
        raise TfmedganError("no training folders given and none stored in the run's config")
    csv_path = _output_csv(run_dir, output)
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TfmedganError(f"cannot create the output folder {csv_path.parent}: {error.strerror}") from None
    files = png.list_images(data_dirs)
    bits = png.check_images(files)[2]
    generator = load_network(run_dir, "generator")
    resolution, channels = generator.outputs[0].shape[1], generator.outputs[0].shape[-1]
    fakes = generate_images(generator, n, seed=seed)[..., 0]
    rows = []
    for index, fake in enumerate(fakes):
        best, best_index, _ = metrics.best_match(fake, _chunks(files, resolution, channels, bits))
        rows.append({"generated": index, "max_ssim": float(best), "best_index": int(best_index),
                     "best_file": str(files[best_index])})
        _figure(fake, png.load_images([files[best_index]], resolution, channels, bits)[0, ..., 0], best, best_index,
                csv_path.parent / f"ssim_match_{index:03d}.png")
    with csv_path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _output_csv(run_dir: Path, output: str | Path | None) -> Path:
    """The CSV path for ``output`` (a CSV file, or a folder for ssim.csv); figures go beside it."""
    if not output:
        return run_dir / "ssim.csv"
    output = Path(output)
    if output.is_dir() or (not output.exists() and not output.suffix):
        return output / "ssim.csv"
    if output.exists() and not output.is_file():
        raise TfmedganError(f"--output {output} is neither a file nor a folder")
    return output


def _figure(fake: np.ndarray, real: np.ndarray, score: float, index: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(fake, cmap="gray")
    axes[0].set_title(f"Generated image with max SSIM: {score:.4f}")
    axes[1].imshow(real, cmap="gray")
    axes[1].set_title(f"Closest training image {index}")
    for axis in axes:
        axis.axis("off")
    save_figure_atomic(figure, path)
    plt.close(figure)
