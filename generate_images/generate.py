#!/usr/bin/env python
"""Generate images from a trained tfmedgan run.

    python generate_images/generate.py RUN_DIR OUT_DIR --n 64

writes OUT_DIR/generated_00000.png ... and OUT_DIR/grid.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfmedgan.errors import TfmedganError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Generate images from a trained tfmedgan run directory.")
    parser.add_argument("run_dir", help="run directory (OUTPUT_DIR/<name>) of a DCGAN or StyleGAN2 run")
    parser.add_argument("out_dir", help="folder for the generated PNGs (must not exist or be empty)")
    parser.add_argument("--n", type=int, default=64, help="number of images (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default: 0)")
    parser.add_argument("--batch", type=int, default=32, help="images per generator call (default: 32)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        out = Path(args.out_dir)
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise TfmedganError(f"output folder {out} exists and is not empty (use --overwrite)")
        from tfmedgan.engine.trainer import save_generated
        from tfmedgan.inference.generate import generate_images, load_network

        generator = load_network(args.run_dir, "generator")
        images = generate_images(generator, args.n, seed=args.seed, batch=args.batch)
        paths = save_generated(images, out)
        print(f"wrote {len(paths)} images and grid.png to {out}")
        return 0
    except TfmedganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
