"""Experiment 'batch_norm': an MLP 64-(64 x 5)-10 with and without batch norm, plain SGD at 6 learning rates from
0.01 to 3, 3 seeds each (one dlfund.sweep per network), 20 epochs: epochs to 95% validation accuracy and best
validation accuracy against the rate. See dlfund/experiments/batch_norm.py.

Run: python experiments/batch_norm.py [--quick] [--out DIR]   (the same as: dlfund experiment batch_norm)
Runtime: under half a minute on a 2-core CPU (16 s of training measured on an idle machine, plus ~5 s to start).
Expected: batch norm is faster beyond seed noise at 4 of 6 rates and never slower (3 epochs vs 4-5 at each network's
tuned rate), and still trains at 3.0 where the plain network fails from 1.0 on.
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "batch_norm", *sys.argv[1:]]))
