"""Shared test setup: offline data in a per-session folder, small deterministic fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory):
    # Datasets are prepared into a throwaway folder, never into the user's ~/tensorflow_datasets.
    path = tmp_path_factory.mktemp("tfds")
    old = os.environ.get("DLFUND_DATA_DIR")
    os.environ["DLFUND_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DLFUND_DATA_DIR", None)
    else:
        os.environ["DLFUND_DATA_DIR"] = old


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
