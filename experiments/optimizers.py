"""Experiment 'optimizers': SGD vs SGD with momentum vs RMSprop vs Adam, the same MLP 64-128-128-10 on the digits
for 15 epochs, each at its own best learning rate from a 9-rate grid (1e-4 to 1) with 3 seeds (one dlfund.sweep per
optimizer); plus the ravine toy. See dlfund/experiments/optimizers.py.

Run: python experiments/optimizers.py [--quick] [--out DIR]   (the same as: dlfund experiment optimizers)
Runtime: under half a minute on a 2-core CPU (21 s of training measured on an idle machine, plus ~5 s to start).
Expected: tuned, the four reach the same best validation loss (0.017-0.019) within seed noise, so "beats plain SGD"
FAILS for each; Adam works at more rates of the grid (6 of 9 vs 4); at one shared rate (1e-3) SGD would have looked 24
points worse.
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "optimizers", *sys.argv[1:]]))
