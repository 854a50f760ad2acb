"""Rosenblatt's perceptron learning rule, one example at a time.

For each example: predict yhat = step(w . x + b); if it is wrong, move the weights towards the example
(``y = 1`` missed) or away from it (``y = 0`` missed):

    w <- w + lr (y - yhat) x        b <- b + lr (y - yhat)

There is no gradient here (the step function has none): the rule is mistake-driven. On linearly separable data
the number of mistakes per epoch reaches 0 (the perceptron convergence theorem); on XOR it never does.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax  # only for the library's shuffle (jax.random): the rule itself is NumPy
import jax.numpy as jnp
import numpy as np

from dlfund.scratch._checks import as_float, check_binary_label, check_count, check_not_empty, check_positive
from dlfund.scratch.neuron import pre_activation


class PerceptronResult(NamedTuple):
    """What :func:`perceptron_train` returns."""

    w: np.ndarray  #: weights [D]
    b: np.ndarray  #: bias, 0-d
    mistakes: np.ndarray  #: int [epochs]: wrong predictions made during each epoch (before each update)


def perceptron_predict(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """0/1 predictions: step(w . x + b), [B] int32 for a batch x [B, D] (0-d for one example [D])."""
    return (pre_activation(x, w, b) >= 0).astype(np.int32)


def perceptron_update(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, y: int, learning_rate: float = 1.0
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One step of the rule on one example.

    Args:
      w: weights [D]; b: bias, a number.
      x: one example [D]; y: its label, 0 or 1.
      learning_rate: step size > 0.
    Returns:
      (w, b, mistake): the new weights and bias (new arrays) and whether the prediction was wrong.
    """
    x = as_float("x", x, ndim=1)
    y = check_binary_label("y", y)
    learning_rate = check_positive("learning_rate", learning_rate)
    if np.shape(w) != x.shape:
        raise ValueError(f"w must have one weight per feature of x, shape {x.shape}; got {np.shape(w)}")
    # -1, 0 or +1 in x's dtype: the direction to move (0 when right); an int32 error would promote float32 to float64
    error = x.dtype.type(y) - perceptron_predict(x, w, b).astype(x.dtype)
    return w + learning_rate * error * x, b + learning_rate * error, bool(error != 0)


def perceptron_order(key: Any, num_examples: int, epochs: int) -> np.ndarray:
    """The example order of ``dlfund.models.perceptron_rule`` for ``key``: int [epochs, N].

    Epoch e visits ``jax.random.permutation(jax.random.fold_in(key, e), N)``; with it, :func:`perceptron_train`
    reproduces the library's weights exactly.
    """
    return np.asarray(_library_order(key, check_count("num_examples", num_examples), check_count("epochs", epochs)))


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compiled program instead of a dozen small eager ones
def _library_order(key: Any, n: int, epochs: int) -> jax.Array:
    return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(jnp.arange(epochs))


def perceptron_train(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 10,
    learning_rate: float = 1.0,
    w: np.ndarray | None = None,
    b: float | None = None,
    order: np.ndarray | None = None,
) -> PerceptronResult:
    """Trains a perceptron with Rosenblatt's rule.

    Args:
      x: examples [N, D].
      y: labels [N] in {0, 1}.
      epochs: passes over the data, >= 1.
      learning_rate: step size > 0. From zero weights every positive value gives the same decisions (the
        weights are just scaled).
      w, b: starting weights [D] and bias; zeros by default, as Rosenblatt's rule (and ``dlfund``) start.
      order: int [epochs, N], the example order of each epoch (each row a permutation of range(N)); by default
        the given order every epoch. :func:`perceptron_order` gives the library's shuffled order.
    Returns:
      :class:`PerceptronResult` (w, b, mistakes per epoch).
    """
    x = check_not_empty("x", as_float("x", x, ndim=2))
    n, d = x.shape
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match x {x.shape}, got {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("the perceptron rule needs labels in {0, 1}")
    epochs = check_count("epochs", epochs)
    learning_rate = check_positive("learning_rate", learning_rate)
    if order is None:
        order = np.tile(np.arange(n), (epochs, 1))
    order = np.asarray(order)
    if order.shape != (epochs, n) or not all(np.array_equal(np.sort(row), np.arange(n)) for row in order):
        raise ValueError(
            f"order must hold one permutation of range({n}) per epoch, shape ({epochs}, {n}); got shape {order.shape}"
        )
    w = np.zeros(d, x.dtype) if w is None else as_float("w", w, ndim=1).copy()
    if w.shape != (d,):
        raise ValueError(f"w must have shape ({d},) to match x {x.shape}, got {w.shape}")
    b = np.zeros((), x.dtype) if b is None else as_float("b", b, ndim=0)
    # Keep everything in x's dtype (float32): a float64 learning rate would otherwise promote the weights.
    lr = x.dtype.type(learning_rate)
    mistakes = np.zeros(epochs, np.int32)
    for epoch, indices in enumerate(order):
        for i in indices:
            w, b, wrong = perceptron_update(w, b, x[i], int(y[i]), lr)
            mistakes[epoch] += wrong
    return PerceptronResult(w, b, mistakes)
