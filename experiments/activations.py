"""Experiment 'activations': sigmoid vs tanh vs ReLU in a 10-layer MLP on the digits: per-layer gradient norms at
initialization, then SGD with momentum at each activation's own tuned learning rate (5 rates x 3 seeds, one
dlfund.sweep per activation), speed measured as epochs to 95% validation accuracy. See
dlfund/experiments/activations.py. The old name still works: dlfund experiment relu_vs_sigmoid.

Run: python experiments/activations.py [--quick] [--out DIR]   (the same as: dlfund experiment activations)
Runtime: under half a minute on a 2-core CPU (24 s of training measured on an idle machine, plus ~5 s to start).
Expected: sigmoid's input-layer gradient is ~5e-6 of its last hidden layer's (tanh 1.4, ReLU 1.2) and sigmoid never
learns (0.10 = chance at every rate); ReLU reaches 95% in 6-12 epochs, but tanh in 3-4: the "ReLU is faster than tanh"
check FAILS here (with Flax's default LeCun initialization).
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "activations", *sys.argv[1:]]))
