"""Experiment 'perceptron_xor': see dlfund/experiments/ for what it trains and the claims it checks.

Run: python experiments/perceptron_xor.py [--quick] [--out DIR]   (the same as: dlfund experiment perceptron_xor)
Runtime: a few seconds (3 s measured). Expected: 0 mistakes on AND and OR, never fewer than 1 on XOR in 100
epochs; the one-hidden-layer MLP classifies XOR 100% correctly.
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "perceptron_xor", *sys.argv[1:]]))
