"""Experiment 'dropout': the old name of 'overfitting' (experiments/overfitting.py), kept for old commands.

Run: python experiments/dropout.py [--quick] [--out DIR]   (the same as: dlfund experiment overfitting)
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "dropout", *sys.argv[1:]]))
