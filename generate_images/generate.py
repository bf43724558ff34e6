#!/usr/bin/env python
"""Generate images from a trained tfmedgan run.

2D GANs (DCGAN, StyleGAN2): random images from latents::

    python generate_images/generate.py RUN_DIR OUT_DIR --n 64

writes OUT_DIR/generated_00000.png ... and OUT_DIR/grid.png.

3D translators (the T1w <-> T2w CycleGAN): translate NIfTI volumes::

    python generate_images/generate.py RUN_DIR_OR_MODEL IN_FILE_OR_DIR OUT_DIR --direction A2B

writes OUT_DIR/<input stem>_synthetic.nii.gz per input, with the input's shape, affine and header.
RUN_DIR_OR_MODEL is a translation run, a folder with the original G_A2B_model.json/.hdf5, or the
original G_A2B_model.hdf5 file itself (or give --legacy-json/--legacy-hdf5 and use "-").

3D pix2pix / UDA (BraTS layout): synthetic T1 of each case's T2 + FLAIR on its original grid::

    python generate_images/generate.py PIX2PIX3D_OR_UDA_RUN CASE_OR_FOLDER OUT_DIR

microCT SR CycleGAN: enhance a whole tomogram (HDF5 or NIfTI, any size)::

    python generate_images/generate.py CYCLEGAN_SR_RUN_DIR TOMOGRAM.h5 OUT_DIR [--blend gaussian|mean]

writes OUT_DIR/<stem>_enhanced.h5 (float16 dataset "data", SR x the input shape) and, for a NIfTI
input, OUT_DIR/<stem>_enhanced.nii.gz with voxel size and affine scaled by 1/SR.

The run's config.json decides what is generated (its model's registry entry); a path that is not
a run is read as the original 3D CycleGAN's Keras 2 weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfmedgan.errors import TfmedganError  # noqa: E402


def _check_out_dir(out: Path, overwrite: bool) -> None:
    from tfmedgan.io.paths import check_output_dir

    check_output_dir(out, overwrite)


def _generate_2d(args) -> int:
    run_dir, out_dir = args.paths
    out = Path(out_dir)
    _check_out_dir(out, args.overwrite)
    from tfmedgan.api import load_run
    from tfmedgan.engine.trainer import save_generated

    images = load_run(run_dir).generate(args.n, seed=args.seed, batch=args.batch)
    paths = save_generated(images, out)
    print(f"wrote {len(paths)} images and grid.png to {out}")
    return 0


def _translate_3d(args) -> int:
    source, inputs, out_dir = args.paths
    out = Path(out_dir)
    _check_out_dir(out, args.overwrite)
    from tfmedgan.inference.volumes import list_inputs, load_translator, translate_files

    files = list_inputs(inputs)
    model, shape = load_translator(
        None if source == "-" else source, args.direction, legacy_json=args.legacy_json, legacy_hdf5=args.legacy_hdf5
    )
    written = translate_files(model, shape, files, out, overwrite=args.overwrite, progress=not args.no_progress,
                              flip_average=args.flip_average)
    print(f"wrote {len(written)} synthetic volume(s) ({args.direction}) to {out}")
    return 0


def _enhance_tomogram(args) -> int:
    run_dir, tomogram, out_dir = args.paths
    _check_out_dir(Path(out_dir), overwrite=True)  # enhance_file refuses existing target files itself
    from tfmedgan.inference.tomogram import enhance_file

    written = enhance_file(
        run_dir, tomogram, out_dir, blend=args.blend, batch_size=args.tile_batch, dset=args.dset,
        stride=args.stride, border=args.border, standardize=not args.no_standardize,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _translate_cases(args) -> int:
    run_dir, inputs, out_dir = args.paths
    out = Path(out_dir)
    _check_out_dir(out, args.overwrite)
    from tfmedgan.api import load_run

    written = load_run(run_dir).translate_cases(inputs, out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {len(written)} synthetic T1 volume(s) on the original grids to {out}")
    return 0


#: what a run generates (its registry entry's ``generates``) -> (handler, positional paths, usage)
HANDLERS = {
    "images": (_generate_2d, 2, "RUN_DIR OUT_DIR"),
    "volumes": (_translate_3d, 3, "RUN_DIR INPUT_FILE_OR_DIR OUT_DIR"),
    "tomogram": (_enhance_tomogram, 3, "RUN_DIR TOMOGRAM OUT_DIR"),
    "cases": (_translate_cases, 3, "RUN_DIR CASE_OR_FOLDER_OF_CASES OUT_DIR"),
}


def _dispatch(args) -> int:
    source = Path(args.paths[0])
    if args.paths[0] != "-" and (source / "config.json").is_file():
        from tfmedgan.api import load_run

        kind = load_run(source).spec.generates
        if kind not in HANDLERS:
            raise TfmedganError(f"{source} is a run of a model that generates nothing here")
    elif args.paths[0] == "-" or source.exists():
        kind = "volumes"  # the original 3D CycleGAN's Keras 2 model files
    else:
        raise TfmedganError(f"{source}: no such run directory or model file")
    if args.flip_average and kind != "volumes":
        raise TfmedganError(f"--flip-average applies to 3D CycleGAN translations, not to this {kind} model")
    handler, count, usage = HANDLERS[kind]
    if len(args.paths) != count:
        raise TfmedganError(f"give {usage} for this {kind} model ({len(args.paths)} paths given)")
    return handler(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate images from a trained tfmedgan run directory (2D: RUN_DIR OUT_DIR --n N), "
        "or translate NIfTI volumes with a 3D CycleGAN (RUN_OR_MODEL_DIR INPUT OUT_DIR --direction A2B)."
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="RUN_DIR OUT_DIR (2D GANs), RUN_OR_MODEL_DIR INPUT_FILE_OR_DIR OUT_DIR (3D CycleGAN) "
                        "or CYCLEGAN_SR_RUN_DIR TOMOGRAM OUT_DIR (seed-002 enhancement)")
    parser.add_argument("--n", type=int, default=64, help="2D: number of images (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="2D: seed of the latent vectors (default: 0)")
    parser.add_argument("--batch", type=int, default=32, help="2D: images per generator call (default: 32)")
    parser.add_argument("--direction", choices=("A2B", "B2A"), default="A2B", help="3D: translation direction (default: A2B)")
    parser.add_argument("--flip-average", action="store_true",
                        help="3D: also translate each volume mirrored left-right and average the two "
                             "(2x the time; not the original)")
    parser.add_argument("--legacy-json", help="3D: original Keras 2 architecture (.json) of the generator")
    parser.add_argument("--legacy-hdf5", help="3D: original Keras 2 weights (.hdf5) of the generator")
    parser.add_argument("--blend", choices=("gaussian", "mean"), default="gaussian",
                        help="tomogram: overlap blending; mean = the original's plain average (default: gaussian)")
    parser.add_argument("--tile-batch", type=int, default=2, help="tomogram: windows per network call (default: 2)")
    parser.add_argument("--dset", default="data", help="tomogram: HDF5 dataset name of the input (default: data)")
    parser.add_argument("--stride", type=int, nargs=3, metavar=("D", "H", "W"),
                        help="tomogram: window stride in the (z, y, x) order of the training patch, also for NIfTI input "
                        "(default: patch - 24, the original)")
    parser.add_argument("--border", type=int, help="tomogram: masked output voxels at interior faces (default: 10 x SR)")
    parser.add_argument("--no-standardize", action="store_true",
                        help="tomogram: do not standardise the input by its mean and std")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ log lines")
    args = parser.parse_args(argv)
    from tfmedgan.cli import quiet_tensorflow

    quiet_tensorflow(args.verbose)
    try:
        return _dispatch(args)
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
