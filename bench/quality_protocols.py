"""Evaluation protocols of ``bench/quality.py``: data, training through the CLI, metrics, baselines.

Every model is trained by ``python run.py MODEL ... --max-steps N`` in a child process and
continued with ``--resume RUN --max-steps M``; its CPU time is the user + system time of those
children (``resource.getrusage(RUSAGE_CHILDREN)``), so it counts both cores and is not inflated by
other jobs on a shared machine. It includes each segment's process start-up, tracing,
checkpointing and sample grids. Evaluation runs in separate children (``generate_images/generate.py``)
and in this process, and is not counted.

Protocols (one class per task, all evaluated on built-in data that was never trained on):

* :class:`SliceGANProtocol` (dcgan, stylegan2 at 64 px): 64 raw (unclipped) fakes from fixed
  latents of the exported generator (:func:`generate_raw`); best-match SSIM of each fake against the training set (skimage defaults,
  data_range = fake max - fake min, as the seed-003 author); diversity = mean pairwise SSIM of the
  fakes next to that of held-out real slices; intensity-histogram and radial power-spectrum
  distances of the fakes to held-out real slices (seed 1). Baselines: the same numbers for the
  held-out real slices (what a generator of new, realistic slices scores).
* :class:`TranslationProtocol` (cyclegan3d, T1w -> T2w at 2 mm): subjects from another seed, plus
  one of them zero-padded to at least 1.15x the largest training shape on every axis. Inside the
  brain mask (T1 > 0 and T2 > 0) the truth is min-max scaled to [0, 1]; every prediction is mapped
  onto it by a least-squares linear fit inside the mask; MAE, PSNR (data range 1) and SSIM
  (skimage defaults, data range 1, averaged over the mask; both volumes zero outside) are averaged
  over the held-out subjects. Baselines: the T1 histogram-matched to the subject's T2 inside the
  mask (skimage ``match_histograms``) and a 256-bin intensity look-up table fitted on the training
  pairs. Two references that are not methods: the table fitted on the held-out pairs themselves
  (the ceiling of any voxel-wise mapping) and the held-out T2w before its bias field and noise
  (``make_paired_subjects(noise_free=True)``: the ceiling of any model).
* :class:`SuperResolutionProtocol` (cyclegan-sr, 2x on the fibre phantom): a phantom of another
  seed, enhanced whole by ``generate.py``; PSNR (data range of the truth) and SSIM against the
  slow (fine) volume, each prediction mapped by a global least-squares linear fit (raw numbers are
  kept in the JSON). Baselines: nearest, linear and cubic up-sampling (``scipy.ndimage.zoom``
  orders 0/1/3, grid-aligned).
* :class:`SynthesisProtocol` (pix2pix3d T2 + FLAIR -> T1, the BraTS-layout sample cases at 4 mm,
  crop 40 x 48 x 40, original network sizes, mixed_bfloat16): trained on domain1_train ("no
  adaptation", (a)) or on domain2_train ("supervised on the target", (c), the upper bound); always
  scored on domain2_test by ``run.py pix2pix3d-test`` (SSIM / PSNR / MAE in the brain mask, on
  min-max scaled volumes, no fit). Baselines: a 32 x 32-bin (T2, FLAIR) -> T1 look-up table fitted
  on domain1_train and one fitted on domain2_train.
* :class:`AdaptationProtocol` (uda, (b)): adapts the final generator of this bench's pix2pix3d run
  with a vae2d trained on domain1 T1 (64 px slices; its CPU time is not in the budget); the
  pretrained generator's own score is its "(a) no adaptation" baseline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "run.py"
GENERATE_PY = ROOT / "generate_images" / "generate.py"


# -- child processes ------------------------------------------------------------------------------
def children_cpu_seconds() -> float:
    """User + system CPU seconds of all terminated, waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(arguments: Sequence[str], log: Path) -> tuple[float, float]:
    """Run ``python ARGUMENTS`` from the repository root; returns (CPU seconds, wall seconds).

    Output goes to ``log``; a failure raises RuntimeError with the log's last lines.
    """
    command = [sys.executable, *map(str, arguments)]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    cpu_before, wall_before = children_cpu_seconds(), time.monotonic()
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        completed = subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, env=environment)
    cpu, wall = children_cpu_seconds() - cpu_before, time.monotonic() - wall_before
    if completed.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"command failed ({completed.returncode}): {' '.join(command)}\n{tail}")
    return cpu, wall


