"""Experiment 'transfer_learning': a CNN pretrained on digits 0-4, then digits 5-9 from k = 1..50 examples per class,
learned six ways (from scratch, a linear probe, a frozen backbone, fine-tuning, the two-stage recipe, convolutions
kept with the dense layers redrawn), on clean, noisy and shifted digits, 5 seeds each.
See dlfund/experiments/transfer.py.

Run: python experiments/transfer_learning.py [--quick] [--out DIR]   (the same as: dlfund experiment transfer_learning)
Runtime: about 8 minutes on a 2-core CPU (467 s of training measured on an idle machine; 567 s in an earlier run).
Expected: on clean and noisy digits no way of transferring beats training from scratch beyond noise; on shifted digits
transfer wins at small k (+6.6 points at k=1) and loses by k=50 (numbers in the README).
"""

import sys

from dlfund.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "transfer_learning", *sys.argv[1:]]))
