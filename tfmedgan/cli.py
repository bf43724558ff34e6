"""Command-line interface: ``python run.py MODEL [positional arguments] [options]``.

Generic over the model registry: every training subcommand is built from a model's
:class:`~tfmedgan.models.spec.ModelSpec` and the field metadata of its config dataclass, so the
options shown by ``--help`` are the config's fields with their defaults (the original authors'
values). The CLI is a thin layer over :mod:`tfmedgan.api`. Errors a user can fix are printed as
one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Sequence

from tfmedgan.errors import TfmedganError

SUPPRESS = argparse.SUPPRESS


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def add_config_options(parser: argparse.ArgumentParser, config_class: type, title: str) -> None:
    """One option per config field declared with :func:`tfmedgan.engine.config.option`.

    Options have no argparse default, so the values a user gave can be told apart from defaults
    (they override a preset, and are checked against the stored config on ``--resume``).
    """
    groups: dict[str, Any] = {title: parser.add_argument_group(title)}  # the model's own options first
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        if not meta.get("cli"):
            continue
        name = meta.get("group") or title
        group = groups.get(name) or groups.setdefault(name, parser.add_argument_group(name))
        default = _field_default(field)
        flags = list(meta["flags"] or [f"--{field.name.replace('_', '-')}"]) + list(meta["aliases"])
        kwargs: dict[str, Any] = {"dest": field.name, "default": SUPPRESS}
        shown = default if not isinstance(default, dict) else "see the model's docs"
        help_text = meta["help"] if shown in ("", []) else f"{meta['help']} (default: {shown})"
        if isinstance(default, bool):
            if default and meta.get("negative"):
                group.add_argument(meta["negative"], action="store_false", help=help_text, **kwargs)
                continue
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list):
            kwargs.update(nargs=meta.get("nargs") or "+", type=meta.get("type") or str)
        else:
            kwargs["type"] = meta.get("type") or (str if isinstance(default, dict) else type(default))
        if meta.get("choices") is not None:
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar") is not None:
            kwargs["metavar"] = meta["metavar"]
        group.add_argument(*flags, help=help_text, **kwargs)


def explicit_values(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(config_class)}
    return {k: v for k, v in vars(args).items() if k in fields}


def _add_training_parser(subparsers, spec) -> None:
    parser = subparsers.add_parser(spec.name, help=spec.help, description=spec.description or spec.help)
    metavar = " ".join(p.name for p in spec.positionals)
    parser.add_argument("paths", nargs="*", metavar=metavar or "ARG",
                        help="positional arguments: " + (metavar or "none"))
    if spec.sample_data is not None:
        parser.add_argument("--sample-data", action="store_true",
                            help="train on built-in sample data (leave out the data arguments)")
    if spec.presets:
        parser.add_argument("--preset", choices=list(spec.presets),
                            help="recommended settings (explicit options win): " + ", ".join(spec.presets))
    add_config_options(parser, spec.config_class, f"{spec.name} options")
    if spec.add_arguments is not None:
        spec.add_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    run.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up and C++ log lines")
    parser.set_defaults(run=lambda args: run_training(spec, args))


def run_training(spec, args: argparse.Namespace) -> int:
    """A training subcommand: config from the arguments (or the run's), then dry-run or train."""
    from tfmedgan import api

    if spec.before_training is not None:
        status = spec.before_training(args)
        if status is not None:
            return status
    values = explicit_values(args, spec.config_class)
    values.pop("preset", None)  # --preset is applied by the config builder, not as a field value
    sample_data = bool(getattr(args, "sample_data", False))
    preset = getattr(args, "preset", None)
    if args.resume:
        given = spec.parse_positionals(args.paths, sample_data, bool(preset)) if args.paths else {}
        config = api.resume_config(args.resume, expected_model=spec.name, positionals=given, **values)
    else:
        positionals = spec.parse_positionals(args.paths, sample_data, bool(preset))
        config = api.configure(spec.name, preset=preset, sample_data=sample_data, **positionals, **values)
    if args.dry_run:
        print(json.dumps(spec.dry_run(config), indent=2))
        return 0
    run = api.train(spec.name, config, resume=args.resume, progress=not args.no_progress)
    if not run.summary.get("chief", True):
        print(f"worker done ({run.summary['steps']} steps, {run.summary['seconds']:.0f} s); the chief writes the run directory")
        return 0
    print(f"run directory: {run.path}  ({run.summary['steps']} steps, {run.summary['seconds']:.0f} s)")
    if spec.after_training is not None:
        return spec.after_training(args, run.path)
    return 0


def _write_slices(out, args) -> str:
    from tfmedgan.data.samples import make_png_slices

    n = 256 if args.n is None else args.n
    make_png_slices(out, n_images=n, resolution=args.resolution, seed=args.seed)
    return f"wrote {n} slices to {out}"


def _write_subjects(out, args) -> str:
    from tfmedgan.data.samples import make_paired_subjects

    n = 8 if args.n is None else args.n
    make_paired_subjects(out, n_subjects=n, seed=args.seed, resolution_mm=args.voxel_mm)
    return f"wrote {n} T1w/T2w pairs to {out}/trainA and {out}/trainB"


def _write_brats(out, args) -> str:
    from tfmedgan.data.samples.brats import make_brats_cases

    n = 2 if args.n is None else args.n
    make_brats_cases(out, n_per_split=n, voxel_size_mm=args.voxel_mm, seed=args.seed)
    return f"wrote {n} BraTS-layout cases per split of two institutions (domain1, domain2) to {out}"


#: Kinds of built-in sample data: name -> (help, writer(out_dir, args) -> message).
SAMPLE_KINDS = {
    "slices": ("2D PNG brain slices (256 by default)", _write_slices),
    "subjects": ("paired 3D T1w/T2w NIfTI subjects in trainA/trainB (8 by default)", _write_subjects),
    "brats": ("BraTS-layout T1/T2/FLAIR cases of two scanner 'institutions' (2 per split by default)", _write_brats),
}


def _add_sample_data_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample-data",
        help="write built-in sample data made from nilearn's MNI152 templates (" + ", ".join(SAMPLE_KINDS) + ")",
        description="Write built-in sample data: " + "; ".join(f"{k}: {h}" for k, (h, _) in SAMPLE_KINDS.items()),
    )
    parser.add_argument("kind", choices=list(SAMPLE_KINDS), help="what to write")
    parser.add_argument("out_dir", help="output folder (must not exist)")
    parser.add_argument("--n", type=int, default=None, help="number of images, subjects or cases (default: per kind)")
    parser.add_argument("--resolution", type=int, default=256, help="slices: image size in pixels (default: 256)")
    parser.add_argument("--voxel-mm", type=float, default=2.0, choices=(1.0, 2.0),
                        help="volumes: voxel size in mm (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(run=_run_sample_data)


def _run_sample_data(args) -> int:
    from pathlib import Path

    out = Path(args.out_dir)
    if out.exists():
        raise TfmedganError(f"output folder {out} already exists")
    if args.n is not None and args.n < 1:
        raise TfmedganError(f"--n must be at least 1, got {args.n}")
    print(SAMPLE_KINDS[args.kind][1](out, args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tfmedgan.models import all_models

    parser = argparse.ArgumentParser(
        prog="run.py", description="tfmedgan: generative models for medical images (TensorFlow / Keras 3)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in all_models():
        _add_training_parser(subparsers, spec)
        for command in spec.commands:
            if command.name in subparsers.choices:  # shared by several models (e.g. dcgan-ssim)
                continue
            sub = subparsers.add_parser(command.name, help=command.help, description=command.description or command.help)
            command.add_arguments(sub)
            sub.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ log lines")
            sub.set_defaults(run=command.run)
    _add_sample_data_parser(subparsers)
    return parser


def quiet_tensorflow(verbose: bool) -> None:
    """Hide TensorFlow's C++ log lines (absl/oneDNN start-up lines, grappler messages) unless
    ``verbose``. Must run before TensorFlow is imported: TensorFlow is imported here with the
    process's stderr pointed at /dev/null, because its start-up lines are written before its
    log level takes effect."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    tf.get_logger().setLevel("ERROR")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_tensorflow("--verbose" in argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.run(args)
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with --resume RUN_DIR (from the newest checkpoint)", file=sys.stderr)
        return 130
