"""Crop paired T1w/T2w NIfTIs for 3D CycleGAN training (seed 000, ``prepare_train_data.py``).

Put paired, co-registered volumes in ``DATA_DIR/trainA`` and ``DATA_DIR/trainB`` (paired by
sorted file name; the names less their modality must agree, e.g. ``sub-03_T1w.nii.gz`` with
``sub-03_T2w.nii.gz``, unless ``--pair-by-order``), then run::

    python prepare_train_data.py data/MR [--output data/MR_crop] [--margin 0]
        [--test-fraction 0.1] [--seed 0] [--multiple 4] [--overwrite] [--pair-by-order]

It writes ``DATA_DIR_crop/{trainA,trainB,testA,testB}`` and prints each crop and the smallest
recommended input image shape. The input folder is never modified. User errors are printed as
one ``error: ...`` line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tfmedgan.errors import TfmedganError
from tfmedgan.io.crop import prepare_dataset


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``prepare_train_data.py``."""
    parser = argparse.ArgumentParser(
        prog="prepare_train_data.py",
        description=(
            "Crop each A/B pair of DATA_DIR/trainA and DATA_DIR/trainB to the union bounding box "
            "of its non-zero voxels and split off a deterministic test set."
        ),
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder holding trainA/ and trainB/")
    parser.add_argument(
        "--output", default=None, help="output folder (default: DATA_DIR_crop next to DATA_DIR)"
    )
    parser.add_argument(
        "--margin", type=int, default=0, help="voxels kept around the box on each side (default 0)"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="fraction of pairs moved to testA/testB, in [0, 1) (default 0.1); not applied when "
        "DATA_DIR already holds testA/testB pairs (that split is kept)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test split (default 0)")
    parser.add_argument(
        "--multiple",
        type=int,
        default=4,
        help="round the recommended input shape up to this multiple (default 4)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output folder"
    )
    parser.add_argument(
        "--pair-by-order",
        action="store_true",
        help="pair trainA/trainB by sorted position even when the names (less the modality, e.g. "
        "_T1w/_T2w) differ, as the original did",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the crop job.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on a user error (message on stderr).
    """
    arguments = build_parser().parse_args(argv)
    try:
        prepare_dataset(
            arguments.data_dir,
            arguments.output,
            margin=arguments.margin,
            test_fraction=arguments.test_fraction,
            seed=arguments.seed,
            multiple=arguments.multiple,
            overwrite=arguments.overwrite,
            pair_by_order=arguments.pair_by_order,
        )
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
