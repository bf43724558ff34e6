#!/usr/bin/env python
"""Generate images from a trained tfmedgan run.

2D GANs (DCGAN, StyleGAN2): random images from latents::

    python generate_images/generate.py RUN_DIR OUT_DIR --n 64

writes OUT_DIR/generated_00000.png ... and OUT_DIR/grid.png.

3D CycleGAN (seed 000): translate NIfTI volumes::

    python generate_images/generate.py RUN_DIR_OR_MODEL_DIR IN_FILE_OR_DIR OUT_DIR --direction A2B

writes OUT_DIR/<input stem>_synthetic.nii.gz per input, with the input's shape, affine and header.
RUN_DIR_OR_MODEL_DIR is a cyclegan3d run or a folder with the original G_A2B_model.json/.hdf5
(or give --legacy-json/--legacy-hdf5 and use "-" as the first path).

3D CycleGAN-SR (seed 002): enhance a whole tomogram (HDF5 or NIfTI, any size)::

    python generate_images/generate.py CYCLEGAN_SR_RUN_DIR TOMOGRAM.h5 OUT_DIR [--blend gaussian|mean]

writes OUT_DIR/<stem>_enhanced.h5 (float16 dataset "data", SR x the input shape) and, for a NIfTI
input, OUT_DIR/<stem>_enhanced.nii.gz with voxel size and affine scaled by 1/SR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfmedgan.errors import TfmedganError  # noqa: E402


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise TfmedganError(f"output folder {out} exists and is not empty (use --overwrite)")


def _generate_2d(args) -> int:
    run_dir, out_dir = args.paths
    out = Path(out_dir)
    _check_out_dir(out, args.overwrite)
    from tfmedgan.engine.trainer import save_generated
    from tfmedgan.inference.generate import generate_images, load_network

    generator = load_network(run_dir, "generator")
    images = generate_images(generator, args.n, seed=args.seed, batch=args.batch)
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
    written = translate_files(model, shape, files, out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {len(written)} synthetic volume(s) ({args.direction}) to {out}")
    return 0


def _enhance_tomogram(args) -> int:
    run_dir, tomogram, out_dir = args.paths
    from tfmedgan.inference.tomogram import enhance_file

    written = enhance_file(
        run_dir, tomogram, out_dir, blend=args.blend, batch_size=args.tile_batch, dset=args.dset,
        stride=args.stride, border=args.border, standardize=not args.no_standardize,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


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
    parser.add_argument("--legacy-json", help="3D: original Keras 2 architecture (.json) of the generator")
    parser.add_argument("--legacy-hdf5", help="3D: original Keras 2 weights (.hdf5) of the generator")
    parser.add_argument("--blend", choices=("gaussian", "mean"), default="gaussian",
                        help="tomogram: overlap blending; mean = the original's plain average (default: gaussian)")
    parser.add_argument("--tile-batch", type=int, default=2, help="tomogram: windows per network call (default: 2)")
    parser.add_argument("--dset", default="data", help="tomogram: HDF5 dataset name of the input (default: data)")
    parser.add_argument("--stride", type=int, nargs=3, metavar=("D", "H", "W"),
                        help="tomogram: window stride (default: patch - 24, the original)")
    parser.add_argument("--border", type=int, help="tomogram: masked output voxels at interior faces (default: 10 x SR)")
    parser.add_argument("--no-standardize", action="store_true",
                        help="tomogram: do not standardise the input by its mean and std")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        if len(args.paths) == 2:
            return _generate_2d(args)
        if len(args.paths) == 3:
            from tfmedgan.inference.tomogram import is_tomogram_run

            if is_tomogram_run(args.paths[0]):
                return _enhance_tomogram(args)
            return _translate_3d(args)
        raise TfmedganError("give RUN_DIR OUT_DIR (2D GANs) or RUN_OR_MODEL_DIR INPUT OUT_DIR (3D CycleGAN)")
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