# -- shared metric helpers -------------------------------------------------------------------------
def linear_fit(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``a * prediction + b`` with (a, b) minimising the squared error to ``truth`` (inside ``mask``)."""
    x = prediction[mask] if mask is not None else prediction.ravel()
    y = truth[mask] if mask is not None else truth.ravel()
    x, y = x.astype(np.float64), y.astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    return (slope * prediction.astype(np.float64) + intercept).astype(np.float32)


def _round(value: float, digits: int = 4) -> float:
    return float(round(float(value), digits))


# -- protocols -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Protocol:
    """One model on one task: data preparation, training arguments, evaluation and baselines.

    Attributes:
        name: the bench's name of the model (variant), e.g. ``dcgan`` or ``dcgan-demo``.
        model: the CLI sub-command.
        extra: options added to the training command (a preset).
        cpu_seconds_per_step: first guess of the training cost, refined after every segment.
        main_metric: the metric of the table's headline and of the figure's first panel.
    """

    name: str
    model: str
    extra: tuple[str, ...] = ()
    cpu_seconds_per_step: float = 1.0
    main_metric: str = ""
    goals: dict[str, float] = dataclasses.field(default_factory=dict)
    quick: bool = False

    def prepare(self, work: Path) -> None:
        raise NotImplementedError

    def train_arguments(self, work: Path, run_name: str) -> list[str]:
        raise NotImplementedError

    def evaluate(self, run_dir: Path, work: Path, tag: str) -> dict[str, float]:
        raise NotImplementedError

    def baselines(self, work: Path) -> dict[str, dict[str, float]]:
        raise NotImplementedError

    def figure_metrics(self) -> list[str]:
        return [self.main_metric]

    def goal_lines(self, baselines: dict[str, dict[str, float]]) -> dict[str, Any]:
        """The issue's goals as metric -> value (a dotted line) or (low, high) (a band)."""
        return dict(self.goals)


def _load_png_stack(files: Sequence[Path]) -> np.ndarray:
    """8-bit grayscale PNGs -> [N, H, W] float32 in [-1, 1] (as the training pipeline scales them)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(path).convert("L"), np.float32) / 127.5 - 1.0 for path in files])


def generate_raw(run_dir: Path, n: int, seed: int) -> np.ndarray:
    """``n`` raw (unclipped) outputs [n, H, W] of a run's exported ``models/generator.keras``.

    The latents are those of ``generate.py --seed SEED`` and ``run.py dcgan-ssim --seed SEED``
    (``tf.random.stateless_normal((n, latent), seed=(SEED, 11))``). Raw outputs, not the clipped
    PNGs, are scored, as ``dcgan-ssim`` and the seed-003 author did: a saturating generator loses.
    """
    import importlib
    import pkgutil

    import keras
    import tensorflow as tf

    import tfmedgan.layers
    import tfmedgan.networks

    for package in (tfmedgan.layers, tfmedgan.networks):  # register the custom layers
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    generator = keras.models.load_model(Path(run_dir) / "models" / "generator.keras", compile=False)
    latents = tf.random.stateless_normal((n, generator.inputs[0].shape[-1]), seed=(seed, 11))
    images = np.concatenate([np.asarray(generator(latents[i : i + 32], training=False), np.float32)
                             for i in range(0, n, 32)])
    keras.backend.clear_session()
    return images[..., 0]


@dataclasses.dataclass
class SliceGANProtocol(Protocol):
    """2D GANs on the built-in 64 px brain slices (see the module docstring)."""

    resolution: int = 64
    n_fakes: int = 64
    latent_seed: int = 2024
    main_metric: str = "best_match_ssim_mean"

    def prepare(self, work: Path) -> None:
        from tfmedgan.data.samples import make_png_slices, sample_slices_dir

        # The same cached folder that --sample-data trains on (256 slices, seed 0).
        self.train_dir = sample_slices_dir(resolution=self.resolution)
        self.heldout_dir = work / "data" / f"slices_r{self.resolution}_seed1"
        if not (self.heldout_dir / f"slice_{self.n_fakes - 1:05d}.png").is_file():
            make_png_slices(self.heldout_dir, n_images=self.n_fakes, resolution=self.resolution, seed=1)
        self.train_images = _load_png_stack(sorted(self.train_dir.glob("slice_*.png")))
        self.heldout_images = _load_png_stack(sorted(self.heldout_dir.glob("slice_*.png"))[: self.n_fakes])

    def train_arguments(self, work: Path, run_name: str) -> list[str]:
        if self.model == "dcgan":
            return ["dcgan", self.train_dir, work / "runs", "--resolution", self.resolution, "--epochs", 100000,
                    "--name", run_name, "--no-progress", *self.extra]
        return ["stylegan2", "--preset", self.resolution, self.train_dir, work / "runs", "--epochs", 100000,
                "--name", run_name, "--no-progress", *self.extra]

    def _scores(self, images: np.ndarray) -> dict[str, float]:
        from tfmedgan import metrics
        from tfmedgan.metrics import distribution

        best = np.array([metrics.best_match(image, self.train_images)[0] for image in images])
        return {
            "best_match_ssim_mean": _round(best.mean()),
            "best_match_ssim_max": _round(best.max()),
            "diversity_ssim": _round(distribution.mean_pairwise_ssim(images, data_range=2.0, max_pairs=None)),
            "histogram_distance": _round(distribution.intensity_histogram_distance(self.heldout_images, images)),
            "spectrum_distance": _round(distribution.spectrum_distance(self.heldout_images, images)),
        }

    def evaluate(self, run_dir: Path, work: Path, tag: str) -> dict[str, float]:
        from tfmedgan.engine.rundir import image_grid, save_png_atomic

        fakes = generate_raw(run_dir, self.n_fakes, self.latent_seed)
        out = work / "eval" / f"{self.name}-{tag}"
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "fakes.npy", fakes.astype(np.float16))
        save_png_atomic(image_grid(fakes[:16, ..., None]), out / "grid.png")
        save_png_atomic(image_grid(fakes[:16, ..., None], scaling="fixed"), out / "grid_fixed.png")
        scores = self._scores(fakes)
        scores["output_min"], scores["output_max"] = _round(fakes.min(), 3), _round(fakes.max(), 3)
        scores["grid"] = str(out / "grid.png")
        return scores

    def baselines(self, work: Path) -> dict[str, dict[str, float]]:
        from tfmedgan.metrics import distribution

        rng = np.random.default_rng(0)
        training_sample = self.train_images[rng.choice(len(self.train_images), self.n_fakes, replace=False)]
        heldout = self._scores(self.heldout_images)
        # Distances of the held-out reals to themselves are 0: use a training sample instead.
        heldout["histogram_distance"] = _round(distribution.intensity_histogram_distance(self.heldout_images, training_sample))
        heldout["spectrum_distance"] = _round(distribution.spectrum_distance(self.heldout_images, training_sample))
        return {"held-out real slices": heldout}

    def figure_metrics(self) -> list[str]:
        return ["best_match_ssim_mean", "best_match_ssim_max", "diversity_ssim", "histogram_distance", "spectrum_distance"]

    def goal_lines(self, baselines: dict[str, dict[str, float]]) -> dict[str, Any]:
        real = baselines["held-out real slices"]["diversity_ssim"]
        return {**self.goals, "diversity_ssim": (round(0.85 * real, 4), round(1.15 * real, 4))}


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel

    return np.asarray(nibabel.load(str(path)).dataobj, np.float32)


def _unit_truth(truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    low, high = float(truth[mask].min()), float(truth[mask].max())
    return np.where(mask, (truth - low) / (high - low), 0.0).astype(np.float32)


def translation_scores(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE / PSNR / SSIM inside ``mask`` of a prediction against a T2 truth (protocol above)."""
    from tfmedgan import metrics

    target = _unit_truth(truth, mask)
    fitted = np.where(mask, linear_fit(prediction, target, mask), 0.0).astype(np.float32)
    return {
        "mae": float(metrics.mae(target, fitted, mask=mask)),
        "psnr": float(metrics.psnr(target, fitted, data_range=1.0, mask=mask)),
        "ssim": float(metrics.ssim(fitted, target, data_range=1.0, mask=mask)),
    }


class IntensityLookUpTable:
    """T1 -> T2 by a look-up table of the mean T2 per T1 intensity bin (both min-max scaled in the mask)."""

    def __init__(self, bins: int = 256) -> None:
        self.bins = bins
        self.table = np.zeros(bins, np.float64)

    def _bin(self, t1: np.ndarray, mask: np.ndarray) -> np.ndarray:
        low, high = float(t1[mask].min()), float(t1[mask].max())
        scaled = np.clip((t1 - low) / (high - low), 0.0, 1.0)
        return np.minimum((scaled * self.bins).astype(np.int64), self.bins - 1)

    def fit(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> "IntensityLookUpTable":
        sums, counts = np.zeros(self.bins), np.zeros(self.bins)
        for t1, t2 in pairs:
            mask = (t1 > 0) & (t2 > 0)
            indices = self._bin(t1, mask)[mask]
            sums += np.bincount(indices, weights=_unit_truth(t2, mask)[mask], minlength=self.bins)
            counts += np.bincount(indices, minlength=self.bins)
        filled = counts > 0
        self.table = np.interp(np.arange(self.bins), np.flatnonzero(filled), sums[filled] / counts[filled])
        return self

    def __call__(self, t1: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.where(mask, self.table[self._bin(t1, mask)], 0.0).astype(np.float32)


@dataclasses.dataclass
class TranslationProtocol(Protocol):
    """3D CycleGAN T1w -> T2w on built-in subjects (see the module docstring)."""

    n_train: int = 8
    n_heldout: int = 2
    pad_factor: float = 1.15
    main_metric: str = "psnr"
    precision: str = "mixed_bfloat16"

    def prepare(self, work: Path) -> None:
        from tfmedgan.data.samples import make_paired_subjects

        data = work / "data"
        self.train_dir = data / f"subjects_train_n{self.n_train}_crop"
        if not (self.train_dir / "trainA").is_dir():
            raw = data / f"subjects_train_n{self.n_train}"
            shutil.rmtree(raw, ignore_errors=True)
            make_paired_subjects(raw, n_subjects=self.n_train, seed=0)
            run_child(["prepare_train_data.py", raw, "--output", self.train_dir, "--test-fraction", "0", "--overwrite"],
                      work / "logs" / "data.log")
            for empty in ("testA", "testB"):  # cyclegan3d refuses an empty test folder
                if (self.train_dir / empty).is_dir() and not any((self.train_dir / empty).iterdir()):
                    (self.train_dir / empty).rmdir()
        self.heldout_dir = data / f"subjects_heldout_n{self.n_heldout}_vs_train_n{self.n_train}_crop"
        if not (self.heldout_dir / "testA").is_dir():
            raw = data / f"subjects_heldout_n{self.n_heldout}"
            shutil.rmtree(raw, ignore_errors=True)
            make_paired_subjects(raw, n_subjects=self.n_heldout, seed=1, name_prefix="heldout")
            cropped = data / "heldout_tmp_crop"
            run_child(["prepare_train_data.py", raw, "--output", cropped, "--test-fraction", "0", "--overwrite"],
                      work / "logs" / "data.log")
            self._write_heldout(cropped, self.heldout_dir)
            shutil.rmtree(cropped, ignore_errors=True)
        self.train_pairs = [(_read_nifti(a), _read_nifti(b)) for a, b in zip(
            sorted((self.train_dir / "trainA").glob("*.nii*")), sorted((self.train_dir / "trainB").glob("*.nii*")))]
        self.heldout = [(a, _read_nifti(a), _read_nifti(b)) for a, b in zip(
            sorted((self.heldout_dir / "testA").glob("*.nii*")), sorted((self.heldout_dir / "testB").glob("*.nii*")))]
        self.noise_free_dir = data / f"subjects_heldout_n{self.n_heldout}_noise_free"
        if not (self.noise_free_dir / "trainB_noise_free").is_dir():
            shutil.rmtree(self.noise_free_dir, ignore_errors=True)
            make_paired_subjects(self.noise_free_dir, n_subjects=self.n_heldout, seed=1, name_prefix="heldout",
                                 noise_free=True)

    def _write_heldout(self, cropped: Path, target: Path) -> None:
        """Copy the held-out pairs to testA/testB and add the first one zero-padded beyond every training shape."""
        import nibabel

        largest = np.max([t1.shape for t1, _ in self.train_pairs_or_load()], axis=0)
        for domain in ("A", "B"):
            (target / f"test{domain}").mkdir(parents=True, exist_ok=True)
            files = sorted((cropped / f"train{domain}").glob("*.nii*"))
            for path in files:
                shutil.copy2(path, target / f"test{domain}" / path.name)
            image = nibabel.load(str(files[0]))
            data = np.asarray(image.dataobj, np.float32)
            wanted = np.maximum(np.ceil(largest * self.pad_factor).astype(int), data.shape)
            before = (wanted - data.shape) // 2
            padded = np.pad(data, [(b, w - s - b) for b, w, s in zip(before, wanted, data.shape)])
            affine = image.affine.copy()
            affine[:3, 3] -= affine[:3, :3] @ before  # keep world coordinates
            name = files[0].name.replace("heldout-000", "heldout-padded")
            nibabel.save(nibabel.Nifti1Image(padded, affine), str(target / f"test{domain}" / name))

    def train_pairs_or_load(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(_read_nifti(a), _read_nifti(b)) for a, b in zip(
            sorted((self.train_dir / "trainA").glob("*.nii*")), sorted((self.train_dir / "trainB").glob("*.nii*")))]

    def shapes(self) -> dict[str, Any]:
        return {"train": [list(t1.shape) for t1, _ in self.train_pairs],
                "heldout": {path.name: list(t1.shape) for path, t1, _ in self.heldout}}

    def train_arguments(self, work: Path, run_name: str) -> list[str]:
        return ["cyclegan3d", self.train_dir, work / "runs", "--precision", self.precision, "--name", run_name,
                "--no-progress", *self.extra]

    def _noise_free_truths(self) -> dict[str, np.ndarray]:
        """Each held-out T2w before its bias field and noise, on the held-out grid (the ceiling)."""
        from tfmedgan.io.crop import bounding_box

        truths = {}
        for path, t1, _ in self.heldout:
            stem = path.name.split("_T1w")[0].replace("heldout-padded", "heldout-000")
            raw = _read_nifti(self.noise_free_dir / "trainA" / f"{stem}_T1w.nii.gz")
            clean = _read_nifti(self.noise_free_dir / "trainB_noise_free" / f"{stem}_T2w.nii.gz")
            clean = clean[bounding_box(raw > 0)]  # prepare_train_data's crop (margin 0)
            before = (np.array(t1.shape) - clean.shape) // 2  # the padded copy: centred, as _write_heldout
            truths[path.name] = np.pad(clean, [(b, w - s - b) for b, w, s in zip(before, t1.shape, clean.shape)])
        return truths

    def _average(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        per_subject = {}
        for path, t1, t2 in self.heldout:
            mask = (t1 > 0) & (t2 > 0)
            per_subject[path.name] = translation_scores(predictions[path.name], t2, mask)
        result = {key: _round(np.mean([s[key] for s in per_subject.values()])) for key in ("mae", "psnr", "ssim")}
        padded = [name for name in per_subject if "padded" in name]
        for name in padded:
            result.update({f"padded_{key}": _round(per_subject[name][key]) for key in ("psnr", "ssim")})
        return result

    def evaluate(self, run_dir: Path, work: Path, tag: str) -> dict[str, float]:
        out = work / "eval" / f"{self.name}-{tag}"
        run_child([GENERATE_PY, run_dir, self.heldout_dir / "testA", out, "--direction", "A2B", "--overwrite",
                   "--no-progress"], work / "logs" / f"{self.name}.log")
        predictions = {}
        for path, _, _ in self.heldout:
            stem = path.name.split(".nii")[0]
            predictions[path.name] = _read_nifti(out / f"{stem}_synthetic.nii.gz")
        return self._average(predictions)

    def baselines(self, work: Path) -> dict[str, dict[str, float]]:
        from skimage.exposure import match_histograms

        table = IntensityLookUpTable().fit(self.train_pairs)
        # The ceiling of every voxel-wise intensity mapping on these subjects: a table fitted on
        # the held-out pairs themselves (not a method; to beat it a model must use spatial context).
        oracle = IntensityLookUpTable().fit([(t1, t2) for _, t1, t2 in self.heldout])
        matched, looked_up, oracle_looked_up = {}, {}, {}
        for path, t1, t2 in self.heldout:
            mask = (t1 > 0) & (t2 > 0)
            volume = np.zeros_like(t1)
            volume[mask] = match_histograms(t1[mask], t2[mask])
            matched[path.name] = volume
            looked_up[path.name] = table(t1, mask)
            oracle_looked_up[path.name] = oracle(t1, mask)
        return {"T1 histogram-matched to T2": self._average(matched),
                "intensity look-up table": self._average(looked_up),
                "look-up table fitted on the held-out pairs (oracle)": self._average(oracle_looked_up),
                # The best any model can do: the true anatomy's T2w, less the truth's own bias field
                # and noise, which nothing in the T1w predicts.
                "noise-free T2w (ceiling)": self._average(self._noise_free_truths())}

    def figure_metrics(self) -> list[str]:
        return ["psnr", "ssim", "mae", "padded_psnr", "padded_ssim"]

    def goal_lines(self, baselines: dict[str, dict[str, float]]) -> dict[str, float]:
        table = baselines["intensity look-up table"]
        return {"psnr": table["psnr"] + 2.0, "ssim": table["ssim"] + 0.02}


@dataclasses.dataclass
class SuperResolutionProtocol(Protocol):
    """Seed-002 CycleGAN 2x super-resolution on the fibre phantom (see the module docstring)."""

    train_shape: tuple[int, int, int] = (192, 128, 128)
    heldout_shape: tuple[int, int, int] = (96, 128, 128)
    main_metric: str = "psnr"

    def prepare(self, work: Path) -> None:
        import h5py

        from tfmedgan.data.samples import write_phantom_dataset

        data = work / "data"
        self.train_paths = write_phantom_dataset(data / "phantom_train_seed0", shape=self.train_shape, super_resolution=2, seed=0)
        self.heldout_paths = write_phantom_dataset(data / "phantom_heldout_seed1", shape=self.heldout_shape,
                                                   super_resolution=2, seed=1)
        with h5py.File(self.heldout_paths["fast"]) as handle:
            self.fast = handle["data"][()].astype(np.float32)
        with h5py.File(self.heldout_paths["slow"]) as handle:
            self.slow = handle["data"][()].astype(np.float32)

    def train_arguments(self, work: Path, run_name: str) -> list[str]:
        return ["cyclegan-sr", self.train_paths["fast_json"], self.train_paths["slow_json"], work / "runs",
                "--net-a", "UNetSim3dSRx2", "--net-b", "UNetSim3dSRd2", "--super-resolution", 2,
                "--patch", 24, 32, 32, "--num-filters", 8, "--d-filters", 16, "--batch-size", 4,
                "--steps-per-epoch", 100, "--validate-every", 5, "--validate-batches", 2, "--kickstart",
                "--name", run_name, "--no-progress", *self.extra]

    def _scores(self, prediction: np.ndarray) -> dict[str, float]:
        from tfmedgan import metrics

        data_range = float(self.slow.max() - self.slow.min())
        fitted = linear_fit(prediction, self.slow)
        return {
            "psnr": _round(metrics.psnr(self.slow, fitted, data_range=data_range)),
            "ssim": _round(metrics.ssim(fitted, self.slow, data_range=data_range)),
            "psnr_raw": _round(metrics.psnr(self.slow, prediction, data_range=data_range)),
            "ssim_raw": _round(metrics.ssim(prediction, self.slow, data_range=data_range)),
        }

    def evaluate(self, run_dir: Path, work: Path, tag: str) -> dict[str, float]:
        import h5py

        out = work / "eval" / f"{self.name}-{tag}"
        run_child([GENERATE_PY, run_dir, self.heldout_paths["fast"], out, "--overwrite", "--no-progress"],
                  work / "logs" / f"{self.name}.log")
        with h5py.File(out / "fast_enhanced.h5") as handle:
            prediction = handle["data"][()].astype(np.float32)
        return self._scores(prediction)

    def baselines(self, work: Path) -> dict[str, dict[str, float]]:
        from scipy.ndimage import zoom

        return {name: self._scores(zoom(self.fast, 2, order=order, grid_mode=True, mode="grid-mirror").astype(np.float32))
                for name, order in (("nearest", 0), ("linear", 1), ("cubic", 3))}

    def figure_metrics(self) -> list[str]:
        return ["psnr", "ssim"]

    def goal_lines(self, baselines: dict[str, dict[str, float]]) -> dict[str, float]:
        return {"psnr": baselines["cubic"]["psnr"] + 1.5, "ssim": baselines["cubic"]["ssim"]}


@dataclasses.dataclass
class SynthesisProtocol(Protocol):
    """Seed-001 pix2pix3d T2 + FLAIR -> T1 on the BraTS-layout sample cases (see the module docstring)."""

    dataset_name: str = "domain1"
    main_metric: str = "psnr_brain"
    precision: str = "mixed_bfloat16"

    def prepare(self, work: Path) -> None:
        from tfmedgan.data.samples.brats import make_brats_cases
        from tfmedgan.models.pix2pix_uda.common import SAMPLE_CASES, SAMPLE_CROP, SAMPLE_VOXEL_MM

        self.crop = SAMPLE_CROP
        self.root = work / "data" / f"brats-{SAMPLE_VOXEL_MM:g}mm-seed0"
        if not (self.root / "domain2_test").is_dir():
            temporary = self.root.with_name(f".tmp-{os.getpid()}-{self.root.name}")
            shutil.rmtree(temporary, ignore_errors=True)
            make_brats_cases(temporary, n_per_split=SAMPLE_CASES, voxel_size_mm=SAMPLE_VOXEL_MM, seed=0)
            os.replace(temporary, self.root)

    def train_arguments(self, work: Path, run_name: str) -> list[str]:
        return ["pix2pix3d", self.root, work / "runs", "--dataset-name", self.dataset_name, "--crop-shape", *self.crop,
                "--epochs", 100000, "--precision", self.precision, "--validate-every", 5, "--name", run_name,
                "--no-progress", *self.extra]

    def _load(self, domain: str, phase: str) -> list:
        from tfmedgan.data import brats

        cases = brats.list_split(self.root, domain, phase, brats.MODALITIES)
        return [brats.load_case(case, brats.MODALITIES, self.crop, None) for case in cases]

    def evaluate(self, run_dir: Path, work: Path, tag: str) -> dict[str, float]:
        out = work / "eval" / f"{self.name}-{tag}"
        scores = self._test(run_dir, out, work)
        scores["grid"] = str(self._figure(out, out / "mid_slices.png"))
        return scores

    def _test(self, run_dir: Path, out: Path, work: Path) -> dict[str, float]:
        """``run.py pix2pix3d-test`` of ``run_dir`` on domain2_test into ``out``: its mean row."""
        import csv

        run_child(["run.py", "pix2pix3d-test", run_dir, self.root, "--dataset-name", "domain2", "--output", out,
                   "--overwrite", "--no-progress"], work / "logs" / f"{self.name}.log")
        with (out / "metrics.csv").open() as stream:
            mean = next(row for row in csv.DictReader(stream) if row["case"] == "mean")
        return {key: _round(float(mean[key])) for key in ("psnr_brain", "ssim_brain", "mae_brain", "psnr", "ssim")}

    def _figure(self, out: Path, path: Path) -> Path:
        """Mid axial slices of every domain2_test case: T2, FLAIR, synthetic T1, real T1."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from tfmedgan.data import brats
        from tfmedgan.io.nifti import read_volume

        cases = brats.list_split(self.root, "domain2", "test", brats.MODALITIES)
        figure, axes = plt.subplots(len(cases), 4, figsize=(8, 2.1 * len(cases)), squeeze=False)
        for row, case in zip(axes, cases):
            synthetic = read_volume(out / f"{case.name}_t1_synthetic.nii.gz").data
            real = read_volume(case.path("t1")).data
            t2, flair = (read_volume(case.path(m)).data for m in ("t2", "flair"))
            middle = real.shape[2] // 2
            for axis, (title, volume) in zip(row, (("T2", t2), ("FLAIR", flair), ("synthetic T1", synthetic),
                                                   ("real T1", real))):
                axis.imshow(np.rot90(volume[:, :, middle]), cmap="gray")
                axis.set_title(f"{case.name}: {title}", fontsize=7)
                axis.axis("off")
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        plt.close(figure)
        return path

    def _lut_scores(self, fit_domain: str) -> dict[str, float]:
        """A (T2, FLAIR) -> T1 look-up table of 32 x 32 bins fitted on ``fit_domain``_train, scored
        on domain2_test as the test command scores a generator."""
        from scipy.stats import binned_statistic_2d

        from tfmedgan.models.pix2pix_uda.common import brain_mask, score_case

        edges = np.linspace(0.0, 1.0 + 1e-6, 33)
        inputs, targets = [], []
        for loaded in self._load(fit_domain, "train"):
            mask = brain_mask(loaded.volumes)
            inputs.append(loaded.inputs[mask])
            targets.append(loaded.volumes["t1"][mask])
        inputs, targets = np.concatenate(inputs), np.concatenate(targets)
        table = binned_statistic_2d(inputs[:, 0], inputs[:, 1], targets, "mean", bins=[edges, edges]).statistic
        table = np.where(np.isfinite(table), table, float(targets.mean()))
        rows = []
        for loaded in self._load("domain2", "test"):
            index = np.clip(np.digitize(loaded.inputs, edges) - 1, 0, 31)
            prediction = np.where(brain_mask(loaded.volumes), table[index[..., 0], index[..., 1]], 0.0).astype(np.float32)
            inside = tuple(slice(0, size) for size in loaded.geometry.crop_shape)
            mask = brain_mask({m: v[inside] for m, v in loaded.volumes.items()})
            rows.append(score_case(loaded.volumes["t1"][inside], prediction[inside], mask))
        return {key: _round(np.mean([row[key] for row in rows])) for key in ("psnr_brain", "ssim_brain", "mae_brain",
                                                                               "psnr", "ssim")}

    def baselines(self, work: Path) -> dict[str, dict[str, float]]:
        return {"LUT fitted on domain1": self._lut_scores("domain1"), "LUT fitted on domain2": self._lut_scores("domain2")}

    def figure_metrics(self) -> list[str]:
        return ["psnr_brain", "ssim_brain", "mae_brain"]


@dataclasses.dataclass
class AdaptationProtocol(SynthesisProtocol):
    """Seed-001 uda: adapts the generator of this bench's ``pix2pix3d`` run (no adaptation) to domain2,
    with a vae2d trained on domain1 T1 for ``vae_epochs`` (not counted in the budget)."""

    vae_epochs: int = 40
    pretrained_protocol: str = "pix2pix3d"

    def prepare(self, work: Path) -> None:
        super().prepare(work)
        summary = work.parent / "quality.json"
        models = json.loads(summary.read_text())["models"] if summary.is_file() else {}
        if self.pretrained_protocol not in models:
            raise SystemExit(f"error: {self.name} adapts the {self.pretrained_protocol} run of this bench: run "
                             f"--models {self.pretrained_protocol} {self.name} (with the same --out)")
        self.pretrained = Path(models[self.pretrained_protocol]["run_dir"])
        self.vae_run = work / "runs" / f"vae2d-epochs{self.vae_epochs}"
        if not (self.vae_run / "models" / "vae_encoder.keras").is_file():
            shutil.rmtree(self.vae_run, ignore_errors=True)
            cpu, _ = run_child(["run.py", "vae2d", self.root, work / "runs", "--name", self.vae_run.name, "--epochs",
                                self.vae_epochs, "--slice-size", 64, "--no-progress"], work / "logs" / "vae2d.log")
            (self.vae_run / "bench_cpu_minutes.txt").write_text(f"{cpu / 60:.2f}\n")

    def train_arguments(self, work: Path, run_name: str) -> list[str]:
        return ["uda", self.root, work / "runs", "--pretrained", self.pretrained, "--vae", self.vae_run, "--epochs", 100000,
                "--precision", self.precision, "--name", run_name, "--no-progress", *self.extra]

    def baselines(self, work: Path) -> dict[str, dict[str, float]]:
        baselines = super().baselines(work)
        baselines[f"(a) no adaptation ({self.pretrained_protocol})"] = self._test(
            self.pretrained, work / "eval" / f"{self.name}-pretrained", work)
        return baselines


#: The DCGAN preset of the README demo (tfmedgan.models.dcgan.PRESETS; see docs/faithfulness.md).
DCGAN_DEMO_OPTIONS: tuple[str, ...] = ("--preset", "demo")

#: The seed-002 ``cpu-demo`` preset (tfmedgan.models.cyclegan_sr.PRESETS).
CYCLEGAN_SR_CPU_DEMO_OPTIONS: tuple[str, ...] = ("--preset", "cpu-demo")


#: The best T1w -> T2w recipe of session 9: the CPU preset (with --mask-background), the generators'
#: weights averaged, and the original's linear decay fitted to the 60-CPU-minute budget.
MASK_EMA_DECAY = ("--preset", "cpu", "--mask-background", "--ema", "0.99", "--epochs", "100", "--decay-epoch", "50")
#: (name suffix, extra arguments) of a protocol run with the default seed and with seed 1
SEEDS = (("", ()), ("-seed1", ("--seed", "1")))


def protocols() -> dict[str, Protocol]:
    """Every model (variant) the bench knows, by name."""
    gan_goals = {"best_match_ssim_mean": 0.60}
    return {
        "dcgan": SliceGANProtocol("dcgan", "dcgan", cpu_seconds_per_step=0.8, goals=gan_goals),
        "dcgan-demo": SliceGANProtocol("dcgan-demo", "dcgan", DCGAN_DEMO_OPTIONS, cpu_seconds_per_step=0.8, goals=gan_goals),
        # The demo preset before it took the tanh output (beta_1 0.5, no dropout, linear output).
        "dcgan-demo-linear": SliceGANProtocol("dcgan-demo-linear", "dcgan", (*DCGAN_DEMO_OPTIONS, "--output-activation",
                                              "linear"), cpu_seconds_per_step=0.8, goals=gan_goals),
        # The 64 px recipe (30 epochs of 9,664 slices, fade_in_base 40) ends at alpha 29/40 = 0.725. On the
        # 256 built-in slices its epochs are 2 steps long and alpha would reach 1 (no 3x3 conv path left in
        # the discriminator's blocks) after 80 steps: --max-alpha keeps the recipe's range of alpha.
        "stylegan2": SliceGANProtocol("stylegan2", "stylegan2", ("--max-alpha", "0.725"), cpu_seconds_per_step=2.0,
                                      goals=gan_goals),
        "stylegan2-tanh": SliceGANProtocol("stylegan2-tanh", "stylegan2", ("--output-activation", "tanh", "--max-alpha", "0.725"),
                                           cpu_seconds_per_step=8.0, goals=gan_goals),
        "stylegan2-cpu": SliceGANProtocol("stylegan2-cpu", "stylegan2", ("--preset", "cpu"), cpu_seconds_per_step=1.6,
                                          goals=gan_goals),
        # Probes of the fade-in: at alpha 1 the discriminator's blocks keep only their strided 1x1 skips.
        "stylegan2-cpu-alpha0": SliceGANProtocol("stylegan2-cpu-alpha0", "stylegan2", ("--preset", "cpu", "--max-alpha", "0"),
                                                 cpu_seconds_per_step=1.0, goals=gan_goals),
        # --preset cpu before it took resize up-sampling (session 4's first run).
        "stylegan2-cpu-transposed": SliceGANProtocol("stylegan2-cpu-transposed", "stylegan2",
                                                     ("--preset", "cpu", "--upsample", "transposed"),
                                                     cpu_seconds_per_step=1.0, goals=gan_goals),
        "stylegan2-cpu-alpha0.5": SliceGANProtocol("stylegan2-cpu-alpha0.5", "stylegan2", ("--preset", "cpu", "--max-alpha", "0.5"),
                                                   cpu_seconds_per_step=1.0, goals=gan_goals),
        "cyclegan3d": TranslationProtocol("cyclegan3d", "cyclegan3d", cpu_seconds_per_step=40.0),
        # --preset cpu (since session 8 without instance norm, since session 9 with --mask-background; the
        # runs below name --norm and --no-mask-background explicitly, so they repeat what they measured)
        "cyclegan3d-cpu": TranslationProtocol("cyclegan3d-cpu", "cyclegan3d", ("--preset", "cpu"), cpu_seconds_per_step=5.0),
        # the preset as it was until session 8: with the original's instance norm
        "cyclegan3d-cpu-instancenorm": TranslationProtocol("cyclegan3d-cpu-instancenorm", "cyclegan3d",
                                                           ("--preset", "cpu", "--no-mask-background", "--norm", "channel"), cpu_seconds_per_step=12.0),
        # More supervised steps per CPU-minute: one update of each network per step, no identity updates
        "cyclegan3d-cpu-lean": TranslationProtocol("cyclegan3d-cpu-lean", "cyclegan3d", (
            "--preset", "cpu", "--no-mask-background", "--norm", "channel", "--generator-updates", "1", "--discriminator-steps", "1",
            "--identity-every", "0"), cpu_seconds_per_step=5.0),
        # No instance norm (session 6): the supervised probe without it reached the table in 10 CPU-min
        "cyclegan3d-cpu-nonorm": TranslationProtocol("cyclegan3d-cpu-nonorm", "cyclegan3d", ("--preset", "cpu", "--no-mask-background", "--norm", "none"),
                                                     cpu_seconds_per_step=5.0),
        # The original's schedule (constant, then linear decay to 0 over the second half) fitted to the
        # 60-CPU-minute budget: about 720 steps of 5 CPU-s = 90 epochs of 8 subjects, so 100 epochs with
        # the decay from epoch 50 (the original's 150 / 75 would start decaying only at 600 steps).
        "cyclegan3d-cpu-nonorm-decay": TranslationProtocol("cyclegan3d-cpu-nonorm-decay", "cyclegan3d", (
            "--preset", "cpu", "--no-mask-background", "--norm", "none", "--epochs", "100", "--decay-epoch", "50"), cpu_seconds_per_step=5.0),
        # the same schedule from a higher rate: without instance norm, does 5e-4 learn faster and stay stable?
        "cyclegan3d-cpu-nonorm-lr5e-4-decay": TranslationProtocol("cyclegan3d-cpu-nonorm-lr5e-4-decay", "cyclegan3d", (
            "--preset", "cpu", "--no-mask-background", "--norm", "none", "--lr", "5e-4", "--epochs", "100", "--decay-epoch", "50"),
            cpu_seconds_per_step=5.0),
        # Smaller crops, more steps: 32^3 crops cost about a third of a 48^3 step; the decay fitted to
        # about 1,800 steps in 60 CPU-minutes (225 epochs of 8 subjects).
        "cyclegan3d-cpu-nonorm-patch32-decay": TranslationProtocol("cyclegan3d-cpu-nonorm-patch32-decay", "cyclegan3d", (
            "--preset", "cpu", "--no-mask-background", "--norm", "none", "--patch", "32", "32", "32", "--epochs", "250", "--decay-epoch", "125"),
            cpu_seconds_per_step=2.0),
        # --ema (session 8): the generators' weights averaged over the last steps (decay n/(n+9), at most 0.99)
        "cyclegan3d-cpu-ema": TranslationProtocol("cyclegan3d-cpu-ema", "cyclegan3d", ("--preset", "cpu", "--no-mask-background", "--ema", "0.99"),
                                                  cpu_seconds_per_step=5.0),
        # both: the decay fitted to the budget and the averaged generators
        "cyclegan3d-cpu-ema-decay": TranslationProtocol("cyclegan3d-cpu-ema-decay", "cyclegan3d", (
            "--preset", "cpu", "--no-mask-background", "--ema", "0.99", "--epochs", "100", "--decay-epoch", "50"), cpu_seconds_per_step=5.0),
        # --mask-background (session 9): the generators' output is the background wherever their input
        # is; the brain's outermost voxels carried half the error of the best run (blurred into the background)
        "cyclegan3d-cpu-mask-ema-decay": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay", "cyclegan3d", MASK_EMA_DECAY,
                                                             cpu_seconds_per_step=5.0),
        # the same with another seed (weights, crops, pools): how much of the result is the draw?
        "cyclegan3d-cpu-mask-ema-decay-seed1": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay-seed1", "cyclegan3d",
                                                                   (*MASK_EMA_DECAY, "--seed", "1"), cpu_seconds_per_step=5.0),
        # more weight on the supervised term (40 -> 100): less on the adversarial and cycle terms
        "cyclegan3d-cpu-mask-ema-decay-sup100": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay-sup100", "cyclegan3d",
                                                                    (*MASK_EMA_DECAY, "--lambda-supervised", "100"),
                                                                    cpu_seconds_per_step=5.0),
        # a full-resolution skip from the stem to the head (session 10): the rest of the error is at the brain's edge
        "cyclegan3d-cpu-mask-ema-decay-skip-add": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay-skip-add", "cyclegan3d",
                                                                      (*MASK_EMA_DECAY, "--skip", "add"),
                                                                      cpu_seconds_per_step=5.0),
        "cyclegan3d-cpu-mask-ema-decay-skip-concat": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay-skip-concat",
                                                                         "cyclegan3d", (*MASK_EMA_DECAY, "--skip", "concat"),
                                                                         cpu_seconds_per_step=5.5),
        # the learning rate decayed to about 0 at the 60-CPU-minute budget (about 88 epochs of 8 steps at 5.2
        # CPU-s a step) instead of 0.26x at its end; without the identity updates (T2w through the T1w -> T2w
        # generator: a tenth of the updates, towards another task); both
        "cyclegan3d-cpu-mask-ema-fitted": TranslationProtocol("cyclegan3d-cpu-mask-ema-fitted", "cyclegan3d",
                                                              (*MASK_EMA_DECAY, "--epochs", "88", "--decay-epoch", "44"),
                                                              cpu_seconds_per_step=5.0),
        "cyclegan3d-cpu-mask-ema-decay-noidentity": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay-noidentity",
                                                                        "cyclegan3d", (*MASK_EMA_DECAY, "--identity-every", "0"),
                                                                        cpu_seconds_per_step=5.0),
        "cyclegan3d-cpu-mask-ema-fitted-noidentity": TranslationProtocol(
            "cyclegan3d-cpu-mask-ema-fitted-noidentity", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "88", "--decay-epoch", "44", "--identity-every", "0"), cpu_seconds_per_step=5.0),
        # the supervised L1 weighted 4x or 8x at the brain's outermost voxels (session 11): after the mask,
        # that ring (15% of the brain) still carries 37% of the squared error
        **{f"cyclegan3d-cpu-mask-ema-decay-edge{weight}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-decay-edge{weight}", "cyclegan3d", (*MASK_EMA_DECAY, "--edge-weight", str(weight)),
            cpu_seconds_per_step=5.0) for weight in (4, 8)},
        # left-right flips of the training pairs (session 11): session 10's final generator scores 3.0 dB
        # above the table on its 8 training subjects but 1.6 dB on the held-out ones
        "cyclegan3d-cpu-mask-ema-decay-flip": TranslationProtocol("cyclegan3d-cpu-mask-ema-decay-flip", "cyclegan3d",
                                                                  (*MASK_EMA_DECAY, "--flip-axes", "0"),
                                                                  cpu_seconds_per_step=5.0),
        "cyclegan3d-cpu-mask-ema-decay-flip-seed1": TranslationProtocol(
            "cyclegan3d-cpu-mask-ema-decay-flip-seed1", "cyclegan3d", (*MASK_EMA_DECAY, "--flip-axes", "0", "--seed", "1"),
            cpu_seconds_per_step=5.0),
        # one generator update and one discriminator update per step instead of 2 + 2 (session 12): 0.62x the CPU
        # per step (2.44 against 3.95 CPU-s side by side), so 1.5x the distinct crops in the budget and 0.75x the
        # generator updates; the decay is stretched to the step count (epochs 150 / decay 75 instead of 100 / 50)
        **{f"cyclegan3d-cpu-mask-ema-lean{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-lean{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--generator-updates", "1", "--discriminator-steps", "1", "--epochs", "150",
             "--decay-epoch", "75", *seed), cpu_seconds_per_step=3.6) for suffix, seed in SEEDS},
        # the decay fitted to the whole budget at 3.9 CPU-s a step (session 12's machine runs the bf16 convolutions
        # on AMX): 114 epochs of 8 steps, decay from 57, so the rate reaches 0 at about 60 CPU-minutes
        **{f"cyclegan3d-cpu-mask-ema-fitted114{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-fitted114{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "114", "--decay-epoch", "57", *seed), cpu_seconds_per_step=3.9)
           for suffix, seed in SEEDS},
        # the supervised terms as squared error (session 13): L1 predicts the conditional median, the squared
        # error its mean, which PSNR rewards where the truth is ambiguous (the partial volumes at the brain's
        # edge). The weight 160 matches the L1 x 40's gradient (RMS over a crop: 2 x 160 x 0.096 against
        # 40 x sqrt(0.6), the crop's foreground share; the probe's last losses, L1 0.061, squared 0.0092).
        **{f"cyclegan3d-cpu-mask-ema-decay-l2{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-decay-l2{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--supervised-loss", "l2", "--lambda-supervised", "160", *seed), cpu_seconds_per_step=3.9)
           for suffix, seed in SEEDS},
        # twice the training subjects (session 13; the look-up table is fitted on the same 16), the first 8 of
        # them the usual 8: session 12's best generator scores 0.77 dB higher on its own 8 subjects than on the
        # held-out ones. Epochs of 16 steps: 57 epochs with the decay from 28 are the 912 steps of fitted114.
        **{f"cyclegan3d-cpu-mask-ema-fitted57-n16{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-fitted57-n16{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "57", "--decay-epoch", "28", *seed), cpu_seconds_per_step=3.6, n_train=16)
           for suffix, seed in SEEDS},
        # random affine transforms of the training pairs (session 14): 16 subjects instead of 8 raised the generator
        # by 0.19 / 0.25 dB (session 13). Rotations up to 4 degrees and scales up to 5% per axis, as the built-in
        # subjects' own warps, on half the crops (linear resampling smooths the noise the held-out volumes keep);
        # the fitted114 schedule (912 steps)
        **{f"cyclegan3d-cpu-mask-ema-fitted114-affine{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-fitted114-affine{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "114", "--decay-epoch", "57", "--affine-degrees", "4", "--affine-scale",
             "0.05", *seed), cpu_seconds_per_step=3.6)
           for suffix, seed in SEEDS},
        # random smooth bias fields on the training volumes, each its own (session 14): an extra field of
        # log-amplitude 0.05 / 0.10 on the held-out T1w costs session 12's best generator 0.12 / 0.45 dB, so it
        # has not learnt to ignore a smooth change of its input's intensity. Up to 0.15, as the subjects' own.
        **{f"cyclegan3d-cpu-mask-ema-decay-bias{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-decay-bias{suffix}", "cyclegan3d", (*MASK_EMA_DECAY, "--bias-field", "0.15", *seed),
            cpu_seconds_per_step=3.6) for suffix, seed in SEEDS},
        # no cycle terms (session 15): with paired data the supervised L1 already ties each translation to its
        # truth; the cycle L1 asks the T1w -> T2w output also to carry what reconstructs the T1w. The fitted114
        # schedule (912 steps). The cycle translations are still computed (their cost stays), only not weighted.
        **{f"cyclegan3d-cpu-mask-ema-fitted114-nocycle{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-fitted114-nocycle{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "114", "--decay-epoch", "57", "--lambda-cycle", "0", *seed),
            cpu_seconds_per_step=3.6) for suffix, seed in SEEDS},
        # Adam beta_1 0.9 instead of the original's 0.5 (session 15): the generators' loss is mostly the supervised
        # L1 (weight 40), for which the usual momentum averages the noise of single-crop gradients better
        **{f"cyclegan3d-cpu-mask-ema-fitted114-beta09{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-fitted114-beta09{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "114", "--decay-epoch", "57", "--beta-1", "0.9", *seed),
            cpu_seconds_per_step=3.6) for suffix, seed in SEEDS},
        # no cycle terms at their real cost (session 16): --lambda-cycle 0 no longer computes the reconstructions, so
        # a step costs 0.53x (float32, side by side on an AVX2-only machine); the decay fitted to about 1.9x the
        # steps of fitted114 at an estimated 1.75 CPU-s a step on an AMX machine (220 epochs of 8 steps, decay from
        # 110: 1,760 steps, about 51 CPU-minutes). Not run yet: this session's machine runs a step 19x slower.
        **{f"cyclegan3d-cpu-mask-ema-fitted220-nocycle{suffix}": TranslationProtocol(
            f"cyclegan3d-cpu-mask-ema-fitted220-nocycle{suffix}", "cyclegan3d",
            (*MASK_EMA_DECAY, "--epochs", "220", "--decay-epoch", "110", "--lambda-cycle", "0", *seed),
            cpu_seconds_per_step=1.75) for suffix, seed in SEEDS},
        # Is the preset's lr 1e-3 the reason its scores fall? The original's 2e-4 with the preset's crops.
        "cyclegan3d-cpu-lr2e-4": TranslationProtocol("cyclegan3d-cpu-lr2e-4", "cyclegan3d",
                                                     ("--preset", "cpu", "--no-mask-background", "--norm", "channel", "--lr", "2e-4"),
                                                     cpu_seconds_per_step=12.0),
        "pix2pix3d": SynthesisProtocol("pix2pix3d", "pix2pix3d", cpu_seconds_per_step=2.0),
        "pix2pix3d-domain2": SynthesisProtocol("pix2pix3d-domain2", "pix2pix3d", cpu_seconds_per_step=2.0,
                                               dataset_name="domain2"),
        # the SIT with nearest x2 + convolution instead of its transposed convolutions (checkerboard)
        "pix2pix3d-domain2-resize": SynthesisProtocol("pix2pix3d-domain2-resize", "pix2pix3d", ("--upsample", "resize"),
                                                      cpu_seconds_per_step=2.0, dataset_name="domain2"),
        # --preset cpu = --lr 1e-3 --input-skip (session 17; its domain2 run was named -inputskip-lr1e-3), and
        # each half alone: the input concatenated to the SIT's head, and the rate
        **{f"pix2pix3d{domain}-cpu": SynthesisProtocol(f"pix2pix3d{domain}-cpu", "pix2pix3d", ("--preset", "cpu"),
                                                       cpu_seconds_per_step=2.0, dataset_name=dataset)
           for domain, dataset in (("", "domain1"), ("-domain2", "domain2"))},
        **{f"pix2pix3d-domain2-{suffix}": SynthesisProtocol(f"pix2pix3d-domain2-{suffix}", "pix2pix3d", options,
                                                            cpu_seconds_per_step=2.0, dataset_name="domain2")
           for suffix, options in (("inputskip", ("--input-skip",)), ("lr1e-3", ("--lr", "1e-3")))},
        "uda": AdaptationProtocol("uda", "uda", cpu_seconds_per_step=30.0),
        # Not the original's 1e-6: does the KL term move the generator towards domain2 when it can move?
        "uda-lr1e-4": AdaptationProtocol("uda-lr1e-4", "uda", ("--lr", "1e-4"), cpu_seconds_per_step=30.0),
        "cyclegan-sr": SuperResolutionProtocol("cyclegan-sr", "cyclegan-sr", cpu_seconds_per_step=2.0),
        "cyclegan-sr-cpu-demo": SuperResolutionProtocol("cyclegan-sr-cpu-demo", "cyclegan-sr", CYCLEGAN_SR_CPU_DEMO_OPTIONS,
                                                        cpu_seconds_per_step=2.0),
    }


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
