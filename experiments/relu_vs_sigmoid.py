"""Experiment 'relu_vs_sigmoid': the old name of 'activations' (experiments/activations.py), kept for old commands.

Run: python experiments/relu_vs_sigmoid.py [--quick] [--out DIR]   (the same as: dlfund experiment activations)
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "relu_vs_sigmoid", *sys.argv[1:]]))
