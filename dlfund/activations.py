"""Activation functions, pluggable by name or callable.

Each entry maps an array to an array of the same shape (``softmax`` normalizes over the last axis). ``step`` is the
Heaviside function of the classic perceptron: its gradient is zero almost everywhere, which is exactly why the
perceptron is trained with its own rule or through a surrogate loss rather than by backpropagation through ``step``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dlfund.registry import Registry

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: Registry[Activation] = Registry("activation")


def step(x: jax.Array) -> jax.Array:
    """Heaviside step: 1 where ``x >= 0``, else 0 (same shape and dtype as ``x``)."""
    return (x >= 0).astype(x.dtype)


def identity(x: jax.Array) -> jax.Array:
    """Returns ``x`` unchanged (a linear unit)."""
    return x


def leaky_relu(x: jax.Array) -> jax.Array:
    """Leaky ReLU with slope 0.01 for negative inputs (``jax.nn.leaky_relu``'s default)."""
    return jax.nn.leaky_relu(x)


def softmax(x: jax.Array) -> jax.Array:
    """Softmax over the last axis."""
    return jax.nn.softmax(x, axis=-1)


def gelu(x: jax.Array) -> jax.Array:
    """GELU, exact (erf) form; the tanh approximation is ``jax.nn.gelu(x, approximate=True)``."""
    return jax.nn.gelu(x, approximate=False)


for _name, _fn in {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softmax": softmax,
    "step": step,
    "leaky_relu": leaky_relu,
    "elu": jax.nn.elu,
    "gelu": gelu,
    "silu": jax.nn.silu,
    "identity": identity,
}.items():
    ACTIVATIONS.register(_name, _fn)


def get(activation: str | Activation) -> Activation:
    """The activation called ``activation``, or ``activation`` itself if it is a callable.

    Raises:
      ValueError: an unknown name; the message lists the known activations.
    """
    return ACTIVATIONS.resolve(activation)
