#!/usr/bin/env python3
"""tilebench entry point: `python run_bench.py --sweep fmha` (see --help)."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
