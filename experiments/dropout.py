"""Experiment 'dropout': see dlfund/experiments/ for what it trains and the claims it checks.

Run: python experiments/dropout.py [--quick] [--out DIR]   (the same as: dlfund experiment dropout)
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "dropout", *sys.argv[1:]]))
