"""Naive predictions that a trained model has to beat, computed on a dataset's own splits."""

from __future__ import annotations

import numpy as np

from dlfund.data.dataset import SPLIT_NAMES, Dataset


def persistence_mse(ds: Dataset, split: str = "test") -> float:
    """Mean squared error of the persistence forecast "the next value equals the last observed one".

    For a one-step forecasting dataset such as ``load("sines")``: x (N, T, 1) windows, y (N,) next values.
    The forecast of example i is its last input value, ``x[i, -1, 0]``, taken back to stored units with
    ``ds.normalization`` and then into y's units with ``ds.target_normalization`` (for ``sines`` both maps are
    the same, so the forecast is simply ``x[:, -1, 0]``). The result is in y's units: directly comparable to
    the ``mse`` loss that ``dlfund.fit`` and ``dlfund.evaluate`` report on this dataset.

    Args:
      ds: a regression dataset with one input channel, x (N, T, 1) or (N, T).
      split: "train", "val" or "test".

    Returns:
      The MSE as a Python float.
    """
    if ds.task != "regression":
        raise ValueError(f"persistence_mse needs a regression dataset; {ds.name!r} is a {ds.task} dataset")
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    shape = tuple(ds.input_shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise ValueError(f"persistence_mse needs windows of one series, x (N, T, 1) or (N, T); got x (N, *{shape})")
    x, y = ds.splits()[split]
    if len(y) == 0:
        raise ValueError(f"the {split} split of {ds.name!r} is empty")
    last = ds.normalization.invert(x).reshape(len(x), -1)[:, -1]
    forecast = ds.target_normalization.apply(last) if ds.target_normalization is not None else last
    return float(np.mean((forecast.astype(np.float64) - y.astype(np.float64)) ** 2))
