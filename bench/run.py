#!/usr/bin/env python
"""Run every benchmark that is ready: ``python bench/run.py [--quick]``; results in bench/results/."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "dcgan": ["bench_dcgan.py"],
    "ssim": ["bench_ssim.py"],
    "stylegan2": ["bench_stylegan2.py"],
    "cyclegan3d": ["bench_cyclegan3d.py"],
    "translation": ["bench_translation.py"],
}
QUICK = {"dcgan": ["--steps", "40"], "stylegan2": ["--quick"], "cyclegan3d": ["--quick"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHES), help=f"benchmarks to run ({', '.join(BENCHES)})")
    parser.add_argument("--quick", action="store_true", help="small settings (minutes, not hours)")
    args = parser.parse_args()
    status = 0
    for name in args.names:
        script = HERE / BENCHES[name][0]
        if not script.exists():
            print(f"== {name}: {script.name} not present, skipped")
            continue
        print(f"== {name}", flush=True)
        extra = QUICK.get(name, []) if args.quick else []
        status |= subprocess.call([sys.executable, str(script), *extra])
    return status


if __name__ == "__main__":
    sys.exit(main())
