"""Experiment 'architectures': see dlfund/experiments/ for what it trains and the claims it checks.

Run: python experiments/architectures.py [--quick] [--out DIR]   (the same as: dlfund experiment architectures)
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "architectures", *sys.argv[1:]]))
