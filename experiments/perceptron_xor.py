"""Experiment 'perceptron_xor': see dlfund/experiments/ for what it trains and the claims it checks.

Run: python experiments/perceptron_xor.py [--quick] [--out DIR]   (the same as: dlfund experiment perceptron_xor)
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "perceptron_xor", *sys.argv[1:]]))
