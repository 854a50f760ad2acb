"""Experiment 'architectures': see dlfund/experiments/ for what it trains and the claims it checks.

Run: python experiments/architectures.py [--quick] [--out DIR]   (the same as: dlfund experiment architectures)
Runtime: under 3 minutes on a 2-core CPU (160 s of training measured on an idle machine). Expected: every target
holds (numbers in the README's "What the experiments show").
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "architectures", *sys.argv[1:]]))
