"""Options of the microCT SR CycleGAN and its loss specification (terms, functions, weights)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfmedgan.engine.config import EngineConfig, option
from tfmedgan.errors import TfmedganError
from tfmedgan.networks.patchgan_bn import patchgan_bn_output_shape
from tfmedgan.networks.unet3d import UNET_NAMES, check_pair

ADVERSARIAL_FUNCTIONS = ("bce", "mse")
CYCLE_FUNCTIONS = ("l1", "mse")


#: Loss terms of the microCT CycleGAN, named as the original (``G_A``: adversarial loss of the
#: A->B generator, ``D_A``: loss of the discriminator judging domain B, ``C_A``: cycle A->B->A).
TERMS = ("G_A", "G_B", "D_A", "D_B", "C_A", "C_B")


def default_losses() -> dict[str, list]:
    return {"G_A": [["bce", 10.0]], "G_B": [["bce", 10.0]], "D_A": [["bce", 1.0]], "D_B": [["bce", 1.0]],
            "C_A": [["l1", 100.0]], "C_B": [["l1", 100.0]]}


@dataclasses.dataclass
class CycleGANSRConfig(EngineConfig):
    """The microCT SR CycleGAN's options (seed 002, pvilla/3DCycleGaN); defaults are the original
    ``train()`` defaults.

    The original counts iterations; the engine counts epochs of ``steps_per_epoch`` steps (100, the
    original's checkpoint / losses.json period). ``num_iters`` sets ``max_steps`` and ``epochs``
    (``ceil(num_iters / steps_per_epoch)``).

    Attributes:
        data_a, data_b: dataset descriptions (JSON of HDF5 volumes, or a bare ``.h5``) of domain A
            (fast / low resolution) and B (slow / high resolution).
        net_a, net_b: U-Nets A->B and B->A (``UNetSim3d``, ``UNetSim3dSRx2``/``SRd2``, ``SRx4``/``SRd4``).
        super_resolution: size factor B / A (1, 2 or 4); B patch = factor x A patch.
        patch: A patch (depth, height, width) = the original ``imsize_A``.
        num_filters: U-Net ``num_filters`` (32). d_filters, d_layers: PatchGAN ndf / n_layers (64, 3).
        num_iters: training iterations (original default 1e6, i.e. until stopped).
        steps_per_epoch: steps between checkpoints, cycle plots and HP checks (100).
        lr_g, lr_d, beta_1, beta_2: Adam of the generator pair and of the discriminator pair.
        clip_max: joint gradient-norm clip of both generators (0 = off).
        losses: per term a list of ``[function, weight]`` (functions: bce, mse for adversarial
            terms; l1, mse for cycle terms); all weights are rescaled to sum to ``lambda_total``.
        lambda_total: sum of all loss weights after rescaling (200).
        kickstart: for the first ``kickstart_steps`` steps, with probability
            ``kickstart_probability``, reconstruct from nearest-resampled real volumes instead of
            the fakes (prevents intensity inversions when both domains have similar intensities).
            ``kickstart_downsample``: B reaches the A size by ``nearest`` (the original) or ``mean``
            (block mean, what a larger detector voxel records).
        hp_optimizer: the original's experimental HP optimizer (checks every ``steps_per_epoch``
            steps after step 250; on failure re-weight, change learning rates, roll back ~200 steps).
        validate_every: validation every N epochs (0 = never); validate_batches: batches per validation.
        check_finite: scan every ROI for NaN / inf before training (one streaming pass).
        use_batch_statistics: standard BatchNorm in the discriminators instead of the original's
            eval-mode BatchNorm (fixed statistics).
        preset: the ``--preset`` the config was made from (``""`` or ``cpu-demo``; recorded only,
            its values are already in the other fields).
    """

    model = "cyclegan-sr"
    data_a: str = ""
    data_b: str = ""
    net_a: str = option("UNetSim3d", "U-Net A->B", choices=UNET_NAMES)
    net_b: str = option("UNetSim3d", "U-Net B->A", choices=UNET_NAMES)
    super_resolution: int = option(1, "size factor B / A (1, 2 or 4)")
    patch: list[int] = option(help="A patch size D H W (the original imsize_A)", nargs=3, type=int,
                              metavar=("D", "H", "W"), default_factory=lambda: [128, 128, 128])
    num_filters: int = option(32, "U-Net num_filters")
    initializer: str = option("normal", "U-Net weight init: normal = N(0, 0.02) as the original, torch_default = "
                              "PyTorch's default (faster start)", choices=("normal", "torch_default"))
    d_filters: int = option(64, "PatchGAN filters of the first convolution")
    d_layers: int = option(3, "PatchGAN stride-2 layers")
    num_iters: int = option(1_000_000, "training iterations (steps)")
    steps_per_epoch: int = option(100, "steps per epoch = checkpoint / plot / HP-check period")
    batch: int = option(4, "patches per step", aliases=("--batch-size",), group="training engine")
    lr_g: float = option(2e-4, "Adam learning rate of the generators")
    lr_d: float = option(1e-4, "Adam learning rate of the discriminators")
    beta_1: float = option(0.5, "Adam beta_1")
    beta_2: float = option(0.999, "Adam beta_2")
    clip_max: float = option(1.0, "joint gradient-norm clip of the generators (0: off)")
    losses: dict[str, Any] = option(
        help='loss functions and weights per term, a JSON file or inline JSON, e.g. \'{"G_A": [["bce", 10]], '
        '"C_A": [["l1", 100]]}\' (missing terms keep the defaults G 10, D 1, C 100 with bce / l1; weights are '
        'rescaled to sum to 200)', metavar="JSON", default_factory=default_losses)
    lambda_total: float = 200.0
    kickstart: bool = option(False, "reconstruct from resampled real volumes with p 0.7 in the first steps")
    kickstart_steps: int = option(150, "steps of the kickstart phase")
    kickstart_probability: float = option(0.7, "probability of a kickstart step within the kickstart phase")
    kickstart_downsample: str = option("nearest", "how the kickstart shrinks real B to the A size: nearest (every "
                                       "SR-th voxel, the original) or mean (block mean: a larger voxel)",
                                       choices=("nearest", "mean"))
    hp_optimizer: bool = option(False, "the original's experimental HP optimizer (checks, re-weighting, roll-back)")
    validate_every: int = option(10, "validation every N epochs (0: never)", group="training engine")
    validate_batches: int = option(8, "batches per validation")
    check_finite: bool = option(True, "scan the volumes for NaN/inf before training", negative="--no-check-finite")
    use_batch_statistics: bool = option(False, "standard BatchNorm in the discriminators (the original kept them in "
                                        "eval mode)", flags=("--batch-statistics",))
    keep_checkpoints: int = option(3, "number of checkpoints kept on disk", group="training engine")
    epochs: int = 10_000
    preset: str = ""

    def validate(self) -> None:
        super().validate()
        if self.initializer not in ("normal", "torch_default"):
            raise TfmedganError(f"--initializer must be normal or torch_default, got {self.initializer!r}")
        if len(self.patch) != 3:
            raise TfmedganError(f"--patch needs three sizes (depth height width), got {self.patch}")
        check_pair(self.net_a, self.net_b, self.super_resolution, [int(p) for p in self.patch])
        patch_b = [int(p) * self.super_resolution for p in self.patch]
        try:
            patchgan_bn_output_shape(self.patch, self.d_layers)
            patchgan_bn_output_shape(patch_b, self.d_layers)
        except TfmedganError:
            raise TfmedganError(
                f"--patch {list(self.patch)} (B patch {patch_b}) is too small for the {self.d_layers}-layer "
                f"discriminator: every side must be at least {3 * 2 ** self.d_layers}"
            ) from None
        for field in ("num_filters", "d_filters", "num_iters", "steps_per_epoch", "validate_batches"):
            if getattr(self, field) < 1:
                raise TfmedganError(f"--{field.replace('_', '-')} must be at least 1, got {getattr(self, field)}")
        for field in ("lr_g", "lr_d", "clip_max", "kickstart_steps", "validate_every"):
            if getattr(self, field) < 0:
                raise TfmedganError(f"--{field.replace('_', '-')} must be >= 0, got {getattr(self, field)}")
        if self.kickstart_downsample not in ("nearest", "mean"):
            raise TfmedganError(f"--kickstart-downsample must be nearest or mean, got {self.kickstart_downsample!r}")
        if not 0.0 <= self.kickstart_probability <= 1.0:
            raise TfmedganError(f"--kickstart-probability must be in [0, 1], got {self.kickstart_probability}")
        if not self.lambda_total > 0:
            raise TfmedganError(f"lambda_total must be positive, got {self.lambda_total}")
        parse_loss_spec(self.losses)


@dataclass(frozen=True)
class LossEntry:
    """One weighted loss function of one term (e.g. ``G_A`` / ``bce`` / 10)."""

    term: str
    function: str
    weight: float

    @property
    def name(self) -> str:
        return f"{self.term}_{self.function}"


def parse_loss_spec(spec: Any) -> list[LossEntry]:
    """Validate a loss specification (dict, JSON text or path of a JSON file) and list its entries.

    Terms missing from ``spec`` keep their defaults (:data:`TERMS`); a plain number
    means the term's default function with that weight.

    Example:
        >>> [e.name for e in parse_loss_spec({"C_A": [["l1", 50], ["mse", 5]]})][:3]
        ['G_A_bce', 'G_B_bce', 'D_A_bce']
    """
    if isinstance(spec, (str, Path)):
        text = str(spec)
        path = Path(text)
        try:
            if not text.lstrip().startswith("{") and path.is_file():
                text = path.read_text()
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise TfmedganError(f"--losses is neither a JSON file nor valid JSON: {error}") from None
        except OSError as error:
            raise TfmedganError(f"cannot read --losses file {path}: {error}") from None
    if not isinstance(spec, dict):
        raise TfmedganError(f"--losses must be a JSON object of terms {', '.join(TERMS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(TERMS))
    if unknown:
        raise TfmedganError(f"unknown loss term(s) {unknown}; use {', '.join(TERMS)}")
    merged = {**default_losses(), **spec}
    entries = []
    for term in TERMS:
        allowed = CYCLE_FUNCTIONS if term.startswith("C") else ADVERSARIAL_FUNCTIONS
        value = merged[term]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [[allowed[0], value]]
        if not isinstance(value, list):
            raise TfmedganError(f"loss term {term} must be a list of [function, weight] pairs, got {value!r}")
        seen = set()
        for item in value:
            if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], (int, float))):
                raise TfmedganError(f"loss term {term}: {item!r} is not a [function, weight] pair")
            function, weight = item[0].lower(), float(item[1])
            if function not in allowed:
                raise TfmedganError(f"loss term {term}: unknown function {item[0]!r}; use {' or '.join(allowed)}")
            if function in seen:
                raise TfmedganError(f"loss term {term} lists {function} twice")
            if not (weight >= 0 and math.isfinite(weight)):
                raise TfmedganError(f"loss term {term}: weight {item[1]!r} must be a finite number >= 0")
            seen.add(function)
            entries.append(LossEntry(term, function, weight))
    if not sum(e.weight for e in entries) > 0:
        raise TfmedganError("--losses: all loss weights are 0")
    return entries


def normalize_weights(weights: np.ndarray | list[float], total: float = 200.0) -> np.ndarray:
    """Rescale weights to sum to ``total`` (the original's ``normalizeLambdas``).

    Example:
        >>> normalize_weights([10, 10, 1, 1, 100, 100]).round(4).tolist()
        [9.009, 9.009, 0.9009, 0.9009, 90.0901, 90.0901]
    """
    array = np.asarray(weights, np.float64)
    return array * (float(total) / array.sum())
