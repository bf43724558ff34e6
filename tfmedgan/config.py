"""Run configurations: one dataclass per model, defaults taken from the original (seed) code.

A configuration is the single source of truth for a run: the CLI builds one, ``--dry-run`` prints
it, the run directory stores it as ``config.json`` and ``--resume`` reads it back. Every field is a
plain JSON value so the file stays readable and editable.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tfmedgan.errors import TfmedganError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


@dataclasses.dataclass
class EngineConfig:
    """Options of the shared training engine, common to every model.

    Attributes:
        output_dir: parent folder of the run directory.
        name: run directory name inside ``output_dir`` (default ``<model>-<timestamp>``).
        epochs: number of passes over the training data.
        batch: global batch size (split across replicas under a distribution strategy).
        seed: seeds Python, NumPy and TensorFlow; with the same seed a run is repeatable on CPU.
        checkpoint: save a checkpoint and a sample grid every N epochs.
        checkpoint_steps: also save a checkpoint every N steps (0 = only at epoch ends).
        checkpoint_minutes: also save a checkpoint when this many minutes passed since the last one.
        keep_checkpoints: number of most recent checkpoints kept on disk.
        precision: ``float32``, ``mixed_bfloat16`` (fast on recent CPUs) or ``mixed_float16`` (GPU).
        strategy: ``auto`` picks multi-worker when TF_CONFIG is set, mirrored with several GPUs.
        jit_compile: XLA compilation of the train step (slow for 3D convolutions on CPU).
        neptune: log to Neptune (project and token from NEPTUNE_PROJECT / NEPTUNE_API_TOKEN).
        log_every: write a row to losses.csv every N steps.
        max_steps: stop after this many steps in total (0 = no limit); for quick trials.
    """

    output_dir: str = "runs"
    name: str = ""
    epochs: int = 1
    batch: int = 1
    seed: int = 0
    checkpoint: int = 1
    checkpoint_steps: int = 0
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 2
    precision: str = "float32"
    strategy: str = "auto"
    jit_compile: bool = False
    neptune: bool = False
    log_every: int = 1
    max_steps: int = 0

    model: ClassVar[str] = "base"

    def validate(self) -> None:
        """Raise :class:`TfmedganError` for option values that cannot work."""
        if self.precision not in PRECISIONS:
            raise TfmedganError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise TfmedganError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for field in ("epochs", "batch", "checkpoint", "keep_checkpoints", "log_every"):
            if getattr(self, field) < 1:
                raise TfmedganError(f"--{field.replace('_', '-')} must be at least 1, got {getattr(self, field)}")
        if not 0 <= self.seed < 2**31:
            raise TfmedganError(f"--seed must be in [0, 2^31), got {self.seed}")
        for field in ("checkpoint_steps", "max_steps"):
            if getattr(self, field) < 0:
                raise TfmedganError(f"--{field.replace('_', '-')} must be >= 0, got {getattr(self, field)}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **dataclasses.asdict(self)}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


ConfigT = TypeVar("ConfigT", bound=EngineConfig)


def config_from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Build ``cls`` from a dict, ignoring the ``model`` key and rejecting unknown keys."""
    if not isinstance(values, dict):
        raise TfmedganError(f"a {cls.model} config must be a JSON object, got {type(values).__name__}")
    values = dict(values)
    model = values.pop("model", cls.model)
    if model != cls.model:
        raise TfmedganError(f"config is for model {model!r}, not {cls.model!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TfmedganError(f"unknown config keys for {cls.model}: {', '.join(unknown)}")
    return cls(**values)


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise TfmedganError(f"{path} not found: not a tfmedgan run directory") from None
    except OSError as error:
        raise TfmedganError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise TfmedganError(f"{path} is not valid JSON: {error}") from None


@dataclasses.dataclass
class DCGANConfig(EngineConfig):
    """Seed 003 (Amy Zhao's DCGAN on OASIS slices); defaults are the original's hard-coded values.

    Attributes:
        data_dirs: folders of PNG/JPEG slices, searched recursively and concatenated.
        resolution: image size (multiple of 8); the original used the OASIS 256 px slices.
        channels: 1 (grayscale) or 3 (RGB).
        latent: latent vector length.
        lr_g, lr_d: Adam learning rates of generator and discriminator.
        beta_1: Adam beta_1 of both optimizers (the original kept Keras' default 0.9).
        dropout: discriminator dropout rate.
        n_samples: images in the per-epoch sample grid (fixed latents).
    """

    model: ClassVar[str] = "dcgan"
    data_dirs: list[str] = dataclasses.field(default_factory=list)
    resolution: int = 256
    channels: int = 1
    latent: int = 256
    batch: int = 10
    epochs: int = 200
    lr_g: float = 2e-4
    lr_d: float = 1e-4
    beta_1: float = 0.9
    dropout: float = 0.4
    n_samples: int = 16

    def validate(self) -> None:
        super().validate()
        if self.resolution < 8 or self.resolution % 8:
            raise TfmedganError(f"--resolution must be a multiple of 8 (the generator upsamples 3 times), got {self.resolution}")
        if self.channels not in (1, 3):
            raise TfmedganError(f"--channels must be 1 or 3, got {self.channels}")
        if self.latent < 1 or self.n_samples < 1:
            raise TfmedganError("--latent and --n-samples must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise TfmedganError(f"--dropout must be in [0, 1), got {self.dropout}")


#: The seed-004 authors' recommended settings per resolution (readme table): epochs, fade_in_base,
#: batch, lr; the architecture values are the original run.py configs for 64/128 and the README's
#: example for 256.
STYLEGAN2_PRESETS: dict[int, dict[str, Any]] = {
    64: dict(resolution=64, epochs=30, fade_in_base=40.0, batch=128, lr=2e-4,
             g_input_res=4, g_init_filters=512, d_final_res=4, d_input_filters=64),
    128: dict(resolution=128, epochs=30, fade_in_base=40.0, batch=64, lr=2e-4,
              g_input_res=8, g_init_filters=512, d_final_res=8, d_input_filters=32),
    256: dict(resolution=256, epochs=40, fade_in_base=80.0, batch=64, lr=1e-4,
              g_input_res=8, g_init_filters=512, d_final_res=8, d_input_filters=32),
}


@dataclasses.dataclass
class StyleGAN2Config(EngineConfig):
    """Seed 004 (Zhien Zhang's simplified residual StyleGAN2); defaults are the original run.py's.

    Attributes:
        data_dir: folder of PNG/JPEG slices (searched recursively).
        g_input_res, g_init_filters: generator reshape resolution and filters after the Dense.
        d_final_res, d_input_filters: discriminator resolution after the last residual block and
            filters of fromRGB / the first block.
        fade_in_base: alpha = epoch / fade_in_base, clipped to [0, 1].
        resolution, channels, latent, lr, beta: as the original options.
        val: number of preview images in the per-epoch grid (fixed latents).
        loss: ``bce`` (the original) or ``wgan-gp`` (the variant the authors tried: GP weight 10,
            2 critic steps per generator step).
        minibatch_std: ``channel`` (intended) or ``row`` (the original's quirk, for its weights).
        pixel_norm_axis: -1 normalises over channels (intended); 1 reproduces the original.
        clip_alpha: clip the fade-in to [0, 1] (the original did not).
    """

    model: ClassVar[str] = "stylegan2"
    data_dir: str = ""
    g_input_res: int = 4
    g_init_filters: int = 512
    d_final_res: int = 4
    d_input_filters: int = 64
    fade_in_base: float = 40.0
    resolution: int = 64
    channels: int = 1
    latent: int = 100
    batch: int = 128
    epochs: int = 20
    lr: float = 2e-4
    beta: float = 0.5
    val: int = 16
    seed: int = 1
    loss: str = "bce"
    gp_weight: float = 10.0
    n_critic: int = 2
    minibatch_std: str = "channel"
    pixel_norm_axis: int = -1
    clip_alpha: bool = True

    def validate(self) -> None:
        super().validate()
        from tfmedgan.networks.stylegan2 import validate_config

        validate_config(self.resolution, self.g_input_res, self.d_final_res, self.batch, channels=self.channels)
        if self.loss not in ("bce", "wgan-gp"):
            raise TfmedganError(f"--loss must be bce or wgan-gp, got {self.loss!r}")
        if self.minibatch_std not in ("channel", "row"):
            raise TfmedganError(f"--minibatch-std must be channel or row, got {self.minibatch_std!r}")
        if not math.isfinite(self.fade_in_base) or self.fade_in_base <= 0:
            raise TfmedganError(f"fade_in_base must be positive, got {self.fade_in_base}")
        if self.val < 1 or self.latent < 1 or self.n_critic < 1:
            raise TfmedganError("--val, --latent and --n-critic must be positive")


@dataclasses.dataclass
class CycleGAN3DConfig(EngineConfig):
    """Seed 000 (DCAN-Labs 3D CycleGAN, T1w <-> T2w NIfTI); defaults are CycleGAN_3D.py's values.

    Attributes:
        data_dir: folder holding ``trainA``/``trainB`` (and optionally ``testA``/``testB``) NIfTIs.
        shape: model input spatial shape ``[x, y, z]``; empty = the largest training volume shape
            rounded up to a shape the generator accepts. Given shapes are rounded up the same way.
        norm: instance normalisation ``channel`` (per channel, intended) or ``zslice`` (per index
            of the last spatial axis, the original's keras-contrib ``axis=3`` quirk).
        base_filters, n_downsamplings, n_residual_blocks: generator size (original 32, 1, 1).
        preset: ``""`` or ``gan_3d`` (the deeper GAN_3D.py networks); explicit options win.
        d_layers, d_filters: stride-2 blocks and first-layer filters of the PatchGAN (1, 64).
        lr, beta_1, beta_2: Adam of generators and discriminators.
        decay_epoch: the learning rates fall linearly towards 0 from this epoch to ``epochs``
            (no decay when ``epochs <= decay_epoch``).
        lambda_cycle, lambda_supervised, lambda_identity: loss weights (10, 40, 1).
        supervised: add the supervised L1 terms (needs co-registered pairs; ``--unpaired`` = off).
        identity_every: identity L1 update every N steps (0 = never).
        generator_updates: generator updates per discriminator update (2).
        pool_size: history of generated volumes per domain shown to the discriminators (50).
        recompute: gradient checkpointing of the generators: their activations are recomputed
            in the backward pass instead of kept (less memory, ~1.3-1.5x the step time).
    """

    model: ClassVar[str] = "cyclegan3d"
    data_dir: str = ""
    shape: list[int] = dataclasses.field(default_factory=list)
    norm: str = "channel"
    base_filters: int = 32
    n_downsamplings: int = 1
    n_residual_blocks: int = 1
    preset: str = ""
    d_layers: int = 1
    d_filters: int = 64
    lr: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    epochs: int = 150
    decay_epoch: int = 75
    batch: int = 1
    lambda_cycle: float = 10.0
    lambda_supervised: float = 40.0
    lambda_identity: float = 1.0
    supervised: bool = True
    identity_every: int = 10
    generator_updates: int = 2
    pool_size: int = 50
    recompute: bool = False
    seed: int = 12346

    def validate(self) -> None:
        super().validate()
        if self.norm not in ("channel", "zslice"):
            raise TfmedganError(f"--norm must be channel or zslice, got {self.norm!r}")
        if self.preset not in ("", "gan_3d"):
            raise TfmedganError(f"--preset must be gan_3d (or empty), got {self.preset!r}")
        if self.shape and (len(self.shape) != 3 or any(int(size) < 1 for size in self.shape)):
            raise TfmedganError(f"--shape needs three positive sizes X Y Z, got {self.shape}")
        for field in ("base_filters", "d_layers", "d_filters", "generator_updates"):
            if getattr(self, field) < 1:
                raise TfmedganError(f"--{field.replace('_', '-')} must be at least 1, got {getattr(self, field)}")
        for field in ("n_downsamplings", "n_residual_blocks", "identity_every", "pool_size"):
            if getattr(self, field) < 0:
                raise TfmedganError(f"--{field.replace('_', '-')} must be >= 0, got {getattr(self, field)}")
        for field in ("lr", "lambda_cycle", "lambda_supervised", "lambda_identity"):
            if getattr(self, field) < 0:
                raise TfmedganError(f"--{field.replace('_', '-')} must be >= 0, got {getattr(self, field)}")
        if self.decay_epoch < 0:
            raise TfmedganError(f"--decay-epoch must be >= 0, got {self.decay_epoch}")


#: Loss terms of the seed-002 CycleGAN, named as the original (``G_A``: adversarial loss of the
#: A->B generator, ``D_A``: loss of the discriminator judging domain B, ``C_A``: cycle A->B->A).
CYCLEGAN_SR_TERMS = ("G_A", "G_B", "D_A", "D_B", "C_A", "C_B")


def _default_sr_losses() -> dict[str, list]:
    return {"G_A": [["bce", 10.0]], "G_B": [["bce", 10.0]], "D_A": [["bce", 1.0]], "D_B": [["bce", 1.0]],
            "C_A": [["l1", 100.0]], "C_B": [["l1", 100.0]]}


@dataclasses.dataclass
class CycleGANSRConfig(EngineConfig):
    """Seed 002 (pvilla/3DCycleGaN: microCT denoising + 2x/4x super-resolution); defaults are the
    original ``train()`` defaults.

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
        hp_optimizer: the original's experimental HP optimizer (checks every ``steps_per_epoch``
            steps after step 250; on failure re-weight, change learning rates, roll back ~200 steps).
        validate_every: validation every N epochs (0 = never); validate_batches: batches per validation.
        check_finite: scan every ROI for NaN / inf before training (one streaming pass).
        use_batch_statistics: standard BatchNorm in the discriminators instead of the original's
            eval-mode BatchNorm (fixed statistics).
    """

    model: ClassVar[str] = "cyclegan-sr"
    data_a: str = ""
    data_b: str = ""
    net_a: str = "UNetSim3d"
    net_b: str = "UNetSim3d"
    super_resolution: int = 1
    patch: list[int] = dataclasses.field(default_factory=lambda: [128, 128, 128])
    num_filters: int = 32
    initializer: str = "normal"
    d_filters: int = 64
    d_layers: int = 3
    num_iters: int = 1_000_000
    steps_per_epoch: int = 100
    batch: int = 4
    lr_g: float = 2e-4
    lr_d: float = 1e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    clip_max: float = 1.0
    losses: dict[str, Any] = dataclasses.field(default_factory=_default_sr_losses)
    lambda_total: float = 200.0
    kickstart: bool = False
    kickstart_steps: int = 150
    kickstart_probability: float = 0.7
    hp_optimizer: bool = False
    validate_every: int = 10
    validate_batches: int = 8
    check_finite: bool = True
    use_batch_statistics: bool = False
    keep_checkpoints: int = 3
    epochs: int = 10_000

    def validate(self) -> None:
        super().validate()
        if self.initializer not in ("normal", "torch_default"):
            raise TfmedganError(f"--initializer must be normal or torch_default, got {self.initializer!r}")
        from tfmedgan.networks.unet3d import check_pair

        if len(self.patch) != 3:
            raise TfmedganError(f"--patch needs three sizes (depth height width), got {self.patch}")
        check_pair(self.net_a, self.net_b, self.super_resolution, [int(p) for p in self.patch])
        from tfmedgan.networks.patchgan_bn import patchgan_bn_output_shape

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
        if not 0.0 <= self.kickstart_probability <= 1.0:
            raise TfmedganError(f"--kickstart-probability must be in [0, 1], got {self.kickstart_probability}")
        if not self.lambda_total > 0:
            raise TfmedganError(f"lambda_total must be positive, got {self.lambda_total}")
        from tfmedgan.models.cyclegan_sr import parse_loss_spec

        parse_loss_spec(self.losses)
