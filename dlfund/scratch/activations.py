"""Activation functions and their derivatives, written out in NumPy.

Backpropagation needs each activation's derivative with respect to its input, evaluated at the pre-activation
``z`` of the forward pass (or, cheaper, from the activation's output ``a``: sigmoid' = a (1 - a), tanh' = 1 - a^2).
Every function maps an array to an array of the same shape, element by element.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlfund.scratch._checks import as_float


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), computed without overflow: exp is only ever taken of -|z| <= 0."""
    z = as_float("z", z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype)


def tanh(z: np.ndarray) -> np.ndarray:
    """The hyperbolic tangent, a sigmoid stretched to (-1, 1): tanh(z) = 2 sigmoid(2z) - 1."""
    return np.tanh(as_float("z", z))


def relu(z: np.ndarray) -> np.ndarray:
    """max(0, z)."""
    z = as_float("z", z)
    return np.maximum(z, 0).astype(z.dtype)


def step(z: np.ndarray) -> np.ndarray:
    """Heaviside step, Rosenblatt's activation: 1 where z >= 0, else 0 (as ``dlfund.activations.step``)."""
    z = as_float("z", z)
    return (z >= 0).astype(z.dtype)


def identity(z: np.ndarray) -> np.ndarray:
    """z itself: a linear unit."""
    return as_float("z", z)


def sigmoid_grad(z: np.ndarray) -> np.ndarray:
    """d sigmoid / dz = s (1 - s): at most 1/4 (at z = 0), so every sigmoid layer shrinks the gradient."""
    s = sigmoid(z)
    return s * (1 - s)


def tanh_grad(z: np.ndarray) -> np.ndarray:
    """d tanh / dz = 1 - tanh(z)^2: 1 at z = 0, near 0 once |z| > 3 (saturation)."""
    t = tanh(z)
    return 1 - t * t


def relu_grad(z: np.ndarray) -> np.ndarray:
    """1 where z > 0, else 0. At the kink z = 0 we take 0, the same choice as ``jax.nn.relu``'s gradient."""
    z = as_float("z", z)
    return (z > 0).astype(z.dtype)


def step_grad(z: np.ndarray) -> np.ndarray:
    """0 everywhere (undefined at 0): no gradient flows through a step, hence the perceptron's own rule."""
    return np.zeros_like(as_float("z", z))


def identity_grad(z: np.ndarray) -> np.ndarray:
    """1 everywhere."""
    return np.ones_like(as_float("z", z))


#: name -> (activation, its derivative with respect to the pre-activation z)
ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "sigmoid": (sigmoid, sigmoid_grad),
    "tanh": (tanh, tanh_grad),
    "relu": (relu, relu_grad),
    "step": (step, step_grad),
    "identity": (identity, identity_grad),
}


def _lookup(name: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; the scratch activations are: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def activate(z: np.ndarray, name: str) -> np.ndarray:
    """The activation called ``name`` applied to ``z`` (any shape)."""
    return _lookup(name)[0](z)


def activation_grad(z: np.ndarray, name: str) -> np.ndarray:
    """The derivative of the activation called ``name`` at ``z`` (same shape as ``z``)."""
    return _lookup(name)[1](z)
