"""Command-line interface: ``python run.py MODEL [positional args] [options]``.

Each model subcommand maps its options one to one onto the fields of the model's config dataclass;
the defaults shown in ``--help`` are the dataclass defaults (the original authors' values). Errors
a user can fix are printed as one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable, Sequence

from tfmedgan.config import PRECISIONS, STRATEGIES, EngineConfig, config_from_dict, read_config
from tfmedgan.errors import TfmedganError

# Fields that may change when a run is resumed; everything else is fixed by the run's config.json.
RESUMABLE_FIELDS = {
    "epochs", "max_steps", "neptune", "checkpoint", "checkpoint_steps", "checkpoint_minutes",
    "keep_checkpoints", "log_every", "strategy", "jit_compile",
}

SUPPRESS = argparse.SUPPRESS
STYLEGAN2_PRESETS_KEYS = (64, 128, 256)


def _default(cls: type[EngineConfig], field: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == field:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    raise KeyError(field)


def add_option(parser, cls, flags: Sequence[str], field: str, help: str, **kwargs) -> None:
    """An option stored in ``field`` with no argparse default (so explicit values can be told apart)."""
    default = _default(cls, field)
    if isinstance(default, bool) and "action" not in kwargs:
        kwargs["action"] = argparse.BooleanOptionalAction  # --flag / --no-flag (e.g. --no-neptune on resume)
    elif "type" not in kwargs and "action" not in kwargs and default is not None and not isinstance(default, list):
        kwargs["type"] = type(default)
    parser.add_argument(*flags, dest=field, default=SUPPRESS, help=f"{help} (default: {default})", **kwargs)


def add_engine_options(parser: argparse.ArgumentParser, cls: type[EngineConfig]) -> None:
    group = parser.add_argument_group("training engine")
    add_option(group, cls, ["--epochs"], "epochs", "number of epochs")
    add_option(group, cls, ["--batch"], "batch", "global batch size")
    add_option(group, cls, ["--seed"], "seed", "random seed (Python, NumPy, TensorFlow)")
    add_option(group, cls, ["--checkpoint"], "checkpoint", "save checkpoint and sample grid every N epochs")
    add_option(group, cls, ["--checkpoint-steps"], "checkpoint_steps", "also checkpoint every N steps (0: off)")
    add_option(group, cls, ["--checkpoint-minutes"], "checkpoint_minutes", "also checkpoint every N minutes (0: off)")
    add_option(group, cls, ["--keep-checkpoints"], "keep_checkpoints", "number of checkpoints kept")
    add_option(group, cls, ["--precision"], "precision", "numerical precision", choices=PRECISIONS)
    add_option(group, cls, ["--strategy"], "strategy", "tf.distribute strategy", choices=STRATEGIES)
    add_option(group, cls, ["--jit-compile"], "jit_compile", "XLA-compile the train step (slow for 3D on CPU)")
    add_option(group, cls, ["-n", "--neptune"], "neptune", "log to Neptune (NEPTUNE_PROJECT, NEPTUNE_API_TOKEN, NEPTUNE_MODE)")
    add_option(group, cls, ["--log-every"], "log_every", "write a losses.csv row every N steps")
    add_option(group, cls, ["--max-steps"], "max_steps", "stop after N steps in total (0: no limit)")
    add_option(group, cls, ["--name"], "name", "run directory name inside OUTPUT_DIR (default: MODEL-TIMESTAMP)")
    group.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    group.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def explicit_options(args: argparse.Namespace, cls: type[EngineConfig]) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in fields}


def resolve_config(cls: type[EngineConfig], args: argparse.Namespace, values: dict[str, Any]):
    """A new config from defaults + ``values``, or, with --resume, the stored config + allowed overrides."""
    if args.resume:
        from pathlib import Path

        stored = read_config(Path(args.resume) / "config.json")
        changed = sorted(k for k, v in values.items() if k not in RESUMABLE_FIELDS and stored.get(k) != v)
        if changed:
            raise TfmedganError(
                f"--resume keeps the run's configuration; cannot change {', '.join(changed)} "
                f"(allowed: {', '.join(sorted(RESUMABLE_FIELDS))})"
            )
        stored.update({k: v for k, v in values.items() if k in RESUMABLE_FIELDS})
        config = config_from_dict(cls, stored)
        config.output_dir = str(Path(args.resume).resolve().parent)
        config.name = Path(args.resume).resolve().name
        return config
    return cls(**values)


# -- dcgan ----------------------------------------------------------------------------------------
def _dcgan_parser(subparsers) -> None:
    from tfmedgan.config import DCGANConfig as C

    parser = subparsers.add_parser(
        "dcgan",
        help="seed 003: DCGAN on 2D brain slices",
        description="Train the seed-003 DCGAN on folders of PNG/JPEG slices (searched recursively).",
    )
    parser.add_argument("paths", nargs="*", metavar="DATA_DIR ... OUTPUT_DIR",
                        help="one or more data folders, then the output folder (only OUTPUT_DIR with --sample-data)")
    parser.add_argument("--sample-data", action="store_true",
                        help="train on the built-in MNI152-derived brain slices instead of DATA_DIR")
    add_option(parser, C, ["--resolution"], "resolution", "image size, a multiple of 8")
    add_option(parser, C, ["--channels"], "channels", "1 grayscale, 3 RGB")
    add_option(parser, C, ["--latent"], "latent", "latent vector length")
    add_option(parser, C, ["--lr-g"], "lr_g", "generator Adam learning rate")
    add_option(parser, C, ["--lr-d"], "lr_d", "discriminator Adam learning rate")
    add_option(parser, C, ["--beta"], "beta_1", "Adam beta_1 of both optimizers")
    add_option(parser, C, ["--dropout"], "dropout", "discriminator dropout rate")
    add_option(parser, C, ["--n-samples"], "n_samples", "images in the sample grid")
    add_engine_options(parser, C)
    parser.set_defaults(run=_run_dcgan)


def _split_paths(args, values: dict[str, Any], data_field: str = "data_dirs") -> None:
    """Fill data folders and output dir from the positional paths."""
    paths = list(args.paths)
    if args.resume:
        if paths:
            raise TfmedganError("with --resume give no DATA_DIR/OUTPUT_DIR: the run's config.json has them")
        return
    if getattr(args, "sample_data", False):
        if len(paths) != 1:
            raise TfmedganError("with --sample-data give exactly one path: OUTPUT_DIR")
        values["output_dir"] = paths[0]
        return
    if len(paths) < 2:
        raise TfmedganError("give DATA_DIR [DATA_DIR ...] OUTPUT_DIR (or --sample-data OUTPUT_DIR)")
    values[data_field] = [str(p) for p in paths[:-1]]
    values["output_dir"] = paths[-1]


def _sample_slices(resolution: int) -> list[str]:
    from tfmedgan.data.sample import sample_slices_dir

    print("preparing the built-in sample slices (cached after the first run) ...", file=sys.stderr)
    return [str(sample_slices_dir(resolution=max(resolution, 64)))]


def _run_dcgan(args) -> int:
    from tfmedgan.config import DCGANConfig
    from tfmedgan.models.dcgan import DCGANRecipe

    values = explicit_options(args, DCGANConfig)
    _split_paths(args, values)
    config = resolve_config(DCGANConfig, args, values)
    if args.sample_data and not args.resume:
        config.data_dirs = _sample_slices(config.resolution)
    return _train_or_dry_run(DCGANRecipe(config), args)


def _train_or_dry_run(recipe, args) -> int:
    from tfmedgan.engine.launch import dry_run, launch

    if args.dry_run:
        print(json.dumps(dry_run(recipe), indent=2))
        return 0
    run_dir, summary = launch(recipe, resume=args.resume, progress=not args.no_progress)
    print(f"run directory: {run_dir.path}  ({summary['steps']} steps, {summary['seconds']:.0f} s)")
    return 0


# -- stylegan2 -----------------------------------------------------------------------------------
STYLEGAN2_POSITIONALS = ("g_input_res", "g_init_filters", "d_final_res", "d_input_filters", "fade_in_base")


def _stylegan2_parser(subparsers) -> None:
    from tfmedgan.config import StyleGAN2Config as C

    parser = subparsers.add_parser(
        "stylegan2",
        help="seed 004: simplified residual StyleGAN2 on 2D brain slices",
        description="Train the generative model to produce high resolution images (seed 004). Positional "
        "arguments as the original run.py: data_dir output_dir g_input_res g_init_filters d_final_res "
        "d_input_filters fade_in_base. With --preset only data_dir output_dir are needed.",
    )
    parser.add_argument("paths", nargs="*", metavar="ARG",
                        help="data_dir output_dir g_input_res g_init_filters d_final_res d_input_filters fade_in_base")
    parser.add_argument("--sample-data", action="store_true",
                        help="train on the built-in MNI152-derived brain slices (then data_dir is omitted)")
    parser.add_argument("--preset", type=int, choices=sorted(STYLEGAN2_PRESETS_KEYS),
                        help="the authors' recommended settings for 64, 128 or 256 px (explicit options win)")
    add_option(parser, C, ["--resolution"], "resolution", "image resolution (power of two)")
    add_option(parser, C, ["--channels"], "channels", "1 grayscale, 3 RGB")
    add_option(parser, C, ["--latent"], "latent", "latent dimension")
    add_option(parser, C, ["--lr"], "lr", "Adam learning rate of G and D")
    add_option(parser, C, ["--beta"], "beta", "Adam beta_1")
    add_option(parser, C, ["--val"], "val", "number of preview images per epoch grid")
    add_option(parser, C, ["--loss"], "loss", "adversarial loss", choices=("bce", "wgan-gp"))
    add_option(parser, C, ["--gp-weight"], "gp_weight", "gradient penalty weight (wgan-gp)")
    add_option(parser, C, ["--n-critic"], "n_critic", "critic steps per generator step (wgan-gp)")
    add_option(parser, C, ["--minibatch-std"], "minibatch_std", "minibatch stddev appended as channel (intended) or row (original)",
               choices=("channel", "row"))
    add_option(parser, C, ["--pixel-norm-axis"], "pixel_norm_axis", "PixelNorm axis: -1 channels, 1 the original's rows")
    parser.add_argument("--no-clip-alpha", dest="clip_alpha", action="store_false", default=SUPPRESS,
                        help="let alpha = epoch / fade_in_base exceed 1 as the original did")
    add_engine_options(parser, C)
    parser.set_defaults(run=_run_stylegan2)


def _run_stylegan2(args) -> int:
    from tfmedgan.config import STYLEGAN2_PRESETS, StyleGAN2Config
    from tfmedgan.models.stylegan2 import StyleGAN2Recipe

    values = explicit_options(args, StyleGAN2Config)
    paths = list(args.paths)
    if args.resume:
        if paths:
            raise TfmedganError("with --resume give no positional arguments: the run's config.json has them")
    else:
        leading = 1 if args.sample_data else 2
        if len(paths) not in (leading, leading + len(STYLEGAN2_POSITIONALS)) or (len(paths) == leading and not args.preset):
            raise TfmedganError(
                "give data_dir output_dir g_input_res g_init_filters d_final_res d_input_filters fade_in_base"
                " (or data_dir output_dir with --preset; drop data_dir with --sample-data)"
            )
        if args.preset:
            values = {**STYLEGAN2_PRESETS[args.preset], **values}
        if not args.sample_data:
            values["data_dir"] = paths.pop(0)
        values["output_dir"] = paths.pop(0)
        for field, text in zip(STYLEGAN2_POSITIONALS, paths):
            try:
                values[field] = float(text) if field == "fade_in_base" else int(text)
            except ValueError:
                raise TfmedganError(f"{field} must be a number, got {text!r}") from None
    config = resolve_config(StyleGAN2Config, args, values)
    if args.sample_data and not args.resume:
        config.data_dir = _sample_slices(config.resolution)[0]
    return _train_or_dry_run(StyleGAN2Recipe(config), args)


# -- cyclegan3d ----------------------------------------------------------------------------------
def _cyclegan3d_parser(subparsers) -> None:
    from tfmedgan.config import CycleGAN3DConfig as C

    parser = subparsers.add_parser(
        "cyclegan3d",
        help="seed 000: 3D CycleGAN between two NIfTI domains (e.g. T1w <-> T2w)",
        description="Train the seed-000 3D CycleGAN on DATA_DIR/trainA and DATA_DIR/trainB (NIfTI volumes, "
        "paired by sorted file name unless --unpaired). Volumes are streamed from disk, centre-padded to the "
        "model shape and scaled per volume to [-1, 1]. With --evaluate, synthetic volumes of DATA_DIR/testA "
        "and testB are scored (MAE, PSNR, SSIM, mutual information in the brain mask) into RUN_DIR/evaluation.csv; "
        "'--resume RUN_DIR --evaluate' only evaluates a trained run.",
    )
    parser.add_argument("paths", nargs="*", metavar="DATA_DIR OUTPUT_DIR", help="data folder, then the output folder")
    add_option(parser, C, ["--shape"], "shape", "model input shape X Y Z (rounded up to a valid shape; default: "
               "largest training volume, rounded up)", type=int, nargs=3, metavar=("X", "Y", "Z"))
    add_option(parser, C, ["--norm"], "norm", "instance norm per channel, or per Z slice (the original)", choices=("channel", "zslice"))
    parser.add_argument("--preset", choices=sorted(["gan_3d"]), default=SUPPRESS,
                        help="the deeper networks of the original GAN_3D.py (explicit options win)")
    add_option(parser, C, ["--base-filters"], "base_filters", "generator filters of the first convolution")
    add_option(parser, C, ["--n-downsamplings"], "n_downsamplings", "generator down-/up-sampling stages")
    add_option(parser, C, ["--n-residual-blocks"], "n_residual_blocks", "generator residual blocks")
    add_option(parser, C, ["--d-layers"], "d_layers", "PatchGAN stride-2 blocks")
    add_option(parser, C, ["--d-filters"], "d_filters", "PatchGAN filters of the first convolution")
    add_option(parser, C, ["--lr"], "lr", "Adam learning rate of generators and discriminators")
    add_option(parser, C, ["--beta-1"], "beta_1", "Adam beta_1")
    add_option(parser, C, ["--beta-2"], "beta_2", "Adam beta_2")
    add_option(parser, C, ["--decay-epoch"], "decay_epoch", "linear learning-rate decay to 0 from this epoch")
    add_option(parser, C, ["--lambda-cycle"], "lambda_cycle", "weight of the cycle L1 losses")
    add_option(parser, C, ["--lambda-supervised"], "lambda_supervised", "weight of the supervised L1 losses (paired data)")
    add_option(parser, C, ["--lambda-identity"], "lambda_identity", "weight of the identity L1 losses")
    parser.add_argument("--unpaired", dest="supervised", action="store_false", default=SUPPRESS,
                        help="unpaired data: no supervised loss, no pair checks, unequal counts allowed")
    add_option(parser, C, ["--identity-every"], "identity_every", "identity update every N steps (0: never)")
    add_option(parser, C, ["--generator-updates"], "generator_updates", "generator updates per discriminator update")
    add_option(parser, C, ["--pool-size"], "pool_size", "fake-volume history per domain (memory: 2 x N volumes)")
    add_option(parser, C, ["--recompute"], "recompute", "gradient checkpointing of the generators: ~3x less memory, 1.3-2.2x step time")
    parser.add_argument("--evaluate", action="store_true",
                        help="score the test volumes after training (with --resume RUN_DIR: evaluate only)")
    parser.add_argument("--test-dir", help="folder holding testA/testB for --evaluate (default: DATA_DIR)")
    add_engine_options(parser, C)
    parser.set_defaults(run=_run_cyclegan3d)


def _run_cyclegan3d(args) -> int:
    from pathlib import Path

    from tfmedgan.config import CycleGAN3DConfig

    values = explicit_options(args, CycleGAN3DConfig)
    preset = getattr(args, "preset", "")
    if args.resume and args.evaluate:
        if args.paths:
            raise TfmedganError("with --resume give no DATA_DIR/OUTPUT_DIR: the run's config.json has them")
        return _evaluate_cyclegan3d(Path(args.resume), args.test_dir)
    if preset and not args.resume:
        from tfmedgan.models.cyclegan import CYCLEGAN3D_PRESETS

        values = {**CYCLEGAN3D_PRESETS[preset], **values, "preset": preset}
    if not args.resume:
        if len(args.paths) != 2:
            raise TfmedganError("give DATA_DIR OUTPUT_DIR (DATA_DIR holds trainA and trainB)")
        values["data_dir"], values["output_dir"] = args.paths
    elif args.paths:
        raise TfmedganError("with --resume give no DATA_DIR/OUTPUT_DIR: the run's config.json has them")
    config = resolve_config(CycleGAN3DConfig, args, values)
    from tfmedgan.models.cyclegan import CycleGAN3DRecipe

    recipe = CycleGAN3DRecipe(config)
    if not args.dry_run and not args.resume:
        run_path = Path(config.output_dir) / config.name if config.name else None
        if run_path is not None and run_path.exists():
            raise TfmedganError(f"run directory {run_path} already exists: pick another --name or use --resume {run_path}")
    status = _train_or_dry_run(recipe, args)
    if status == 0 and args.evaluate and not args.dry_run:
        return _evaluate_cyclegan3d(Path(config.output_dir) / config.name, args.test_dir)
    return status


def _evaluate_cyclegan3d(run_dir, test_dir) -> int:
    from tfmedgan.inference.volumes import evaluate_run

    rows, path = evaluate_run(run_dir, test_dir)
    mean = [r for r in rows if r["file"] == "mean"]
    for row in mean:
        print(f"{row['direction']}: MAE {row['mae']:.4f}  PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  "
              f"MI {row['mutual_information']:.4f}")
    print(f"wrote {path}")
    return 0


# -- sample-data ---------------------------------------------------------------------------------
def _sample_data_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample-data",
        help="write the built-in MNI152-derived sample data (2D slices or paired 3D T1w/T2w subjects)",
        description="Write built-in sample data made from the MNI ICBM152 2009a templates shipped with nilearn.",
    )
    parser.add_argument("kind", choices=("slices", "subjects"), help="PNG slices, or paired NIfTI subjects")
    parser.add_argument("out_dir", help="output folder (must not exist)")
    parser.add_argument("--n", type=int, default=None, help="number of images (256) or subjects (8)")
    parser.add_argument("--resolution", type=int, default=256, help="slices: image size in pixels (default: 256)")
    parser.add_argument("--voxel-mm", type=float, default=2.0, choices=(1.0, 2.0),
                        help="subjects: voxel size in mm (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(run=_run_sample_data)


def _run_sample_data(args) -> int:
    from pathlib import Path

    from tfmedgan.data import sample

    out = Path(args.out_dir)
    if out.exists():
        raise TfmedganError(f"output folder {out} already exists")
    if args.n is not None and args.n < 1:
        raise TfmedganError(f"--n must be at least 1, got {args.n}")
    if args.kind == "slices":
        sample.make_png_slices(out, n_images=256 if args.n is None else args.n, resolution=args.resolution, seed=args.seed)
        print(f"wrote {256 if args.n is None else args.n} slices to {out}")
    else:
        sample.make_paired_subjects(out, n_subjects=8 if args.n is None else args.n, seed=args.seed, resolution_mm=args.voxel_mm)
        print(f"wrote {8 if args.n is None else args.n} T1w/T2w pairs to {out}/trainA and {out}/trainB")
    return 0


# -- cyclegan-sr ---------------------------------------------------------------------------------
def _cyclegan_sr_parser(subparsers) -> None:
    from tfmedgan.config import CycleGANSRConfig as C
    from tfmedgan.networks.unet3d import UNET_NAMES

    parser = subparsers.add_parser(
        "cyclegan-sr",
        help="seed 002: 3D CycleGAN for microCT denoising and 2x/4x super-resolution (HDF5 patches)",
        description="Train the seed-002 3D CycleGAN between a fast (A, low resolution) and a slow (B, high "
        "resolution) domain. DATA_A and DATA_B are dataset JSON files listing HDF5 volumes (path, dset, ROI0..2) "
        "under train/validate, or bare .h5 files. Random patches (B patch = SR x A patch, flips on all axes) are "
        "read lazily. One epoch = --steps-per-epoch steps (checkpoint, cycle plot, HP check); training stops "
        "after --num-iters steps. With --sample-data only OUTPUT_DIR is given: a synthetic fibre-composite "
        "pair is written to OUTPUT_DIR/sample_data-*/ and used.",
    )
    parser.add_argument("paths", nargs="*", metavar="DATA_A DATA_B OUTPUT_DIR",
                        help="dataset of domain A, dataset of domain B, output folder")
    parser.add_argument("--sample-data", action="store_true",
                        help="train on the built-in synthetic fibre-composite microCT pair (give only OUTPUT_DIR)")
    add_option(parser, C, ["--net-a"], "net_a", "U-Net A->B", choices=UNET_NAMES)
    add_option(parser, C, ["--net-b"], "net_b", "U-Net B->A", choices=UNET_NAMES)
    add_option(parser, C, ["--super-resolution"], "super_resolution", "size factor B / A (1, 2 or 4)")
    add_option(parser, C, ["--patch"], "patch", "A patch size D H W (the original imsize_A)", type=int, nargs=3,
               metavar=("D", "H", "W"))
    add_option(parser, C, ["--num-iters"], "num_iters", "training iterations (steps)")
    parser.add_argument("--batch-size", dest="batch", type=int, default=SUPPRESS, help="patches per step (default: 4)")
    add_option(parser, C, ["--lr-g"], "lr_g", "Adam learning rate of the generators")
    add_option(parser, C, ["--lr-d"], "lr_d", "Adam learning rate of the discriminators")
    add_option(parser, C, ["--beta-1"], "beta_1", "Adam beta_1")
    add_option(parser, C, ["--clip-max"], "clip_max", "joint gradient-norm clip of the generators (0: off)")
    parser.add_argument("--losses", default=SUPPRESS, metavar="JSON",
                        help='loss functions and weights per term, a JSON file or inline JSON, e.g. '
                        '\'{"G_A": [["bce", 10]], "C_A": [["l1", 100]]}\' (missing terms keep the defaults '
                        'G 10, D 1, C 100 with bce / l1; weights are rescaled to sum to 200)')
    add_option(parser, C, ["--kickstart"], "kickstart", "reconstruct from resampled real volumes with p 0.7 in the first steps")
    add_option(parser, C, ["--kickstart-steps"], "kickstart_steps", "steps of the kickstart phase")
    add_option(parser, C, ["--hp-optimizer"], "hp_optimizer", "the original's experimental HP optimizer (checks, re-weighting, roll-back)")
    add_option(parser, C, ["--num-filters"], "num_filters", "U-Net num_filters")
    add_option(parser, C, ["--initializer"], "initializer",
               "U-Net weight init: normal = N(0, 0.02) as the original, torch_default = PyTorch's default (faster start)",
               choices=("normal", "torch_default"))
    add_option(parser, C, ["--d-filters"], "d_filters", "PatchGAN filters of the first convolution")
    add_option(parser, C, ["--d-layers"], "d_layers", "PatchGAN stride-2 layers")
    add_option(parser, C, ["--batch-statistics"], "use_batch_statistics",
               "standard BatchNorm in the discriminators (the original kept them in eval mode)")
    add_option(parser, C, ["--steps-per-epoch"], "steps_per_epoch", "steps per epoch = checkpoint / plot / HP-check period")
    add_option(parser, C, ["--validate-every"], "validate_every", "validation every N epochs (0: never)")
    add_option(parser, C, ["--validate-batches"], "validate_batches", "batches per validation")
    parser.add_argument("--no-check-finite", dest="check_finite", action="store_false", default=SUPPRESS,
                        help="skip the NaN/inf scan of the volumes before training")
    add_engine_options(parser, C)
    parser.set_defaults(run=_run_cyclegan_sr)


def _run_cyclegan_sr(args) -> int:
    from pathlib import Path

    from tfmedgan.config import CycleGANSRConfig
    from tfmedgan.models.cyclegan_sr import CycleGANSRRecipe, parse_loss_spec, train

    values = explicit_options(args, CycleGANSRConfig)
    if "losses" in values:
        parse_loss_spec(values["losses"])  # one-line errors for a bad file / JSON
        text = values["losses"]
        values["losses"] = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
    paths = list(args.paths)
    if args.resume:
        if paths:
            raise TfmedganError("with --resume give no DATA_A/DATA_B/OUTPUT_DIR: the run's config.json has them")
    elif args.sample_data:
        if len(paths) != 1:
            raise TfmedganError("with --sample-data give exactly one path: OUTPUT_DIR")
        values["output_dir"] = paths[0]
    else:
        if len(paths) != 3:
            raise TfmedganError("give DATA_A DATA_B OUTPUT_DIR (dataset JSON files or .h5 volumes, then the output folder)")
        values["data_a"], values["data_b"], values["output_dir"] = paths
    config = resolve_config(CycleGANSRConfig, args, values)
    if args.sample_data and not args.resume:
        config.validate()
        config.data_a, config.data_b = _sr_sample_data(config)
    recipe = CycleGANSRRecipe(config)
    if args.dry_run:
        from tfmedgan.engine.launch import dry_run

        print(json.dumps(dry_run(recipe), indent=2))
        return 0
    run_dir, summary = train(config, run_dir=args.resume, progress=not args.no_progress)
    print(f"run directory: {run_dir.path}  ({summary['steps']} steps, {summary['seconds']:.0f} s)")
    return 0


def _sr_sample_data(config) -> tuple[str, str]:
    """Write (once) a phantom pair large enough for the patch: slow axis 0 = 4 B patches (3 train,
    1 validate), other axes 2 B patches."""
    from pathlib import Path

    from tfmedgan.data.phantom import write_phantom_dataset

    factor = int(config.super_resolution)
    patch_b = [int(p) * factor for p in config.patch]
    shape = [4 * patch_b[0], 2 * patch_b[1], 2 * patch_b[2]]
    folder = Path(config.output_dir) / f"sample_data-{'x'.join(map(str, shape))}-sr{factor}"
    print(f"preparing the synthetic microCT pair in {folder} (cached) ...", file=sys.stderr)
    paths = write_phantom_dataset(folder, shape, factor, seed=config.seed)
    return str(paths["fast_json"]), str(paths["slow_json"])


# -- dcgan-ssim -----------------------------------------------------------------------------------
def _ssim_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "dcgan-ssim",
        help="seed-003 evaluation: best SSIM match of generated images in the training set",
        description="For each generated image, the maximum SSIM over every training image (skimage "
        "defaults: 7x7 uniform window, data_range = fake max - fake min) and the index of that image.",
    )
    parser.add_argument("run_dir", help="a trained DCGAN (or StyleGAN2) run directory")
    parser.add_argument("data_dirs", nargs="*", help="training folders (default: those in the run's config)")
    parser.add_argument("--n", type=int, default=1, help="number of generated images to score (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated latents (default: 0)")
    parser.add_argument("--output", help="CSV file (default: RUN_DIR/ssim.csv)")
    parser.set_defaults(run=_run_ssim)


def _run_ssim(args) -> int:
    from tfmedgan.inference.evaluate import best_match_report

    rows = best_match_report(args.run_dir, args.data_dirs or None, n=args.n, seed=args.seed, output=args.output)
    for row in rows:
        print(f"generated {row['generated']}: max SSIM {row['max_ssim']:.4f}, closest training image "
              f"{row['best_index']} ({row['best_file']})")
    return 0


PARSERS: list[Callable] = [_dcgan_parser, _stylegan2_parser, _cyclegan3d_parser, _cyclegan_sr_parser, _ssim_parser, _sample_data_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="tfmedgan: generative models for medical images (TensorFlow / Keras 3)."
    )
    subparsers = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for add in PARSERS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with --resume RUN_DIR (from the newest checkpoint)", file=sys.stderr)
        return 130
