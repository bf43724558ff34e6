"""Shared parts of the 2D GANs trained on folders of PNG/JPEG slices (DCGAN, StyleGAN2): the
streaming slice data, built-in sample slices, the validation by best-match SSIM, and the
``dcgan-ssim`` evaluation command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfmedgan.engine.recipe import Recipe
from tfmedgan.errors import TfmedganError
from tfmedgan.models.spec import Command

#: Generated images scored per validation (best-match SSIM against the training slices).
VALIDATION_IMAGES = 16
#: Training slices searched per validation (an evenly spaced subset, for speed).
VALIDATION_REFERENCES = 256


class SliceRecipe(Recipe):
    """A recipe trained on folders of 2D PNG/JPEG slices.

    Subclasses call :meth:`plan_slices` in ``prepare_data`` and inherit the streaming
    :meth:`dataset`, the validation (best-match SSIM of generated images against the training
    slices; higher is better) and the generated images at the end of training.
    """

    validation_metric = ("best_match_ssim_mean", "max")
    best_networks = ("generator",)

    def plan_slices(self, folders, num_replicas: int, drop_partial: bool = False) -> None:
        """List and check the images and decide the batches of an epoch.

        The last partial batch is dropped when ``drop_partial`` (a network that cannot take it) or
        with several replicas (each replica then gets an equal share).
        """
        from tfmedgan.data import png

        self.files = png.list_images(folders)
        self.bits = png.check_images(self.files)[2]
        count, batch = len(self.files), self.config.batch
        if num_replicas > 1 and batch % num_replicas:
            raise TfmedganError(f"--batch {batch} is not divisible by the {num_replicas} replicas")
        self.drop_remainder = num_replicas > 1 or (drop_partial and count % batch > 0)
        if self.drop_remainder and count < batch:
            raise TfmedganError(f"{count} images are fewer than one batch of {batch}")
        self.steps_per_epoch = count // batch if self.drop_remainder else -(-count // batch)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        from tfmedgan.data import png

        config = self.config
        return png.image_dataset(
            self.files, config.resolution, config.channels, config.batch, config.seed, epoch,
            drop_remainder=self.drop_remainder, bits=self.bits, skip_batches=skip_batches,
        )

    def generate(self, n: int, seed: int) -> np.ndarray:
        from tfmedgan.inference.generate import generate_images

        return generate_images(self.networks["generator"], n, seed=seed)

    def validate(self, epoch: int, step: int) -> dict[str, float]:
        """Best-match SSIM (skimage defaults) of generated images against a fixed subset of the
        training slices; diversity = mean pairwise SSIM among the generated images."""
        from tfmedgan.data import png
        from tfmedgan.metrics import best_match, ssim_many

        if not hasattr(self, "_validation_references"):
            chosen = np.linspace(0, len(self.files) - 1, min(VALIDATION_REFERENCES, len(self.files))).round().astype(int)
            self._validation_references = png.load_images([self.files[i] for i in chosen], self.config.resolution,
                                                         self.config.channels, self.bits)[..., 0].astype(np.float64)
        fakes = self.generate(VALIDATION_IMAGES, seed=self.config.seed + 1)[..., 0].astype(np.float64)
        scores = [best_match(fake, self._validation_references, data_range=float(fake.max() - fake.min()) or 1.0)[0]
                  for fake in fakes]
        pairwise = [float(np.mean(ssim_many(fakes[i], np.delete(fakes, i, axis=0),
                                            data_range=float(fakes[i].max() - fakes[i].min()) or 1.0)))
                    for i in range(len(fakes))]
        return {"best_match_ssim_mean": float(np.mean(scores)), "best_match_ssim_max": float(np.max(scores)),
                "pairwise_ssim": float(np.mean(pairwise))}

    def on_train_end(self, run_dir) -> None:
        from tfmedgan.engine.trainer import save_generated

        save_generated(self.sample_images(), Path(run_dir.path) / "generated")


def sample_slices(config) -> None:
    """``--sample-data``: the built-in MNI152-derived brain slices (cached after the first run)."""
    from tfmedgan.data.samples import sample_slices_dir

    print("preparing the built-in sample slices (cached after the first run) ...", file=sys.stderr)
    folder = str(sample_slices_dir(resolution=max(config.resolution, 64)))
    if hasattr(config, "data_dirs"):
        config.data_dirs = [folder]
    else:
        config.data_dir = folder


def _ssim_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a trained DCGAN or StyleGAN2 run directory")
    parser.add_argument("data_dirs", nargs="*", help="training folders (default: those in the run's config)")
    parser.add_argument("--n", type=int, default=1, help="number of generated images to score (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated latents (default: 0)")
    parser.add_argument("--output", help="CSV file, or a folder (then FOLDER/ssim.csv); the ssim_match_*.png figures "
                        "go beside it (default: RUN_DIR)")


def _run_ssim(args) -> int:
    from tfmedgan.inference.evaluate import best_match_report

    rows = best_match_report(args.run_dir, args.data_dirs or None, n=args.n, seed=args.seed, output=args.output)
    for row in rows:
        print(f"generated {row['generated']}: max SSIM {row['max_ssim']:.4f}, closest training image "
              f"{row['best_index']} ({row['best_file']})")
    return 0


SSIM_COMMAND = Command(
    name="dcgan-ssim",
    help="2D GANs: best SSIM match of generated images in the training set (the DCGAN seed's evaluation)",
    description="For each generated image, the maximum SSIM over every training image (skimage defaults: "
    "7x7 uniform window, data_range = fake max - fake min) and the index of that image.",
    add_arguments=_ssim_arguments,
    run=_run_ssim,
)

__all__: list[Any] = ["SliceRecipe", "sample_slices", "SSIM_COMMAND"]
