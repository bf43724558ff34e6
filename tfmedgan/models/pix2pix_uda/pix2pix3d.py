"""3D pix2pix T2 + FLAIR -> T1 on BraTS-layout volumes (seed 001, source-domain pretraining).

The SIT generator (:mod:`tfmedgan.networks.sit`, 2,113,953 parameters) and the conditional
1-layer PatchGAN with blur-pool down-sampling (:mod:`tfmedgan.networks.patchgan_conditional`,
540,737 parameters), trained as the original ``train.py --model pix2pix --netG sit --netD
n_layers --n_layers_D 1``: LSGAN + 100 x L1 + 1.5 x the discriminator-feature loss, Adam 1e-4
(0.5, 0.999), 50 + 70 epochs with linear decay, batch 1 (the step is in
:meth:`tfmedgan.models.pix2pix_uda.common.Pix2PixBase.supervised_step`).

Data (:mod:`tfmedgan.data.brats`): ``ROOT/<dataset_name>_train/<case>/<case>_{t1,t2,flair}.nii.gz``
streamed through ``tf.data``, reoriented to IPL, cropped to 144 x 192 x 192, min-max scaled per
volume, one rot90/flip draw per sample (shared by its modalities) plus brightness/contrast
jitter of the inputs. Validation (every ``--validate-every`` epochs) on
``ROOT/<dataset_name>_val``: Gaussian SSIM, PSNR and MAE of the synthetic T1.

``python run.py pix2pix3d-test RUN ROOT --dataset-name domain2`` scores a pix2pix3d or uda run on
``ROOT/domain2_test`` and writes the synthetic T1 volumes on their original grids.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfmedgan.data import brats
from tfmedgan.engine.config import ENGINE_GROUP, option
from tfmedgan.errors import TfmedganError
from tfmedgan.models.pix2pix_uda.common import (
    Pix2PixBase, Pix2PixOptions, build_discriminator, build_generator, estimate_step_memory, memory_report,
    sample_brats_root, score_run, translate_cases,
)
from tfmedgan.models.spec import Command, ModelSpec, Positional
from tfmedgan.networks.sit import UPSAMPLE_CHOICES


#: Named settings (explicit options win). ``cpu``: for CPU budgets of a few hundred steps, not the
#: original's recipe: Adam at 1e-3 instead of 1e-4 (the original's rate is meant for 120 epochs of
#: about 100 cases and barely moves the weights in a few hundred steps), and the input concatenated
#: to the generator's head. On the bench's 4 mm sample cases (domain2, float32, 120 steps) the
#: generator then scores above a (T2, FLAIR) -> T1 look-up table (docs/pix2pix_uda.md).
PRESETS: dict[str, dict[str, Any]] = {"cpu": {"lr": 1e-3, "input_skip": True}}


@dataclasses.dataclass
class Pix2Pix3DConfig(Pix2PixOptions):
    """The 3D pix2pix's options; defaults are the original pretraining command's values.

    Attributes:
        dataset_name: trains on ``ROOT/<dataset_name>_train``, validates on ``..._val``.
        filters: SIT width (``--ngf`` 64); final_filters: channels of its last up-sampling (8).
        d_filters: PatchGAN filters (``--ndf`` 64).
        upsample: the SIT's up-sampling, ``transposed`` (the original) or ``resize`` (nearest x2
            + convolution: no checkerboard; same weight count, but not the original's weights).
        input_skip: the input concatenated to the generator's head (not the original; its first
            convolution has stride 2, so nothing reaches the output at full resolution otherwise).
    """

    model = "pix2pix3d"
    dataset_name: str = option("domain1", "train on ROOT/<name>_train, validate on ROOT/<name>_val")
    filters: int = option(64, "generator width (the original --ngf)")
    final_filters: int = option(8, "channels of the generator's last up-sampling")
    d_filters: int = option(64, "discriminator filters of the first convolution (--ndf)")
    upsample: str = option("transposed", "generator up-sampling: transposed convolutions (the original) or resize "
                           "(nearest x2 + convolution; no checkerboard)", choices=UPSAMPLE_CHOICES)
    input_skip: bool = option(False, "concatenate the input to the generator's head, a full-resolution path the "
                              "original lacks (its first convolution has stride 2); not the original's weights")
    epochs: int = option(120, "number of epochs (the original 50 + 70 decaying)", group=ENGINE_GROUP)
    validate_every: int = option(1, "score ROOT/<name>_val every N epochs (0: never)", group=ENGINE_GROUP)

    def validate(self) -> None:
        super().validate()
        if not self.crop_shape:
            raise TfmedganError("--crop-shape needs three sizes D H W")
        self.check_at_least(1, "filters", "final_filters", "d_filters")
        if self.upsample not in UPSAMPLE_CHOICES:
            raise TfmedganError(f"--upsample must be one of {', '.join(UPSAMPLE_CHOICES)}, got {self.upsample!r}")
        if not self.dataset_name or "/" in self.dataset_name:
            raise TfmedganError(f"--dataset-name must be a folder prefix such as domain1, got {self.dataset_name!r}")


class Pix2Pix3DRecipe(Pix2PixBase):
    """Seed 001 pretraining: the supervised pix2pix step on one source domain."""

    config: Pix2Pix3DConfig

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        config = self.config
        if not config.data_root:
            raise TfmedganError("no data folder given: ROOT must hold <dataset-name>_train (or use --sample-data)")
        crop_shape, crop_start = config.crop()
        self.cases = brats.list_split(config.data_root, config.dataset_name, "train", brats.MODALITIES)
        brats.validate_cases(self.cases, brats.MODALITIES, crop_shape, crop_start)
        validation = Path(config.data_root) / f"{config.dataset_name}_val"
        if validation.is_dir() and any(entry.is_dir() for entry in validation.iterdir()):
            self.validation_cases = brats.list_cases(validation, brats.MODALITIES)
            brats.validate_cases(self.validation_cases, brats.MODALITIES, crop_shape, crop_start, progress=False)
        self.figure_case = (self.validation_cases or self.cases)[0]
        shape = config.model_shape()
        if config.batch > 1 and config.augment and len(set(shape)) > 1:
            raise TfmedganError(f"rot90 augmentation changes the shape of a {list(shape)} crop, so --batch must be 1 "
                                f"(got {config.batch}); use a cubic --crop-shape or --no-augment")
        self.drop_remainder = num_replicas > 1
        if self.drop_remainder and config.batch % num_replicas:
            raise TfmedganError(f"--batch {config.batch} is not divisible by the {num_replicas} replicas")
        if self.drop_remainder and len(self.cases) < config.batch:
            raise TfmedganError(f"{len(self.cases)} cases are fewer than one batch of {config.batch}")
        count = len(self.cases)
        self.steps_per_epoch = count // config.batch if self.drop_remainder else math.ceil(count / config.batch)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        config = self.config
        crop_shape, crop_start = config.crop()
        return brats.pix2pix_dataset(self.cases, crop_shape, crop_start, batch=config.batch, seed=config.seed,
                                     epoch=epoch, augment=config.augment, skip=skip_batches * config.batch,
                                     drop_remainder=getattr(self, "drop_remainder", False))

    # -- networks --------------------------------------------------------------------------------
    def build_networks_only(self) -> None:
        config = self.config
        self.networks = {
            "generator": build_generator(config.filters, config.final_filters, upsample=config.upsample,
                                         input_skip=config.input_skip),
            "discriminator": build_discriminator(config.d_filters),
        }

    def build(self, num_replicas: int = 1) -> None:
        self.build_networks_only()
        self.optimizers = self.make_optimizers()

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs, target = batch
        return self.supervised_step(inputs, target)

    # -- dry run ---------------------------------------------------------------------------------
    def dry_run_extra(self) -> dict[str, Any]:
        config = self.config
        shape = config.model_shape()
        estimate = estimate_step_memory(config.filters, config.final_filters, config.d_filters, shape, config.recompute,
                                        precision=config.precision)
        return {"model_shape": list(shape), **memory_report(estimate)}


# ------------------------------------------------------------------------------------------------
# pix2pix3d-test
# ------------------------------------------------------------------------------------------------
def _test_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a pix2pix3d or uda run directory")
    parser.add_argument("root", metavar="ROOT", help="BraTS-layout root holding <dataset-name>_<phase>")
    parser.add_argument("--dataset-name", default="domain2", help="domain prefix of the test folder (default: domain2)")
    parser.add_argument("--phase", default="test", help="split suffix of the test folder (default: test)")
    parser.add_argument("--output", help="output folder (default: RUN/test_<dataset-name>_<phase>)")
    parser.add_argument("--best", action="store_true", help="use the best validation generator (models/best_generator.keras)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_test(args) -> int:
    import numpy as np

    rows, out = score_run(args.run_dir, args.root, args.dataset_name, args.phase, output=args.output, best=args.best,
                          overwrite=args.overwrite, progress=not args.no_progress)

    def spread(key: str) -> str:
        values = [row[key] for row in rows]
        return f"{np.nanmean(values):.4f} +- {np.nanstd(values):.4f}"

    print(f"{args.dataset_name}_{args.phase}: {len(rows)} cases; SSIM {spread('ssim')}, PSNR {spread('psnr')} dB, "
          f"MAE {spread('mae')}; in the brain mask: SSIM {spread('ssim_brain')}, PSNR {spread('psnr_brain')} dB, "
          f"MAE {spread('mae_brain')}")
    print(f"wrote {out / 'metrics.csv'} and {len(rows)} synthetic T1 volume(s) on the original grids to {out}")
    return 0


TEST_COMMAND = Command(
    name="pix2pix3d-test",
    help="score a pix2pix3d or uda run on ROOT/<dataset>_test and write its synthetic T1 volumes (seed 001)",
    add_arguments=_test_arguments,
    run=_run_test,
    description="For every case of ROOT/<dataset-name>_<phase> (t1, t2, flair): the synthetic T1 from T2 + FLAIR, "
    "scored against the real T1 on the crop (Gaussian 11^3 SSIM as the original util/ssim.py, PSNR with range 1, "
    "MAE; whole crop and brain mask; plus the original's PSNR) into metrics.csv with mean and std rows, and written "
    "as <case>_t1_synthetic.nii.gz on the case's ORIGINAL grid (shape and affine of the input).",
)


MODEL = ModelSpec(
    name="pix2pix3d",
    config_class=Pix2Pix3DConfig,
    recipe="tfmedgan.models.pix2pix_uda.pix2pix3d:Pix2Pix3DRecipe",
    help="3D pix2pix T2 + FLAIR -> T1 with the SIT generator, source-domain pretraining (seed 001)",
    description="Train the 3D pix2pix (SIT generator, conditional 1-layer PatchGAN) on ROOT/<dataset-name>_train "
    "(BraTS layout: <case>/<case>_{t1,t2,flair}.nii.gz), validating on ROOT/<dataset-name>_val. Volumes are "
    "reoriented to IPL, cropped to 144 x 192 x 192 (--crop-shape), min-max scaled and augmented per sample. With "
    "--sample-data only OUTPUT_DIR is given: simulated cases of two institutions are written to "
    "OUTPUT_DIR/sample_data-brats-4mm and a 40 x 48 x 40 crop is used.",
    positionals=(Positional("data_root", "ROOT", sample_data=True), Positional("output_dir", "OUTPUT_DIR")),
    presets=PRESETS,
    sample_data=sample_brats_root,
    generates="cases",
    translate=translate_cases,
    commands=(TEST_COMMAND,),
)


def train(config: Pix2Pix3DConfig, run_dir: str | None = None, **kwargs):
    """Train the 3D pix2pix from ``config``; ``run_dir`` resumes an existing run."""
    return MODEL.train(config, run_dir=run_dir, **kwargs)
