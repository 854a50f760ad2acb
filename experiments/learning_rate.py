"""Experiment 'learning_rate': one dlfund.sweep of plain SGD on an MLP 64-128-10 (digits, 10 epochs) over 11
learning rates from 1e-4 to 10 on a log grid, 3 seeds each: the loss after the budget against the rate; plus
gradient descent on x^2. See dlfund/experiments/learning_rate.py.

Run: python experiments/learning_rate.py [--quick] [--out DIR]   (the same as: dlfund experiment learning_rate)
Runtime: about 10 seconds on a 2-core CPU (7 s of training measured on an idle machine, plus ~5 s to start). Expected:
1e-4 leaves the loss at 95% of its initial value, the loss falls monotonically with the rate up to the best (1.0: 0.3%
of the initial loss), and 10 blows up (epoch-mean loss 133-2254) and ends at chance.
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "learning_rate", *sys.argv[1:]]))
