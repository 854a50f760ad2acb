"""Data shared by the sweep tests: a small separable classification problem."""

from __future__ import annotations

import numpy as np


def problem(seed=0, n=240, classes=3):
    """Gaussian blobs in 5 dimensions: ``((x_train [180, 5], y_train), (x_val [n - 180, 5], y_val))``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.5, size=(classes, 5))
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + rng.normal(size=(n, 5))).astype(np.float32)
    return (x[:180], y[:180].astype(np.int32)), (x[180:], y[180:].astype(np.int32))
