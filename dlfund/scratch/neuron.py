"""One artificial neuron: a weighted sum of the inputs plus a bias, then an activation.

    z = w . x + b        a = activation(z)

With the step activation this is Rosenblatt's perceptron; with the sigmoid it is logistic regression.
"""

from __future__ import annotations

import numpy as np

from dlfund.scratch._checks import as_float
from dlfund.scratch.activations import activate


def pre_activation(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """z = w . x + b.

    Args:
      x: one example [D] or a batch [B, D].
      w: weights [D].
      b: the bias, a number.
    Returns:
      z: a number (0-d array) for one example, [B] for a batch.
    """
    x = as_float("x", x, ndim=(1, 2))
    w = as_float("w", w, ndim=1)
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[-1]} features (shape {x.shape}) but w has {w.shape[0]} (shape {w.shape})")
    b = as_float("b", b, ndim=0)
    # The matrix product sums w_i x_i over the last axis of x: for a batch, one dot product per row.
    return (x @ w + b).astype(x.dtype)


def neuron(x: np.ndarray, w: np.ndarray, b: float, activation: str = "sigmoid") -> np.ndarray:
    """a = activation(w . x + b).

    Args:
      x: one example [D] or a batch [B, D].
      w: weights [D].
      b: the bias, a number.
      activation: "sigmoid", "tanh", "relu", "step" or "identity".
    Returns:
      a: a number (0-d array) for one example, [B] for a batch.
    """
    return activate(pre_activation(x, w, b), activation)
