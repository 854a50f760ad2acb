"""Experiment 'overfitting': 300 digits with ~20% wrong labels and an over-parameterized MLP 64-128-128-10, trained
six ways (none, dropout, weight decay, early stopping, augmentation, all four together; 5 seeds, the dropout rate and
weight decay chosen on validation loss), the training set scored in eval mode; then the same MLP memorizing shuffled
labels. See dlfund/experiments/overfitting.py. The old name still works: dlfund experiment dropout.

Run: python experiments/overfitting.py [--quick] [--out DIR]   (the same as: dlfund experiment overfitting)
Runtime: about half a minute on a 2-core CPU (26 s of training measured on an idle machine, plus ~5 s to start; 71-195
s while the machine was shared with other jobs). Expected: without regularization eval-mode training accuracy 1.000
(every wrong label reproduced), test 0.818; dropout 0.5, weight decay 2, early stopping (the lowest-validation-loss
epoch restored; patience 10 keeps the same epoch in 4 of 5 seeds) and augmentation each narrow the gap and add
4.6-7.0 test points (each > 2 standard errors); all four stacked underfit (test 0.770: that check FAILS);
shuffled labels are memorized (training accuracy 1.000) while test accuracy stays at chance (0.116).
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "overfitting", *sys.argv[1:]]))
