"""3D CycleGAN for microCT denoising with 2x/4x super-resolution (seed 002: pvilla/3DCycleGaN).

Domain A is the fast (noisy, coarse) acquisition, domain B the slow (clean, fine) one; a B patch
is ``super_resolution`` times an A patch on every axis. Networks (spec B2): the simplified U-Nets
of :mod:`tfmedgan.networks.unet3d` (``net_a``: A->B, ``net_b``: B->A) and two PatchGANs with
eval-mode BatchNorm and sigmoid output (:mod:`tfmedgan.networks.patchgan_bn`).

Loss terms keep the original names: ``G_A`` is the adversarial loss of the A->B generator against
the discriminator judging domain B, ``D_A`` the loss of that discriminator, ``C_A`` the cycle
A->B->A; ``G_B``/``D_B``/``C_B`` the same for B. Each term is a list of ``[function, weight]``::

    {"G_A": [["bce", 10]], "G_B": [["bce", 10]], "D_A": [["bce", 1]], "D_B": [["bce", 1]],
     "C_A": [["l1", 100]], "C_B": [["l1", 100]]}

(the defaults; adversarial functions ``bce`` or ``mse``, cycle functions ``l1`` or ``mse``; a
term given as a plain number uses its default function; an empty list disables the term; terms
that are not given keep their defaults). All weights are rescaled so they sum to 200 (defaults:
C 90.09, G 9.009, D 0.9009 each).

One training step (original ``trainer.py``)::

    fake_B = G_A(A), fake_A = G_B(B)
    D step:  D_A * [f(D_b(B), 1) + f(D_b(fake_B), 0)] + D_B * [f(D_a(A), 1) + f(D_a(fake_A), 0)]
    G step (with the just-updated discriminators):
        G_A * f(D_b(fake_B), 1) + G_B * f(D_a(fake_A), 1)
        + C_A * |G_B(fake_B) - A| + C_B * |G_A(fake_A) - B|
    generator gradients clipped jointly to norm ``clip_max``; one Adam for both generators
    (2e-4), one for both discriminators (1e-4), beta_1 0.5.

With ``kickstart`` (first 150 steps, probability 0.7 per step) the reconstructions are made from
nearest-resampled real volumes instead: ``G_B(up(A))`` and ``G_A(down(B))``.

The original counts iterations. Here an epoch is ``steps_per_epoch`` (100) steps, the original's
checkpoint / log period: every epoch ends with a checkpoint (last ``keep_checkpoints`` kept), a
cycle plot ``samples/cycle_plot_step<step>.png`` and, with ``--hp-optimizer``, the original's
health checks (see :mod:`.hp_optimizer`). Per-step raw losses (``loss_<term>_<function>``),
weights (``w_...``), learning rates and truth tables (``tt_<D term>_{tp,tn,fp,fn}`` as fractions
of the judged voxels) are rows of ``losses.csv``; validation rows go to ``validation.csv``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tfmedgan.models.cyclegan_sr.config import (
    TERMS, CycleGANSRConfig, LossEntry, default_losses, normalize_weights, parse_loss_spec,
)
from tfmedgan.models.spec import ModelSpec, Positional

#: Named presets (explicit options win). ``cpu-demo`` is not the original's recipe: it learns 2x SR
#: of the built-in phantom within CPU-minutes (docs/cyclegan_sr.md, docs/faithfulness.md): the
#: original's 4x-preset lr_g 1e-3, kickstart for the whole run, adversarial generator weight 2
#: instead of 10 (before the rescaling to 200), discriminator BatchNorm on batch statistics, kickstart by
#: block means (measured on the quality bench: +0.8 dB / +0.085 SSIM at 150 steps).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu-demo": {"lr_g": 1e-3, "kickstart": True, "kickstart_steps": 1_000_000, "use_batch_statistics": True,
                 "losses": {"G_A": [["bce", 2.0]], "G_B": [["bce", 2.0]]}, "kickstart_downsample": "mean"},
}

__all__ = ["MODEL", "PRESETS", "TERMS", "CycleGANSRConfig", "LossEntry", "default_losses", "normalize_weights",
           "parse_loss_spec", "train"]


def _prepare_values(values: dict[str, Any]) -> dict[str, Any]:
    """``losses`` given as JSON text or a JSON file path -> the dict (one-line errors)."""
    if isinstance(values.get("losses"), (str, Path)):
        parse_loss_spec(values["losses"])
        text = str(values["losses"])
        values = {**values, "losses": json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())}
    return values


def sample_data(config: CycleGANSRConfig) -> None:
    """``--sample-data``: write (once) a phantom pair large enough for the patch into OUTPUT_DIR: slow
    axis 0 = 4 B patches (3 train, 1 validate), other axes 2 B patches."""
    from tfmedgan.data.samples import write_phantom_dataset

    factor = int(config.super_resolution)
    patch_b = [int(p) * factor for p in config.patch]
    shape = [4 * patch_b[0], 2 * patch_b[1], 2 * patch_b[2]]
    folder = Path(config.output_dir) / f"sample_data-{'x'.join(map(str, shape))}-sr{factor}"
    print(f"preparing the synthetic microCT pair in {folder} (cached) ...", file=sys.stderr)
    paths = write_phantom_dataset(folder, shape, factor, seed=config.seed)
    config.data_a, config.data_b = str(paths["fast_json"]), str(paths["slow_json"])


MODEL = ModelSpec(
    name="cyclegan-sr",
    config_class=CycleGANSRConfig,
    recipe="tfmedgan.models.cyclegan_sr.recipe:CycleGANSRRecipe",
    help="3D CycleGAN for microCT denoising and 2x/4x super-resolution on HDF5 patches (seed 002)",
    description="Train the 3D CycleGAN between a fast (A, low resolution) and a slow (B, high resolution) domain. "
    "DATA_A and DATA_B are dataset JSON files listing HDF5 volumes (path, dset, ROI0..2) under train/validate, or "
    "bare .h5 files. Random patches (B patch = SR x A patch, flips on all axes) are read lazily. One epoch = "
    "--steps-per-epoch steps (checkpoint, cycle plot, HP check); training stops after --num-iters steps. With "
    "--sample-data only OUTPUT_DIR is given: a synthetic fibre-composite pair is written to "
    "OUTPUT_DIR/sample_data-*/ and used.",
    positionals=(Positional("data_a", "DATA_A", sample_data=True), Positional("data_b", "DATA_B", sample_data=True),
                 Positional("output_dir", "OUTPUT_DIR")),
    sample_data=sample_data,
    presets=PRESETS,
    generates="tomogram",
    prepare_values=_prepare_values,
)


def train(config: CycleGANSRConfig, run_dir: str | None = None, **kwargs):
    """Train the microCT SR CycleGAN from ``config``; ``run_dir`` resumes an existing run."""
    return MODEL.train(config, run_dir=run_dir, **kwargs)
