"""Shared fixtures: the offline digits dataset and a small deterministic classification problem.

The data folder itself is set up by the repository-wide conftest.py."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    import dlfund

    return dlfund.data.load("digits")


@pytest.fixture(scope="session")
def blobs():
    """A small separable 3-class problem: 240 train / 60 val examples of 4 features."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(3, 4))
    y = rng.integers(0, 3, size=300)
    x = (centers[y] + rng.normal(size=(300, 4))).astype(np.float32)
    return (x[:240], y[:240].astype(np.int32)), (x[240:], y[240:].astype(np.int32))
