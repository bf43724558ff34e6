#!/usr/bin/env python
"""tfmedgan command line: ``python run.py MODEL ...``; see ``python run.py MODEL --help``."""

import sys

from tfmedgan.cli import main

if __name__ == "__main__":
    sys.exit(main())
