"""Experiment 'relu_vs_sigmoid': see dlfund/experiments/ for what it trains and the claims it checks.

Run: python experiments/relu_vs_sigmoid.py [--quick] [--out DIR]   (the same as: dlfund experiment relu_vs_sigmoid)
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "relu_vs_sigmoid", *sys.argv[1:]]))
