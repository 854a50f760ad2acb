"""A two-layer MLP, x -> dense -> activation -> dense -> outputs, trained by hand-written backpropagation.

Forward:   z1 = x W1 + b1,   h = act(z1),   out = h W2 + b2
Backward (the chain rule, from the output down, reusing what the forward pass kept in its cache):
    d out   from the loss                            [B, K]
    dW2 = h^T d out,  db2 = sum_b d out,  dh = d out W2^T
    dz1 = dh * act'(z1)                               (elementwise: the activation acts on each unit alone)
    dW1 = x^T dz1,    db1 = sum_b dz1

The parameters are a dict {"W1": [D, H], "b1": [H], "W2": [H, K], "b2": [K]}, laid out as
``dlfund.models.MLP(D, (H,), K)``'s ``dense[0]`` and ``head`` layers (:func:`params_from_mlp` copies them).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from dlfund.scratch._checks import as_float, check_count, check_positive
from dlfund.scratch.activations import activate, activation_grad
from dlfund.scratch.dense import LOSSES, dense_backward, dense_forward

Params = dict[str, np.ndarray]
NAMES = ("W1", "b1", "W2", "b2")


class MLPCache(NamedTuple):
    """What the backward pass needs from the forward pass."""

    x: np.ndarray  #: inputs [B, D]
    z1: np.ndarray  #: hidden pre-activations [B, H], for act'(z1)
    h: np.ndarray  #: hidden activations [B, H], the second layer's input
    activation: str


def init_mlp(in_features: int, hidden: int, out_features: int, *, rng: np.random.Generator | int = 0) -> Params:
    """Random weights with variance 1/fan_in (LeCun), zero biases, float32.

    Scaling by 1/sqrt(fan_in) keeps z's variance near the inputs' at any width; zero biases are harmless because
    the random weights already make the hidden units differ (zero *weights* would not: every unit would get the
    same gradient and stay identical forever).
    """
    for name, value in (("in_features", in_features), ("hidden", hidden), ("out_features", out_features)):
        check_count(name, value)
    rng = np.random.default_rng(rng)
    return {
        "W1": (rng.standard_normal((in_features, hidden)) / np.sqrt(in_features)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "W2": (rng.standard_normal((hidden, out_features)) / np.sqrt(hidden)).astype(np.float32),
        "b2": np.zeros(out_features, np.float32),
    }


def params_from_mlp(model: Any) -> Params:
    """Copies the weights of a ``dlfund.models.MLP(D, (H,), K)`` (one hidden layer, no batch norm) into a dict."""
    if len(model.dense) != 1 or len(model.norms) != 0:
        raise ValueError(
            f"params_from_mlp needs an MLP with one hidden layer and no batch norm; this one has {len(model.dense)} "
            f"hidden layers and {len(model.norms)} batch norms"
        )
    return {
        "W1": np.array(model.dense[0].kernel[...]),
        "b1": np.array(model.dense[0].bias[...]),
        "W2": np.array(model.head.kernel[...]),
        "b2": np.array(model.head.bias[...]),
    }


def _check_params(params: Params) -> None:
    missing = [name for name in NAMES if name not in params]
    if missing:
        raise ValueError(f"params must hold {', '.join(NAMES)}; missing {', '.join(missing)}")
    if np.shape(params["W1"])[1] != np.shape(params["W2"])[0]:
        raise ValueError(
            f"W1 {np.shape(params['W1'])} has {np.shape(params['W1'])[1]} hidden units but W2 "
            f"{np.shape(params['W2'])} expects {np.shape(params['W2'])[0]}"
        )


def mlp_forward(params: Params, x: np.ndarray, activation: str = "relu") -> tuple[np.ndarray, MLPCache]:
    """Outputs [B, K] (logits) for inputs x [B, D], and the cache for :func:`mlp_backward`."""
    _check_params(params)
    x = as_float("x", x, ndim=2)
    z1 = dense_forward(x, params["W1"], params["b1"])
    h = activate(z1, activation)
    return dense_forward(h, params["W2"], params["b2"]), MLPCache(x, z1, h, activation)


def mlp_backward(params: Params, cache: MLPCache, dout: np.ndarray) -> Params:
    """Gradients {"W1", "b1", "W2", "b2"} of the loss from d loss / d outputs [B, K] and the forward cache."""
    _check_params(params)
    second = dense_backward(dout, cache.h, params["W2"])
    dz1 = second.x * activation_grad(cache.z1, cache.activation)  # through the activation, unit by unit
    first = dense_backward(dz1, cache.x, params["W1"])
    return {"W1": first.W, "b1": first.b, "W2": second.W, "b2": second.b}


def mlp_loss_and_grads(
    params: Params, x: np.ndarray, targets: np.ndarray, *, activation: str = "relu", loss: str = "softmax_cross_entropy"
) -> tuple[np.ndarray, Params]:
    """The batch-mean loss and its gradients: forward, loss gradient, backward.

    Args:
      targets: integer labels [B] for "softmax_cross_entropy", [B, K] for "mse".
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; the scratch losses are: {', '.join(LOSSES)}")
    out, cache = mlp_forward(params, x, activation)
    value, dout = LOSSES[loss](out, targets)
    return value, mlp_backward(params, cache, dout)


def train_mlp(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int | None = None,
    activation: str = "relu",
    loss: str = "softmax_cross_entropy",
    rng: np.random.Generator | int = 0,
) -> tuple[Params, np.ndarray]:
    """Plain SGD with hand-written backprop: ``steps`` times, p <- p - learning_rate * dL/dp.

    Args:
      params: starting weights (not modified; new arrays are returned).
      x: [N, D]; targets: labels [N] or [N, K] (see :func:`mlp_loss_and_grads`).
      steps: updates to make, >= 1.
      learning_rate: > 0.
      batch_size: examples per step, drawn without replacement from a fresh shuffle each pass; None: the whole
        set every step (full-batch gradient descent, deterministic).
      rng: NumPy generator or seed for the shuffles.
    Returns:
      (params, losses): the trained weights and the loss of each step's batch before its update, [steps].
    """
    steps = check_count("steps", steps)
    learning_rate = check_positive("learning_rate", learning_rate)
    x = as_float("x", x, ndim=2)
    targets = np.asarray(targets)
    if len(targets) != len(x):
        raise ValueError(f"x has {len(x)} examples but targets has {len(targets)}")
    n = len(x)
    batch_size = n if batch_size is None else min(check_count("batch_size", batch_size), n)
    rng = np.random.default_rng(rng)
    params = {name: np.array(value) for name, value in params.items()}
    history = np.zeros(steps, np.float32)
    order, position = np.arange(n), n
    for t in range(steps):
        if batch_size == n:
            batch = order
        else:
            if position + batch_size > n:  # a new pass: reshuffle, so batches differ from pass to pass
                order, position = rng.permutation(n), 0
            batch = order[position : position + batch_size]
            position += batch_size
        history[t], grads = mlp_loss_and_grads(params, x[batch], targets[batch], activation=activation, loss=loss)
        params = {name: params[name] - learning_rate * grads[name] for name in NAMES}
    return params, history
